//! Transaction blocks as PostgreSQL clients see them: ReadyForQuery's
//! status, the failed state and its way out, warnings, implicit
//! transactions, timeouts and what the executor is asked to do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::fake::{connect, server, Fake};
use crate::protocol::{bind, execute, parse, sync};
use crate::raw::{error_fields, kinds, query, Raw};
use resqlite_wire::TransactionOptions;

type Messages = Vec<(u8, Vec<u8>)>;

/// The tags of the CommandComplete messages in `messages`.
fn tags(messages: &Messages) -> Vec<String> {
    messages
        .iter()
        .filter(|(k, _)| *k == b'C')
        .map(|(_, body)| String::from_utf8_lossy(&body[..body.len() - 1]).into_owned())
        .collect()
}

/// (severity, SQLSTATE, message) of every ErrorResponse and NoticeResponse.
fn reports(messages: &Messages) -> Vec<(String, String, String)> {
    messages
        .iter()
        .filter(|(k, _)| matches!(*k, b'E' | b'N'))
        .map(|(_, body)| {
            let f = error_fields(body);
            (f[&b'S'].clone(), f[&b'C'].clone(), f[&b'M'].clone())
        })
        .collect()
}

fn report(severity: &str, code: &str, message: &str) -> (String, String, String) {
    (severity.into(), code.into(), message.into())
}

fn rows(fake: &Fake) -> usize {
    fake.rows.lock().unwrap().len()
}

fn count(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

const ABORTED: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// One statement through the extended protocol, up to its Sync.
fn extended(sql: &str) -> Vec<u8> {
    let mut batch = parse("", sql, &[]);
    batch.extend(bind("", "", &[], &[], &[]));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch
}

/// Waits until `done` holds; fails the test after a generous deadline.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn simple_protocol_reports_idle_open_and_failed_blocks() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    assert_eq!(tags(&raw.simple("BEGIN").await), ["BEGIN"]);
    assert_eq!(raw.status, b'T');
    raw.simple("INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(raw.status, b'T');
    assert_eq!(rows(&fake), 0, "not visible before COMMIT");
    let reply = raw.simple("FAIL").await;
    assert_eq!(reports(&reply)[0].1, "23505");
    assert_eq!(raw.status, b'E');
    for sql in ["SELECT 1", "SHOW lock_timeout", "SAVEPOINT a", "BEGIN"] {
        let reply = raw.simple(sql).await;
        assert_eq!(
            reports(&reply),
            [report("ERROR", "25P02", ABORTED)],
            "{sql}"
        );
        assert_eq!(raw.status, b'E');
    }
    assert_eq!(tags(&raw.simple("ROLLBACK").await), ["ROLLBACK"]);
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0);
    assert_eq!(count(&fake.txns.rolled_back), 1);

    assert_eq!(
        tags(&raw.simple("START TRANSACTION").await),
        ["START TRANSACTION"]
    );
    raw.simple("INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(tags(&raw.simple("END").await), ["COMMIT"]);
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 1);
    assert_eq!(count(&fake.txns.committed), 1);
}

#[tokio::test]
async fn extended_protocol_reports_idle_open_and_failed_blocks() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&extended("BEGIN")).await;
    assert_eq!(kinds(&raw.until_ready().await), "12C");
    assert_eq!(raw.status, b'T');
    raw.send(&extended("INSERT INTO t DEFAULT VALUES")).await;
    assert_eq!(kinds(&raw.until_ready().await), "12C");
    assert_eq!(raw.status, b'T');
    raw.send(&extended("FAIL")).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "12E");
    assert_eq!(raw.status, b'E');
    // Parse of anything but the block's end is refused, and so is the
    // rest up to Sync.
    raw.send(&extended("SELECT 1")).await;
    let reply = raw.until_ready().await;
    assert_eq!(reports(&reply), [report("ERROR", "25P02", ABORTED)]);
    assert_eq!(raw.status, b'E');
    raw.send(&extended("ROLLBACK")).await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), ["ROLLBACK"]);
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0);
    // Outside a block, each Execute commits on its own.
    raw.send(&extended("INSERT INTO t DEFAULT VALUES")).await;
    raw.until_ready().await;
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 1);
}

