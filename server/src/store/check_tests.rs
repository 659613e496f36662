//! The database hash: equal for the same user-visible contents however
//! they were built and laid out, different for any user-visible change;
//! and the check entries applied through the state machine.

use resqlite_raft::driver::StateMachine;
use resqlite_raft::{Entry, EntryKind};
use rusqlite::Connection;

use super::*;
use crate::store::log_command::{encode_check, encode_verdict};
use crate::store::{encode_write, SqliteStateMachine};

const SCHEMA_A: &str = "
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB);
    CREATE TABLE tags (k TEXT, v INTEGER, PRIMARY KEY (k, v)) WITHOUT ROWID;
    CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT);
    CREATE TABLE plain (a, b);
    CREATE INDEX items_name ON items (name);
    CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2;
";

/// The same tables as [`SCHEMA_A`], created in another order (so they get
/// other root pages).
const SCHEMA_B: &str = "
    CREATE TABLE plain (a, b);
    CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT);
    CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2;
    CREATE TABLE tags (k TEXT, v INTEGER, PRIMARY KEY (k, v)) WITHOUT ROWID;
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB);
    CREATE INDEX items_name ON items (name);
";

fn db(schema: &str) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(schema).unwrap();
    conn
}

/// Rows for [`SCHEMA_A`], in forward or reverse order of keys.
fn fill(conn: &Connection, reverse: bool) {
    let mut ids: Vec<i64> = (1..=50).collect();
    if reverse {
        ids.reverse();
    }
    for &i in &ids {
        conn.execute(
            "INSERT INTO items VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i, format!("item {i}"), i as f64 / 4.0, vec![i as u8; 3]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tags VALUES (?1, ?2)",
            rusqlite::params![format!("k{}", i % 7), i],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO seq (id, note) VALUES (?1, 'n')",
            rusqlite::params![i],
        )
        .unwrap();
    }
    // Rowids of a table without INTEGER PRIMARY KEY follow insertion order,
    // which replication keeps the same on every node.
    for i in 1..=20i64 {
        conn.execute(
            "INSERT INTO plain VALUES (?1, ?2)",
            rusqlite::params![i, "x"],
        )
        .unwrap();
    }
}

fn hash(conn: &Connection) -> DbHash {
    database_hash(conn).unwrap()
}

