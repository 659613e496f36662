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
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let want = c.local_rows(leader, sql).await.unwrap();
    c.wait_all_hold(sql, &want, CONVERGE).await.unwrap();
    want
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
    assert_eq!(
        rows_everywhere(&c, "SELECT id, n FROM counter").await,
        vec![vec!["1".to_string(), "20".into()]]
    );
}