#[tokio::test]
async fn rollback_to_a_savepoint_recovers_a_failed_block() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let reply = raw
        .simple("BEGIN; INSERT INTO t DEFAULT VALUES; SAVEPOINT a")
        .await;
    assert_eq!(tags(&reply), ["BEGIN", "INSERT 0 1", "SAVEPOINT"]);
    raw.simple("INSERT INTO t DEFAULT VALUES").await;
    raw.simple("FAIL").await;
    assert_eq!(raw.status, b'E');
    assert_eq!(
        reports(&raw.simple("SELECT count(*) FROM t").await)[0].1,
        "25P02"
    );
    // A savepoint that does not exist leaves the block failed.
    let reply = raw.simple("ROLLBACK TO SAVEPOINT nope").await;
    assert_eq!(reports(&reply)[0].1, "3B001");
    assert_eq!(raw.status, b'E');
    assert_eq!(tags(&raw.simple("ROLLBACK TO a").await), ["ROLLBACK"]);
    assert_eq!(raw.status, b'T');
    // Back to what it was at the savepoint: one row.
    let reply = raw.simple("SELECT count(*) FROM t").await;
    assert_eq!(reply[1].1[6..], *b"1");
    assert_eq!(tags(&raw.simple("RELEASE a").await), ["RELEASE"]);
    assert_eq!(reports(&raw.simple("RELEASE a").await)[0].1, "3B001");
    assert_eq!(raw.status, b'E');
    raw.simple("ROLLBACK").await;
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn commit_of_a_failed_block_rolls_it_back() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES").await;
    raw.simple("FAIL").await;
    assert_eq!(raw.status, b'E');
    let reply = raw.simple("COMMIT").await;
    assert_eq!(kinds(&reply), "C");
    assert_eq!(tags(&reply), ["ROLLBACK"]);
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0);
    assert_eq!(count(&fake.txns.committed), 0);
    assert_eq!(count(&fake.txns.rolled_back), 1);
}

#[tokio::test]
async fn misplaced_transaction_statements_warn_or_fail_as_in_postgres() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN").await;
    let reply = raw.simple("BEGIN").await;
    assert_eq!(kinds(&reply), "NC");
    assert_eq!(
        reports(&reply),
        [report(
            "WARNING",
            "25001",
            "there is already a transaction in progress"
        )]
    );
    assert_eq!(raw.status, b'T');
    raw.simple("COMMIT").await;
    let no_transaction = report("WARNING", "25P01", "there is no transaction in progress");
    for (sql, tag) in [
        ("COMMIT", "COMMIT"),
        ("ROLLBACK", "ROLLBACK"),
        ("ABORT", "ROLLBACK"),
    ] {
        let reply = raw.simple(sql).await;
        assert_eq!(kinds(&reply), "NC", "{sql}");
        assert_eq!(
            reports(&reply),
            std::slice::from_ref(&no_transaction),
            "{sql}"
        );
        assert_eq!(tags(&reply), [tag]);
        assert_eq!(raw.status, b'I');
    }
    let reply = raw.simple("SET TRANSACTION READ ONLY").await;
    assert_eq!(
        reports(&reply),
        [report(
            "WARNING",
            "25P01",
            "SET TRANSACTION can only be used in transaction blocks"
        )]
    );
    for (sql, what) in [
        ("SAVEPOINT a", "SAVEPOINT"),
        ("RELEASE SAVEPOINT a", "RELEASE SAVEPOINT"),
        ("ROLLBACK TO a", "ROLLBACK TO SAVEPOINT"),
        ("COMMIT AND CHAIN", "COMMIT AND CHAIN"),
        ("ROLLBACK AND CHAIN", "ROLLBACK AND CHAIN"),
    ] {
        let reply = raw.simple(sql).await;
        let message = format!("{what} can only be used in transaction blocks");
        assert_eq!(
            reports(&reply),
            [report("ERROR", "25P01", &message)],
            "{sql}"
        );
        assert_eq!(raw.status, b'I');
    }
    let reply = raw.simple("BEGIN REED ONLY").await;
    let (_, code, message) = &reports(&reply)[0];
    assert_eq!(code, "42601");
    assert!(message.contains("\"BEGIN REED ONLY\""), "{message}");
    assert_eq!(raw.status, b'I');
}

