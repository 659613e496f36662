//! Snapshots through the driver: compaction on a real disk, restart from a
//! snapshot, catch-up of a follower by InstallSnapshot over gRPC, and
//! leadership transfer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use super::{
    Halt, NodeConfig, RaftNode, SnapshotError, SnapshotPolicy, SnapshotWriter, StateMachine,
};
use crate::core::Role;
use crate::types::{Entry, EntryKind, NodeId};

/// The list of applied Normal payloads, shared with the test. A snapshot
/// is the list, one payload per line, after the applied index.
pub(super) struct ListMachine {
    applied: u64,
    list: Arc<Mutex<Vec<Bytes>>>,
}

impl StateMachine for ListMachine {
    type Output = u64;
    fn apply(&mut self, entries: &[Entry], _wanted: &[bool]) -> Result<Vec<u64>, Halt> {
        let mut list = self.list.lock().unwrap();
        Ok(entries
            .iter()
            .map(|e| {
                if e.kind == EntryKind::Normal {
                    list.push(e.data.clone());
                }
                self.applied = e.index;
                e.index
            })
            .collect())
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn snapshot(&mut self) -> Result<SnapshotWriter, SnapshotError> {
        // A consistent copy, taken between two applies.
        let (applied, list) = (self.applied, self.list.lock().unwrap().clone());
        Ok(Box::new(move |path: &Path| {
            let mut text = format!("{applied}\n");
            for item in &list {
                text.push_str(std::str::from_utf8(item)?);
                text.push('\n');
            }
            std::fs::write(path, text)?;
            Ok(applied)
        }))
    }

    fn restore(&mut self, path: &Path, index: u64) -> Result<(), SnapshotError> {
        let text = std::fs::read_to_string(path)?;
        let mut lines = text.lines();
        let applied: u64 = lines.next().ok_or("empty snapshot")?.parse()?;
        if applied != index {
            return Err(format!("snapshot holds {applied}, expected {index}").into());
        }
        *self.list.lock().unwrap() = lines.map(|l| Bytes::from(l.to_string())).collect();
        self.applied = index;
        Ok(())
    }
}

pub(super) type List = Arc<Mutex<Vec<Bytes>>>;

pub(super) fn machine() -> (ListMachine, List) {
    let list = Arc::new(Mutex::new(Vec::new()));
    let sm = ListMachine {
        applied: 0,
        list: list.clone(),
    };
    (sm, list)
}

fn config(id: NodeId, dir: &Path, peers: BTreeMap<NodeId, String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, peers, dir.to_path_buf());
    cfg.tick = Duration::from_millis(10);
    cfg.transport.rpc_timeout = cfg.tick * cfg.raft.election_tick;
    cfg.snapshot = SnapshotPolicy {
        entries: 20,
        bytes: 1 << 20,
    };
    cfg
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn snap_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("snapshots"))
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

