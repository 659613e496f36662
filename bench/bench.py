#!/usr/bin/env python3
"""ReSQLite next to PostgreSQL 15 and sqlite3, in one command.

    python3 bench/bench.py            # the full run (~25 min), writes docs/benchmarks.md
    python3 bench/bench.py --smoke    # seconds-long check that everything still runs

Starts, on loopback and fresh for every measurement: ReSQLite (3 nodes and 1
node, release build), PostgreSQL 15 as a primary with two streaming standbys
(synchronous_standby_names = 'ANY 1 (s1, s2)', synchronous_commit = on),
PostgreSQL 15 alone; and runs

1. pgbench with the scripts in bench/pgbench/ (write, read, mixed, and
   tpcb: pgbench's TPC-B-like transaction, BEGIN … END) against
   each server, -M simple and -M prepared, 1/8/32 clients, on 100,000 rows;
2. the paper's four workloads (bench/paper/) as SQL files run statement by
   statement: `sqlite3 file.db < w.sql` versus `psql -f w.sql` against
   ReSQLite 1-node and 3-node, output discarded in both.

Prints one table (tps, p50/p99 latency, ratio to PostgreSQL with standbys,
peak memory of every node) and writes it, a PNG plot, the machine, the
versions and the command into docs/benchmarks.md. Every process it starts is
stopped when it ends, fails or is interrupted. Run it as root (it installs
PostgreSQL 15 with apt-get if missing and runs PostgreSQL as `postgres`) or
as a user that can run PostgreSQL itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from harness import procs, report, systems  # noqa: E402
from harness.procs import Failure  # noqa: E402
from paper import workloads  # noqa: E402

SYSTEMS = ["resqlite-3", "resqlite-1", "pg-sync", "pg-1"]
SCRIPTS = ["write", "read", "mixed", "tpcb"]
MODES = ["simple", "prepared"]
CLIENTS = [1, 8, 32]
PAPER_SYSTEMS = ["sqlite3", "resqlite-1", "resqlite-3"]


def csv(kind, allowed=None):
    def parse(s: str):
        items = [kind(x.strip()) for x in s.split(",") if x.strip()]
        bad = [x for x in items if allowed and x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {allowed}")
        return items
    return parse


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    p.add_argument("--systems", type=csv(str, SYSTEMS), default=SYSTEMS)
    p.add_argument("--scripts", type=csv(str, SCRIPTS), default=SCRIPTS)
    p.add_argument("--modes", type=csv(str, MODES), default=MODES)
    p.add_argument("--clients", type=csv(int), default=CLIENTS)
    p.add_argument("--rows", type=int, default=100_000, help="rows preloaded in kv (default 100000)")
    p.add_argument("--paper", type=csv(str, workloads.WORKLOADS), default=workloads.WORKLOADS,
                   help="paper workloads to run (default: all four)")
    p.add_argument("--paper-systems", type=csv(str, PAPER_SYSTEMS), default=PAPER_SYSTEMS,
                   help="systems for the paper's workloads (default: sqlite3,resqlite-1,resqlite-3)")
    p.add_argument("--no-pgbench", action="store_true", help="skip the pgbench part")
    p.add_argument("--no-paper", action="store_true", help="skip the paper's workloads")
    p.add_argument("--paper-scale", type=float, default=0.25,
                   help="statement counts relative to the paper's files (default 0.25; 1.0 = the paper's)")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "resqlite")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release -p resqlite")
    p.add_argument("--base-port", type=int, default=25400,
                   help="ports used: base+10.. (ReSQLite SQL), base+20.. (Raft), base+30.. (PostgreSQL)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the data directories (default target/bench/run-<time>; must not be tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-docs", action="store_true", help="print only; do not touch docs/")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long check (CI): 2 s runs, 1 client, -M simple, tiny paper files, no docs")
    a = p.parse_args(argv)
    if a.smoke:
        a.duration, a.clients, a.modes, a.paper_scale, a.no_docs = 2, [1], ["simple"], 0.005, True
    return a


# --------------------------------------------------------------------------
# setup


def sh(args, **kw) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def ensure_deps() -> None:
    missing = []
    if not (systems.PG_BIN / "postgres").exists() or not (systems.PG_BIN / "pgbench").exists():
        missing += ["postgresql-15", "postgresql-client-15"]
    if not shutil.which("sqlite3"):
        missing.append("sqlite3")
    if missing:
        if os.geteuid() != 0:
            raise Failure(f"missing {missing}: run as root, or apt-get install {' '.join(missing)}")
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=env)
    systems.PSQL = str(systems.PG_BIN / "psql")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("installing matplotlib with pip", flush=True)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
        if r.returncode != 0:
            print("warning: no matplotlib; the plot is skipped", file=sys.stderr)


def build(a) -> None:
    if a.no_build:
        if not a.binary.exists():
            raise Failure(f"{a.binary} does not exist (drop --no-build)")
        return
    print("cargo build --release -p resqlite", flush=True)
    subprocess.run(["cargo", "build", "--release", "-p", "resqlite"], cwd=REPO, check=True)


def machine(workdir: Path) -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    df = sh(["df", "-T", str(workdir)]).splitlines()
    fs = " ".join(df[-1].split()[:2]) if len(df) > 1 else "?"
    return {
        "cpu": cpu, "nproc": os.cpu_count(), "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(), "virt": sh(["systemd-detect-virt"]) or "?",
        "workdir_fs": fs, "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions(a) -> dict:
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    tree = sh(["git", "rev-parse", "--short", "HEAD"], cwd=REPO) + (" + uncommitted changes" if dirty else "")
    if a.no_build:
        mtime = datetime.datetime.fromtimestamp(a.binary.stat().st_mtime).astimezone()
        tree = (f"unknown: `{os.path.relpath(a.binary, REPO)}` (built {mtime:%Y-%m-%d %H:%M %Z}) was not "
                f"built by this run; the working tree was at {tree}")
    return {
        "resqlite": sh([str(a.binary), "--version"]),
        "git": tree,
        "postgres": sh([str(systems.PG_BIN / "postgres"), "--version"]),
        "pgbench": sh([str(systems.PG_BIN / "pgbench"), "--version"]),
        "sqlite3": " ".join(sh(["sqlite3", "--version"]).split()[:2]),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------
# pgbench


def percentile(sorted_xs, p):
    if not sorted_xs:
        return None
    return sorted_xs[max(0, math.ceil(p * len(sorted_xs)) - 1)]


def latencies_ms(logdir: Path) -> list[float]:
    """Per-transaction latencies from pgbench -l logs (3rd field, µs)."""
    out = []
    for f in logdir.glob("tx.*"):
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    out.append(int(parts[2]) / 1000)
    out.sort()
    return out


def parse_pgbench(stdout: str) -> dict:
    res = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("tps =") and "without initial connection time" in line:
            res["tps"] = float(line.split()[2])
        elif line.startswith("number of transactions actually processed:"):
            res["processed"] = int(line.split(":")[1].split("/")[0])
        elif line.startswith("number of failed transactions:"):
            res["failed"] = int(line.split(":")[1].split()[0])
        elif line.startswith("latency average ="):
            res["latency_avg_ms"] = float(line.split()[3])
    return res


def run_pgbench(system, script, mode, clients, a, celldir: Path) -> dict:
    logdir = celldir / "pgbench"
    logdir.mkdir(parents=True)
    cmd = [
        systems.PG_BIN / "pgbench", "-n", "-h", systems.HOST, "-p", system.port, "-U", system.user,
        "-M", mode, "-c", clients, "-j", min(clients, os.cpu_count() or 1), "-T", a.duration,
        "-D", f"rows={a.rows}", "-f", BENCH / "pgbench" / f"{script}.sql",
        "-l", f"--log-prefix={logdir}/tx", system.db,
    ]
    t0 = time.monotonic()
    r = procs.run(cmd, timeout=a.duration * 3 + 120, check=False, cwd=logdir)
    wall = time.monotonic() - t0
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    res = parse_pgbench(out)
    lat = latencies_ms(logdir)
    res["p50_ms"], res["p99_ms"] = percentile(lat, 0.50), percentile(lat, 0.99)
    errors = [ln for ln in err.splitlines() if "error" in ln.lower() or "abort" in ln.lower()]
    if wall > a.duration + 10:
        errors.append(f"pgbench took {wall:.0f} s for -T {a.duration}: some transaction stalled")
    if r.returncode != 0 or errors:
        res["pgbench_exit"] = r.returncode
        res["pgbench_errors"] = errors[:5] + ([f"... {len(errors) - 5} more"] if len(errors) > 5 else [])
        if "tps" not in res:
            res["error"] = (errors[0] if errors else f"pgbench exit {r.returncode}")[:300]
    return res


def make_system(name, a, celldir, pg_template):
    if name.startswith("resqlite"):
        return systems.ReSQLite(a.binary, int(name.split("-")[1]), celldir, a.base_port)
    return systems.PostgreSQL(pg_template, name == "pg-sync", celldir, a.base_port)


def pgbench_cells(a, workdir: Path, pg_template, info) -> list[dict]:
    plan = [(s, m, c, sy) for s in a.scripts for m in a.modes for c in a.clients for sy in a.systems]
    cells = []
    t_start = time.monotonic()
    for i, (script, mode, clients, sysname) in enumerate(plan, 1):
        cell = {"script": script, "mode": mode, "clients": clients, "system": sysname}
        celldir = workdir / f"cell-{i:03d}-{sysname}-{script}-{mode}-{clients}"
        system = make_system(sysname, a, celldir, pg_template)
        t0 = time.monotonic()
        try:
            system.start()
            if isinstance(system, systems.ReSQLite):
                system.load_kv(a.rows, BENCH / "pgbench" / "schema.sql")
                if "resqlite_version" not in info:
                    info["resqlite_version"] = systems.psql(system.port, system.user, system.db,
                                                            "SELECT version()").stdout.decode().strip()
            cell.update(run_pgbench(system, script, mode, clients, a, celldir))
            cell["rss_mib"] = system.peak_rss_mib()
            probs = system.problems()
            if probs:
                cell["problems"] = probs
            if cell.get("pgbench_errors") or probs:
                cell["server_log_tail"] = system.log_tails()
        except Failure as e:
            cell["error"] = str(e).splitlines()[0][:300]
            cell["error_detail"] = str(e)[:3000]
            cell["server_log_tail"] = system.log_tails()
        finally:
            system.stop()
            if system.stop_problems:
                cell.setdefault("problems", []).extend(system.stop_problems)
            if not a.keep:
                systems.remove_tree(celldir)
        cells.append(cell)
        took = time.monotonic() - t0
        left = (time.monotonic() - t_start) / i * (len(plan) - i)
        print(f"[{i}/{len(plan)}] {script:5} {mode:8} c={clients:<2} {sysname:10} "
              + (f"ERROR {cell['error']}" if cell.get("error") else
                 f"{cell.get('tps', 0):9.0f} tps  p50 {cell.get('p50_ms') or 0:7.2f} ms  "
                 f"p99 {cell.get('p99_ms') or 0:7.2f} ms  failed {cell.get('failed', '?')}  "
                 f"RSS {report._rss(cell.get('rss_mib'))} MiB")
              + (f"  PROBLEMS: {len(cell.get('problems', [])) + len(cell.get('pgbench_errors', []))}"
                 if cell.get("problems") or cell.get("pgbench_errors") else "")
              + f"  ({took:.0f} s, ~{left / 60:.0f} min left)", flush=True)
    return cells


# --------------------------------------------------------------------------
# the paper's workloads


def count_rows(query_fn, tables) -> dict[str, int]:
    return {t: int(query_fn(f"SELECT count(*) FROM {t}")) for t in tables}


def paper_runs(a, workdir: Path) -> dict:
    files = workloads.generate(workdir / "paper-sql", a.paper_scale)
    results = {}
    for wl in a.paper:
        w = files[wl]
        expected = workloads.PRELOAD_COUNTS if wl == "read-only" else workloads.expected_counts(w.writes)
        res = {"statements": (w.writes, w.reads)}
        for sysname in a.paper_systems:
            d = workdir / f"paper-{wl}-{sysname}"
            d.mkdir(parents=True)
            r = {}
            system = None
            try:
                if sysname == "sqlite3":
                    db = d / "paper.db"
                    with open(w.setup) as f:
                        procs.run(["sqlite3", "-bail", db], timeout=600, stdin=f)
                    with open(w.run) as f:
                        t0 = time.monotonic()
                        procs.run(["sqlite3", "-bail", db], timeout=3600, stdin=f, stdout=subprocess.DEVNULL)
                        r["seconds"] = time.monotonic() - t0

                    def q(sql, db=db):
                        return procs.run(["sqlite3", db, sql], timeout=60).stdout.decode().strip()
                else:
                    system = systems.ReSQLite(a.binary, int(sysname.split("-")[1]), d / "cluster", a.base_port)
                    system.start()
                    if w.setup.stat().st_size:
                        systems.psql(system.port, system.user, system.db, file=w.setup, timeout=600,
                                     stdout=subprocess.DEVNULL)
                    t0 = time.monotonic()
                    systems.psql(system.port, system.user, system.db, file=w.run, timeout=3600,
                                 stdout=subprocess.DEVNULL)
                    r["seconds"] = time.monotonic() - t0

                    def q(sql, s=system):
                        return systems.psql(s.port, s.user, s.db, sql, timeout=60).stdout.decode().strip()
                got = count_rows(q, expected)
                if got != expected:
                    r["error"] = f"row counts {got}, expected {expected}"
                if system:
                    r["rss_mib"] = system.peak_rss_mib()
                    probs = system.problems()
                    if probs:
                        r["problems"] = probs
            except Failure as e:
                r["error"] = str(e).splitlines()[0][:300]
                r["error_detail"] = str(e)[:3000]
                if system:
                    r["server_log_tail"] = system.log_tails()
            finally:
                if system:
                    system.stop()
                    if system.stop_problems:
                        r.setdefault("problems", []).extend(system.stop_problems)
                if not a.keep:
                    systems.remove_tree(d)
            res[sysname] = r
            print(f"paper {wl:11} {sysname:10} "
                  + (f"ERROR {r['error']}" if r.get("error") else
                     f"{r['seconds']:7.2f} s  RSS {report._rss(r.get('rss_mib'))} MiB"), flush=True)
        results[wl] = res
    return results


# --------------------------------------------------------------------------
# report


def full_run(a) -> bool:
    return (not a.no_pgbench and not a.no_paper and a.duration >= 10 and set(a.systems) == set(SYSTEMS)
            and set(a.scripts) == set(SCRIPTS) and set(a.modes) == set(MODES)
            and set(a.clients) == set(CLIENTS) and a.rows == 100_000 and set(a.paper) == set(workloads.WORKLOADS)
            and set(a.paper_systems) == set(PAPER_SYSTEMS) and a.paper_scale >= 0.25)


def main(argv) -> int:
    a = parse_args(argv)
    command = "python3 bench/bench.py" + "".join(" " + shlex.quote(x) for x in argv)
    procs.install_cleanup()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = REPO / "target" / "bench"
    workdir = a.workdir or out_dir / f"run-{stamp}"
    t0 = time.monotonic()
    created = False
    try:
        if workdir.exists():
            raise Failure(f"{workdir} exists: name a new directory")
        ensure_deps()
        build(a)
        a.binary = a.binary.resolve()
        workdir.mkdir(parents=True)
        created = True
        os.chmod(workdir, 0o755)
        if "tmpfs" in sh(["df", "-T", str(workdir)]):
            print(f"warning: {workdir} is on tmpfs, where fsync is free", file=sys.stderr)
        info = {"machine": machine(workdir), "versions": versions(a),
                "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
        n_cells = 0 if a.no_pgbench else len(a.systems) * len(a.scripts) * len(a.modes) * len(a.clients)
        print(f"{n_cells} pgbench runs of {a.duration:g} s; paper workloads: "
              f"{'none' if a.no_paper else ', '.join(a.paper)}; data in {workdir}", flush=True)
        cells, paper = [], {}
        if not a.no_pgbench:
            pg_template = None
            if any(s.startswith("pg") for s in a.systems):
                systems.require_free([a.base_port + 30])
                pg_template = systems.pg_template(workdir, a.base_port + 30, a.rows,
                                                  BENCH / "pgbench" / "schema.sql")
            cells = pgbench_cells(a, workdir, pg_template, info)
        if not a.no_paper:
            paper = paper_runs(a, workdir)
        info["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        info["minutes"] = (time.monotonic() - t0) / 60

        print()
        if cells:
            print(report.pgbench_table(cells), "\n")
        if paper:
            print(report.paper_table(paper), "\n")
        if cells or paper:
            print(report.targets_table(report.targets(cells, paper)), "\n")
        probs = report.problems_text(cells, paper)
        print("problems:" if probs else "problems: none")
        for p in probs:
            print("  -", p)

        results = out_dir / f"results-{stamp}.json"
        results.write_text(json.dumps({"command": command, "info": info, "pgbench": cells, "paper": paper},
                                      indent=1, default=str))
        print(f"\nraw results, server log tails of failed runs: {results}")
        if not a.no_docs:
            png = a.docs.parent / "benchmarks-cluster.png"
            plot_name = png.name if report.plot(cells, paper, png) else None
            report.write_docs(a.docs, report.section(a, full_run(a), cells, paper, info, plot_name, command))
            print(f"wrote {a.docs}" + (f" and {png}" if plot_name else ""))
        return 1 if probs else 0
    except Failure as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every server", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if created and not a.keep:
            systems.remove_tree(workdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
