//! Bounded memory and threads on the client side, on a real 3-node
//! cluster (security issue: reads buffered whole, cancels and disconnects
//! that did not stop a read, a statement_timeout that was ignored, clients
//! that never read holding every reader, no connection limit).
//!
//! The bounds are the spec's: every node stays under 512 MiB, and the
//! leader answers `select 1` within 1 s throughout (a liveness bound, not a
//! speed assertion). The test nodes run with 2 reader threads, so two reads
//! that are not let go are enough to make every read hang.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::NodeStatusRequest;
use resqlite_tests::sql_cluster::SqlCluster;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
/// No node may grow beyond this.
const RSS_BOUND: u64 = 512 << 20;
/// The leader answers `select 1` within this, whatever other clients do.
const LIVENESS: Duration = Duration::from_secs(1);
/// Only bounds a hang.
const HANG: Duration = Duration::from_secs(60);
/// `--max-connections` of the connection-limit test.
const MAX_CONNECTIONS: usize = 20;

/// 10⁹ rows, about 100 bytes each: 100 GB if anything held it whole.
const CROSS_JOIN: &str = "SELECT a.i, b.i, c.i, printf('%.80c', 'x') FROM n a, n b, n c";
/// 10¹² steps and no row for hours (10⁹ take well under a minute).
const CROSS_COUNT: &str = "SELECT count(*) FROM n a, n b, n c, n d";

/// Clusters are started one at a time: two at once on a small machine
/// would measure each other.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A 3-node cluster with table `n` of 1,000 rows, and its leader.
async fn cluster(extra: &[&str]) -> (SqlCluster, u64) {
    let mut c = SqlCluster::prepare(BIN, 3).expect("cluster");
    // Mutual TLS between nodes (the raw clients here do not speak SCRAM).
    c.secure(false).expect("certificates");
    c.set_extra_args(extra.iter().map(|s| s.to_string()).collect());
    c.start_all().expect("nodes start");
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE n (i INTEGER PRIMARY KEY);
         INSERT INTO n (i) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c",
    )
    .await
    .unwrap();
    (c, leader)
}

