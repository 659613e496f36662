"""Child processes the benchmark starts, and their cleanup.

Every process is started in its own session (so a terminal Ctrl-C reaches
only the harness, which then stops them in order) and registered here; the
harness stops every registered process group on exit, on failure, on Ctrl-C
and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import atexit
import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_live: list[tuple[subprocess.Popen, int]] = []  # (process, signal that stops it)


class Failure(Exception):
    """A step of the benchmark failed; the message says which and why."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def pg_user_kwargs() -> dict:
    """PostgreSQL refuses to run as root: as root, run its binaries as `postgres`."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def chown_pg(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def start(args, log: Path | None, stop_signal=signal.SIGTERM, as_pg=False, **kw) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        p = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=kw.pop("env", clean_env()),
            **(pg_user_kwargs() if as_pg else {}),
            **kw,
        )
    finally:
        if log:
            out.close()
    with _lock:
        _live.append((p, stop_signal))
    return p


def stop(p: subprocess.Popen, timeout: float = 15.0) -> bool:
    """Stops p's whole process group: its stop signal, then SIGKILL.

    Returns False if p had to be killed because it ignored its stop signal."""
    with _lock:
        entry = next((e for e in _live if e[0] is p), None)
        if entry:
            _live.remove(entry)
    sig = entry[1] if entry else signal.SIGTERM
    clean = True
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            clean = False
    # The group may outlive its leader (PostgreSQL backends): kill what is left.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    _wait_group_gone(p.pid, 5.0)
    return clean


def stop_together(ps: list[subprocess.Popen], timeout: float) -> list[bool]:
    """Signals every process first, then waits: how a whole cluster is shut down
    (a node may wait for its peers' streams to close before it exits).

    Returns, per process, False if it had to be killed."""
    with _lock:
        sigs = {id(e[0]): e[1] for e in _live}
    for p in ps:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sigs.get(id(p), signal.SIGTERM))
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in ps:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    return [stop(p, timeout=0) for p in ps]


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stop_all() -> None:
    while True:
        with _lock:
            if not _live:
                return
            p = _live[-1][0]
        stop(p, timeout=10.0)


def run(args, timeout: float, as_pg=False, stdin=None, stdout=None, check=True, **kw) -> subprocess.CompletedProcess:
    """Runs a command to completion, registered so an interrupt stops it too."""
    p = subprocess.Popen(
        [str(a) for a in args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=kw.pop("env", clean_env()),
        **(pg_user_kwargs() if as_pg else {}),
        **kw,
    )
    with _lock:
        _live.append((p, signal.SIGTERM))
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, 2)
        raise Failure(f"timed out after {timeout:.0f} s: {' '.join(map(str, args))}")
    finally:
        with _lock:
            _live[:] = [e for e in _live if e[0] is not p]
    res = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if check and p.returncode != 0:
        raise Failure(
            f"exit {p.returncode}: {' '.join(map(str, args))}\n"
            + (err or b"").decode(errors="replace")[-2000:]
        )
    return res


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    atexit.register(stop_all)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and an
    # interrupted benchmark must still stop its servers. SIGHUP stays ignored
    # under nohup.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        signal.signal(sig, _on_signal)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
