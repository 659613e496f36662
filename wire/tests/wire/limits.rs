//! Bounded memory and threads: results stream with back-pressure, and a
//! cancel, a statement_timeout, a client that hangs up or stops reading
//! each let go of the statement; connections beyond max_connections are
//! refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resqlite_wire::WireOptions;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::fake::{connect, server, start, Fake, MANY};
use crate::raw::{error_fields, kinds, query, startup_packet, Raw};

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

fn count(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_large_result_streams_whole_and_in_order() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;

    let messages = client.simple_query("SELECT many").await.unwrap();
    let values: Vec<i64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(values, (0..MANY).collect::<Vec<_>>());
    assert!(messages
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(n) if *n == MANY as u64)));

    let rows = client.query("SELECT many", &[]).await.unwrap();
    let values: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, (0..MANY).collect::<Vec<_>>());
    wait_for("the producers to finish", || {
        count(&fake.producers.running) == 0
    })
    .await;
}

/// Execute with a row limit across batch boundaries: every row once, in
/// order, PortalSuspended while rows remain, then CommandComplete.
#[tokio::test]
async fn a_row_limit_pages_through_a_streamed_result() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&crate::protocol::parse("", "SELECT many", &[]))
        .await;
    raw.send(&crate::protocol::bind("", "", &[], &[], &[1]))
        .await;
    raw.send(&crate::protocol::flush()).await;
    assert_eq!(raw.recv().await.map(|m| m.0), Some(b'1'));
    assert_eq!(raw.recv().await.map(|m| m.0), Some(b'2'));
    let page = 30_000;
    let mut next = 0i64;
    loop {
        raw.send(&crate::protocol::execute("", page)).await;
        raw.send(&crate::protocol::flush()).await;
        let mut rows = 0;
        let end = loop {
            let (kind, body) = raw.recv().await.expect("a message");
            match kind {
                b'D' => {
                    let value = i64::from_be_bytes(body[6..14].try_into().unwrap());
                    assert_eq!(value, next);
                    next += 1;
                    rows += 1;
                }
                b's' | b'C' => break kind,
                other => panic!("unexpected message {}", other as char),
            }
        };
        if end == b'C' {
            break;
        }
        assert_eq!(rows, page);
    }
    assert_eq!(next, MANY);
    raw.send(&crate::protocol::sync()).await;
    raw.until_ready().await;
}

#[tokio::test]
async fn a_cancel_stops_a_streaming_read() {
    let (fake, addr) = server().await;
    let client = Arc::new(connect(addr).await);
    let token = client.cancel_token();
    let c = Arc::clone(&client);
    let running = tokio::spawn(async move { c.query("SELECT endless", &[]).await });
    wait_for("the read to start", || count(&fake.producers.running) == 1).await;
    token.cancel_query(NoTls).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    wait_for("the producer to stop", || {
        count(&fake.producers.running) == 0
    })
    .await;
    assert_eq!(count(&fake.producers.interrupted), 1);
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn statement_timeout_stops_statements_with_57014() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;
    client
        .batch_execute("SET statement_timeout = '200ms'")
        .await
        .unwrap();
    // A statement that never answers, in both protocols.
    for simple in [true, false] {
        let answer = async {
            if simple {
                client.simple_query("SLEEP").await.map(drop)
            } else {
                client.query("SLEEP", &[]).await.map(drop)
            }
        };
        let err = tokio::time::timeout(Duration::from_secs(20), answer)
            .await
            .expect("the timeout ends the statement")
            .unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
        let db = err.as_db_error().unwrap();
        assert_eq!(db.message(), "canceling statement due to statement timeout");
    }
    assert_eq!(count(&fake.dropped), 2);
    // A read that streams without end.
    let err = tokio::time::timeout(Duration::from_secs(20), client.query("SELECT endless", &[]))
        .await
        .expect("the timeout ends the read")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    wait_for("the producer to stop", || {
        count(&fake.producers.running) == 0
    })
    .await;
    assert_eq!(count(&fake.producers.interrupted), 1);
    // 0 turns it off again.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    let c = Arc::new(client);
    let sleeping = tokio::spawn({
        let c = Arc::clone(&c);
        async move { c.simple_query("SLEEP").await }
    });
    fake.started.notified().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    fake.release.notify_one();
    sleeping.await.unwrap().unwrap();
    assert_eq!(count(&fake.finished), 1);
}

