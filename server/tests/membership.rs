//! Membership changes with real `resqlite serve` processes: nodes join and
//! leave (the leader too) under a steady write load, a new empty node
//! joins a cluster that holds 100,000 rows, and all three nodes are
//! restarted one after the other with SIGTERM under load. After each, every
//! member holds the same contents, with every acknowledged write.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::{AddNodeRequest, NodeStatusRequest, NodeStatusResponse};
use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::{Join, SqlCluster};
use resqlite_tests::writer::write_steadily;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const CATCH_UP: Duration = Duration::from_secs(120);

/// Runs the `resqlite` command line; returns success and everything it said.
fn resqlite(args: &[&str]) -> (bool, String) {
    resqlite_tests::cli::run(BIN, args)
}

/// Node `id`'s own status.
async fn status(c: &SqlCluster, id: u64) -> anyhow::Result<NodeStatusResponse> {
    let mut client = AdminClient::connect(format!("http://{}", c.grpc_addr(id))).await?;
    Ok(client.node_status(NodeStatusRequest {}).await?.into_inner())
}

/// The voters node `via` knows of.
async fn voters(c: &SqlCluster, via: u64) -> Option<BTreeSet<u64>> {
    let s = status(c, via).await.ok()?;
    Some(s.members.iter().filter(|m| m.voter).map(|m| m.id).collect())
}

async fn wait_for_voters(c: &SqlCluster, via: u64, want: &[u64], timeout: Duration) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    wait_until(&format!("voters {want:?} per node {via}"), timeout, || {
        let want = want.clone();
        async move { (voters(c, via).await? == want).then_some(()) }
    })
    .await
    .unwrap();
}

/// The leader according to the members' own answers.
async fn leader(c: &SqlCluster, among: &[u64]) -> Option<u64> {
    for &id in among {
        if let Ok(s) = status(c, id).await {
            if s.role == "leader" {
                return Some(id);
            }
        }
    }
    None
}

/// Waits until `id` has applied everything the leader had committed when
/// the wait began.
async fn wait_caught_up(c: &SqlCluster, id: u64, among: &[u64]) {
    let lead = wait_until("a leader", ELECTION, || leader(c, among))
        .await
        .unwrap();
    let commit = status(c, lead).await.unwrap().commit_index;
    wait_until(
        &format!("node {id} to apply {commit}"),
        CATCH_UP,
        || async move {
            let s = status(c, id).await.ok()?;
            (s.applied_index >= commit).then_some(())
        },
    )
    .await
    .unwrap();
}

/// A writer on table `t` against every node's address in turn; returns
/// the stop switch, the acknowledged-write counter and the task.
type Writer = tokio::task::JoinHandle<(Vec<i64>, Vec<i64>, Duration)>;

fn start_writer(c: &SqlCluster) -> (tokio::sync::watch::Sender<bool>, Arc<AtomicUsize>, Writer) {
    let targets: Vec<String> = c.ids().into_iter().map(|i| c.pg_addr(i)).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acks = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_steadily(targets, stop_rx, acks.clone()));
    (stop_tx, acks, writer)
}

/// Waits until `n` more writes than now are acknowledged.
async fn wait_more_acks(acks: &Arc<AtomicUsize>, n: usize, what: &str) {
    let target = acks.load(Ordering::Relaxed) + n;
    wait_until(what, ELECTION, || {
        let acks = acks.clone();
        async move { (acks.load(Ordering::Relaxed) >= target).then_some(()) }
    })
    .await
    .unwrap();
}

