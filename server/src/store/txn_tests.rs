//! A transaction's speculation on the leader and its one replicated
//! entry, on real SQLite files, without Raft: every node applies the entry
//! to the same results, or rolls it back alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resqlite_proto::client::transaction_step::Step;
use resqlite_raft::driver::StateMachine;
use resqlite_raft::{Entry, EntryKind};
use resqlite_wire::{SqlError, Value};

use super::log_command::encode_transaction;
use super::statement::outcome_hash;
use super::{
    encode_write, ApplyResult, ReadAt, ReadPool, RecordedRead, Speculation, SqliteStateMachine,
};
use resqlite_wire::Outcome;

/// One node: its state machine, its speculation and a read pool.
struct Node {
    _dir: tempfile::TempDir,
    sm: Arc<Mutex<SqliteStateMachine>>,
    spec: Speculation,
    reads: ReadPool,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let sm = SqliteStateMachine::open(&path).unwrap();
    let spec = Speculation::start(&path, sm.generation(), sm.write_token()).unwrap();
    let reads = ReadPool::open(&path, 1, sm.generation()).unwrap();
    Node {
        _dir: dir,
        sm: Arc::new(Mutex::new(sm)),
        spec,
        reads,
    }
}

fn entry(index: u64, data: bytes::Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data,
    }
}

/// Applies `e` on a blocking thread (the apply thread may have to wait for
/// the speculation to yield); fails the test if it takes minutes.
async fn apply(n: &Node, e: Entry) -> ApplyResult {
    let sm = n.sm.clone();
    let applying = tokio::task::spawn_blocking(move || {
        sm.lock()
            .unwrap()
            .apply(&[e], &[true])
            .expect("no node-local failure")
            .pop()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(60), applying)
        .await
        .expect("the apply thread never waits for a client")
        .unwrap()
}

async fn rows(n: &Node, sql: &str) -> Vec<Vec<Value>> {
    n.reads.query(sql.into(), Vec::new()).await.unwrap().rows
}

async fn setup(n: &Node) {
    let created = apply(
        n,
        entry(
            1,
            encode_write(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)",
                &[],
                "CREATE TABLE",
            ),
        ),
    )
    .await;
    created.unwrap();
}

async fn write(
    n: &Node,
    serial: u64,
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<Vec<Value>>, SqlError> {
    let command = if sql.starts_with("INSERT") {
        "INSERT"
    } else {
        "UPDATE"
    };
    n.spec
        .execute(serial, sql.into(), params, command, true)
        .await
        .map(|o| o.rows)
}

#[tokio::test]
async fn every_node_applies_the_transaction_to_what_the_leader_saw() {
    let leader = node();
    let follower = node();
    setup(&leader).await;
    setup(&follower).await;

    let base = leader
        .spec
        .begin(7, "1.1.7".into(), None, Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(base, 1);
    let ids = write(
        &leader,
        7,
        "INSERT INTO t (v) VALUES ($1), ($2) RETURNING id",
        vec![Value::Text("a".into()), Value::Text("b".into())],
    )
    .await
    .unwrap();
    assert_eq!(ids, vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]);
    leader
        .spec
        .savepoint_step(7, Step::Savepoint("s".into()))
        .await
        .unwrap();
    write(&leader, 7, "UPDATE t SET v = v || '!'", Vec::new())
        .await
        .unwrap();
    let e = write(&leader, 7, "INSERT INTO t (v) VALUES ('a!')", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "23505", "a failing statement is undone alone");
    leader
        .spec
        .savepoint_step(7, Step::RollbackTo("s".into()))
        .await
        .unwrap();
    let own = leader
        .spec
        .execute(
            7,
            "SELECT v FROM t ORDER BY id".into(),
            Vec::new(),
            "SELECT",
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        own.rows,
        vec![vec![Value::Text("a".into())], vec![Value::Text("b".into())]],
        "the transaction reads its own writes, minus what it rolled back"
    );
    assert!(
        rows(&leader, "SELECT * FROM t").await.is_empty(),
        "nothing is visible before the entry is applied"
    );
    let t = leader
        .spec
        .finish(7)
        .await
        .unwrap()
        .0
        .expect("the transaction wrote");
    assert_eq!(t.base_version, 1);
    let data = encode_transaction(t);
    for n in [&leader, &follower] {
        let committed = apply(n, entry(2, data.clone())).await.unwrap();
        assert_eq!(committed.tag, "COMMIT");
        assert_eq!(
            rows(n, "SELECT id, v FROM t ORDER BY id").await,
            vec![
                vec![Value::Integer(1), Value::Text("a".into())],
                vec![Value::Integer(2), Value::Text("b".into())],
            ]
        );
        assert_eq!(
            rows(n, "SELECT idx, txid FROM _resqlite_txns").await,
            vec![vec![Value::Integer(2), Value::Text("1.1.7".into())]],
            "the committed transaction's id is remembered"
        );
    }
}

#[tokio::test]
async fn a_transaction_that_ran_before_another_write_is_rolled_back_everywhere() {
    let n = node();
    setup(&n).await;
    n.spec
        .begin(1, "1.1.1".into(), None, Vec::new(), None)
        .await
        .unwrap();
    write(&n, 1, "INSERT INTO t (v) VALUES ('txn')", Vec::new())
        .await
        .unwrap();
    let t = n.spec.finish(1).await.unwrap().0.unwrap();
    // A write the transaction did not see commits first.
    apply(
        &n,
        entry(
            2,
            encode_write("INSERT INTO t (v) VALUES ('other')", &[], "INSERT"),
        ),
    )
    .await
    .unwrap();
    let e = apply(&n, entry(3, encode_transaction(t)))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "40001", "{e:?}");
    assert_eq!(
        rows(&n, "SELECT v FROM t").await,
        vec![vec![Value::Text("other".into())]],
        "nothing of the stale transaction is applied"
    );
}

