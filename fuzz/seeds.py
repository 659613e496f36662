#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/TARGET/.

Seeds are real inputs: the SQL of the unit tests in server/src/sql/ and of
the compat suite (compat/**/*.sql), client sessions written by hand as
drivers send them, and protobuf encodings of Raft requests and log entries.
`cargo fuzz cmin` then keeps the ones that add coverage in
fuzz/corpus/TARGET/ (docs/testing.md).
"""

import glob
import hashlib
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def rust_strings(text):
    """The string literals of a Rust file, unescaped."""
    out = []
    for m in re.finditer(r'r(#*)"(.*?)"\1|"((?:[^"\\]|\\.)*)"', text, re.S):
        if m.group(2) is not None:
            out.append(m.group(2))
            continue
        s = m.group(3)
        s = re.sub(r"\\\n\s*", "", s)
        s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda u: chr(int(u.group(1), 16)), s)
        s = re.sub(r"\\x([0-9a-fA-F]{2})", lambda u: chr(int(u.group(1), 16)), s)
        s = (s.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
             .replace("\\0", "\0").replace('\\"', '"').replace("\\'", "'")
             .replace("\\\\", "\\"))
        out.append(s)
    return out


def sql_seeds():
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "server/src/sql/*.rs"))):
        with open(path) as f:
            found += [s for s in rust_strings(f.read()) if " " in s.strip() or s.isupper()]
    for path in sorted(glob.glob(os.path.join(ROOT, "compat/**/*.sql"), recursive=True)):
        with open(path) as f:
            text = f.read()
        found.append(text)
        found += [s.strip() for s in text.split(";") if s.strip()]
    seen, out = set(), []
    for s in found:
        if s and len(s) < 4096 and s not in seen:
            seen.add(s)
            out.append(s)
    return out


# PostgreSQL frontend messages.

def message(kind, body):
    return kind + struct.pack(">i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def startup(params):
    body = struct.pack(">i", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">i", len(body) + 4) + body


SSL_REQUEST = struct.pack(">ii", 8, 80877103)
GSS_REQUEST = struct.pack(">ii", 8, 80877104)
CANCEL = struct.pack(">iiii", 16, 80877102, 1234, 5678)


def parse(name, sql, types=()):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack(">h", len(types))
                   + b"".join(struct.pack(">i", t) for t in types))


def bind(portal, stmt, params, param_formats=(), result_formats=()):
    body = cstr(portal) + cstr(stmt)
    body += struct.pack(">h", len(param_formats)) + b"".join(struct.pack(">h", f) for f in param_formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(">h", len(result_formats)) + b"".join(struct.pack(">h", f) for f in result_formats)
    return message(b"B", body)


def describe(kind, name):
    return message(b"D", kind + cstr(name))


def close(kind, name):
    return message(b"C", kind + cstr(name))


def execute(portal, limit=0):
    return message(b"E", cstr(portal) + struct.pack(">i", limit))


SYNC = message(b"S", b"")
FLUSH = message(b"H", b"")
TERMINATE = message(b"X", b"")


def query(sql):
    return message(b"Q", cstr(sql))


def sessions():
    """Message streams after startup, as drivers send them."""
    ins = "INSERT INTO t VALUES ($1, $2, $3, $4, $5)"
    return [
        query("SELECT 1"),
        query("BEGIN; SELECT 1; COMMIT"),
        query("SET statement_timeout = 100; SHOW statement_timeout; RESET ALL"),
        query("SET resqlite.read_consistency = 'weak'; SHOW transaction_read_only"),
        query("SET application_name TO 'psql'; SHOW server_version"),
        query("ERR; SELECT 1"),
        query(""),
        # libpq's PQexecParams: unnamed statement and portal.
        parse("", "SELECT $1") + bind("", "", [b"42"]) + describe(b"P", "")
        + execute("") + SYNC,
        # pgjdbc: named statement, Describe S, binary parameters and results.
        parse("S_1", ins, (20, 701, 25, 17, 16)) + describe(b"S", "S_1") + SYNC
        + bind("", "S_1", [struct.pack(">q", 7), struct.pack(">d", 1.5), b"x", b"\x00\xff", b"\x01"],
               (1,), (1,)) + execute("", 0) + SYNC
        + close(b"S", "S_1") + SYNC,
        # node-postgres: text parameters, NULL, a row limit, Flush.
        parse("", "SELECT $1, $2, $3") + bind("p", "", [b"1", None, b"t"], (0,), (0,))
        + describe(b"P", "p") + execute("p", 1) + FLUSH + execute("p", 0) + close(b"P", "p") + SYNC,
        # An error in the middle: skipped until Sync.
        parse("", "ERR") + bind("", "", []) + execute("") + SYNC + query("SELECT 1"),
        parse("", "SELECT 1") + bind("", "", [b"1", b"2"]) + execute("") + SYNC,
        message(b"F", b"\0\0\0\0") + SYNC,
        message(b"p", b"secret\0"),
        message(b"d", b"copy data") + message(b"c", b"") + message(b"f", b"oops\0"),
    ]


def wire_seeds():
    user = startup([("user", "alice"), ("database", "db"), ("application_name", "psql"),
                    ("client_encoding", "UTF8")])
    options = startup([("user", "bob"), ("options", "-c statement_timeout=5000 -c DateStyle=ISO")])
    codec, session = [], []
    for s in sessions():
        codec.append(b"\x01" + s)   # after startup, whole
        codec.append(b"\x07" + s)   # after startup, in 4-byte pieces
        session.append(user + s + TERMINATE)
        session.append(SSL_REQUEST + options + s + TERMINATE)
    for pre in [user, options, SSL_REQUEST, GSS_REQUEST + user, CANCEL,
                struct.pack(">iii", 12, 0x20000, 0), struct.pack(">i", 1_000_000)]:
        codec.append(b"\x00" + pre + query("SELECT 1"))
        session.append(pre + query("SELECT 1") + TERMINATE)
    session.append(SSL_REQUEST + CANCEL)
    return codec, session


# Protobuf.

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def uint(field, n):
    return varint(field << 3) + varint(n)


def length(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def double(field, x):
    return varint(field << 3 | 1) + struct.pack("<d", x)


def fixed32(field, x):
    return varint(field << 3 | 5) + struct.pack("<I", x)


def write_statement(sql, params=(), command=""):
    out = length(1, sql.encode())
    for p in params:
        if p is None:
            v = uint(1, 1)
        elif isinstance(p, bool):
            v = uint(2, int(p))
        elif isinstance(p, int):
            v = uint(2, p & (2**64 - 1))
        elif isinstance(p, float):
            v = double(3, p)
        elif isinstance(p, str):
            v = length(4, p.encode())
        else:
            v = length(5, p)
        out += length(2, v)
    if command:
        out += length(3, command.encode())
    return out


def payloads():
    role = (uint(1, 0) + length(2, b"alice") + length(4, b"SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy")
            + uint(6, 1) + uint(7, 1) + length(9, b"bob"))
    return [
        write_statement("INSERT INTO t VALUES ($1, $2, $3, $4, $5)",
                        [1, 2.5, "x", b"\x00\xff", None], "INSERT"),
        write_statement("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)", command="CREATE TABLE"),
        write_statement("DELETE FROM t WHERE a = ?", [-1], "DELETE"),
        length(16, b""),
        length(17, uint(1, 42) + length(2, hashlib.sha256(b"db").digest())),
        length(17, uint(1, 42) + length(2, b"short")),
        length(18, role),
        length(18, uint(1, 3) + length(2, b"alice") + length(8, b"carol")),
    ]


def entry(term, index, kind, data=b""):
    return uint(1, term) + uint(2, index) + uint(3, kind) + (length(4, data) if data else b"")


def raft_seeds():
    out = []
    data = payloads()
    entries = b"".join(length(6, entry(2, 11 + i, 0, d)) for i, d in enumerate(data[:3]))
    append = (uint(1, 2) + uint(2, 1) + uint(3, 2) + uint(4, 10) + uint(5, 1) + entries
              + uint(7, 10) + uint(8, 77))
    out.append(b"\x00" + append)
    out.append(b"\x00" + uint(1, 2) + uint(2, 1) + uint(3, 2) + uint(4, 10) + uint(5, 1)
               + length(6, entry(2, 11, 1)) + length(6, entry(2, 12, 2, b"\x08\x01")))
    out.append(b"\x00" + uint(1, 2**63 - 1) + uint(4, 2**63 - 1))
    out.append(b"\x01" + uint(1, 3) + uint(2, 1) + uint(3, 2) + uint(4, 9) + uint(5, 4) + uint(6, 5))
    out.append(b"\x02" + uint(1, 4) + uint(2, 3) + uint(3, 1) + uint(4, 100) + uint(5, 3)
               + uint(6, 1) + uint(8, 9))
    out.append(b"\x02" + uint(1, 4) + uint(2, 3) + uint(7, 1))
    out.append(b"\x03" + uint(1, 5) + uint(2, 1) + uint(3, 2) + uint(4, 6))
    out.append(b"\x04" + uint(1, 5) + uint(2, 1) + uint(3, 2) + uint(4, 100) + uint(5, 4)
               + uint(6, 0) + length(7, b"SQLite format 3\0") + uint(8, 1) + uint(9, 16)
               + fixed32(10, 0xDEADBEEF) + length(11, b"\x08\x01") + length(12, varint(1) + varint(2)))
    out.append(b"\x05" + uint(1, 5) + uint(2, 2) + uint(3, 1) + uint(4, 1) + uint(5, 11)
               + uint(6, 3) + uint(7, 9) + uint(8, 4))
    out += [b"\x06" + d for d in data]
    return out


def write(target, seeds):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        if isinstance(s, str):
            s = s.encode()
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)


def main():
    sql = sql_seeds()
    codec, session = wire_seeds()
    write("pg_rewrite", sql)
    write("classify", sql)
    write("params", [struct.pack(">H", min(s.count("$") + s.count("?"), 65535)) + s.encode()
                     for s in sql])
    write("wire_codec", codec + [b"\x01" + query(s) for s in sql[:50]])
    write("wire_session", session)
    write("raft_convert", raft_seeds())
    print(f"{len(sql)} SQL seeds, {len(codec)} codec, {len(session)} session", file=sys.stderr)


if __name__ == "__main__":
    main()
