//! Three real node processes replicating over gRPC: election, replication,
//! kill -9 of the leader in the middle of a stream of writes, and a crash of
//! the whole cluster.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resqlite_tests::cluster::{wait_until, write_loop, Cluster, History, WriteOutcome};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_raft-demo-node");
/// Generous: debug builds on a loaded 2-core machine.
const ELECTION: Duration = Duration::from_secs(15);
const CATCH_UP: Duration = Duration::from_secs(15);

/// Writes `payloads` concurrently through `leader`; all must be acknowledged.
async fn write_all_concurrently(c: &Cluster, leader: u64, payloads: &[String]) {
    let outcomes = futures::future::join_all(payloads.iter().map(|p| c.write(leader, p))).await;
    for (p, o) in payloads.iter().zip(outcomes) {
        match o {
            Ok(WriteOutcome::Acked) => {}
            other => panic!("write {p:?} to leader {leader} not acknowledged: {other:?}"),
        }
    }
}

/// Asserts `got` holds each of `want` exactly once and nothing else.
fn assert_same_entries(got: &[String], want: &[String], context: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{context}: wrong number of entries: {got:?}"
    );
    let got: BTreeSet<&String> = got.iter().collect();
    let want: BTreeSet<&String> = want.iter().collect();
    assert_eq!(got, want, "{context}: different entries");
}

/// Checks a final list against what clients saw: every acknowledged write
/// is there, exactly once; anything else there was at least sent with an
/// unknown outcome (never refused, never invented).
fn assert_history(list: &[String], acked: &[String], unknown: &[String], context: &str) {
    let mut seen = BTreeSet::new();
    for p in list {
        assert!(seen.insert(p), "{context}: {p:?} applied twice");
    }
    for p in acked {
        assert!(seen.contains(p), "{context}: acknowledged write {p:?} lost");
    }
    let allowed: BTreeSet<&String> = acked.iter().chain(unknown).collect();
    for p in list {
        assert!(
            allowed.contains(p),
            "{context}: {p:?} applied but never acknowledged nor pending"
        );
    }
}

/// Starts a background writer through whichever node leads.
fn start_writer(
    c: &Cluster,
    prefix: &str,
) -> (
    Arc<AtomicUsize>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<History>,
) {
    let acked = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(write_loop(
        c.clients().clone(),
        c.ids(),
        prefix.to_string(),
        acked.clone(),
        stop_rx,
    ));
    (acked, stop_tx, task)
}

async fn wait_acks(acked: &AtomicUsize, at_least: usize, what: &str) {
    wait_until(what, ELECTION, || async {
        (acked.load(Ordering::SeqCst) >= at_least).then_some(())
    })
    .await
    .expect(what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_replicate_concurrent_writes() {
    let c = Cluster::start(BIN, 3).expect("start cluster");
    let t0 = Instant::now();
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    println!("first election took {:?}", t0.elapsed());

    let payloads: Vec<String> = (0..200).map(|i| format!("a-{i}")).collect();
    let t1 = Instant::now();
    write_all_concurrently(&c, leader, &payloads).await;
    println!("200 concurrent writes acknowledged in {:?}", t1.elapsed());

    // A linearizable read at the leader sees every acknowledged write.
    let on_leader = c.read(leader).await.expect("read at the leader");
    assert_same_entries(&on_leader, &payloads, "leader read");

    // Followers refuse writes and reads, and name the leader.
    let follower = c
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    match c
        .write(follower, "refused")
        .await
        .expect("follower answers")
    {
        WriteOutcome::Refused(state, msg) => {
            assert_eq!(state, "25006");
            assert!(msg.contains(&c.url(leader).replace("http://", "")), "{msg}");
        }
        other => panic!("a follower accepted a write: {other:?}"),
    }
    assert!(
        c.read(follower).await.is_err(),
        "a follower served a linearizable read"
    );

    // Every node applies the same entries in the same order.
    c.wait_all_equal(&on_leader, CATCH_UP)
        .await
        .expect("followers catch up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_stream_loses_no_acknowledged_write() {
    let mut c = Cluster::start(BIN, 3).expect("start cluster");
    let old = c.wait_for_leader(ELECTION).await.expect("a leader");
    let before: Vec<String> = (0..50).map(|i| format!("b-{i}")).collect();
    write_all_concurrently(&c, old, &before).await;

    // Kill the leader while a client keeps writing.
    let (acked, stop, writer) = start_writer(&c, "w");
    wait_acks(&acked, 20, "writes before the kill").await;
    c.kill(old).expect("kill -9 the leader");
    let killed_at = Instant::now();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let new = c.wait_for_leader(ELECTION).await.expect("a new leader");
    let elected = killed_at.elapsed();
    assert_ne!(new, old);
    wait_acks(&acked, acked_at_kill + 1, "the first write after the kill").await;
    println!(
        "failover: new leader {new} after {elected:?}; writes resumed after {:?}",
        killed_at.elapsed()
    );
    wait_acks(&acked, acked_at_kill + 20, "writes after the kill").await;
    stop.send_replace(true);
    let history = writer.await.expect("writer task");
    println!(
        "writer: {} acknowledged, {} unknown, {} refused",
        history.acked.len(),
        history.unknown.len(),
        history.refused.len()
    );

    let after: Vec<String> = (0..50).map(|i| format!("b-after-{i}")).collect();
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    write_all_concurrently(&c, leader, &after).await;

    let mut acked_all = before.clone();
    acked_all.extend(history.acked.iter().cloned());
    acked_all.extend(after);
    let on_leader = c.read(leader).await.expect("read at the leader");
    assert_history(&on_leader, &acked_all, &history.unknown, "after failover");

    c.start_node(old).expect("restart the old leader");
    let restarted_at = Instant::now();
    c.wait_all_equal(&on_leader, CATCH_UP)
        .await
        .expect("all nodes hold every write");
    println!(
        "old leader {old} caught up {:?} after restart",
        restarted_at.elapsed()
    );
    c.check_alive().expect("no node died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_crash_loses_no_acknowledged_write() {
    let mut c = Cluster::start(BIN, 3).expect("start cluster");
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let before: Vec<String> = (0..100).map(|i| format!("c-{i}")).collect();
    write_all_concurrently(&c, leader, &before).await;

    // Crash every node while a client is writing.
    let (acked, stop, writer) = start_writer(&c, "w");
    wait_acks(&acked, 20, "writes before the crash").await;
    for id in c.ids() {
        c.kill(id).expect("kill -9");
    }
    stop.send_replace(true);
    let history = writer.await.expect("writer task");

    for id in c.ids() {
        c.start_node(id).expect("restart");
    }
    let restarted_at = Instant::now();
    let leader = c
        .wait_for_leader(ELECTION)
        .await
        .expect("a leader after restart");
    println!(
        "leader {leader} elected {:?} after restarting all nodes",
        restarted_at.elapsed()
    );

    let mut acked_all = before;
    acked_all.extend(history.acked.iter().cloned());
    let on_leader = c.read(leader).await.expect("read at the leader");
    assert_history(
        &on_leader,
        &acked_all,
        &history.unknown,
        "after a full restart",
    );
    c.wait_all_equal(&on_leader, CATCH_UP)
        .await
        .expect("all nodes replay the log");
    c.check_alive().expect("no node died");
}
