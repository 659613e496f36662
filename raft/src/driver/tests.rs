//! The driver without a network: a single-voter node on a real disk.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{NodeConfig, ProposeError, RaftNode};
use crate::core::Role;

// The list machine of the snapshot tests; with the default snapshot policy
// these tests never reach a snapshot, so a restart replays the whole log.
use super::snapshot_tests::{machine, ListMachine};

fn config(dir: &std::path::Path, peers: BTreeMap<u64, String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(1, peers, dir.to_path_buf());
    cfg.tick = Duration::from_millis(10);
    cfg
}

/// Awaits `f`, failing the test with `what` if it takes over 20 s: a hang
/// here once stalled a local .ci/run with no clue where it was stuck.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

async fn wait_leader(node: &RaftNode<ListMachine>) {
    let mut status = node.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.role == Role::Leader),
    )
    .await
    .expect("elected within 10 s")
    .expect("node running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_commits_concurrent_proposals_and_replays_them_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (sm, list) = machine();
    let (node, _service) = RaftNode::start(config(dir.path(), BTreeMap::new()), sm)
        .await
        .unwrap();
    wait_leader(&node).await;

    let proposals = (0..100).map(|i| node.propose(Bytes::from(format!("p{i}"))));
    let outputs = futures::future::join_all(proposals).await;
    let mut indexes: Vec<u64> = outputs.into_iter().map(|o| o.expect("committed")).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 100, "each proposal got its own index");

    within("first read barrier", node.read_barrier())
        .await
        .expect("leader read");
    let before = list.lock().unwrap().clone();
    assert_eq!(before.len(), 100);

    within("first shutdown", node.shutdown()).await;
    assert!(node.is_stopped());
    assert_eq!(
        within(
            "a proposal after shutdown",
            node.propose(Bytes::from_static(b"late"))
        )
        .await,
        Err(ProposeError::Shutdown)
    );

    let (sm, list) = machine();
    let (node, _service) = RaftNode::start(config(dir.path(), BTreeMap::new()), sm)
        .await
        .unwrap();
    wait_leader(&node).await;
    within("read barrier after restart", node.read_barrier())
        .await
        .expect("leader read after restart");
    assert_eq!(
        *list.lock().unwrap(),
        before,
        "the log replays in the same order"
    );
    within("second shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_proposals_and_reads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: this node can never win an election.
    let peers = BTreeMap::from([
        (2, "http://127.0.0.1:9".to_string()),
        (3, "http://127.0.0.1:9".to_string()),
    ]);
    let (sm, _) = machine();
    let (node, _service) = RaftNode::start(config(dir.path(), peers), sm)
        .await
        .unwrap();
    assert_eq!(
        node.propose(Bytes::from_static(b"x")).await,
        Err(ProposeError::NotLeader { leader: None })
    );
    assert_eq!(
        node.read_barrier().await,
        Err(ProposeError::NotLeader { leader: None })
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_config_whose_voters_disagree_with_its_peers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), BTreeMap::new());
    cfg.raft.voters = vec![1, 2];
    let (sm, _) = machine();
    assert!(matches!(
        RaftNode::start(cfg, sm).await,
        Err(super::DriverError::Config(_))
    ));
}