async fn propose_all(node: &RaftNode<ListMachine>, from: usize, to: usize) {
    let proposals = (from..to).map(|i| node.propose(Bytes::from(format!("p{i}"))));
    for out in futures::future::join_all(proposals).await {
        out.expect("committed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_compacts_its_log_and_restarts_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (sm, list) = machine();
    let (node, _svc) = RaftNode::start(config(1, dir.path(), BTreeMap::new()), sm)
        .await
        .unwrap();
    let mut status = node.watch_status();
    status.wait_for(|s| s.role == Role::Leader).await.unwrap();
    propose_all(&node, 0, 95).await;
    wait_for("a snapshot", || node.status().snapshot >= 60).await;
    let before = list.lock().unwrap().clone();
    node.shutdown().await;
    let snapshot = node.status().snapshot;
    assert_eq!(
        snap_files(dir.path()).len(),
        1,
        "older snapshots are deleted"
    );
    let first_segment = std::fs::read_dir(dir.path().join("raft"))
        .unwrap()
        .filter_map(|d| {
            let name = d.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .min();
    assert!(
        first_segment.is_none_or(|f| f > 1),
        "compacted segments are deleted (first segment {first_segment:?})"
    );

    // The state machine lost everything: the snapshot and the tail bring
    // it back.
    let (sm, list) = machine();
    let (node, _svc) = RaftNode::start(config(1, dir.path(), BTreeMap::new()), sm)
        .await
        .unwrap();
    assert!(node.status().snapshot >= snapshot);
    let mut status = node.watch_status();
    status.wait_for(|s| s.role == Role::Leader).await.unwrap();
    node.read_barrier().await.unwrap();
    assert_eq!(*list.lock().unwrap(), before);
    node.shutdown().await;
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    peers: BTreeMap<NodeId, String>,
    listeners: BTreeMap<NodeId, std::net::SocketAddr>,
}

impl Cluster {
    async fn new(n: u64) -> Self {
        let mut peers = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            // Reserve a port, then free it for the node's server.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            peers.insert(id, format!("http://{addr}"));
            listeners.insert(id, addr);
        }
        Cluster {
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            peers,
            listeners,
        }
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.dirs[id as usize - 1].path().to_path_buf()
    }

    /// Starts node `id` with its gRPC server; the server stops with the
    /// returned sender.
    async fn start(
        &self,
        id: NodeId,
    ) -> (
        RaftNode<ListMachine>,
        List,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (sm, list) = machine();
        let cfg = config(id, &self.dir(id), self.peers.clone());
        let (node, svc) = RaftNode::start(cfg, sm).await.unwrap();
        let listener = TcpListener::bind(self.listeners[&id]).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        (node, list, stop)
    }
}

async fn leader_of(nodes: &[&RaftNode<ListMachine>]) -> usize {
    let mut found = None;
    wait_for("a leader", || {
        found = nodes
            .iter()
            .position(|n| n.status().role == Role::Leader && n.status().term > 0);
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let cluster = Cluster::new(3).await;
    let mut nodes = Vec::new();
    let mut lists = Vec::new();
    let mut stops = Vec::new();
    for id in 1..=3 {
        let (node, list, stop) = cluster.start(id).await;
        nodes.push(node);
        lists.push(list);
        stops.push(Some(stop));
    }
    let leader = leader_of(&nodes.iter().collect::<Vec<_>>()).await;
    let down = (leader + 1) % 3;
    nodes[down].shutdown().await;
    if let Some(stop) = stops[down].take() {
        let _ = stop.send(());
    }

    let live: Vec<usize> = (0..3).filter(|&i| i != down).collect();
    let l = live[leader_of(&live.iter().map(|&i| &nodes[i]).collect::<Vec<_>>()).await];
    propose_all(&nodes[l], 0, 150).await;
    wait_for("compaction on the live nodes", || {
        live.iter().all(|&i| nodes[i].status().snapshot >= 100)
    })
    .await;

    // Back with its old disk: the entries it lacks are compacted away.
    let (back, back_list, _stop) = cluster.start(down as NodeId + 1).await;
    let commit = nodes[l].status().commit;
    wait_for("the restarted node to catch up", || {
        back.applied_index() >= commit
    })
    .await;
    assert!(
        back.status().snapshot >= 100,
        "caught up by InstallSnapshot, not by replaying the log"
    );
    assert_eq!(
        *back_list.lock().unwrap(),
        *lists[l].lock().unwrap(),
        "the same contents as the leader"
    );
    assert_eq!(back_list.lock().unwrap().len(), 150, "no write lost");

    // Leadership transfer to the node that caught up.
    nodes[l].transfer_leader(back.id()).await.unwrap();
    wait_for("the transfer", || back.status().role == Role::Leader).await;
    back.propose(Bytes::from_static(b"after transfer"))
        .await
        .expect("the new leader commits");
    for &i in &live {
        nodes[i].shutdown().await;
    }
    back.shutdown().await;
}