#[tokio::test]
async fn a_statement_that_returns_something_else_rolls_the_transaction_back() {
    let n = node();
    setup(&n).await;
    n.spec
        .begin(1, "1.1.1".into(), None, Vec::new(), None)
        .await
        .unwrap();
    write(
        &n,
        1,
        "INSERT INTO t (v) VALUES ('one') RETURNING id",
        Vec::new(),
    )
    .await
    .unwrap();
    write(
        &n,
        1,
        "INSERT INTO t (v) VALUES ('two') RETURNING id",
        Vec::new(),
    )
    .await
    .unwrap();
    let mut t = n.spec.finish(1).await.unwrap().0.unwrap();
    // As if the leader had seen another id for the second row.
    let mut hash = t.steps[1].outcome_hash.to_vec();
    hash[0] ^= 1;
    t.steps[1].outcome_hash = hash.into();
    let e = apply(&n, entry(2, encode_transaction(t)))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "40001", "{e:?}");
    assert!(e.message.contains("statement 2"), "{}", e.message);
    assert!(rows(&n, "SELECT * FROM t").await.is_empty());
}

#[tokio::test]
async fn the_apply_thread_preempts_an_open_transaction() {
    let n = node();
    setup(&n).await;
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let held = gate.clone().write_owned().await;
    n.spec
        .begin(1, "1.1.1".into(), None, Vec::new(), Some(held))
        .await
        .unwrap();
    write(&n, 1, "INSERT INTO t (v) VALUES ('txn')", Vec::new())
        .await
        .unwrap();
    // The speculation holds SQLite's write lock; an entry arrives.
    apply(
        &n,
        entry(
            2,
            encode_write("INSERT INTO t (v) VALUES ('log')", &[], "INSERT"),
        ),
    )
    .await
    .unwrap();
    // The rolled-back transaction gave the write gate up: other writers
    // need not wait for its client's next statement.
    let free = tokio::time::timeout(Duration::from_secs(30), gate.write())
        .await
        .expect("the gate is released when the transaction is rolled back");
    drop(free);
    let e = write(&n, 1, "INSERT INTO t (v) VALUES ('more')", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "40001", "{e:?}");
    assert_eq!(
        rows(&n, "SELECT v FROM t").await,
        vec![vec![Value::Text("log".into())]]
    );
    // The next transaction starts on the new state.
    n.spec.abort(1);
    assert_eq!(
        n.spec
            .begin(2, "1.1.2".into(), None, Vec::new(), None)
            .await
            .unwrap(),
        2
    );
    n.spec.abort(2);
}