/// Every node in `members` holds the same rows of `t`: every acknowledged
/// key, and nothing that was not written (only keys whose outcome was
/// unknown may be there or not).
async fn check_contents(c: &SqlCluster, members: &[u64], acked: &[i64], unknown: &[i64]) {
    let expected: BTreeSet<i64> = std::iter::once(1).chain(acked.iter().copied()).collect();
    let maybe: BTreeSet<i64> = unknown.iter().copied().collect();
    let read = |id: u64| async move {
        let rows = c
            .local_rows(id, "SELECT id FROM t ORDER BY id")
            .await
            .ok()?;
        let keys: BTreeSet<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        Some(keys)
    };
    let contents = wait_until(
        "every member to hold every acknowledged write",
        CATCH_UP,
        || {
            let expected = expected.clone();
            async move {
                let mut all = Vec::new();
                for &id in members {
                    let keys = read(id).await?;
                    if !expected.is_subset(&keys) {
                        return None;
                    }
                    all.push(keys);
                }
                all.windows(2).all(|w| w[0] == w[1]).then_some(all)
            }
        },
    )
    .await
    .unwrap();
    let extra: Vec<&i64> = contents[0]
        .iter()
        .filter(|k| !expected.contains(k) && !maybe.contains(k))
        .collect();
    assert!(extra.is_empty(), "rows nobody wrote: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_the_leader_too_under_a_steady_write_load() {
    let mut c = SqlCluster::prepare(BIN, 5).unwrap();
    c.set_extra_args(vec!["--snapshot-entries".into(), "300".into()]);
    c.set_join(4, Join::Via(1));
    c.set_join(5, Join::Wait);
    for id in 1..=3 {
        c.start_node(id).unwrap();
    }
    let first = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(first).await.unwrap();
    db.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // An empty node cannot take over the id of a voter (it would vote
    // without what that voter acknowledged).
    let mut admin = AdminClient::connect(format!("http://{}", c.grpc_addr(2)))
        .await
        .unwrap();
    let refused = admin
        .add_node(AddNodeRequest {
            id: 3,
            grpc_addr: c.grpc_addr(3),
            client_addr: c.pg_addr(3),
            voter: true,
            catch_up_timeout_ms: 0,
            empty: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");

    let (stop, acks, writer) = start_writer(&c);
    wait_more_acks(&acks, 50, "writes before the changes").await;

    // Node 4 asks node 1 to add it (forwarded to the leader if need be).
    c.start_node(4).unwrap();
    wait_for_voters(&c, 2, &[1, 2, 3, 4], CATCH_UP).await;
    wait_more_acks(&acks, 20, "writes with four voters").await;

    // Node 5 waits; an operator adds it through node 3.
    c.start_node(5).unwrap();
    let (ok, out) = resqlite(&[
        "node",
        "add",
        "--id",
        "5",
        "--grpc",
        &c.grpc_addr(5),
        "--pg",
        &c.pg_addr(5),
        "--node",
        &c.grpc_addr(3),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("node 5 (voter"), "{out}");
    wait_for_voters(&c, 4, &[1, 2, 3, 4, 5], ELECTION).await;
    wait_more_acks(&acks, 20, "writes with five voters").await;

    // Remove the leader, through another node.
    let old_leader = leader(&c, &[1, 2, 3, 4, 5]).await.unwrap();
    let via = if old_leader == 4 { 5 } else { 4 };
    let (ok, out) = resqlite(&[
        "node",
        "remove",
        "--id",
        &old_leader.to_string(),
        "--node",
        &c.grpc_addr(via),
    ]);
    assert!(ok, "{out}");
    let rest: Vec<u64> = (1..=5).filter(|&i| i != old_leader).collect();
    let new_leader = wait_until("a new leader among the others", ELECTION, || {
        leader(&c, &rest)
    })
    .await
    .unwrap();
    assert_ne!(new_leader, old_leader);
    let log = std::fs::read_to_string(c.log_path(old_leader)).unwrap();
    assert!(
        log.contains("removed from the cluster; stepping down"),
        "{log}"
    );
    c.kill(old_leader).unwrap();
    wait_more_acks(&acks, 20, "writes after the leader left").await;

    // Remove one more (a follower that was there from the start).
    let follower = *rest
        .iter()
        .find(|&&i| i != new_leader && i <= 3)
        .expect("an original follower is left");
    let (ok, out) = resqlite(&[
        "node",
        "remove",
        "--id",
        &follower.to_string(),
        "--node",
        &c.grpc_addr(new_leader),
    ]);
    assert!(ok, "{out}");
    c.kill(follower).unwrap();
    let members: Vec<u64> = rest.into_iter().filter(|&i| i != follower).collect();
    wait_for_voters(&c, members[0], &members, ELECTION).await;
    wait_more_acks(&acks, 20, "writes with three voters again").await;

    stop.send(true).unwrap();
    let (acked, unknown, longest) = writer.await.unwrap();
    println!(
        "membership changes under load: {} writes acknowledged, {} unknown, longest gap {longest:?}",
        acked.len(),
        unknown.len()
    );
    check_contents(&c, &members, &acked, &unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_empty_node_joins_a_cluster_holding_100k_rows() {
    let mut c = SqlCluster::prepare(BIN, 4).unwrap();
    c.set_extra_args(vec!["--snapshot-entries".into(), "100".into()]);
    c.set_join(4, Join::Via(2));
    for id in 1..=3 {
        c.start_node(id).unwrap();
    }
    let lead = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(lead).await.unwrap();
    db.batch_execute(
        "CREATE TABLE big (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000)
         INSERT INTO big SELECT x, 'row ' || x FROM n",
    )
    .await
    .unwrap();
    // Enough single writes that the log is compacted past its start: the
    // new node can only catch up from a snapshot.
    let insert = db
        .prepare("INSERT INTO big VALUES ($1, 'extra')")
        .await
        .unwrap();
    for k in 100_001..=100_250i64 {
        db.execute(&insert, &[&k]).await.unwrap();
    }
    let started = Instant::now();
    c.start_node(4).unwrap();
    wait_for_voters(&c, 1, &[1, 2, 3, 4], CATCH_UP).await;
    wait_caught_up(&c, 4, &[1, 2, 3]).await;
    println!(
        "a new node caught up with 100,250 rows and became a voter in {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(c.log_path(4)).unwrap();
    assert!(log.contains("installing snapshot from the leader"), "{log}");
    let digest = "SELECT count(*), sum(k), sum(length(v)) FROM big";
    let want = c.local_rows(lead, digest).await.unwrap();
    assert_eq!(want[0][0], "100250");
    c.wait_all_hold(digest, &want, CATCH_UP).await.unwrap();
    // The new voter counts: four voters need three acknowledgements, so
    // with one of the first three down no write commits without node 4.
    let other = [1, 2, 3].into_iter().find(|&i| i != lead).unwrap();
    c.kill(other).unwrap();
    wait_until("a write that needs the new voter", ELECTION, || async {
        let db = c.connect(lead).await.ok()?;
        db.execute("INSERT INTO big VALUES (0, 'quorum')", &[])
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_sigterm_under_load_hands_leadership_over() {
    let mut c = SqlCluster::start(BIN, 3).unwrap();
    let first = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(first).await.unwrap();
    db.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (stop, acks, writer) = start_writer(&c);
    wait_more_acks(&acks, 20, "writes before the restarts").await;
    let mut handed_over = 0;
    for id in 1..=3 {
        let was_leader = leader(&c, &[1, 2, 3]).await == Some(id);
        let exited = c.terminate(id, Duration::from_secs(10)).unwrap();
        assert!(exited, "node {id} did not exit on SIGTERM");
        if was_leader {
            let log = std::fs::read_to_string(c.log_path(id)).unwrap();
            assert!(log.contains("leadership handed over"), "{log}");
            handed_over += 1;
        }
        wait_more_acks(&acks, 10, "writes while a node is down").await;
        c.start_node(id).unwrap();
        wait_caught_up(&c, id, &[1, 2, 3]).await;
    }
    // Leadership moves on each hand-over, so the leader may be restarted
    // more than once; each time it handed over.
    assert!(handed_over >= 1, "the leader was never restarted");
    wait_more_acks(&acks, 10, "writes after the restarts").await;
    stop.send(true).unwrap();
    let (acked, unknown, longest) = writer.await.unwrap();
    println!(
        "rolling restart: {} writes acknowledged, {} unknown, longest gap between \
         acknowledged writes {longest:?}",
        acked.len(),
        unknown.len()
    );
    check_contents(&c, &[1, 2, 3], &acked, &unknown).await;
}
