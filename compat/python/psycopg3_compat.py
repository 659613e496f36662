"""psycopg 3 against the cluster, in its own idiom: autocommit connections,
%s parameters (sent bound, server-side), typed rows, prepare=True for a
statement run many times, e.sqlstate. Then its default mode, autocommit off
(the first statement sends BEGIN): commit(), rollback(), the failed state
(25P02), conn.transaction() blocks and nested ones (savepoints), and
SQLAlchemy Core's engine.begin() over it; each checked by what a new
connection sees afterwards."""

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



# Transactions in psycopg's default mode (autocommit off: the first statement
# sends BEGIN), each checked by what a new connection then sees.
db.execute("CREATE TABLE py3_txn (id INTEGER PRIMARY KEY, s TEXT)")


def committed_ids(lo, hi):
    """The rows a new autocommit connection sees: only committed ones."""
    with psycopg.connect(c.conninfo(c.leader_port), autocommit=True) as f:
        return [row[0] for row in f.execute(
            "SELECT id FROM py3_txn WHERE id >= %s AND id <= %s ORDER BY id", (lo, hi))]


def default_mode():
    return psycopg.connect(c.conninfo(c.leader_port))  # autocommit=False: the default


def txn_commit():
    with default_mode() as t:
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (1, "a"))
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (2, "b"))
        inside = (t.info.transaction_status.name, t.execute("SELECT count(*) FROM py3_txn").fetchone()[0],
                  committed_ids(1, 9))
        t.commit()
        return inside, t.info.transaction_status.name, committed_ids(1, 9)


# Inside: the status is INTRANS, the transaction sees its own rows, nobody
# else does; after commit() everybody does.
r.check("txn_commit", txn_commit, (("INTRANS", 2, []), "IDLE", [1, 2]))


def txn_rollback():
    with default_mode() as t:
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (10, "gone"))
        t.rollback()
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (11, "kept"))
        t.commit()
    return committed_ids(10, 19)


r.check("txn_rollback", txn_rollback, [11])


def txn_error():
    with default_mode() as t:
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (30, "gone"))
        try:
            t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (30, "dup"))
            first = "no error"
        except psycopg.errors.UniqueViolation as e:
            first = e.sqlstate
        status = t.info.transaction_status.name
        try:
            t.execute("SELECT 1")
            then = "no error"
        except psycopg.errors.InFailedSqlTransaction as e:
            then = e.sqlstate
        t.rollback()
        after = t.execute("SELECT 1").fetchone()[0]
        t.rollback()
    return first, status, then, after, committed_ids(30, 39)


r.check("txn_error_25P02", txn_error, ("23505", "INERROR", "25P02", 1, []))


def txn_savepoint():
    with default_mode() as t:
        with t.transaction():  # BEGIN … COMMIT
            t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (50, "outer"))
            with t.transaction():  # SAVEPOINT … ROLLBACK TO SAVEPOINT; RELEASE
                t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (51, "rolled back"))
                raise psycopg.Rollback()
            with t.transaction():  # SAVEPOINT … RELEASE
                t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (52, "released"))
            try:
                with t.transaction():  # an error inside a savepoint spares the outer block
                    t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (50, "dup"))
            except psycopg.errors.UniqueViolation:
                pass
            t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (53, "after the error"))
    return committed_ids(50, 59)


r.check("txn_savepoint", txn_savepoint, [50, 52, 53])


def txn_block():
    with default_mode() as t:
        with t.transaction():
            t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (40, "committed at exit"))
        try:
            with t.transaction():
                t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (41, "rolled back"))
                raise KeyError("rolls the block back")
        except KeyError:
            pass
    return committed_ids(40, 49)


r.check("txn_context_block", txn_block, [40])


def txn_rollback_prepared():
    # psycopg prepares a query on its 5th execution (prepare_threshold); on
    # rollback it then forgets its prepared statements and sends DEALLOCATE
    # ALL after the ROLLBACK.
    with default_mode() as t:
        for i in range(20, 30):
            t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (i, "gone"))
        t.rollback()
        t.execute("INSERT INTO py3_txn (id, s) VALUES (%s, %s)", (29, "kept"))
        t.commit()
    return committed_ids(20, 29)


r.check("txn_rollback_prepared", txn_rollback_prepared, [29])


# SQLAlchemy Core over psycopg 3: engine.begin() commits at the end of the
# block and rolls back on an exception. The dialect asks the server a few
# catalog questions at its first connect (pg_catalog.version(),
# current_schema(), psycopg's pg_type lookup): answered, so any failure,
# those included, is a fail.


def sqlalchemy_engine_begin():
    import sqlalchemy as sa

    url = sa.engine.URL.create("postgresql+psycopg", username=c.user, host=c.host,
                               port=int(c.leader_port), database=c.user)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO py3_txn (id, s) VALUES (:id, :s)"),
                         [{"id": 60, "s": "a"}, {"id": 61, "s": "b"}])
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO py3_txn (id, s) VALUES (62, 'rolled back')"))
                raise KeyError("rolls the block back")
        except KeyError:
            pass
    finally:
        engine.dispose()
    return committed_ids(60, 69)


try:
    got = sqlalchemy_engine_begin()
    if got == [60, 61]:
        r.line("sqlalchemy_engine_begin", "pass")
    else:
        r.line("sqlalchemy_engine_begin", "fail", f"got {got!r}, want [60, 61]")
except Exception as e:  # noqa: BLE001
    stmt = " ".join(str(getattr(e, "statement", "") or "").split())
    orig = getattr(e, "orig", None)
    why = f"{code_of(orig)} {str(orig).splitlines()[0] if orig else e}"
    r.line("sqlalchemy_engine_begin", "fail", f"{type(e).__name__}: {stmt}: {why}".replace("\n", " "))
r.exit()
