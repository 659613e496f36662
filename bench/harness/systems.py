"""The systems under test: a ReSQLite cluster, PostgreSQL with or without
synchronous standbys. Each is started fresh in its own directory and stopped
by the harness; each reports its nodes' peak memory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from . import procs
from .procs import Failure

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PSQL = str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql"
HOST = "127.0.0.1"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def require_free(ports) -> None:
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise Failure(f"ports in use: {busy} (a server left from another run? choose --base-port)")


def psql(port: int, user: str, db: str, sql: str | None = None, file: Path | None = None,
         timeout: float = 120, check=True, stdout=None) -> subprocess.CompletedProcess:
    args = [PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", port, "-U", user, "-d", db]
    args += ["-c", sql] if sql is not None else ["-f", file]
    return procs.run(args, timeout=timeout, check=check, stdout=stdout)


def wait_until(what: str, cond, timeout: float, proc_alive=None, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc_alive is not None and not proc_alive():
            raise Failure(f"{what}: the server exited")
        try:
            v = cond()
            if v:
                return v
        except Failure as e:
            last = e
        time.sleep(interval)
    raise Failure(f"{what}: not within {timeout:.0f} s" + (f" (last: {str(last)[:300]})" if last else ""))


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def group_pss_kib(pgid: int) -> int:
    """Sum of PSS over the processes of one process group (a PostgreSQL instance)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:  # pgrp is the 5th field; fields[0] is the 3rd
                continue
            for line in Path(f"/proc/{d}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total


class PssSampler:
    """Samples the summed PSS of some process groups every 0.5 s; keeps the peak."""

    def __init__(self, pgids: list[int]):
        self.peaks = {g: 0 for g in pgids}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.5)

    def sample(self):
        for g in self.peaks:
            self.peaks[g] = max(self.peaks[g], group_pss_kib(g))

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._t.join()
        self.sample()
        return self.peaks


# --------------------------------------------------------------------------
# ReSQLite

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strip_ts(line: str) -> str:
    """A log line without its timestamp, so that repeats collapse."""
    parts = line.split(" ", 1)
    return parts[1].strip() if len(parts) == 2 and parts[0][:4].isdigit() else line.strip()


