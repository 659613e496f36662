"""psycopg2 against the cluster, in its own idiom: conn.autocommit = True,
%s parameters (interpolated client-side by psycopg2, sent as simple
queries), typed rows, executemany for a statement run many times, e.pgcode.
Then its default mode, autocommit off (BEGIN before the first statement):
commit(), rollback(), the failed state (25P02), SQL savepoints and
`with conn:` blocks; each checked by what a new connection sees afterwards."""

import psycopg2

from common import Cluster, Report

r = Report("psycopg2")
c = Cluster()


def code_of(e):
    return getattr(e, "pgcode", None)


def connect(dsn, autocommit=True):
    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    return conn


try:
    db = connect(c.conninfo(c.leader_port))
    cur = db.cursor()
    r.line("connect", "pass")
except Exception as e:  # noqa: BLE001
    r.line("connect", "fail", str(e))
    r.exit()


def run(sql, params=None):
    cur.execute(sql, params)
    return cur.rowcount


def multi_host():
    m = connect(c.multi_host())
    mc = m.cursor()
    mc.execute("SHOW transaction_read_only")
    got = (mc.fetchone()[0], str(m.info.port))
    m.close()
    return got


r.check("multi_host_leader", multi_host, ("off", c.leader_port))
r.check("create_table", lambda: run(
    "CREATE TABLE py2_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)"), -1)
r.check("insert_bound_params", lambda: run(
    "INSERT INTO py2_items (id, n, f, s, ok, z) VALUES (%s, %s, %s, %s, %s, %s)",
    (1, -42, 2.5, "héllo", True, None)), 1)
# psycopg2.Binary renders as '\\x…'::bytea: a PostgreSQL cast in the SQL text.
r.check("bytea_param", lambda: run(
    "UPDATE py2_items SET b = %s WHERE id = %s", (psycopg2.Binary(b"\x00\x01\xfe\xff"), 1)), 1)
# Reading bytea is checked on its own row, written with SQLite's blob literal,
# so that it does not depend on bytea_param.
r.check("insert_blob_literal", lambda: run("INSERT INTO py2_items (id, b) VALUES (2, X'0001feff')"), 1)
try:
    cur.execute("SELECT n, f, s, (SELECT b FROM py2_items WHERE id = 2), ok, z FROM py2_items WHERE id = %s", (1,))
    row = cur.fetchone()
except Exception as e:  # noqa: BLE001
    row = e
for i, (feature, want) in enumerate([("read_integer", -42), ("read_float", 2.5), ("read_text", "héllo"),
                                     ("read_bytea", b"\x00\x01\xfe\xff"), ("read_boolean", True),
                                     ("read_null", None)]):
    if isinstance(row, Exception):
        r.line(feature, "fail", f"select failed: {row}")
    elif feature == "read_bytea":
        r.check(feature, lambda: bytes(row[i]) if isinstance(row[i], memoryview) else row[i], want)
    else:
        r.check(feature, lambda: row[i], want)


r.check("read_expression_types", lambda: (run(
    "SELECT count(*), sum(f) FROM py2_items WHERE id = %s", (1,)), cur.fetchone())[1], (1, 2.5))


def executemany():
    cur.executemany("INSERT INTO py2_items (id, n, s) VALUES (%s, %s, %s)",
                    [(i, i * 2, f"row {i}") for i in range(100, 200)])
    total = 0
    for i in range(100, 200):
        cur.execute("SELECT n FROM py2_items WHERE id = %s", (i,))
        total += cur.fetchone()[0]
    return total


try:
    got = executemany()
    if got == sum(i * 2 for i in range(100, 200)):
        r.line("prepared_repeat", "unsupported",
               "psycopg2 has no server-side prepared statements; executemany (client-side interpolation) passes")
    else:
        r.line("prepared_repeat", "fail", f"executemany read back {got}")
except Exception as e:  # noqa: BLE001
    r.line("prepared_repeat", "fail", f"executemany: {e}")

r.sqlstate("error_23505_unique", lambda: run("INSERT INTO py2_items (id) VALUES (%s)", (1,)), "23505", code_of)
r.sqlstate("error_42601_syntax", lambda: run("INSERT INTO py2_items VALUE"), "42601", code_of)
r.sqlstate("error_0A000_nondeterministic",
           lambda: run("INSERT INTO py2_items (id, n) VALUES (2, random())"), "0A000", code_of)