fn root_pages(conn: &Connection) -> Vec<(String, i64)> {
    let mut stmt = conn
        .prepare("SELECT name, rootpage FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn the_same_contents_hash_alike_whatever_the_order_and_page_layout() {
    let a = db(SCHEMA_A);
    fill(&a, false);
    let b = db(SCHEMA_B);
    fill(&b, true);
    assert_ne!(
        root_pages(&a),
        root_pages(&b),
        "the test needs other root pages"
    );
    assert_eq!(hash(&a), hash(&b));

    // Free pages and a VACUUM move rows to other pages, not to other keys.
    for conn in [&a, &b] {
        conn.execute_batch(
            "INSERT INTO items (id, name) SELECT id + 1000, 'tmp' FROM items;
             DELETE FROM items WHERE id > 1000;",
        )
        .unwrap();
    }
    b.execute_batch("VACUUM").unwrap();
    assert_eq!(hash(&a), hash(&b));
}

#[test]
fn any_user_visible_change_changes_the_hash() {
    let base = || {
        let conn = db(SCHEMA_A);
        fill(&conn, false);
        conn
    };
    let reference = hash(&base());
    let changes = [
        ("one value", "UPDATE items SET name = 'other' WHERE id = 7"),
        ("a value's type", "UPDATE plain SET a = 5.0 WHERE a = 5"),
        (
            "text to blob",
            "UPDATE items SET name = CAST(name AS BLOB) WHERE id = 3",
        ),
        (
            "a real's bits",
            "UPDATE items SET price = -0.0 WHERE price = 0.25",
        ),
        ("one row more", "INSERT INTO items (id) VALUES (999)"),
        ("one row less", "DELETE FROM tags WHERE v = 9"),
        ("a rowid", "UPDATE plain SET rowid = 100 WHERE rowid = 3"),
        (
            "a without-rowid key",
            "UPDATE tags SET v = 1000 WHERE v = 10",
        ),
        (
            "the next AUTOINCREMENT id",
            "UPDATE sqlite_sequence SET seq = 500",
        ),
        ("a new index", "CREATE INDEX plain_a ON plain (a)"),
        ("a new column", "ALTER TABLE plain ADD COLUMN c"),
        ("a dropped view", "DROP VIEW cheap"),
        (
            "a new trigger",
            "CREATE TRIGGER t AFTER INSERT ON plain BEGIN SELECT 1; END",
        ),
        ("an empty new table", "CREATE TABLE empty (x)"),
    ];
    for (what, sql) in changes {
        let conn = base();
        conn.execute_batch(sql).unwrap();
        assert_ne!(hash(&conn), reference, "{what} ({sql}) left the hash alike");
    }
}

#[test]
fn value_boundaries_are_unambiguous() {
    let one = db("CREATE TABLE t (a, b); INSERT INTO t VALUES ('ab', 'c');");
    let two = db("CREATE TABLE t (a, b); INSERT INTO t VALUES ('a', 'bc');");
    assert_ne!(hash(&one), hash(&two));
    let int = db("CREATE TABLE t (a); INSERT INTO t VALUES (1);");
    let real = db("CREATE TABLE t (a); INSERT INTO t VALUES (1.0);");
    assert_ne!(hash(&int), hash(&real));
}

#[test]
fn internal_tables_and_planner_statistics_are_left_out() {
    let plain = db(SCHEMA_A);
    fill(&plain, false);
    let reference = hash(&plain);
    plain
        .execute_batch(
            "CREATE TABLE _resqlite_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO _resqlite_meta VALUES ('applied', 17);",
        )
        .unwrap();
    assert_eq!(hash(&plain), reference, "a new internal table");
    plain
        .execute_batch("UPDATE _resqlite_meta SET value = 18")
        .unwrap();
    assert_eq!(hash(&plain), reference, "the applied index");
    plain.execute_batch("ANALYZE").unwrap();
    assert_eq!(hash(&plain), reference, "sqlite_stat1");
}

#[test]
fn a_table_whose_columns_take_every_rowid_name_still_hashes() {
    let a = db("CREATE TABLE t (rowid, _rowid_, oid); INSERT INTO t VALUES (1, 2, 3), (4, 5, 6);");
    let b = db("CREATE TABLE t (rowid, _rowid_, oid); INSERT INTO t VALUES (4, 5, 6), (1, 2, 3);");
    assert_eq!(hash(&a), hash(&b));
    a.execute_batch("UPDATE t SET oid = 7 WHERE oid = 6")
        .unwrap();
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn a_verdict_marks_a_differing_node_diverged_for_good() {
    let log = CheckLog::default();
    let mine = DbHash([1; 32]);
    let theirs = DbHash([2; 32]);
    assert_eq!(log.status(), CheckStatus::default());
    log.record(10, mine);
    assert_eq!(log.verdict(10, mine), Verdict::Agrees);
    assert_eq!(log.verdict(9, mine), Verdict::Unknown);
    assert_eq!(log.status().diverged, None);
    assert_eq!(log.verdict(10, theirs), Verdict::Differs { own: mine });
    let why = log.status().diverged.expect("diverged");
    assert!(
        why.contains("index 10") && why.contains(&theirs.to_string()),
        "{why}"
    );
    log.record(20, theirs);
    assert_eq!(log.verdict(20, theirs), Verdict::Agrees);
    assert_eq!(log.status().diverged, Some(why), "stays diverged");
    assert_eq!(log.status().last, Some((20, theirs)));
}

#[test]
fn only_the_newest_checks_are_remembered() {
    let log = CheckLog::default();
    for i in 1..=40 {
        log.record(i, DbHash([i as u8; 32]));
    }
    assert_eq!(log.verdict(40, DbHash([40; 32])), Verdict::Agrees);
    assert_eq!(log.verdict(1, DbHash([1; 32])), Verdict::Unknown);
}

fn entry(index: u64, data: bytes::Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data,
    }
}

#[test]
fn check_entries_hash_the_state_at_their_index_through_the_apply_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut sm = SqliteStateMachine::open(&path).unwrap();
    let checks = sm.checks();
    let entries = [
        entry(
            1,
            encode_write(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                &[],
                "CREATE TABLE",
            ),
        ),
        entry(
            2,
            encode_write("INSERT INTO t VALUES (1, 'a')", &[], "INSERT"),
        ),
        entry(3, encode_check()),
        // In the same batch as the check: not part of the hash at 3.
        entry(
            4,
            encode_write("INSERT INTO t VALUES (2, 'b')", &[], "INSERT"),
        ),
    ];
    let out = sm.apply(&entries, &[true; 4]).unwrap();
    let (index, at_3) = from_outcome(out[2].as_ref().unwrap()).expect("a check outcome");
    assert_eq!(index, 3);
    assert_eq!(checks.status().last, Some((3, at_3)));

    let expected =
        db("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');");
    assert_eq!(at_3, hash(&expected), "the hash is of the state at index 3");

    // The leader's verdict: the same hash agrees, another marks divergence.
    sm.apply(&[entry(5, encode_verdict(3, &at_3))], &[true])
        .unwrap();
    assert_eq!(checks.status().diverged, None);
    sm.apply(&[entry(6, encode_verdict(3, &DbHash([0; 32])))], &[true])
        .unwrap();
    assert!(checks.status().diverged.is_some());

    // The file, read by another connection after the fact, holds rows 1
    // and 2 and hashes accordingly; the apply path left the authorizer
    // switch off (a user's write is still refused where it should be).
    let reader = Connection::open(&path).unwrap();
    expected
        .execute_batch("INSERT INTO t VALUES (2, 'b')")
        .unwrap();
    assert_eq!(hash(&reader), hash(&expected));
    let refused = sm
        .apply(
            &[entry(
                7,
                encode_write(
                    "INSERT INTO t SELECT 3, value FROM _resqlite_meta",
                    &[],
                    "INSERT",
                ),
            )],
            &[true],
        )
        .unwrap();
    assert!(refused[0].is_err(), "{refused:?}");
}
