//! Runs a cluster of node processes on loopback for a test.
//!
//! Each node is a real process (`kill -9` is a real crash) with its own data
//! directory under one temp dir and its log in `node-<id>.log` there. Ports
//! are drawn per cluster from 20000..32000 (below the ephemeral range) and
//! checked to be free. Dropping the [`Cluster`] kills every process, pass or
//! fail, and on failure prints the tail of each node's log.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use resqlite_proto::client::client_client::ClientClient;
use resqlite_proto::client::client_command_request::Statement;
use resqlite_proto::client::{value, ClientCommandRequest, ClientCommandResponse};
use tonic::transport::{Channel, Endpoint};

/// A node id, as the nodes use it.
pub type NodeId = u64;

/// Ports handed out in this test process, so parallel tests never pick the
/// same one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// How long one client call may take before the harness gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval inside [`wait_until`].
const POLL: Duration = Duration::from_millis(25);

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A free loopback port in 20000..32000 not yet used by this process.
pub fn pick_port() -> anyhow::Result<u16> {
    let mut used = USED_PORTS
        .lock()
        .map_err(|_| anyhow!("port registry poisoned"))?;
    let used = used.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = 20000 + (random_u64() % 12000) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port found in 20000..32000")
}

/// Polls `f` until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a node reports about itself (the demo node's `status` read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader: NodeId,
    /// Its commit index.
    pub commit: u64,
    /// Its state machine's applied index.
    pub applied: u64,
}

/// How a write ended, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged: committed and applied on the leader.
    Acked,
    /// Refused with this SQLSTATE and message.
    Refused(String, String),
}