#[tokio::test]
async fn a_multi_statement_query_is_one_implicit_transaction() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let reply = raw
        .simple("INSERT INTO t DEFAULT VALUES; INSERT INTO t DEFAULT VALUES; FAIL")
        .await;
    assert_eq!(kinds(&reply), "CCE");
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0, "the first statements were rolled back");
    assert_eq!(count(&fake.txns.rolled_back), 1);
    let begun = fake.txns.begun.lock().unwrap()[0].0.clone();
    assert_eq!(
        begun,
        TransactionOptions {
            read_only: false,
            implicit: true
        }
    );

    raw.simple("INSERT INTO t DEFAULT VALUES; SELECT count(*) FROM t")
        .await;
    assert_eq!(rows(&fake), 1);
    assert_eq!(count(&fake.txns.committed), 1);

    // A single statement runs without a transaction.
    raw.simple("INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(rows(&fake), 2);
    assert_eq!(fake.txns.begun.lock().unwrap().len(), 2);

    // COMMIT ends the implicit transaction early (with PostgreSQL's
    // warning); what follows is a new one.
    let reply = raw
        .simple("INSERT INTO t DEFAULT VALUES; COMMIT; INSERT INTO t DEFAULT VALUES; FAIL")
        .await;
    assert_eq!(kinds(&reply), "CNCCE");
    assert_eq!(reports(&reply)[0].1, "25P01");
    assert_eq!(rows(&fake), 3);
    assert_eq!(raw.status, b'I');
}

#[tokio::test]
async fn begin_inside_a_multi_statement_query_opens_a_block() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let reply = raw
        .simple("INSERT INTO t DEFAULT VALUES; BEGIN; INSERT INTO t DEFAULT VALUES")
        .await;
    assert_eq!(tags(&reply), ["INSERT 0 1", "BEGIN", "INSERT 0 1"]);
    // The block, with the statement before BEGIN, stays open.
    assert_eq!(raw.status, b'T');
    assert_eq!(rows(&fake), 0);
    raw.simple("COMMIT").await;
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 2);

    let reply = raw
        .simple("BEGIN; INSERT INTO t DEFAULT VALUES; COMMIT; INSERT INTO t DEFAULT VALUES; FAIL")
        .await;
    assert_eq!(kinds(&reply), "CCCCE");
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 3, "the block committed, the rest did not");

    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES; FAIL")
        .await;
    assert_eq!(raw.status, b'E', "an explicit block fails and stays");
    raw.simple("ROLLBACK").await;
    assert_eq!(rows(&fake), 3);

    // A BEGIN whose modes come too late fails the implicit block whole.
    let reply = raw
        .simple("INSERT INTO t DEFAULT VALUES; BEGIN READ ONLY; INSERT INTO t DEFAULT VALUES")
        .await;
    assert_eq!(reports(&reply)[0].1, "25001");
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 3);
}

#[tokio::test]
async fn set_transaction_and_defaults_make_blocks_read_only() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let show = |reply: &Messages| String::from_utf8_lossy(&reply[1].1[6..]).into_owned();
    raw.simple("BEGIN; SET TRANSACTION READ ONLY").await;
    assert_eq!(show(&raw.simple("SHOW transaction_read_only").await), "on");
    let reply = raw.simple("INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(reports(&reply)[0].1, "25006");
    raw.simple("ROLLBACK").await;
    assert_eq!(show(&raw.simple("SHOW transaction_read_only").await), "off");
    assert!(fake.txns.begun.lock().unwrap()[0].0.read_only);

    // Once the transaction ran a statement, it cannot turn read-only.
    raw.simple("BEGIN; SELECT 1").await;
    let reply = raw.simple("SET TRANSACTION READ ONLY").await;
    assert_eq!(reports(&reply)[0].1, "25001");
    raw.simple("ROLLBACK").await;

    raw.simple("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .await;
    assert_eq!(
        show(&raw.simple("SHOW default_transaction_read_only").await),
        "on"
    );
    raw.simple("BEGIN").await;
    assert_eq!(show(&raw.simple("SHOW transaction_read_only").await), "on");
    assert_eq!(
        reports(&raw.simple("INSERT INTO t DEFAULT VALUES").await)[0].1,
        "25006"
    );
    raw.simple("ROLLBACK").await;
    // AND CHAIN keeps the block's modes, and BEGIN's own win.
    raw.simple("SET default_transaction_read_only = off").await;
    raw.simple("BEGIN READ ONLY; COMMIT AND CHAIN").await;
    assert_eq!(raw.status, b'T');
    assert_eq!(
        reports(&raw.simple("INSERT INTO t DEFAULT VALUES").await)[0].1,
        "25006"
    );
    raw.simple("ROLLBACK; BEGIN; INSERT INTO t DEFAULT VALUES; COMMIT")
        .await;
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 1);
}

