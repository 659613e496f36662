//! Transactions on a real 3-node cluster, driven with tokio-postgres:
//! BEGIN … COMMIT as one atomic, replicated, serializable unit.

use std::time::Duration;

use resqlite_tests::sql_cluster::SqlCluster;
use tokio_postgres::Client;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(15);

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// The rows of `sql` on the leader, once every node holds the same.
async fn rows_everywhere(c: &SqlCluster, sql: &str) -> Vec<Vec<String>> {
    c.converged_rows(sql, CONVERGE).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sees_its_own_writes_and_commits_all_or_nothing() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let mut a = c.connect(leader).await.unwrap();
    let b = c.connect(leader).await.unwrap();
    a.batch_execute(
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, owner TEXT NOT NULL UNIQUE, balance INTEGER NOT NULL)",
    )
    .await
    .unwrap();

    // Own writes at once: RETURNING ids and real row counts; nobody else
    // sees them before COMMIT.
    let tx = a.transaction().await.unwrap();
    let id: i64 = tx
        .query_one(
            "INSERT INTO acct (owner, balance) VALUES ($1, $2) RETURNING id",
            &[&"ann", &100i64],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 1);
    tx.execute(
        "INSERT INTO acct (owner, balance) VALUES ('bob', 50), ('cy', 0)",
        &[],
    )
    .await
    .unwrap();
    let moved = tx
        .execute(
            "UPDATE acct SET balance = balance - 10 WHERE owner <> 'cy'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 2, "row counts are real inside a transaction");
    let total: i64 = tx
        .query_one("SELECT sum(balance) FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 130, "the transaction reads its own writes");
    assert_eq!(
        count(&b, "SELECT count(*) FROM acct").await,
        0,
        "uncommitted writes are invisible to others"
    );
    tx.commit().await.unwrap();
    assert_eq!(count(&b, "SELECT count(*) FROM acct").await, 3);
    let want = vec![
        vec!["1".to_string(), "ann".into(), "90".into()],
        vec!["2".to_string(), "bob".into(), "40".into()],
        vec!["3".to_string(), "cy".into(), "0".into()],
    ];
    assert_eq!(
        rows_everywhere(&c, "SELECT id, owner, balance FROM acct ORDER BY id").await,
        want
    );

    // ROLLBACK leaves nothing, on any node.
    let tx = a.transaction().await.unwrap();
    tx.execute("DELETE FROM acct", &[]).await.unwrap();
    assert_eq!(count_in(&tx, "SELECT count(*) FROM acct").await, 0);
    tx.rollback().await.unwrap();
    assert_eq!(
        rows_everywhere(&c, "SELECT id, owner, balance FROM acct ORDER BY id").await,
        want
    );

    // An error puts the block in the failed state; ROLLBACK TO recovers it;
    // the savepoint's work is undone and the rest commits.
    a.batch_execute("BEGIN; UPDATE acct SET balance = balance + 1 WHERE id = 1; SAVEPOINT s1")
        .await
        .unwrap();
    a.batch_execute("UPDATE acct SET balance = balance + 1000 WHERE id = 2")
        .await
        .unwrap();
    let e = a
        .batch_execute("INSERT INTO acct (owner, balance) VALUES ('ann', 1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = a.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    a.batch_execute(
        "ROLLBACK TO SAVEPOINT s1; UPDATE acct SET balance = balance + 2 WHERE id = 3; COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(
        rows_everywhere(&c, "SELECT id, balance FROM acct ORDER BY id").await,
        vec![
            vec!["1".to_string(), "91".into()],
            vec!["2".to_string(), "40".into()],
            vec!["3".to_string(), "2".into()],
        ]
    );

    // A multi-statement query is one implicit transaction: the failure of
    // its last statement undoes the first.
    let e = a
        .batch_execute(
            "UPDATE acct SET balance = 0; INSERT INTO acct (owner, balance) VALUES ('bob', 0)",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    assert_eq!(count(&b, "SELECT sum(balance) FROM acct").await, 133);

    // What a single write may not do, a transaction may not either; and a
    // read-only transaction refuses writes.
    a.batch_execute("BEGIN").await.unwrap();
    let e = a
        .batch_execute("INSERT INTO acct (owner, balance) VALUES (hex(randomblob(4)), 1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    a.batch_execute("BEGIN READ ONLY").await.unwrap();
    let e = a.batch_execute("DELETE FROM acct").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25006", "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&b, "SELECT count(*) FROM acct").await, 3);
}

async fn count_in(tx: &tokio_postgres::Transaction<'_>, sql: &str) -> i64 {
    tx.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_serialized_and_stale_reads_do_not_commit() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let a = c.connect(leader).await.unwrap();
    let b = c.connect(leader).await.unwrap();
    a.batch_execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
        .await
        .unwrap();

    // A transaction that read before another write committed fails at its
    // first write with 40001 and changes nothing.
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(count(&a, "SELECT n FROM counter WHERE id = 1").await, 0);
    b.batch_execute("UPDATE counter SET n = n + 1")
        .await
        .unwrap();
    assert_eq!(
        count(&a, "SELECT n FROM counter WHERE id = 1").await,
        0,
        "the transaction keeps its snapshot"
    );
    let e = a
        .batch_execute("UPDATE counter SET n = 100 WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "40001", "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&b, "SELECT n FROM counter").await, 1);

    // A write to rows it did not read does not fail it: its reads are run
    // again when it starts writing, and still return the same.
    b.batch_execute("INSERT INTO counter VALUES (2, 0)")
        .await
        .unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(count(&a, "SELECT n FROM counter WHERE id = 1").await, 1);
    b.batch_execute("UPDATE counter SET n = 5 WHERE id = 2")
        .await
        .unwrap();
    a.batch_execute("UPDATE counter SET n = n + 1 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    assert_eq!(count(&b, "SELECT n FROM counter WHERE id = 1").await, 2);
    b.batch_execute("DELETE FROM counter WHERE id = 2; UPDATE counter SET n = 1")
        .await
        .unwrap();

    // While one transaction writes, another writer waits; with
    // lock_timeout it gives up with 55P03.
    a.batch_execute("BEGIN; UPDATE counter SET n = n + 1")
        .await
        .unwrap();
    b.batch_execute("SET lock_timeout = '200ms'").await.unwrap();
    let e = b
        .batch_execute("UPDATE counter SET n = n + 10")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55P03", "{e}");
    // Without a limit it waits for the COMMIT, then runs.
    b.batch_execute("SET lock_timeout = 0").await.unwrap();
    let waiting = tokio::spawn(async move {
        b.batch_execute("UPDATE counter SET n = n * 10")
            .await
            .unwrap();
        b
    });
    a.batch_execute("COMMIT").await.unwrap();
    let b = waiting.await.unwrap();
    assert_eq!(count(&b, "SELECT n FROM counter").await, 20);

    // A client that leaves inside a write transaction gives the right to
    // write back at once: its transaction is rolled back, the next writer
    // runs (well within its lock_timeout) and nothing of the other is
    // applied.
    let gone = c.connect(leader).await.unwrap();
    gone.batch_execute("BEGIN; UPDATE counter SET n = 1000")
        .await
        .unwrap();
    drop(gone);
    b.batch_execute("SET lock_timeout = '10s'; UPDATE counter SET n = n + 2; SET lock_timeout = 0")
        .await
        .unwrap();
    assert_eq!(count(&b, "SELECT n FROM counter").await, 22);
    assert_eq!(
        rows_everywhere(&c, "SELECT id, n FROM counter").await,
        vec![vec!["1".to_string(), "22".into()]]
    );
}

async fn txid_status(db: &Client, txid: &str) -> Option<String> {
    db.query_one("SELECT resqlite_txid_status($1)", &[&txid])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crashes_roll_open_transactions_back_and_ids_tell_what_committed() {
    let mut c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let a = c.connect(leader).await.unwrap();
    a.batch_execute("CREATE TABLE log (id INTEGER PRIMARY KEY, txid TEXT, n INTEGER)")
        .await
        .unwrap();

    // A committed transaction: its id is what it stored, and "committed".
    a.batch_execute("BEGIN").await.unwrap();
    let committed: String = a
        .query_one("SELECT resqlite_txid()", &[])
        .await
        .unwrap()
        .get(0);
    let stored: String = a
        .query_one(
            "INSERT INTO log (txid, n) VALUES (resqlite_txid(), 1) RETURNING txid",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, committed);
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        txid_status(&a, &committed).await.as_deref(),
        Some("committed")
    );
    let outside: Option<String> = a
        .query_one("SELECT resqlite_txid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outside, None, "no id outside a transaction");

    // kill -9 of the leader in the middle of a transaction: nothing of it
    // survives anywhere, and its id is "aborted" once a new term commits.
    a.batch_execute("BEGIN; INSERT INTO log (txid, n) VALUES (resqlite_txid(), 2)")
        .await
        .unwrap();
    let open: String = a
        .query_one("SELECT resqlite_txid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        txid_status(&c.connect(leader).await.unwrap(), &open)
            .await
            .as_deref(),
        Some("in progress")
    );
    c.kill(leader).unwrap();
    assert!(a.batch_execute("COMMIT").await.is_err());
    let next = c.wait_for_leader(ELECTION).await.unwrap();
    let b = c.connect(next).await.unwrap();
    assert_eq!(txid_status(&b, &open).await.as_deref(), Some("aborted"));
    assert_eq!(
        txid_status(&b, &committed).await.as_deref(),
        Some("committed")
    );
    c.start_node(leader).unwrap();
    assert_eq!(
        rows_everywhere(&c, "SELECT n FROM log ORDER BY id").await,
        vec![vec!["1".to_string()]]
    );

    // kill -9 of the leader while COMMIT is under way: whatever the client
    // heard, the id's status and the data agree on every node.
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let a = c.connect(leader).await.unwrap();
    a.batch_execute("BEGIN; INSERT INTO log (txid, n) VALUES (resqlite_txid(), 3)")
        .await
        .unwrap();
    let racing: String = a
        .query_one("SELECT resqlite_txid()", &[])
        .await
        .unwrap()
        .get(0);
    let commit = tokio::spawn(async move { a.batch_execute("COMMIT").await });
    c.kill(leader).unwrap();
    let heard = commit.await.unwrap();
    let next = c.wait_for_leader(ELECTION).await.unwrap();
    let b = c.connect(next).await.unwrap();
    let status = txid_status(&b, &racing).await;
    c.start_node(leader).unwrap();
    let present = rows_everywhere(
        &c,
        &format!("SELECT count(*) FROM log WHERE txid = '{racing}'"),
    )
    .await;
    match status.as_deref() {
        Some("committed") => assert_eq!(present, vec![vec!["1".to_string()]]),
        Some("aborted") => {
            assert_eq!(present, vec![vec!["0".to_string()]]);
            assert!(heard.is_err(), "an acknowledged COMMIT is never aborted");
        }
        other => panic!("after a new term the outcome is decided, got {other:?}"),
    }

    // A follower restarted while a large transaction commits catches up.
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let a = c.connect(leader).await.unwrap();
    a.batch_execute(
        "BEGIN; INSERT INTO log (txid, n) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000) SELECT resqlite_txid(), i FROM s",
    )
    .await
    .unwrap();
    c.kill(follower).unwrap();
    a.batch_execute("UPDATE log SET n = n + 1 WHERE n > 3; COMMIT")
        .await
        .unwrap();
    c.start_node(follower).unwrap();
    let want = rows_everywhere(&c, "SELECT count(*), sum(n) FROM log WHERE n > 3").await;
    let sum: i64 = (5..=20001).sum();
    assert_eq!(want, vec![vec!["19997".to_string(), sum.to_string()]]);
}
