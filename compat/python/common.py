"""Shared by the Python clients: the cluster from the environment, and the
COMPAT line reporter (see server/tests/compat.rs).

The password and TLS settings (PGPASSWORD, PGSSLMODE=verify-full,
PGSSLROOTCERT, PGCHANNELBINDING=require) come from the environment too:
libpq, under psycopg and psycopg2, reads them itself."""

import os
import sys


class Cluster:
    def __init__(self):
        self.host = os.environ["RESQLITE_HOST"]
        self.ports = os.environ["RESQLITE_PORTS"].split(",")
        self.leader_port = os.environ["RESQLITE_LEADER_PORT"]
        self.follower_port = os.environ["RESQLITE_FOLLOWER_PORT"]
        self.leader_addr = os.environ["RESQLITE_LEADER_ADDR"]
        self.user = os.environ["RESQLITE_USER"]

    def conninfo(self, port):
        return f"host={self.host} port={port} user={self.user} connect_timeout=5"

    def multi_host(self):
        hosts = ",".join([self.host] * len(self.ports))
        return (f"host={hosts} port={','.join(self.ports)} user={self.user} "
                "target_session_attrs=read-write connect_timeout=5")


class Report:
    def __init__(self, client):
        self.client = client
        self.failed = False

    def line(self, feature, status, note=""):
        print(f"COMPAT {self.client} {feature} {status} {note}".rstrip(), flush=True)
        if status == "fail":
            self.failed = True

    def check(self, feature, fn, want):
        """Runs fn(); pass when it returns want (type included)."""
        try:
            got = fn()
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            self.line(feature, "fail", f"{type(e).__name__}: {e}".replace("\n", " "))
            return
        if got == want and type(got) is type(want):
            self.line(feature, "pass")
        else:
            self.line(feature, "fail", f"got {got!r} ({type(got).__name__}), want {want!r}")

    def sqlstate(self, feature, fn, want, code_of, contains=None):
        """Runs fn(); pass when it raises a server error with SQLSTATE want."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            code = code_of(e)
            msg = str(e).replace("\n", " ")
            if code == want and (contains is None or contains in msg):
                self.line(feature, "pass")
            else:
                self.line(feature, "fail", f"got {code} {type(e).__name__}: {msg}")
            return e
        self.line(feature, "fail", f"succeeded, want {want}")
        return None

    def refused(self, feature, fn, want, code_of, why):
        """A feature ReSQLite does not support yet: 'unsupported' when fn()
        gets the clear refusal with SQLSTATE want, 'fail' otherwise."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if code_of(e) == want:
                self.line(feature, "unsupported", f"{why} {want}: {first}")
            else:
                self.line(feature, "fail", f"got {code_of(e)} {type(e).__name__}: {first}")
            return
        self.line(feature, "fail", f"succeeded: ReSQLite now supports it, update the suite and docs")

    def exit(self):
        sys.exit(1 if self.failed else 0)
