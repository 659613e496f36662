//! A steady stream of single-row inserts for tests that change the cluster
//! under load, recording what was acknowledged and the longest pause.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inserts 1000, 1001 … one at a time into `t` on whichever of `targets`
/// accepts writes (following redirects), until told to stop. Returns the
/// acknowledged keys, those whose outcome is unknown (the connection broke
/// mid-write), and the longest time between two acknowledgements.
pub async fn write_steadily(
    targets: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
    acks: Arc<AtomicUsize>,
) -> (Vec<i64>, Vec<i64>, Duration) {
    use tokio_postgres::error::SqlState;
    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
    let mut last_ack: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let mut key = 1000i64;
    let mut current = 0;
    while !*stop.borrow() {
        let addr = &targets[current % targets.len()];
        let (host, port) = addr.split_once(':').unwrap();
        let conninfo = format!("host={host} port={port} user=resqlite connect_timeout=2");
        let Ok((db, conn)) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await else {
            current += 1;
            continue;
        };
        tokio::spawn(conn);
        while !*stop.borrow() {
            match db.execute("INSERT INTO t VALUES ($1)", &[&key]).await {
                Ok(_) => {
                    acked.push(key);
                    acks.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = last_ack {
                        longest = longest.max(t.elapsed());
                    }
                    last_ack = Some(Instant::now());
                }
                Err(e)
                    if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
                        || e.code() == Some(&SqlState::CANNOT_CONNECT_NOW) =>
                {
                    // Refused before it ran: not written. Try the next node.
                    current += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    break;
                }
                Err(_) => {
                    unknown.push(key);
                    current += 1;
                    break;
                }
            }
            key += 1;
        }
        key += 1;
    }
    (acked, unknown, longest)
}
