//! The apply connection's guards, bypassing the classifier: every write
//! that would read the clock, the time zone, a denied function or table,
//! or go over a budget fails with the same SQLSTATE whatever its spelling,
//! and changes nothing. Each group names the mechanism it proves; removing
//! that mechanism makes the group fail.

use resqlite_raft::driver::StateMachine;
use resqlite_raft::{Entry, EntryKind};
use resqlite_wire::{SqlError, Value};

use super::{encode_write, ReadPool, SqliteStateMachine};

struct Db {
    _dir: tempfile::TempDir,
    sm: SqliteStateMachine,
    next: u64,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sm = SqliteStateMachine::open(&dir.path().join("db.sqlite")).expect("open");
        let mut db = Db {
            _dir: dir,
            sm,
            next: 0,
        };
        db.ok("CREATE TABLE t (a)");
        db.ok("CREATE TABLE r (a TEXT)");
        db
    }

    fn entry(&mut self, sql: &str, params: &[Value]) -> Entry {
        self.next += 1;
        Entry {
            term: 1,
            index: self.next,
            kind: EntryKind::Normal,
            data: encode_write(sql, params, "INSERT"),
        }
    }

    /// Applies one write as the node whose client waits (`wanted`) or as
    /// any other node.
    fn apply(
        &mut self,
        sql: &str,
        params: &[Value],
        wanted: bool,
    ) -> Result<resqlite_wire::Outcome, SqlError> {
        let e = self.entry(sql, params);
        self.sm
            .apply(&[e], &[wanted])
            .expect("no node-local failure")
            .pop()
            .expect("one output per entry")
    }

    fn ok(&mut self, sql: &str) -> resqlite_wire::Outcome {
        self.apply(sql, &[], true)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    fn count(&mut self, table: &str) -> i64 {
        let out = self.ok(&format!("SELECT count(*) FROM {table}"));
        match out.rows[0][0] {
            Value::Integer(n) => n,
            ref other => panic!("count: {other:?}"),
        }
    }

    /// `sql` fails with `sqlstate` whether or not a client waits, and
    /// leaves `t` and `r` as they were.
    fn refused(&mut self, sql: &str, params: &[Value], sqlstate: &str) -> SqlError {
        let before = (self.count("t"), self.count("r"));
        let mut errors = Vec::new();
        for wanted in [true, false] {
            match self.apply(sql, params, wanted) {
                Err(e) => errors.push(e),
                Ok(out) => panic!("{sql} (wanted: {wanted}) was applied: {out:?}"),
            }
        }
        assert_eq!(errors[0], errors[1], "{sql}: leader and follower differ");
        assert_eq!(errors[0].sqlstate, sqlstate, "{sql}: {:?}", errors[0]);
        assert_eq!(
            (self.count("t"), self.count("r")),
            before,
            "{sql} changed something"
        );
        errors.remove(0)
    }
}

/// Mechanism: the clock VFS. Every spelling, argument type and place
/// (DEFAULT, trigger, generated column, CTAS) that reaches the clock.
#[test]
fn every_way_of_reading_the_clock_is_refused() {
    let mut db = Db::new();
    db.ok("CREATE TABLE d (a, b TEXT DEFAULT (datetime('subsec')))");
    db.ok("CREATE TABLE g (a, b TEXT GENERATED ALWAYS AS (datetime(a)) STORED)");
    db.ok("CREATE TABLE log (a)");
    db.ok(
        "CREATE TRIGGER tr AFTER INSERT ON log BEGIN INSERT INTO r VALUES (julianday('now')); END",
    );
    let now = |s: &str| Value::Text(s.into());
    for (sql, params) in [
        ("INSERT INTO t VALUES (datetime('subsec'))", vec![]),
        ("INSERT INTO t VALUES (julianday('subsecond'))", vec![]),
        ("INSERT INTO t VALUES (unixepoch('subsec'))", vec![]),
        (
            "INSERT INTO t VALUES (timediff('2000-01-01', 'subsec'))",
            vec![],
        ),
        (
            "INSERT INTO t VALUES (strftime('%Y-%m-%d %H:%M:%f', X'6E6F77'))",
            vec![],
        ),
        ("INSERT INTO t VALUES (date(CAST('now' AS BLOB)))", vec![]),
        ("INSERT INTO t VALUES (date('now' || char(0)))", vec![]),
        ("INSERT INTO t VALUES (date($1))", vec![now("now\0")]),
        ("INSERT INTO t VALUES (date($1))", vec![now("NoW")]),
        ("INSERT INTO t VALUES (CURRENT_TIMESTAMP)", vec![]),
        ("INSERT INTO t VALUES (current_date)", vec![]),
        ("INSERT INTO t VALUES (time())", vec![]),
        ("INSERT INTO t SELECT 1 WHERE date() > '2000-01-01'", vec![]),
        ("INSERT INTO d (a) VALUES (1)", vec![]),
        ("INSERT INTO log VALUES (1)", vec![]),
        ("CREATE TABLE c AS SELECT datetime('now') AS x", vec![]),
    ] {
        let e = db.refused(sql, &params, "0A000");
        assert!(e.message.contains("clock"), "{sql}: {e:?}");
    }
    // SQLite refuses the clock in a generated column itself, before any
    // clock read: the same SQLSTATE.
    db.refused("INSERT INTO g (a) VALUES ('subsec')", &[], "0A000");
    // A fixed time still gets SQLite's own answer.
    let out = db.ok("INSERT INTO t VALUES (date('2024-02-28', '+1 day')) RETURNING a");
    assert_eq!(out.rows, vec![vec![Value::Text("2024-02-29".into())]]);
}