/// Asks the leader `select 1` every 100 ms on a connection of its own and
/// records the slowest answer; a probe that gets no answer within
/// [`LIVENESS`] counts as a failure.
struct Probe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    slowest_ms: Arc<AtomicU64>,
    failures: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl Probe {
    async fn start(c: &SqlCluster, leader: u64) -> Probe {
        let db = c.connect(leader).await.unwrap();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let slowest_ms = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (slowest, failed, ok) = (slowest_ms.clone(), failures.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|&s| s) => return,
                    _ = pace.tick() => {}
                }
                let started = tokio::time::Instant::now();
                match tokio::time::timeout(LIVENESS, db.simple_query("select 1")).await {
                    Ok(Ok(_)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        let ms = started.elapsed().as_millis() as u64;
                        slowest.fetch_max(ms, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => {
                        eprintln!("probe failed: {e:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        // The late answer is dropped with the query.
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Probe {
            stop,
            task,
            slowest_ms,
            failures,
            answered,
        }
    }

    /// Stops probing; fails the test if any probe went unanswered within
    /// [`LIVENESS`] and `bounded` says it must have been.
    async fn finish(self, what: &str, bounded: bool) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        let failures = self.failures.load(Ordering::SeqCst);
        let answered = self.answered.load(Ordering::SeqCst);
        let slowest = self.slowest_ms.load(Ordering::SeqCst);
        eprintln!("{what}: select 1 answered {answered} times, slowest {slowest} ms");
        eprintln!("{what}: {failures} probes not answered within {LIVENESS:?}");
        if bounded {
            assert_eq!(failures, 0, "{what}: the leader stopped answering select 1");
        }
        assert!(answered > 0, "{what}: the probe never ran");
    }
}

/// Each node's current and peak resident memory.
fn rss(c: &SqlCluster) -> BTreeMap<u64, (u64, u64)> {
    c.ids()
        .into_iter()
        .map(|id| {
            let pid = c.pid(id).expect("running");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let kb = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap()
                    * 1024
            };
            (id, (kb("VmRSS:"), kb("VmHWM:")))
        })
        .collect()
}

fn assert_memory_bounded(c: &SqlCluster, what: &str) {
    for (id, (now, peak)) in rss(c) {
        eprintln!(
            "{what}: node {id} RSS {} MiB, peak {} MiB",
            now >> 20,
            peak >> 20
        );
        assert!(
            peak < RSS_BOUND,
            "{what}: node {id} peaked at {} MiB",
            peak >> 20
        );
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> SqlState {
    e.code()
        .unwrap_or_else(|| panic!("not a database error: {e:?}"))
        .clone()
}

/// A connection whose socket the test can close without a word (its
/// driver task is aborted), as a client that crashed.
async fn connect_abortable(c: &SqlCluster, id: u64) -> (Client, tokio::task::JoinHandle<()>) {
    let conninfo = format!("host=127.0.0.1 port={} user=resqlite", c.pg_port(id));
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

/// Reader threads of the node running on a CPU right now (state `R`): a
/// read that SQLite is still computing.
fn busy_readers(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised name.
            let state = stat
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next());
            comm.starts_with("resqlite-read") && state == Some('R')
        })
        .count()
}

/// Waits until no reader thread computes (sampled; a `select 1` of the
/// probe runs for a moment only): the interrupted read let go.
async fn readers_let_go(c: &SqlCluster, leader: u64, what: &str) {
    let pid = c.pid(leader).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if busy_readers(pid) == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: a reader thread still computes the abandoned read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_read_is_streamed_and_let_go_on_cancel_disconnect_and_timeout() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (c, leader) = cluster(&[]).await;
    let db = c.connect(leader).await.unwrap();
    let probe = Probe::start(&c, leader).await;

    // A client that reads the 10⁹-row cross join as it comes: the node
    // streams it in bounded batches; a cancel stops it.
    let reader = Arc::new(c.connect(leader).await.unwrap());
    let token = reader.cancel_token();
    let read = {
        let reader = Arc::clone(&reader);
        tokio::spawn(async move {
            use futures::StreamExt;
            let stream = reader.simple_query_raw(CROSS_JOIN).await?;
            futures::pin_mut!(stream);
            let mut rows = 0u64;
            while let Some(message) = stream.next().await {
                if let SimpleQueryMessage::Row(_) = message? {
                    rows += 1;
                }
            }
            Ok::<u64, tokio_postgres::Error>(rows)
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(HANG, read)
        .await
        .expect("the cancel ends the read")
        .unwrap()
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err), SqlState::QUERY_CANCELED, "{err:?}");
    assert_memory_bounded(&c, "streamed, then cancelled");

    readers_let_go(&c, leader, "cancelled").await;

    // A read that produces no row for minutes; its client vanishes
    // without a word. (One at a time: the probe needs the other reader.)
    let (client, task) = connect_abortable(&c, leader).await;
    let query = tokio::spawn(async move { client.simple_query(CROSS_COUNT).await });
    let pid = c.pid(leader).unwrap();
    resqlite_tests::cluster::wait_until("the read to run", HANG, || async {
        (busy_readers(pid) == 1).then_some(())
    })
    .await
    .expect("the read runs");
    task.abort();
    query.abort();
    readers_let_go(&c, leader, "disconnected").await;

    // statement_timeout: 57014 with PostgreSQL's message.
    let client = c.connect(leader).await.unwrap();
    client
        .batch_execute("SET statement_timeout = '1s'")
        .await
        .unwrap();
    let err = tokio::time::timeout(HANG, client.simple_query(CROSS_COUNT))
        .await
        .expect("the timeout ends the read")
        .expect_err("timed out");
    assert_eq!(sqlstate(&err), SqlState::QUERY_CANCELED, "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert_eq!(message, "canceling statement due to statement timeout");
    readers_let_go(&c, leader, "timed out").await;
    // The session goes on, its timeout still set.
    db.simple_query("select 1").await.unwrap();

    probe.finish("cancel, disconnect, timeout", true).await;
    assert_memory_bounded(&c, "cancel, disconnect, timeout");
}

/// Startup as `user`, then a Query, over a raw socket that then never
/// reads a byte.
async fn send_and_never_read(port: u16, sql: &str) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut startup = Vec::new();
    let body = b"\0\x03\0\0user\0resqlite\0\0";
    startup.extend(((body.len() + 4) as i32).to_be_bytes());
    startup.extend(body);
    let mut query = vec![b'Q'];
    query.extend(((sql.len() + 5) as i32).to_be_bytes());
    query.extend(sql.as_bytes());
    query.push(0);
    startup.extend(query);
    socket.write_all(&startup).await.unwrap();
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_do_not_block_other_reads() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (c, leader) = cluster(&[]).await;
    let db = c.connect(leader).await.unwrap();
    let probe = Probe::start(&c, leader).await;
    // Twelve clients ask for the cross join and never read a byte, more
    // than the readers (2 here, 8 by default) many times over.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(send_and_never_read(c.pg_port(leader), CROSS_JOIN).await);
    }
    // Other reads go on, again and again, while those stay connected: each
    // waits at most for the readers to give up on clients that do not read.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = tokio::time::Instant::now();
        let rows = tokio::time::timeout(HANG, db.query_one("SELECT count(*) FROM n", &[]))
            .await
            .expect("a read while clients do not read theirs")
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(rows.get::<_, i64>(0), 1000);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("clients that never read: slowest other read {slowest:?}");
    // select 1 within a second once the readers gave up on them; before,
    // it waits its turn behind them (logged, not asserted).
    probe.finish("clients that never read", false).await;
    let late = Probe::start(&c, leader).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    late.finish("clients that never read, later", true).await;
    assert_memory_bounded(&c, "clients that never read");
    drop(idle);
}

/// The node's open file descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_refused_and_grpc_still_answers() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let max = MAX_CONNECTIONS.to_string();
    let (c, leader) = cluster(&["--max-connections", &max]).await;
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    for id in [leader, follower] {
        let pid = c.pid(id).unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(c.connect(id).await.expect("within max_connections"));
        }
        // One more: PostgreSQL's refusal.
        let err = c.connect(id).await.expect_err("over max_connections");
        let err = err
            .downcast_ref::<tokio_postgres::Error>()
            .expect("a PostgreSQL error");
        assert_eq!(sqlstate(err), SqlState::TOO_MANY_CONNECTIONS, "{err:?}");
        assert_eq!(
            err.as_db_error().unwrap().message(),
            "sorry, too many clients already"
        );

        // A flood of idle sockets: the node keeps at most a ceiling of
        // them, so it never runs out of descriptors.
        let before = open_fds(pid);
        let mut flood = Vec::new();
        for _ in 0..1000 {
            match TcpStream::connect(("127.0.0.1", c.pg_port(id))).await {
                Ok(socket) => flood.push(socket),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = open_fds(pid);
        eprintln!(
            "node {id}: {before} descriptors before a flood of {} sockets, {during} during",
            flood.len()
        );
        assert!(
            during < before + 2 * MAX_CONNECTIONS.max(16) + 50,
            "node {id} holds {during} descriptors"
        );
        // Its gRPC port answers, and so do the clients it serves.
        let mut admin = AdminClient::new(
            tokio::time::timeout(
                LIVENESS * 5,
                resqlite_tests::grpc::channel(&c.grpc_addr(id)),
            )
            .await
            .expect("gRPC connects")
            .unwrap(),
        );
        let status = tokio::time::timeout(LIVENESS * 5, admin.node_status(NodeStatusRequest {}))
            .await
            .expect("gRPC answers")
            .unwrap()
            .into_inner();
        assert_eq!(status.id, id);
        tokio::time::timeout(LIVENESS, held[0].simple_query("SHOW transaction_read_only"))
            .await
            .expect("a served client is answered")
            .unwrap();
        drop(flood);
        drop(held);
    }
    // Places come back once clients leave.
    let db = tokio::time::timeout(HANG, async {
        loop {
            if let Ok(db) = c.connect(leader).await {
                return db;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a place frees up");
    db.simple_query("select 1").await.unwrap();
}
