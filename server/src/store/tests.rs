//! The state machine and read pool on a real SQLite file, without Raft.

use bytes::Bytes;
use resqlite_raft::driver::StateMachine;
use resqlite_raft::{Entry, EntryKind};
use resqlite_wire::{PgType, Value};

use super::{encode_write, ApplyResult, ReadPool, SqliteStateMachine};

struct Log {
    next: u64,
}

impl Log {
    fn entry(&mut self, sql: &str, params: &[Value], command: &str) -> Entry {
        self.next += 1;
        Entry {
            term: 1,
            index: self.next,
            kind: EntryKind::Normal,
            data: encode_write(sql, params, command),
        }
    }
}

fn apply_one(
    sm: &mut SqliteStateMachine,
    log: &mut Log,
    sql: &str,
    params: &[Value],
    command: &str,
) -> ApplyResult {
    let e = log.entry(sql, params, command);
    sm.apply(&[e], &[true])
        .expect("no node-local failure")
        .pop()
        .expect("one output per entry")
}

fn setup() -> (tempfile::TempDir, SqliteStateMachine, Log) {
    let dir = tempfile::tempdir().unwrap();
    let sm = SqliteStateMachine::open(&dir.path().join("db.sqlite")).unwrap();
    (dir, sm, Log { next: 0 })
}

#[test]
fn applies_writes_with_tags_rows_affected_and_returning() {
    let (_d, mut sm, mut log) = setup();
    let created = apply_one(
        &mut sm,
        &mut log,
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, ok BOOLEAN)",
        &[],
        "CREATE TABLE",
    )
    .unwrap();
    assert_eq!(created.tag, "CREATE TABLE");
    let ins = apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6)",
        &[
            Value::Integer(1),
            Value::Text("a".into()),
            Value::Integer(1),
            Value::Integer(2),
            Value::Null,
            Value::Integer(0),
        ],
        "INSERT",
    )
    .unwrap();
    assert_eq!(ins.tag, "INSERT 0 2");
    let upd = apply_one(
        &mut sm,
        &mut log,
        "UPDATE t SET v = 'b' WHERE k >= $1 RETURNING k, ok",
        &[Value::Integer(1)],
        "UPDATE",
    )
    .unwrap();
    assert_eq!(upd.tag, "UPDATE 2");
    assert_eq!(upd.rows.len(), 2);
    assert_eq!(upd.columns[1].pg_type, PgType::Bool);
    assert_eq!(sm.applied_index(), 3);
}

#[test]
fn parameters_bind_by_number_not_by_order_of_appearance() {
    let (_d, mut sm, mut log) = setup();
    apply_one(
        &mut sm,
        &mut log,
        "CREATE TABLE t (a INT, b TEXT)",
        &[],
        "CREATE TABLE",
    )
    .unwrap();
    apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t (b, a) VALUES ($2, $1)",
        &[Value::Integer(7), Value::Text("x".into())],
        "INSERT",
    )
    .unwrap();
    let rows = apply_one(
        &mut sm,
        &mut log,
        "DELETE FROM t RETURNING a, b",
        &[],
        "DELETE",
    )
    .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(7), Value::Text("x".into())]]
    );
    let wrong = apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES ($1, $2)",
        &[Value::Integer(1)],
        "INSERT",
    )
    .unwrap_err();
    assert_eq!(wrong.sqlstate, "08P01");
}

#[test]
fn a_failing_statement_rolls_back_alone_with_its_sqlstate() {
    let (_d, mut sm, mut log) = setup();
    apply_one(
        &mut sm,
        &mut log,
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        &[],
        "CREATE TABLE",
    )
    .unwrap();
    let batch = vec![
        log.entry("INSERT INTO t VALUES (1, 'a')", &[], "INSERT"),
        log.entry("INSERT INTO t VALUES (2, 'b'), (1, 'dup')", &[], "INSERT"),
        log.entry("INSERT INTO t VALUES (3, NULL)", &[], "INSERT"),
        log.entry("INSERT INTO missing VALUES (1)", &[], "INSERT"),
        log.entry("INSERT INTO t VALUES (4, 'd')", &[], "INSERT"),
    ];
    let out = sm
        .apply(&batch, &vec![true; batch.len()])
        .expect("no node-local failure");
    assert!(out[0].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err().sqlstate, "23505");
    assert_eq!(out[2].as_ref().unwrap_err().sqlstate, "23502");
    assert_eq!(out[3].as_ref().unwrap_err().sqlstate, "42P01");
    assert!(out[4].is_ok());
    let all = apply_one(
        &mut sm,
        &mut log,
        "DELETE FROM t RETURNING k",
        &[],
        "DELETE",
    )
    .unwrap();
    // Row 2 went with its failed statement; 1 and 4 stayed.
    assert_eq!(
        all.rows,
        vec![vec![Value::Integer(1)], vec![Value::Integer(4)]]
    );
}