class ReSQLite:
    """A ReSQLite cluster of n nodes on loopback, fresh data directories."""

    user = "resqlite"
    db = "resqlite"

    def __init__(self, binary: Path, n: int, workdir: Path, base_port: int):
        self.binary, self.n, self.dir = binary, n, workdir
        self.pg_ports = [base_port + 10 + i for i in range(n)]
        self.raft_ports = [base_port + 20 + i for i in range(n)]
        self.procs: list[subprocess.Popen] = []
        self.leader: int | None = None  # index into the node lists
        self.stop_problems: list[str] = []

    @property
    def name(self) -> str:
        return f"resqlite-{self.n}"

    def start(self, timeout: float = 60) -> None:
        require_free(self.pg_ports + self.raft_ports)
        self.dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            node_dir = self.dir / f"node{i + 1}"
            node_dir.mkdir()
            args = [
                self.binary, "serve", "--id", i + 1, "--data-dir", node_dir / "data",
                "--listen", f"{HOST}:{self.pg_ports[i]}",
                "--raft-listen", f"{HOST}:{self.raft_ports[i]}",
            ]
            for j in range(self.n):
                if j != i:
                    args += ["--peer", f"{j + 1}={HOST}:{self.raft_ports[j]},{HOST}:{self.pg_ports[j]}"]
            env = procs.clean_env()
            env["NO_COLOR"] = "1"
            self.procs.append(procs.start(args, node_dir / "log", env=env))
        self.leader = wait_until(f"{self.name}: a leader", lambda: self.find_leader(), timeout,
                                 proc_alive=self.alive, interval=0.2)
        self.leader -= 1

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def find_leader(self) -> int | None:
        """1-based index of the node that says it is the leader, if any."""
        for i, port in enumerate(self.pg_ports):
            try:
                r = psql(port, self.user, self.db, "show transaction_read_only", timeout=5, check=False)
            except Failure:
                continue
            if r.returncode == 0 and r.stdout.decode().strip() == "off":
                return i + 1
        return None

    @property
    def port(self) -> int:
        return self.pg_ports[self.leader]

    def load_kv(self, rows: int, schema: Path) -> None:
        psql(self.port, self.user, self.db, file=schema)
        # One statement, one Raft entry: the recursive CTE runs on every node
        # and is deterministic.
        sql = (
            "INSERT INTO kv (k, v) WITH RECURSIVE s(k) AS "
            f"(SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {rows}) SELECT k, 0 FROM s"
        )
        psql(self.port, self.user, self.db, sql, timeout=300)
        n = int(psql(self.port, self.user, self.db, "SELECT count(*) FROM kv").stdout)
        if n != rows:
            raise Failure(f"{self.name}: preload gave {n} rows, not {rows}")
        psql(self.port, self.user, self.db, file=TPCB_LOAD, timeout=300)

    def log(self, i: int) -> str:
        try:
            return _ANSI.sub("", (self.dir / f"node{i + 1}" / "log").read_text(errors="replace"))
        except OSError:
            return ""

    def problems(self) -> list[str]:
        """Crashes, leader changes and the nodes' warnings so far."""
        out = []
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                out.append(f"{self.name} node {i + 1} exited with {p.returncode}; log tail:\n"
                           + procs.tail(self.dir / f"node{i + 1}" / "log"))
        logs = [self.log(i) for i in range(self.n)]
        elected = sum(log.count("became leader") for log in logs)
        if elected > 1:
            out.append(f"{self.name}: {elected - 1} leader change(s) during the run")
        if self.n > 1 and not out:
            now = self.find_leader()
            if now is not None and now - 1 != self.leader:
                out.append(f"{self.name}: leader changed during the run (node {self.leader + 1} -> node {now})")
        for i, log in enumerate(logs):
            warns = [ln for ln in log.splitlines() if " WARN " in ln or " ERROR " in ln]
            # Elections after the first, e.g. a follower that stopped hearing the leader.
            pre = log.split("leader=Some", 1)[-1].count("role=PreCandidate") if "leader=Some" in log else 0
            if pre:
                out.append(f"{self.name} node {i + 1}: stopped hearing the leader ({pre}× PreCandidate)")
            for w in dict.fromkeys(_strip_ts(w) for w in warns):
                out.append(f"{self.name} node {i + 1}: {w[:200]}")
        return out

    def peak_rss_mib(self) -> list[float | None]:
        """VmHWM of every node, read while the nodes still run."""
        return [None if (k := vm_hwm_kib(p.pid)) is None else k / 1024 for p in self.procs]

    def log_tails(self) -> str:
        return "\n".join(f"--- node{i + 1}\n" + procs.tail(self.dir / f"node{i + 1}" / "log")
                         for i in range(self.n))

    def stop(self) -> None:
        """SIGTERM to every node at once, SIGKILL to any still running 10 s later."""
        for i, clean in enumerate(procs.stop_together(self.procs, timeout=10)):
            if not clean:
                self.stop_problems.append(f"{self.name} node {i + 1} did not exit within 10 s of SIGTERM "
                                          "(killed with SIGKILL)")
        self.procs = []


# --------------------------------------------------------------------------
# PostgreSQL

PG_CONF = """
# appended by bench/bench.py
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 100
wal_level = replica
max_wal_senders = 10
fsync = on
synchronous_commit = on
"""


def pg_bin(name: str) -> Path:
    return PG_BIN / name


def make_pg_dir(path: Path) -> None:
    path.mkdir(parents=True)
    os.chmod(path, 0o700)
    procs.chown_pg(path)


# pgbench's TPC-B rows (bench/pgbench/tpcb.sql runs on them).
TPCB_LOAD = Path(__file__).resolve().parent.parent / "pgbench" / "tpcb_load.sql"


def pg_template(workdir: Path, port: int, rows: int, schema: Path) -> Path:
    """initdb, load the kv table, stop cleanly: every PostgreSQL run copies this."""
    d = workdir / "pg-template"
    make_pg_dir(d)
    procs.run([pg_bin("initdb"), "-D", d, "-U", "postgres", "--auth=trust", "-E", "UTF8",
               "--locale=C.UTF-8"], timeout=120, as_pg=True, cwd="/")
    with open(d / "postgresql.conf", "a") as f:
        f.write(PG_CONF)
    pg = PgInstance(d, port, "template")
    pg.start()
    try:
        psql(port, "postgres", "postgres", file=schema)
        psql(port, "postgres", "postgres",
             f"INSERT INTO kv (k, v) SELECT g, 0 FROM generate_series(1, {rows}) g", timeout=300)
        psql(port, "postgres", "postgres", file=TPCB_LOAD, timeout=300)
        psql(port, "postgres", "postgres", "VACUUM ANALYZE", timeout=300)
        psql(port, "postgres", "postgres", "CHECKPOINT", timeout=300)
    finally:
        pg.stop()
    return d