struct NodeProc {
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// gRPC clients of every node, cheap to clone into a background task. The
/// channels are lazy: they reconnect by themselves after a node restarts.
#[derive(Clone)]
pub struct Clients {
    nodes: BTreeMap<NodeId, ClientClient<Channel>>,
}

impl Clients {
    async fn call(
        &self,
        id: NodeId,
        req: ClientCommandRequest,
    ) -> anyhow::Result<ClientCommandResponse> {
        let mut client = self
            .nodes
            .get(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?
            .clone();
        let resp = tokio::time::timeout(CALL_TIMEOUT, client.client_command(req))
            .await
            .map_err(|_| anyhow!("node {id}: no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|s| anyhow!("node {id}: rpc failed: {:?} {}", s.code(), s.message()))?;
        Ok(resp.into_inner())
    }

    /// Node `id`'s own view of itself.
    pub async fn status(&self, id: NodeId) -> anyhow::Result<NodeStatus> {
        let resp = self.call(id, query("status", "status")).await?;
        let row = resp
            .rows
            .first()
            .ok_or_else(|| anyhow!("node {id}: empty status"))?;
        let int = |i: usize| match row.values.get(i).and_then(|v| v.kind.as_ref()) {
            Some(value::Kind::Integer(v)) => Ok(*v as u64),
            other => Err(anyhow!("node {id}: bad status column {i}: {other:?}")),
        };
        let role = match row.values.get(1).and_then(|v| v.kind.as_ref()) {
            Some(value::Kind::Text(t)) => t.clone(),
            other => bail!("node {id}: bad role {other:?}"),
        };
        Ok(NodeStatus {
            id: int(0)?,
            role,
            term: int(2)?,
            leader: int(3)?,
            commit: int(4)?,
            applied: int(5)?,
        })
    }

    /// The node that says it leads, among `ids` (those that answer).
    pub async fn find_leader(&self, ids: &[NodeId]) -> Option<NodeId> {
        for &id in ids {
            if let Ok(s) = self.status(id).await {
                if s.role == "leader" {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Sends `text` as a write to node `id`. An `Err` is a transport
    /// failure: the write may or may not have been applied.
    pub async fn write(&self, id: NodeId, text: &str) -> anyhow::Result<WriteOutcome> {
        let req = ClientCommandRequest {
            statement: Some(Statement::Command(text.to_string())),
            ..Default::default()
        };
        let resp = self.call(id, req).await?;
        Ok(match resp.error {
            Some(e) => WriteOutcome::Refused(e.sqlstate, e.message),
            None if resp.rows_affected == 1 && resp.tag == "INSERT 0 1" => WriteOutcome::Acked,
            None => bail!("node {id}: unexpected write reply {resp:?}"),
        })
    }

    /// Node `id`'s applied payloads as it holds them now (no leader check).
    pub async fn local_list(&self, id: NodeId) -> anyhow::Result<Vec<String>> {
        rows_to_texts(self.call(id, query("all", "local")).await?)
    }

    /// A linearizable read of every applied payload, at node `id` (which
    /// must be the leader).
    pub async fn read(&self, id: NodeId) -> anyhow::Result<Vec<String>> {
        rows_to_texts(self.call(id, query("all", "")).await?)
    }
}

/// A running cluster of `raft-demo-node` processes.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, NodeProc>,
    clients: Clients,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) of the node binary `bin`.
    pub fn start(bin: impl Into<PathBuf>, n: u64) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("resqlite-cluster-")
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let mut nodes = BTreeMap::new();
        let mut clients = BTreeMap::new();
        for id in 1..=n {
            let port = pick_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let channel = Endpoint::from_shared(url)?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy();
            clients.insert(id, ClientClient::new(channel));
            nodes.insert(
                id,
                NodeProc {
                    port,
                    data_dir: dir.path().join(format!("node-{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    child: None,
                },
            );
        }
        let mut cluster = Cluster {
            bin: bin.into(),
            dir,
            nodes,
            clients: Clients { nodes: clients },
        };
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The clients of every node.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The gRPC URL of node `id`.
    pub fn url(&self, id: NodeId) -> String {
        self.nodes
            .get(&id)
            .map(|n| format!("http://127.0.0.1:{}", n.port))
            .unwrap_or_default()
    }

    /// The temp dir holding every node's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) node `id`'s process on its port and data dir.
    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let peers: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|&p| p != id)
            .map(|p| format!("{p}={}", self.url(p)))
            .collect();
        let bin = self.bin.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", node.port))
            .arg("--data-dir")
            .arg(&node.data_dir);
        for p in peers {
            cmd.arg("--peer").arg(p);
        }
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("RESQLITE_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Kills node `id` with SIGKILL (no chance to flush or say goodbye) and
    /// reaps it.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        if let Some(mut child) = node.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            child.kill().with_context(|| format!("killing node {id}"))?;
            child.wait().with_context(|| format!("reaping node {id}"))?;
        }
        Ok(())
    }

    /// Fails if a node's process exited by itself.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (id, node) in self.nodes.iter_mut() {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    bail!("node {id} exited unexpectedly: {status}");
                }
            }
        }
        Ok(())
    }

    /// The statuses of every running node, if all of them answer.
    pub async fn statuses(&self) -> Option<Vec<NodeStatus>> {
        let mut out = Vec::new();
        for id in self.running() {
            out.push(self.clients.status(id).await.ok()?);
        }
        Some(out)
    }

    /// Waits until the running nodes agree on exactly one leader in one
    /// term, and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        wait_until("one leader all running nodes agree on", timeout, || async {
            let all = self.statuses().await?;
            let leaders: Vec<&NodeStatus> = all.iter().filter(|s| s.role == "leader").collect();
            let [leader] = leaders.as_slice() else {
                return None;
            };
            let agreed = all
                .iter()
                .all(|s| s.leader == leader.id && s.term == leader.term);
            agreed.then_some(leader.id)
        })
        .await
    }

    /// Sends `text` as a write to node `id`.
    pub async fn write(&self, id: NodeId, text: &str) -> anyhow::Result<WriteOutcome> {
        self.clients.write(id, text).await
    }

    /// A linearizable read of every applied payload, at node `id` (which
    /// must be the leader).
    pub async fn read(&self, id: NodeId) -> anyhow::Result<Vec<String>> {
        self.clients.read(id).await
    }

    /// Writes `text` through whichever node leads, retrying refusals that
    /// say the write was not applied (not the leader, no leader, dropped)
    /// until `timeout`. Any other outcome is an error.
    pub async fn write_until_acked(&self, text: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(leader) = self.clients.find_leader(&self.running()).await {
                match self.write(leader, text).await? {
                    WriteOutcome::Acked => return Ok(()),
                    WriteOutcome::Refused(state, msg) if not_applied(&state) => {
                        last = format!("{state} {msg}");
                    }
                    WriteOutcome::Refused(state, msg) => {
                        bail!("write {text:?} failed: {state} {msg}")
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("write {text:?} not acknowledged within {timeout:?} (last refusal: {last})")
    }

    /// Waits until every running node's applied list equals `want`.
    pub async fn wait_all_equal(&self, want: &[String], timeout: Duration) -> anyhow::Result<()> {
        for id in self.running() {
            let what = format!("node {id} to hold the leader's list");
            wait_until(&what, timeout, || async {
                let got = self.clients.local_list(id).await.ok()?;
                (got == want).then_some(())
            })
            .await?;
        }
        Ok(())
    }
}

/// Whether a refusal with this SQLSTATE says the write was certainly not
/// applied: not the leader, no leader, or overwritten by a new leader.
pub fn not_applied(sqlstate: &str) -> bool {
    matches!(sqlstate, "25006" | "57P03" | "40001")
}

/// What a [`write_loop`] saw.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Acknowledged writes: they must survive anything.
    pub acked: Vec<String>,
    /// Writes whose outcome is unknown (40003, transport error): they may
    /// or may not be there.
    pub unknown: Vec<String>,
    /// Writes refused before they could apply: they must not be there.
    pub refused: Vec<String>,
}

/// Writes `prefix-0`, `prefix-1`, … one at a time to whichever of `ids`
/// leads, until `stop` turns true; counts acknowledgements in `acked`.
pub async fn write_loop(
    clients: Clients,
    ids: Vec<NodeId>,
    prefix: String,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> History {
    let mut h = History::default();
    let mut leader = None;
    let mut i = 0u64;
    while !*stop.borrow_and_update() {
        let Some(to) = leader else {
            leader = clients.find_leader(&ids).await;
            if leader.is_none() {
                tokio::time::sleep(POLL).await;
            }
            continue;
        };
        let payload = format!("{prefix}-{i}");
        i += 1;
        match clients.write(to, &payload).await {
            Ok(WriteOutcome::Acked) => {
                h.acked.push(payload);
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(WriteOutcome::Refused(state, _)) if not_applied(&state) => {
                h.refused.push(payload);
                leader = None;
            }
            Ok(WriteOutcome::Refused(_, _)) | Err(_) => {
                h.unknown.push(payload);
                leader = None;
            }
        }
    }
    h
}

fn query(text: &str, consistency: &str) -> ClientCommandRequest {
    ClientCommandRequest {
        statement: Some(Statement::Query(text.to_string())),
        read_consistency: consistency.to_string(),
        ..Default::default()
    }
}

fn rows_to_texts(resp: ClientCommandResponse) -> anyhow::Result<Vec<String>> {
    if let Some(e) = resp.error {
        bail!("read refused: {} {}", e.sqlstate, e.message);
    }
    resp.rows
        .into_iter()
        .map(|r| match r.values.into_iter().next().and_then(|v| v.kind) {
            Some(value::Kind::Text(t)) => Ok(t),
            other => Err(anyhow!("unexpected row value {other:?}")),
        })
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for (id, node) in &self.nodes {
                eprintln!("----- node {id} log (last 60 lines) -----");
                eprintln!("{}", tail(&node.log, 60));
            }
        }
        // Keep the files of a failed run when asked to.
        if std::env::var_os("RESQLITE_KEEP_TEST_DIRS").is_some() {
            let kept = std::mem::replace(
                &mut self.dir,
                match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(_) => return,
                },
            );
            eprintln!("kept cluster dir {}", kept.keep().display());
        }
    }
}