def on_follower():
    f = connect(c.conninfo(c.follower_port))
    try:
        f.cursor().execute("INSERT INTO py2_items (id) VALUES (3)")
    finally:
        f.close()


r.sqlstate("follower_25006_leader_addr", on_follower, "25006", code_of,
           contains=f"not the leader; leader: {c.leader_addr}")


# Transactions in psycopg2's default mode (autocommit off: the first
# statement sends BEGIN), each checked by what a new connection then sees.
cur.execute("CREATE TABLE py2_txn (id INTEGER PRIMARY KEY, s TEXT)")


def committed_ids(lo, hi):
    """The rows a new autocommit connection sees: only committed ones."""
    f = connect(c.conninfo(c.leader_port))
    try:
        fc = f.cursor()
        fc.execute("SELECT id FROM py2_txn WHERE id >= %s AND id <= %s ORDER BY id", (lo, hi))
        return [row[0] for row in fc.fetchall()]
    finally:
        f.close()


STATUS = {psycopg2.extensions.TRANSACTION_STATUS_IDLE: "IDLE",
          psycopg2.extensions.TRANSACTION_STATUS_INTRANS: "INTRANS",
          psycopg2.extensions.TRANSACTION_STATUS_INERROR: "INERROR"}


def default_mode(body):
    t = connect(c.conninfo(c.leader_port), autocommit=False)  # the default
    try:
        return body(t, t.cursor())
    finally:
        t.close()


def txn_commit(t, tc):
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (1, "a"))
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (2, "b"))
    tc.execute("SELECT count(*) FROM py2_txn")
    inside = (STATUS.get(t.get_transaction_status()), tc.fetchone()[0], committed_ids(1, 9))
    t.commit()
    return inside, STATUS.get(t.get_transaction_status()), committed_ids(1, 9)


r.check("txn_commit", lambda: default_mode(txn_commit), (("INTRANS", 2, []), "IDLE", [1, 2]))


def txn_rollback(t, tc):
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (10, "gone"))
    t.rollback()
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (11, "kept"))
    t.commit()
    return committed_ids(10, 19)


r.check("txn_rollback", lambda: default_mode(txn_rollback), [11])


def txn_error(t, tc):
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (30, "gone"))
    try:
        tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (30, "dup"))
        first = "no error"
    except psycopg2.errors.UniqueViolation as e:
        first = e.pgcode
    status = STATUS.get(t.get_transaction_status())
    try:
        tc.execute("SELECT 1")
        then = "no error"
    except psycopg2.errors.InFailedSqlTransaction as e:
        then = e.pgcode
    t.rollback()
    tc.execute("SELECT 1")
    after = tc.fetchone()[0]
    t.rollback()
    return first, status, then, after, committed_ids(30, 39)


r.check("txn_error_25P02", lambda: default_mode(txn_error), ("23505", "INERROR", "25P02", 1, []))


def txn_savepoint(t, tc):
    # psycopg2 has no savepoint API: the SQL statements, as applications write them.
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (50, "outer"))
    tc.execute("SAVEPOINT a")
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (51, "rolled back"))
    tc.execute("ROLLBACK TO SAVEPOINT a")
    tc.execute("SAVEPOINT b")
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (52, "released"))
    tc.execute("RELEASE SAVEPOINT b")
    tc.execute("SAVEPOINT c")
    try:
        tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (50, "dup"))
    except psycopg2.errors.UniqueViolation:
        tc.execute("ROLLBACK TO SAVEPOINT c")  # the error spares the outer transaction
    tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (53, "after the error"))
    t.commit()
    return committed_ids(50, 59)


r.check("txn_savepoint", lambda: default_mode(txn_savepoint), [50, 52, 53])


def txn_block(t, tc):
    # `with conn:` commits at the end of the block, rolls back on an exception
    # (and leaves the connection open).
    with t:
        tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (40, "committed at exit"))
    try:
        with t:
            tc.execute("INSERT INTO py2_txn (id, s) VALUES (%s, %s)", (41, "rolled back"))
            raise KeyError("rolls the block back")
    except KeyError:
        pass
    return committed_ids(40, 49)


r.check("txn_context_block", lambda: default_mode(txn_block), [40])
r.exit()