class PgInstance:
    def __init__(self, data: Path, port: int, name: str, extra: list[str] | None = None):
        self.data, self.port, self.name, self.extra = data, port, name, extra or []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        require_free([self.port])
        args = [pg_bin("postgres"), "-D", self.data, "-c", f"port={self.port}"] + self.extra
        # SIGINT is PostgreSQL's fast shutdown.
        self.proc = procs.start(args, self.data.parent / f"{self.data.name}.log",
                                stop_signal=signal.SIGINT, as_pg=True, cwd="/")
        wait_until(f"PostgreSQL {self.name} accepting connections",
                   lambda: psql(self.port, "postgres", "postgres", "SELECT 1", timeout=5,
                                check=False).returncode == 0,
                   timeout, proc_alive=lambda: self.proc.poll() is None, interval=0.1)

    def stop(self) -> None:
        if self.proc:
            procs.stop(self.proc, timeout=30)
            self.proc = None

    def log_tail(self) -> str:
        return procs.tail(self.data.parent / f"{self.data.name}.log")


class PostgreSQL:
    """PostgreSQL 15 alone, or a primary with two streaming standbys (s1, s2)
    and synchronous_standby_names = 'ANY 1 (s1, s2)'."""

    user = "postgres"
    db = "postgres"

    def __init__(self, template: Path, standbys: bool, workdir: Path, base_port: int):
        self.template, self.standbys, self.dir = template, standbys, workdir
        self.ports = [base_port + 30 + i for i in range(3 if standbys else 1)]
        self.nodes: list[PgInstance] = []
        self.sampler: PssSampler | None = None
        self.stop_problems: list[str] = []

    @property
    def name(self) -> str:
        return "pg-sync" if self.standbys else "pg-1"

    @property
    def port(self) -> int:
        return self.ports[0]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        procs.chown_pg(self.dir)
        primary = self.dir / "primary"
        procs.run(["cp", "-a", self.template, primary], timeout=120)
        extra = ["-c", "synchronous_standby_names=ANY 1 (s1, s2)"] if self.standbys else []
        self.nodes.append(PgInstance(primary, self.port, "primary", extra))
        self.nodes[0].start()
        for i, app in enumerate(("s1", "s2") if self.standbys else ()):
            d = self.dir / app
            procs.run([pg_bin("pg_basebackup"), "-h", HOST, "-p", self.port, "-U", "postgres",
                       "-D", d, "-X", "stream", "-R", "-c", "fast"], timeout=300, as_pg=True, cwd="/")
            with open(d / "postgresql.auto.conf", "a") as f:
                f.write(f"primary_conninfo = 'host={HOST} port={self.port} user=postgres "
                        f"application_name={app}'\n")
            node = PgInstance(d, self.ports[i + 1], app)
            self.nodes.append(node)
            node.start()
        if self.standbys:
            q = ("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                 "AND sync_state IN ('quorum', 'sync')")
            wait_until("both standbys streaming as synchronous candidates",
                       lambda: psql(self.port, "postgres", "postgres", q, timeout=5)
                       .stdout.decode().strip() == "2", 60)
        self.sampler = PssSampler([n.proc.pid for n in self.nodes])

    def alive(self) -> bool:
        return all(n.proc and n.proc.poll() is None for n in self.nodes)

    def problems(self) -> list[str]:
        return [f"{self.name} {n.name} exited with {n.proc.returncode}; log tail:\n{n.log_tail()}"
                for n in self.nodes if n.proc and n.proc.poll() is not None]

    def peak_rss_mib(self) -> list[float | None]:
        """Peak of the summed PSS of each instance's processes (sampled)."""
        peaks = self.sampler.stop() if self.sampler else {}
        self.sampler = None
        return [peaks.get(n.proc.pid, 0) / 1024 for n in self.nodes]

    def log_tails(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.nodes)

    def stop(self) -> None:
        if self.sampler:
            self.sampler.stop()
            self.sampler = None
        for n in reversed(self.nodes):
            n.stop()
        self.nodes = []


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