/// Mechanism: the time-zone hook. 'localtime' and 'utc' however spelled.
#[test]
fn every_way_of_reading_the_time_zone_is_refused() {
    let mut db = Db::new();
    for (sql, params) in [
        (
            "INSERT INTO t VALUES (datetime(0, X'6C6F63616C74696D65'))",
            vec![],
        ),
        (
            "INSERT INTO t VALUES (datetime(0, 'localtime' || char(0)))",
            vec![],
        ),
        (
            "INSERT INTO t VALUES (datetime(0, CAST('utc' AS BLOB)))",
            vec![],
        ),
        (
            "INSERT INTO t VALUES (datetime(0, $1))",
            vec![Value::Text("LocalTime".into())],
        ),
        ("INSERT INTO t VALUES (strftime('%H', 0, 'utc'))", vec![]),
    ] {
        let e = db.refused(sql, &params, "0A000");
        assert!(e.message.contains("time zone"), "{sql}: {e:?}");
    }
}

/// Mechanism: the authorizer and the overrides, reading the deny table.
#[test]
fn denied_functions_and_tables_are_refused_by_name() {
    let mut db = Db::new();
    for sql in [
        "INSERT INTO t VALUES (random())",
        "INSERT INTO t VALUES (RANDOMBLOB(4))",
        "INSERT INTO t VALUES (\"random\"())",
        "INSERT INTO t VALUES (changes())",
        "INSERT INTO t VALUES (total_changes())",
        "INSERT INTO t VALUES (last_insert_rowid())",
        "INSERT INTO t VALUES (sqlite_version())",
        "CREATE TABLE dflt (a, b DEFAULT (random()))",
    ] {
        db.refused(sql, &[], "0A000");
    }
    db.refused("INSERT INTO t VALUES (load_extension('x'))", &[], "42501");
    db.refused(
        "INSERT INTO t VALUES (fts3_tokenizer('simple'))",
        &[],
        "42501",
    );
    for sql in [
        "INSERT INTO t SELECT value FROM _resqlite_meta",
        "INSERT INTO t SELECT value FROM main._RESQLITE_META",
        "INSERT INTO t SELECT value FROM \"_resqlite_meta\"",
        "CREATE TABLE c AS SELECT * FROM dbstat",
        "INSERT INTO t SELECT pageno FROM dbstat",
        "INSERT INTO t SELECT * FROM pragma_page_count()",
        "INSERT INTO t SELECT file FROM pragma_database_list",
    ] {
        db.refused(sql, &[], "0A000");
    }
    // Schema PRAGMA functions describe replicated state: allowed.
    db.ok("INSERT INTO t SELECT name FROM pragma_table_info('r')");
    // The temp catalog of a write connection is always empty (no TEMP
    // object can be made there), so reading it is the same everywhere;
    // ALTER TABLE … RENAME, which reads and rewrites it, works.
    let rows = db.count("t");
    db.ok("INSERT INTO t SELECT name FROM sqlite_temp_master");
    assert_eq!(db.count("t"), rows);
    db.ok("CREATE TABLE renamed (a, b)");
    db.ok("ALTER TABLE renamed RENAME COLUMN b TO c");
    db.ok("ALTER TABLE renamed RENAME TO renamed2");
    db.ok("INSERT INTO renamed2 (a, c) VALUES (1, 2)");
    // A table with an AUTOINCREMENT counter too: SQLite renames the
    // counter, which a write may do, though it may not set it.
    db.ok("CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, v)");
    db.ok("INSERT INTO counted (v) VALUES ('a')");
    db.ok("ALTER TABLE counted RENAME TO counted2");
    db.refused(
        "UPDATE sqlite_sequence SET seq = 9223372036854775806",
        &[],
        "0A000",
    );
    db.ok("INSERT INTO counted2 (v) VALUES ('b')");
    let out = db.ok("SELECT max(id) FROM counted2");
    assert_eq!(out.rows[0][0], Value::Integer(2));
}

