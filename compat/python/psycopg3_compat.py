"""psycopg 3 against the cluster, in its own idiom: autocommit connections,
%s parameters (sent bound, server-side), typed rows, prepare=True for a
statement run many times, e.sqlstate. With autocommit off psycopg opens an
implicit transaction (BEGIN), which ReSQLite refuses with 0A000: asserted."""

import psycopg

from common import Cluster, Report

r = Report("psycopg3")
c = Cluster()


def code_of(e):
    return getattr(e, "sqlstate", None)


try:
    db = psycopg.connect(c.conninfo(c.leader_port), autocommit=True)
    r.line("connect", "pass")
except Exception as e:  # noqa: BLE001
    r.line("connect", "fail", str(e))
    r.exit()


def multi_host():
    with psycopg.connect(c.multi_host(), autocommit=True) as m:
        return (m.execute("SHOW transaction_read_only").fetchone()[0], str(m.info.port))


r.check("multi_host_leader", multi_host, ("off", c.leader_port))
r.check("create_table", lambda: db.execute(
    "CREATE TABLE py3_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)"
).rowcount, -1)
r.check("insert_bound_params", lambda: db.execute(
    "INSERT INTO py3_items (id, n, f, s, b, ok, z) VALUES (%s, %s, %s, %s, %s, %s, %s)",
    (1, -42, 2.5, "héllo", b"\x00\x01\xfe\xff", True, None)).rowcount, 1)
try:
    row = db.execute("SELECT n, f, s, b, ok, z FROM py3_items WHERE id = %s", (1,)).fetchone()
except Exception as e:  # noqa: BLE001
    row = e
for i, (feature, want) in enumerate([("read_integer", -42), ("read_float", 2.5), ("read_text", "héllo"),
                                     ("read_bytea", b"\x00\x01\xfe\xff"), ("read_boolean", True),
                                     ("read_null", None)]):
    if isinstance(row, Exception):
        r.line(feature, "fail", f"select failed: {row}")
    else:
        r.check(feature, lambda: row[i], want)


r.check("read_expression_types", lambda: db.execute(
    "SELECT count(*), sum(f) FROM py3_items WHERE id = %s", (1,)).fetchone(), (1, 2.5))


def pipeline():
    with db.pipeline():
        db.execute("INSERT INTO py3_items (id, n) VALUES (%s, %s)", (20, 20))
        db.execute("INSERT INTO py3_items (id, n) VALUES (%s, %s)", (21, 21))
        cur = db.execute("SELECT n FROM py3_items WHERE id >= %s AND id <= %s ORDER BY id", (20, 21))
    return cur.fetchall()


r.check("pipeline", pipeline, [(20,), (21,)])


def cancel():
    import threading
    with psycopg.connect(c.conninfo(c.leader_port), autocommit=True) as long:
        threading.Timer(0.3, long.cancel).start()
        long.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
                     "SELECT count(*) FROM c")


r.sqlstate("cancel", cancel, "57014", code_of)


def prepared():
    q = "INSERT INTO py3_items (id, n, s) VALUES (%s, %s, %s)"
    for i in range(100, 200):
        db.execute(q, (i, i * 2, f"row {i}"), prepare=True)
    total = 0
    for i in range(100, 200):
        total += db.execute("SELECT n FROM py3_items WHERE id = %s", (i,), prepare=True).fetchone()[0]
    return total


r.check("prepared_repeat", prepared, sum(i * 2 for i in range(100, 200)))
r.sqlstate("error_23505_unique", lambda: db.execute("INSERT INTO py3_items (id) VALUES (%s)", (1,)), "23505", code_of)
r.sqlstate("error_42601_syntax", lambda: db.execute("INSERT INTO py3_items VALUE"), "42601", code_of)
r.sqlstate("error_0A000_nondeterministic",
           lambda: db.execute("INSERT INTO py3_items (id, n) VALUES (2, random())"), "0A000", code_of)


def on_follower():
    with psycopg.connect(c.conninfo(c.follower_port), autocommit=True) as f:
        f.execute("INSERT INTO py3_items (id) VALUES (3)")


r.sqlstate("follower_25006_leader_addr", on_follower, "25006", code_of,
           contains=f"not the leader; leader: {c.leader_addr}")


def implicit_transaction():
    with psycopg.connect(c.conninfo(c.leader_port)) as t:  # autocommit off: the default
        t.execute("INSERT INTO py3_items (id) VALUES (4)")


r.refused("implicit_transaction", implicit_transaction, "0A000", code_of,
          "autocommit=False (the default) sends BEGIN first, refused with")


def explicit_transaction():
    with db.transaction():
        db.execute("INSERT INTO py3_items (id) VALUES (5)")


r.refused("explicit_transaction", explicit_transaction, "0A000", code_of, "conn.transaction() sends BEGIN, refused with")
r.exit()
