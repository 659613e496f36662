use super::{classify, Class};

fn sqlstate(sql: &str) -> String {
    match classify(sql) {
        Ok(c) => panic!("{sql}: expected a refusal, got {c:?}"),
        Err(e) => e.sqlstate,
    }
}

#[test]
fn reads() {
    for sql in [
        "SELECT 1",
        "select * from t where a = $1",
        "VALUES (1, 2)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "EXPLAIN QUERY PLAN SELECT * FROM t",
        "PRAGMA table_info(t)",
        "pragma table_info('t');",
        "PRAGMA main.index_list(t)",
        "PRAGMA user_version",
        // Reads may use the clock: they run on one node only.
        "SELECT random(), datetime('now')",
    ] {
        assert_eq!(classify(sql).unwrap().class, Class::Read, "{sql}");
    }
}

#[test]
fn writes() {
    for sql in [
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO t VALUES ($1) ON CONFLICT(a) DO UPDATE SET b = excluded.b RETURNING a",
        "REPLACE INTO t VALUES (1)",
        "UPDATE t SET a = a + 1 WHERE b = ?",
        "DELETE FROM t",
        "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT DEFAULT 'x')",
        "CREATE INDEX i ON t (b)",
        "CREATE VIEW v AS SELECT a FROM t",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; END",
        "ALTER TABLE t ADD COLUMN c INT",
        "DROP TABLE t",
        "DROP INDEX i",
        "REINDEX",
        "INSERT INTO t VALUES (datetime('2024-01-01', '+1 day'))",
        "INSERT INTO t VALUES (strftime('%s', $1))",
        "CREATE TABLE c AS SELECT * FROM t",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) \
         INSERT INTO t SELECT x FROM c",
        "WITH old AS (SELECT a FROM t) DELETE FROM u WHERE a IN (SELECT a FROM old)",
        "WITH n AS (SELECT 1 AS a) UPDATE t SET b = 2 WHERE a IN (SELECT a FROM n)",
    ] {
        assert_eq!(classify(sql).unwrap().class, Class::Write, "{sql}");
    }
}

#[test]
fn transactions_are_refused_as_not_supported() {
    for sql in [
        "BEGIN",
        "BEGIN TRANSACTION",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT a",
        "RELEASE a",
    ] {
        assert_eq!(sqlstate(sql), "0A000", "{sql}");
    }
}

#[test]
fn non_deterministic_writes_are_refused_everywhere_they_would_run() {
    for sql in [
        "INSERT INTO t VALUES (random())",
        "INSERT INTO t VALUES (RANDOMBLOB(4))",
        "UPDATE t SET ts = CURRENT_TIMESTAMP",
        "INSERT INTO t VALUES (CURRENT_DATE)",
        "INSERT INTO t VALUES (current_time)",
        "INSERT INTO t VALUES (datetime('now'))",
        "INSERT INTO t VALUES (date())",
        "INSERT INTO t VALUES (strftime('%Y'))",
        "INSERT INTO t VALUES (strftime('%s', 'NOW'))",
        "INSERT INTO t VALUES (julianday('now', '+1 day'))",
        "INSERT INTO t VALUES (unixepoch())",
        "INSERT INTO t SELECT last_insert_rowid()",
        "CREATE TABLE t (a INT DEFAULT CURRENT_TIMESTAMP)",
        "CREATE TABLE t (a INT DEFAULT (random()))",
        "CREATE TABLE t (a INT, b INT AS (random()))",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (random()); END",
        "CREATE VIEW v AS SELECT datetime('now') AS now",
        "CREATE TABLE c AS SELECT random() AS r",
        "DELETE FROM t WHERE a < unixepoch('now')",
    ] {
        assert_eq!(sqlstate(sql), "0A000", "{sql}");
    }
}

#[test]
fn file_and_process_access_is_refused_as_insufficient_privilege() {
    for sql in [
        "ATTACH 'other.db' AS o",
        "ATTACH DATABASE '/etc/passwd' AS p",
        "DETACH o",
        "VACUUM INTO '/tmp/copy.db'",
        "INSERT INTO t VALUES (load_extension('x'))",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA synchronous = OFF",
        "PRAGMA user_version = 5",
        "PRAGMA user_version(5)",
        "PRAGMA writable_schema",
        "PRAGMA temp_store_directory",
    ] {
        assert_eq!(sqlstate(sql), "42501", "{sql}");
    }
}

#[test]
fn unparsable_input_is_a_syntax_error() {
    for sql in [
        "SELEC 1",
        "INSERT INTO",
        "SELECT 1; SELECT 2",
        "PRAGMA",
        "PRAGMA table_info t",
    ] {
        assert_eq!(sqlstate(sql), "42601", "{sql}");
    }
}

#[test]
fn other_statements_are_not_supported() {
    assert_eq!(sqlstate("VACUUM"), "0A000");
    assert_eq!(sqlstate("GRANT SELECT ON t TO bob"), "0A000");
}

#[test]
fn command_tags_follow_postgres() {
    let tag = |sql: &str, n| classify(sql).unwrap().tag(n);
    assert_eq!(tag("INSERT INTO t VALUES (1)", 1), "INSERT 0 1");
    assert_eq!(tag("REPLACE INTO t VALUES (1)", 1), "INSERT 0 1");
    assert_eq!(tag("UPDATE t SET a = 1", 3), "UPDATE 3");
    assert_eq!(tag("DELETE FROM t", 0), "DELETE 0");
    assert_eq!(tag("SELECT 1", 1), "SELECT 1");
    assert_eq!(tag("CREATE TABLE t (a INT)", 0), "CREATE TABLE");
    assert_eq!(tag("DROP TABLE t", 0), "DROP TABLE");
    assert_eq!(tag("PRAGMA table_info(t)", 2), "SELECT 2");
}