#[tokio::test]
async fn a_transaction_that_read_before_a_write_fails_when_it_starts_writing() {
    let n = node();
    setup(&n).await;
    apply(
        &n,
        entry(
            2,
            encode_write("INSERT INTO t (v) VALUES ('x')", &[], "INSERT"),
        ),
    )
    .await
    .unwrap();
    // It read at index 1; the write at index 2 came after. Reads whose
    // results were never held whole cannot be checked again.
    let unknown = ReadAt {
        index: 1,
        reads: None,
    };
    let e = n
        .spec
        .begin(1, "1.1.1".into(), Some(unknown), Vec::new(), None)
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "40001", "{e:?}");
    // A read the write changed fails it too ...
    let read = |sql: &str, rows: Vec<Vec<Value>>| RecordedRead {
        sql: sql.into(),
        params: Vec::new(),
        command: "SELECT",
        hash: outcome_hash(&Outcome {
            tag: format!("SELECT {}", rows.len()),
            columns: Vec::new(),
            rows,
        }),
    };
    let changed = ReadAt {
        index: 1,
        reads: Some(vec![read(
            "SELECT count(*) FROM t",
            vec![vec![Value::Integer(0)]],
        )]),
    };
    let e = n
        .spec
        .begin(3, "1.1.3".into(), Some(changed), Vec::new(), None)
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "40001", "{e:?}");
    // ... one it did not change still holds: the transaction goes on from
    // the index it starts writing at.
    let unchanged = ReadAt {
        index: 1,
        reads: Some(vec![read(
            "SELECT count(*) FROM t WHERE v = 'y'",
            vec![vec![Value::Integer(0)]],
        )]),
    };
    assert_eq!(
        n.spec
            .begin(4, "1.1.4".into(), Some(unchanged), Vec::new(), None)
            .await
            .unwrap(),
        2
    );
    n.spec.abort(4);
    // Read at index 2: nothing came after.
    assert_eq!(
        n.spec
            .begin(
                2,
                "1.1.2".into(),
                Some(ReadAt {
                    index: 2,
                    reads: None,
                }),
                vec!["s".into()],
                None
            )
            .await
            .unwrap(),
        2
    );
    let t = {
        write(&n, 2, "UPDATE t SET v = 'y'", Vec::new())
            .await
            .unwrap();
        n.spec.finish(2).await.unwrap().0.unwrap()
    };
    assert!(
        matches!(&t.steps[0].step, Some(Step::Savepoint(s)) if s == "s"),
        "a savepoint set while reading is replayed"
    );
    apply(&n, entry(3, encode_transaction(t))).await.unwrap();
    assert_eq!(
        rows(&n, "SELECT v FROM t").await,
        vec![vec![Value::Text("y".into())]]
    );
}

#[tokio::test]
async fn a_transaction_knows_its_id_and_every_node_stores_the_same() {
    let n = node();
    setup(&n).await;
    n.spec
        .begin(1, "4.1.1".into(), None, Vec::new(), None)
        .await
        .unwrap();
    let stored = write(
        &n,
        1,
        "INSERT INTO t (v) VALUES (resqlite_txid()) RETURNING v",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(stored, vec![vec![Value::Text("4.1.1".into())]]);
    let t = n.spec.finish(1).await.unwrap().0.unwrap();
    apply(&n, entry(2, encode_transaction(t))).await.unwrap();
    assert_eq!(
        rows(&n, "SELECT v FROM t").await,
        vec![vec![Value::Text("4.1.1".into())]]
    );
    assert_eq!(
        rows(&n, "SELECT resqlite_txid(), resqlite_txid_status('4.1.1'), resqlite_txid_status('4.1.2'), resqlite_txid_status('3.2.9')").await,
        vec![vec![Value::Null, Value::Text("committed".into()), Value::Text("in progress".into()), Value::Text("in progress".into())]]
    );
    // Once an entry of term 5 is applied, no id of an older term can
    // commit any more.
    let mut later = entry(3, encode_write("DELETE FROM t WHERE 0", &[], "DELETE"));
    later.term = 5;
    apply(&n, later).await.unwrap();
    assert_eq!(
        rows(&n, "SELECT resqlite_txid_status('4.1.1'), resqlite_txid_status('4.1.2'), resqlite_txid_status('0.0.0')").await,
        vec![vec![Value::Text("committed".into()), Value::Text("aborted".into()), Value::Null]]
    );
}

#[tokio::test]
async fn a_deferred_foreign_key_violation_fails_its_statement_not_the_node() {
    let n = node();
    let mut index = 0;
    let mut next = |sql: &str, command: &str| {
        index += 1;
        entry(index, encode_write(sql, &[], command))
    };
    for (sql, command) in [
        ("CREATE TABLE p (id INTEGER PRIMARY KEY)", "CREATE TABLE"),
        (
            "CREATE TABLE c (pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TABLE",
        ),
    ] {
        apply(&n, next(sql, command)).await.unwrap();
    }
    let e = apply(&n, next("INSERT INTO c VALUES (42)", "INSERT"))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate, "23503", "{e:?}");
    apply(&n, next("INSERT INTO p VALUES (1)", "INSERT"))
        .await
        .unwrap();
    assert_eq!(
        rows(&n, "SELECT count(*) FROM c").await,
        vec![vec![Value::Integer(0)]]
    );
}

#[tokio::test]
async fn a_transaction_that_only_changes_roles_is_replicated() {
    let n = node();
    setup(&n).await;
    n.spec
        .begin(1, "1.1.1".into(), None, vec!["s".into()], None)
        .await
        .unwrap();
    let change = resqlite_proto::client::RoleChange {
        op: resqlite_proto::client::role_change::Op::Create as i32,
        name: "app".into(),
        login: Some(true),
        ..Default::default()
    };
    let created = n.spec.change_role(1, change).await.unwrap();
    assert_eq!(created.tag, "CREATE ROLE");
    let t = n
        .spec
        .finish(1)
        .await
        .unwrap()
        .0
        .expect("a role change is replicated");
    apply(&n, entry(2, encode_transaction(t))).await.unwrap();
    let sm = n.sm.lock().unwrap();
    assert!(
        sm.roles().get("app").is_some(),
        "every node applies the role change"
    );
}