/// Mechanism: the authorizer, at prepare time: a denied call is refused
/// even where it would never run.
#[test]
fn the_authorizer_refuses_a_denied_call_that_would_never_run() {
    let mut db = Db::new();
    for sql in [
        "INSERT INTO t SELECT random() WHERE 0",
        "INSERT INTO t SELECT changes() FROM r WHERE 0",
    ] {
        db.refused(sql, &[], "0A000");
    }
}

/// Mechanism: the authorizer, asked again when an insert uses a DEFAULT
/// written by an older version (today it refuses such a table at CREATE).
#[test]
fn a_denied_function_in_an_old_default_is_refused_when_it_runs() {
    let mut db = Db::new();
    db.sm.unguarded_for_tests(
        "CREATE TABLE old (a, b DEFAULT (random()), c DEFAULT (last_insert_rowid()))",
    );
    db.refused("INSERT INTO old (a, c) VALUES (1, 0)", &[], "0A000");
    db.refused("INSERT INTO old (a, b) VALUES (1, 0)", &[], "0A000");
    db.ok("INSERT INTO old (a, b, c) VALUES (1, 2, 3)");
}

/// Mechanism: the authorizer's TEMP rules. TEMP objects live in one node's
/// connection only.
#[test]
fn temp_objects_are_refused() {
    let mut db = Db::new();
    for sql in [
        "CREATE TEMP TABLE tmp (a)",
        "CREATE TEMPORARY TABLE tmp AS SELECT 1",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER tt AFTER INSERT ON t BEGIN SELECT 1; END",
        "CREATE TABLE temp.tmp (a)",
    ] {
        db.refused(sql, &[], "0A000");
    }
}

/// Mechanism: the update hook reserving the largest rowid.
#[test]
fn the_largest_rowid_is_reserved() {
    let mut db = Db::new();
    db.refused(
        "INSERT INTO r (rowid, a) VALUES (9223372036854775807, 'max')",
        &[],
        "22003",
    );
    db.ok("INSERT INTO r (rowid, a) VALUES (9223372036854775805, 'almost')");
    db.ok("INSERT INTO r (a) VALUES ('next')");
    // The next automatic rowid would be the largest: refused, not random.
    db.refused("INSERT INTO r (a) VALUES ('x1')", &[], "22003");
    db.refused(
        "UPDATE r SET rowid = 9223372036854775807 WHERE a = 'almost'",
        &[],
        "22003",
    );
}

/// Mechanism: the VM-step budget (progress handler).
#[test]
fn a_write_that_never_ends_is_stopped_by_its_budget() {
    let mut db = Db::new();
    let e = db.refused(
        "INSERT INTO t SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) \
         SELECT count(*) AS x FROM c)",
        &[],
        "54000",
    );
    assert!(e.message.contains("VM steps"), "{e:?}");
    // The next write applies as usual.
    db.ok("INSERT INTO t VALUES (1)");
}

/// Mechanisms: SQLite's length limit and the result-bytes budget, counted
/// alike whether the rows are built (leader) or not (followers).
#[test]
fn huge_values_and_huge_returning_rows_are_refused() {
    let mut db = Db::new();
    db.refused(
        "INSERT INTO t VALUES (printf('%.*c', 50000000, 'x'))",
        &[],
        "54000",
    );
    db.refused("INSERT INTO t VALUES (zeroblob(200000000))", &[], "54000");
    for i in 0..20 {
        db.ok(&format!("INSERT INTO r VALUES ('{i}')"));
    }
    let e = db.refused(
        "UPDATE r SET a = a RETURNING printf('%.*c', 10000000, 'x')",
        &[],
        "54000",
    );
    assert!(e.message.contains("RETURNING"), "{e:?}");
}