#[tokio::test]
async fn a_failed_commit_ends_the_block_with_its_error() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES").await;
    fake.fail_commit.store(true, Ordering::SeqCst);
    let reply = raw.simple("COMMIT").await;
    assert_eq!(kinds(&reply), "E");
    assert_eq!(reports(&reply)[0].1, "40001");
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn statement_timeout_inside_a_block_fails_it() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("SET statement_timeout = '100ms'; BEGIN; INSERT INTO t DEFAULT VALUES")
        .await;
    // SLEEP waits for a release that never comes: the timeout drops it.
    let reply = raw.simple("SLEEP").await;
    assert_eq!(reports(&reply)[0].1, "57014");
    assert_eq!(count(&fake.dropped), 1);
    assert_eq!(raw.status, b'E');
    raw.simple("ROLLBACK").await;
    assert_eq!(raw.status, b'I');
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn idle_in_transaction_session_timeout_closes_the_connection() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let reply = raw.simple("SHOW idle_in_transaction_session_timeout").await;
    assert_eq!(reply[1].1[6..], *b"1min", "ReSQLite's default");
    raw.simple("SET idle_in_transaction_session_timeout = '200ms'")
        .await;
    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(raw.status, b'T');
    // The client says nothing more; the server speaks last and hangs up.
    let last = tokio::time::timeout(Duration::from_secs(20), raw.until_closed())
        .await
        .expect("the connection closes");
    assert_eq!(
        reports(&last),
        [report(
            "FATAL",
            "25P03",
            "terminating connection due to idle-in-transaction timeout"
        )]
    );
    assert_eq!(count(&fake.txns.rolled_back), 1);
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn lock_timeout_reaches_the_executor() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("SET lock_timeout = '5s'").await;
    raw.simple("SELECT 1").await;
    let (_, session) = fake.log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(session.lock_timeout, Some(Duration::from_secs(5)));
    raw.simple("SET lock_timeout = 1500; BEGIN; SELECT 1").await;
    let (_, session) = fake.txns.begun.lock().unwrap().last().cloned().unwrap();
    assert_eq!(session.lock_timeout, Some(Duration::from_millis(1500)));
    raw.simple("ROLLBACK; SET lock_timeout = 0; SELECT 1").await;
    let (_, session) = fake.log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(session.lock_timeout, None);
    let reply = raw.simple("SET lock_timeout = 'soon'").await;
    assert_eq!(reports(&reply)[0].1, "22023");
}

#[tokio::test]
async fn a_client_leaving_inside_a_block_rolls_it_back() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(raw.status, b'T');
    drop(raw);
    wait_for("the transaction to be rolled back", || {
        count(&fake.txns.rolled_back) + count(&fake.txns.dropped) == 1
    })
    .await;
    assert_eq!(count(&fake.txns.committed), 0);
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn a_client_leaving_mid_statement_in_a_block_rolls_it_back() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN; INSERT INTO t DEFAULT VALUES").await;
    raw.send(&query("SLEEP")).await;
    fake.started.notified().await;
    drop(raw);
    wait_for("the statement and its transaction to be dropped", || {
        count(&fake.dropped) == 1 && count(&fake.txns.rolled_back) + count(&fake.txns.dropped) == 1
    })
    .await;
    assert_eq!(rows(&fake), 0);
}

#[tokio::test]
async fn tokio_postgres_transactions_commit_and_roll_back() {
    let (fake, addr) = server().await;
    let mut client = connect(addr).await;

    let txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO t DEFAULT VALUES", &[])
        .await
        .unwrap();
    let n: i64 = txn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the transaction sees its own write");
    assert_eq!(rows(&fake), 0, "nobody else does");
    txn.commit().await.unwrap();
    assert_eq!(rows(&fake), 1);

    let txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO t DEFAULT VALUES", &[])
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(rows(&fake), 1);
    assert_eq!(count(&fake.txns.rolled_back), 1);

    // An error fails the transaction; dropping it rolls back.
    let txn = client.transaction().await.unwrap();
    let err = txn.batch_execute("FAIL").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let err = txn.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    drop(txn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Nested transactions are savepoints.
    let mut txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO t DEFAULT VALUES", &[])
        .await
        .unwrap();
    let inner = txn.transaction().await.unwrap();
    inner
        .execute("INSERT INTO t DEFAULT VALUES", &[])
        .await
        .unwrap();
    inner.rollback().await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(rows(&fake), 2);
}

#[tokio::test]
async fn a_table_created_in_a_block_is_known_to_prepare_there() {
    let (_fake, addr) = server().await;
    let mut client = connect(addr).await;
    assert!(client.prepare("SELECT * FROM u").await.is_err());
    let txn = client.transaction().await.unwrap();
    txn.batch_execute("CREATE TABLE u").await.unwrap();
    let statement = txn.prepare("SELECT * FROM u").await.unwrap();
    assert_eq!(statement.columns()[0].name(), "x");
    txn.commit().await.unwrap();
    client.prepare("SELECT * FROM u").await.unwrap();
}