/// A client that hangs up while its statement runs (here one that never
/// answers) has it dropped at once, not when it would have finished.
#[tokio::test]
async fn a_client_hanging_up_stops_its_statement() {
    let (fake, addr) = server().await;
    let mut leaving = Raw::connect(addr, &[]).await;
    leaving.send(&query("SLEEP")).await;
    fake.started.notified().await;
    drop(leaving);
    wait_for("the statement to be dropped", || count(&fake.dropped) == 1).await;
    assert_eq!(count(&fake.finished), 0);

    // The same for a streaming read whose client stops and leaves.
    let mut leaving = Raw::connect(addr, &[]).await;
    leaving.send(&query("SELECT endless")).await;
    wait_for("the read to start", || count(&fake.producers.running) == 1).await;
    drop(leaving);
    wait_for("the producer to stop", || {
        count(&fake.producers.running) == 0
    })
    .await;
    assert_eq!(count(&fake.producers.stalled), 0, "stopped by the hangup");
}

/// A client that sends a read and never reads its rows holds its producer
/// only until the stall limit; its connection then gets the error if it
/// ever reads again.
#[tokio::test]
async fn a_client_that_stops_reading_frees_its_producer() {
    let fake = Arc::new(Fake::default());
    fake.stall_ms.store(300, Ordering::SeqCst);
    let addr = start(Arc::clone(&fake), WireOptions::default()).await;
    let mut idle = Raw::connect(addr, &[]).await;
    idle.send(&query("SELECT endless")).await;
    wait_for("the producer to give up", || {
        count(&fake.producers.stalled) == 1 && count(&fake.producers.running) == 0
    })
    .await;
    // Reading now: the rows that were in flight, then the error.
    let mut last = None;
    while let Some((kind, body)) = idle.recv().await {
        if kind == b'E' {
            last = Some(error_fields(&body));
            break;
        }
    }
    let error = last.expect("an ErrorResponse after the rows");
    assert_eq!(error[&b'C'], "57014");
    assert!(error[&b'M'].contains("read none of its rows"), "{error:?}");
    idle.until_ready().await;
    assert_eq!(kinds(&idle.simple("SELECT 1").await), "TDC");
}

async fn read_to_end(socket: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_then_closed() {
    let fake = Arc::new(Fake::default());
    let opts = WireOptions {
        max_connections: 2,
        ..Default::default()
    };
    let addr = start(Arc::clone(&fake), opts).await;
    let mut first = Raw::connect(addr, &[]).await;
    let _second = Raw::connect(addr, &[]).await;

    // The third is told why, with PostgreSQL's words, and closed.
    let mut third = TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    third
        .write_all(&startup_packet(&[("user", "late")]))
        .await
        .unwrap();
    let reply = read_to_end(&mut third).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    let fields = error_fields(&reply[5..]);
    assert_eq!(fields[&b'S'], "FATAL");
    assert_eq!(fields[&b'C'], "53300");
    assert_eq!(fields[&b'M'], "sorry, too many clients already");

    // Sockets that send nothing hold the refusal places; past them, a
    // socket is closed at once, unread.
    // max_connections (2) more, at least 16: the refusal places.
    let mut holding = Vec::new();
    for _ in 0..16 {
        holding.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut flooded = TcpStream::connect(addr).await.unwrap();
    assert!(read_to_end(&mut flooded).await.is_empty());

    // The connections in are served all along, and places come back.
    assert_eq!(kinds(&first.simple("SELECT 1").await), "TDC");
    drop(holding);
    drop(first);
    let mut again = None;
    for _ in 0..200 {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(&startup_packet(&[("user", "again")]))
            .await
            .unwrap();
        let mut kind = [0u8; 1];
        if socket.read_exact(&mut kind).await.is_ok() && kind[0] == b'R' {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a place freed up for a new connection");
}