/// A follower (nobody waits) builds no rows but reports the same tag.
#[test]
fn followers_do_not_build_returning_rows() {
    let mut db = Db::new();
    let follower = db
        .apply("INSERT INTO t VALUES (1), (2) RETURNING a", &[], false)
        .expect("applied");
    assert!(follower.rows.is_empty());
    assert_eq!(follower.tag, "INSERT 0 2");
    let leader = db
        .apply("INSERT INTO t VALUES (3) RETURNING a", &[], true)
        .expect("applied");
    assert_eq!(leader.rows, vec![vec![Value::Integer(3)]]);
}

/// fts3_tokenizer is refused in reads too (it leaks process addresses).
#[tokio::test]
async fn fts3_tokenizer_is_refused_in_reads() {
    let db = Db::new();
    let path = db._dir.path().join("db.sqlite");
    let pool = ReadPool::open(&path, 1, db.sm.generation()).expect("pool");
    for sql in [
        "SELECT fts3_tokenizer('simple')",
        "SELECT hex(FTS3_TOKENIZER('porter'))",
    ] {
        let e = pool.query(sql.into(), vec![]).await.unwrap_err();
        assert!(e.sqlstate == "42501", "{sql}: {e:?}");
    }
    let ok = pool.query("SELECT random() <> 0.5".into(), vec![]).await;
    assert!(ok.is_ok(), "random() stays allowed in reads: {ok:?}");
}

/// Mechanism: a node-local failure halts the state machine; it never moves
/// its applied index past the entry, and a reopened one retries it.
#[test]
fn a_node_local_failure_halts_without_skipping() {
    let mut db = Db::new();
    db.ok("INSERT INTO t VALUES (1)");
    let applied = db.sm.applied_index();
    // Simulate a full disk: the file may not grow beyond its pages now.
    db.sm.limit_pages_for_tests();
    let big = db.entry("INSERT INTO t VALUES (zeroblob(1000000))", &[]);
    let after = db.entry("INSERT INTO t VALUES (2)", &[]);
    let halt = db
        .sm
        .apply(&[big.clone(), after.clone()], &[true, true])
        .expect_err("a full disk halts");
    assert!(halt.reason.contains("full"), "{halt:?}");
    assert_eq!(db.sm.applied_index(), applied);
    // Halted: nothing more is applied, not even a harmless entry.
    let later = db.entry("INSERT INTO t VALUES (3)", &[]);
    assert!(db.sm.apply(&[later], &[true]).is_err());
    // Reopened with room again, it resumes at the same entry.
    let path = db._dir.path().join("db.sqlite");
    let mut reopened = SqliteStateMachine::open(&path).expect("reopen");
    assert_eq!(reopened.applied_index(), applied);
    let out = reopened
        .apply(&[big, after], &[true, true])
        .expect("room again");
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
}

/// Mechanism: replaying a batch whose transaction SQLite rolled back by
/// itself. `INSERT OR ROLLBACK`, `RAISE(ROLLBACK, …)` and a write stopped
/// by its budget each take the whole transaction with them; the entries
/// before them in the batch must stay, and the node must not halt.
#[test]
fn a_statement_that_rolls_back_the_batch_fails_alone() {
    let mut db = Db::new();
    db.ok("CREATE TABLE u (k INTEGER PRIMARY KEY)");
    db.ok("CREATE TRIGGER no_neg BEFORE INSERT ON u WHEN NEW.k < 0 \
         BEGIN SELECT RAISE(ROLLBACK, 'negative keys are refused'); END");
    let forever = "INSERT INTO u SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                   SELECT x+1 FROM c) SELECT count(*) AS x FROM c)";
    let sqls = [
        "INSERT INTO u VALUES (1)",
        "INSERT OR ROLLBACK INTO u VALUES (1)",
        "INSERT INTO u VALUES (2)",
        "INSERT INTO u VALUES (-1)",
        "INSERT INTO u VALUES (3)",
        forever,
        "INSERT INTO u VALUES (4)",
    ];
    let batch: Vec<Entry> = sqls.iter().map(|s| db.entry(s, &[])).collect();
    let last = batch.last().map(|e| e.index);
    let out = db
        .sm
        .apply(&batch, &vec![true; batch.len()])
        .expect("statement errors never halt the node");
    let states: Vec<Option<String>> = out
        .iter()
        .map(|o| o.as_ref().err().map(|e| e.sqlstate.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            None,
            Some("23505".into()),
            None,
            Some("23000".into()),
            None,
            Some("54000".into()),
            None
        ],
        "{out:?}"
    );
    assert_eq!(db.count("u"), 4);
    assert_eq!(Some(db.sm.applied_index()), last.map(|i| i + 1));
}