#[test]
fn applied_index_survives_a_restart_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut log = Log { next: 0 };
    {
        let mut sm = SqliteStateMachine::open(&path).unwrap();
        apply_one(
            &mut sm,
            &mut log,
            "CREATE TABLE t (a INT)",
            &[],
            "CREATE TABLE",
        )
        .unwrap();
        let noop = Entry {
            term: 1,
            index: 2,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        sm.apply(&[noop], &[false]).expect("no node-local failure");
    }
    let sm = SqliteStateMachine::open(&path).unwrap();
    assert_eq!(sm.applied_index(), 2);
}

#[test]
fn the_clock_and_files_are_refused_inside_sqlite_too() {
    let (_d, mut sm, mut log) = setup();
    apply_one(&mut sm, &mut log, "CREATE TABLE t (a)", &[], "CREATE TABLE").unwrap();
    // 'now' arriving as a parameter, past any parser.
    let e = apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES (datetime($1))",
        &[Value::Text("now".into())],
        "INSERT",
    )
    .unwrap_err();
    assert!(e.message.contains("'now'"), "{e:?}");
    // So is the server's time zone, arriving the same way.
    let e = apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES (datetime('2020-01-01 10:00', $1))",
        &[Value::Text("localtime".into())],
        "INSERT",
    )
    .unwrap_err();
    assert!(e.message.contains("time zone"), "{e:?}");
    // A fixed time still works, with SQLite's own answer.
    let ok = apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES (date('2024-02-28', '+1 day')) RETURNING a",
        &[],
        "INSERT",
    )
    .unwrap();
    assert_eq!(ok.rows, vec![vec![Value::Text("2024-02-29".into())]]);
    for sql in [
        "INSERT INTO t VALUES (random())",
        "INSERT INTO t VALUES (CURRENT_TIMESTAMP)",
        "ATTACH 'x.db' AS x",
        "PRAGMA synchronous = OFF",
        "BEGIN",
        "UPDATE _resqlite_meta SET value = 0",
    ] {
        let e = apply_one(&mut sm, &mut log, sql, &[], "INSERT").unwrap_err();
        assert!(
            e.sqlstate == "42501" || e.message.contains("not allowed"),
            "{sql}: {e:?}"
        );
    }
    let e = apply_one(&mut sm, &mut log, "SELECT count(*) FROM t", &[], "SELECT").unwrap();
    assert_eq!(e.rows, vec![vec![Value::Integer(1)]]);
}

#[tokio::test]
async fn reads_are_read_only_and_typed() {
    let (dir, mut sm, mut log) = setup();
    apply_one(
        &mut sm,
        &mut log,
        "CREATE TABLE t (k INTEGER, f REAL, s TEXT, b BLOB, ok BOOL)",
        &[],
        "CREATE TABLE",
    )
    .unwrap();
    apply_one(
        &mut sm,
        &mut log,
        "INSERT INTO t VALUES (1, 1.5, 'x', x'00ff', 1)",
        &[],
        "INSERT",
    )
    .unwrap();
    let pool = ReadPool::open(&dir.path().join("db.sqlite"), 2, sm.generation()).unwrap();
    let rows = pool
        .query(
            "SELECT k, f, s, b, ok, count(*) AS n FROM t WHERE k = $1".into(),
            vec![Value::Integer(1)],
        )
        .await
        .unwrap();
    let types: Vec<PgType> = rows.columns.iter().map(|c| c.pg_type).collect();
    assert_eq!(
        types,
        vec![
            PgType::Int8,
            PgType::Float8,
            PgType::Text,
            PgType::Bytea,
            PgType::Bool,
            PgType::Int8
        ]
    );
    assert_eq!(rows.rows[0][3], Value::Blob(vec![0, 255]));
    let e = pool
        .query("INSERT INTO t (k) VALUES (2)".into(), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "0A000");
    let e = pool
        .query("ATTACH 'y.db' AS y".into(), vec![])
        .await
        .unwrap_err();
    assert!(e.sqlstate == "0A000" || e.sqlstate == "42501", "{e:?}");
    let v = pool.query("SELECT version()".into(), vec![]).await.unwrap();
    assert!(matches!(&v.rows[0][0], Value::Text(s) if s.starts_with("PostgreSQL 16.0 (ReSQLite")));
    let d = pool
        .describe("SELECT s FROM t WHERE k = $2 AND s = $1".into())
        .await
        .unwrap();
    assert_eq!(d.params.len(), 2);
    assert_eq!(d.columns[0].pg_type, PgType::Text);
    // Expressions have no declared type: their shape gives one, at Describe
    // and in a simple query alike (K1 of docs/compat.md's first run).
    let sql = "SELECT count(*), sum(f), sum(k), k = 1, k || 'x', typeof(b) FROM t";
    let want = vec![
        PgType::Int8,
        PgType::Float8,
        PgType::Int8,
        PgType::Bool,
        PgType::Text,
        PgType::Text,
    ];
    let d = pool.describe(sql.into()).await.unwrap();
    let described: Vec<PgType> = d.columns.iter().map(|c| c.pg_type).collect();
    assert_eq!(described, want);
    let rows = pool.query(sql.into(), vec![]).await.unwrap();
    let typed: Vec<PgType> = rows.columns.iter().map(|c| c.pg_type).collect();
    assert_eq!(typed, want);
}