/// Statements whose error SQLite reports with a code that usually means a
/// node-local failure (full, read-only) must fail alone, never halt every
/// node at once — which would wedge the cluster for good.
#[test]
fn deterministic_errors_never_halt_the_node() {
    let mut db = Db::new();
    db.ok("CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, a)");
    db.ok("INSERT INTO seq (a) VALUES (1)");
    for sql in [
        "UPDATE sqlite_sequence SET seq = 9223372036854775807",
        "INSERT INTO sqlite_sequence VALUES ('seq', 9223372036854775807)",
        "DELETE FROM sqlite_sequence",
        "INSERT INTO pragma_table_info VALUES (1)",
        "INSERT INTO seq (id, a) VALUES (9223372036854775807, 1)",
    ] {
        let e = db.apply(sql, &[], true);
        assert!(e.is_err(), "{sql}: {e:?}");
    }
    db.ok("INSERT INTO seq (a) VALUES (2)");
    let seq = db.ok("SELECT seq FROM sqlite_sequence WHERE name = 'seq'");
    assert_eq!(seq.rows, vec![vec![Value::Integer(2)]]);
}

/// A parameter number far beyond what the protocol can bind is refused
/// before anything is sized by it (it used to abort the process while
/// allocating a type for each of 99,999,999,999 parameters).
#[tokio::test]
async fn a_huge_parameter_number_is_refused_not_allocated() {
    let db = Db::new();
    let path = db._dir.path().join("db.sqlite");
    let pool = ReadPool::open(&path, 1, db.sm.generation()).expect("pool");
    for sql in [
        "SELECT $99999999999",
        "SELECT $65536",
        "SELECT $1, $18446744073709551615",
    ] {
        let e = pool.describe(sql.into()).await.expect_err(sql);
        assert_eq!(e.sqlstate, "42P02", "{sql}: {e:?}");
    }
    let ok = pool.describe("SELECT $65535".into()).await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// Mechanism: the semantics stamp (`store::semantics`). An entry written
/// by an older version is applied as that version did (our PostgreSQL
/// functions and the temp-catalog rename did not exist: refused at
/// prepare, nothing applied); one from a newer version halts the node.
#[test]
fn entries_are_applied_with_the_semantics_they_were_written_for() {
    use prost::Message;
    let mut db = Db::new();
    let stamped = |db: &mut Db, sql: &str, semantics: u32| {
        db.next += 1;
        let stmt = resqlite_proto::client::WriteStatement {
            sql: sql.to_string(),
            params: Vec::new(),
            command: "INSERT".to_string(),
            semantics,
        };
        let entry = Entry {
            term: 1,
            index: db.next,
            kind: EntryKind::Normal,
            data: stmt.encode_to_vec().into(),
        };
        db.sm.apply(&[entry], &[true])
    };
    let old = stamped(&mut db, "INSERT INTO r VALUES (left('ab', 1))", 0)
        .expect("applied")
        .pop()
        .unwrap()
        .unwrap_err();
    assert_eq!(old.sqlstate, "42883", "{old:?}");
    assert_eq!(db.count("r"), 0);
    db.ok("CREATE TABLE old_name (a)");
    let old = stamped(&mut db, "ALTER TABLE old_name RENAME TO new_name", 0)
        .expect("applied")
        .pop()
        .unwrap();
    assert!(old.is_err(), "{old:?}");
    let now = super::semantics::CURRENT;
    stamped(&mut db, "INSERT INTO r VALUES (left('ab', 1))", now)
        .expect("applied")
        .pop()
        .unwrap()
        .expect("current semantics have left()");
    assert_eq!(db.count("r"), 1);
    let halt = stamped(&mut db, "INSERT INTO r VALUES ('future')", now + 1).unwrap_err();
    assert!(halt.reason.contains("upgrade this node"), "{}", halt.reason);
}
