//! A Raft node with a toy state machine, for multi-process tests of the
//! driver and the gRPC transport.
//!
//! The state machine is the list of applied `Normal` payloads, in memory
//! only: it reports `applied_index` 0 at start, so a restarted node replays
//! its whole durable log, which is what proves durability.
//!
//! It serves the `Raft` service and the `Client` service on one port:
//! - `command` (any text): proposed as an entry; `INSERT 0 1` once applied.
//! - `query` (any text): after a ReadIndex barrier, every applied payload in
//!   order (one text column `payload`). Leader only.
//! - `query` with `read_consistency = "local"`: this node's applied list as
//!   it is, on any node (a debug read; not linearizable).
//! - `query` with `read_consistency = "status"`: one row `id, role, term,
//!   leader, commit, applied` (a debug read).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use resqlite_proto::client::client_command_request::Statement;
use resqlite_proto::client::client_server::{Client, ClientServer};
use resqlite_proto::client::{
    value, ClientCommandRequest, ClientCommandResponse, ClientError, Column, Row, Value,
};
use resqlite_raft::driver::{Halt, NodeConfig, ProposeError, RaftNode, StateMachine};
use resqlite_raft::{Entry, EntryKind, NodeId, Role};
use tonic::{Request, Response, Status};

#[derive(Parser, Debug)]
#[command(about = "A Raft node with an in-memory list as its state machine")]
struct Args {
    /// This node's id (not zero).
    #[arg(long)]
    id: NodeId,
    /// Address to serve gRPC on (Raft and ClientCommand).
    #[arg(long)]
    listen: SocketAddr,
    /// Another voter: `ID=http://HOST:PORT`. Repeat for each peer.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(NodeId, String)>,
    /// Directory for the node's durable state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Length of one Raft tick, in milliseconds.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
}

fn parse_peer(s: &str) -> Result<(NodeId, String), String> {
    let (id, url) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=URL, got {s:?}"))?;
    let id = id.parse().map_err(|e| format!("bad peer id {id:?}: {e}"))?;
    Ok((id, url.to_string()))
}

/// The applied payloads, shared with the client service for local reads.
type Applied = Arc<Mutex<Vec<Bytes>>>;

struct ListMachine {
    applied_index: u64,
    list: Applied,
}

impl StateMachine for ListMachine {
    type Output = u64;

    fn apply(&mut self, entries: &[Entry], _wanted: &[bool]) -> Result<Vec<u64>, Halt> {
        let mut list = match self.list.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(entries
            .iter()
            .map(|e| {
                if e.kind == EntryKind::Normal {
                    list.push(e.data.clone());
                }
                self.applied_index = e.index;
                e.index
            })
            .collect())
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

struct ClientService {
    node: RaftNode<ListMachine>,
    list: Applied,
    peers: BTreeMap<NodeId, String>,
}

impl ClientService {
    fn error(&self, e: ProposeError) -> ClientCommandResponse {
        let (sqlstate, message, leader_url) = match e {
            ProposeError::NotLeader { leader: Some(l) } if l != self.node.id() => {
                let url = self.peers.get(&l).cloned().unwrap_or_default();
                let addr = url.trim_start_matches("http://").to_string();
                ("25006", format!("not the leader; leader: {addr}"), url)
            }
            ProposeError::NotLeader { .. } => (
                "57P03",
                "no leader elected yet; retry shortly".to_string(),
                String::new(),
            ),
            ProposeError::OutcomeUnknown => (
                "40003",
                "leadership changed before the write was known to commit; check before retrying"
                    .to_string(),
                String::new(),
            ),
            ProposeError::Dropped => (
                "40001",
                "the write was overwritten by a new leader and not applied; retry it".to_string(),
                String::new(),
            ),
            // This demo never changes its membership.
            ProposeError::ChangeInProgress(why) | ProposeError::InvalidChange(why) => {
                ("55000", why, String::new())
            }
            ProposeError::Shutdown => (
                "57P01",
                "the node is shutting down; use another node".to_string(),
                String::new(),
            ),
            ProposeError::Storage(why) => (
                "58030",
                format!("the node stopped after a storage failure: {why}"),
                String::new(),
            ),
        };
        ClientCommandResponse {
            error: Some(ClientError {
                sqlstate: sqlstate.to_string(),
                message,
                leader_client_addr: String::new(),
                leader_grpc_addr: leader_url,
            }),
            ..Default::default()
        }
    }

    fn rows(&self) -> ClientCommandResponse {
        let list = match self.list.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let rows: Vec<Row> = list
            .iter()
            .map(|p| Row {
                values: vec![text(String::from_utf8_lossy(p).into_owned())],
            })
            .collect();
        ClientCommandResponse {
            columns: vec![Column {
                name: "payload".to_string(),
                declared_type: "TEXT".to_string(),
            }],
            tag: format!("SELECT {}", rows.len()),
            rows,
            ..Default::default()
        }
    }

    fn status_row(&self) -> ClientCommandResponse {
        let s = self.node.status();
        let role = match s.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        let names = ["id", "role", "term", "leader", "commit", "applied"];
        let values = vec![
            int(s.id),
            text(role.to_string()),
            int(s.term),
            int(s.leader.unwrap_or(0)),
            int(s.commit),
            int(self.node.applied_index()),
        ];
        ClientCommandResponse {
            columns: names
                .iter()
                .map(|n| Column {
                    name: n.to_string(),
                    declared_type: String::new(),
                })
                .collect(),
            rows: vec![Row { values }],
            tag: "SELECT 1".to_string(),
            ..Default::default()
        }
    }
}

fn text(s: String) -> Value {
    Value {
        kind: Some(value::Kind::Text(s)),
    }
}

fn int(v: u64) -> Value {
    Value {
        kind: Some(value::Kind::Integer(v as i64)),
    }
}

#[tonic::async_trait]
impl Client for ClientService {
    async fn client_command(
        &self,
        request: Request<ClientCommandRequest>,
    ) -> Result<Response<ClientCommandResponse>, Status> {
        let req = request.into_inner();
        let resp = match req.statement {
            Some(Statement::Command(text)) => match self.node.propose(Bytes::from(text)).await {
                Ok(_) => ClientCommandResponse {
                    rows_affected: 1,
                    tag: "INSERT 0 1".to_string(),
                    ..Default::default()
                },
                Err(e) => self.error(e),
            },
            Some(Statement::Query(_)) => match req.read_consistency.as_str() {
                "local" => self.rows(),
                "status" => self.status_row(),
                _ => match self.node.read_barrier().await {
                    Ok(()) => self.rows(),
                    Err(e) => self.error(e),
                },
            },
            None => return Err(Status::invalid_argument("a command or a query is required")),
        };
        Ok(Response::new(resp))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let peers: BTreeMap<NodeId, String> = args.peers.into_iter().collect();
    let mut cfg = NodeConfig::new(args.id, peers.clone(), args.data_dir);
    cfg.tick = Duration::from_millis(args.tick_ms);
    cfg.transport.rpc_timeout = cfg.tick * cfg.raft.election_tick;

    let list: Applied = Arc::new(Mutex::new(Vec::new()));
    let sm = ListMachine {
        applied_index: 0,
        list: list.clone(),
    };
    let (node, raft_service) = RaftNode::start(cfg, sm)
        .await
        .context("starting the raft node")?;
    let client = ClientService {
        node: node.clone(),
        list,
        peers,
    };
    tracing::info!(node = args.id, listen = %args.listen, "serving");
    let watched = node.clone();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(raft_service)
        .add_service(ClientServer::new(client))
        .serve_with_shutdown(args.listen, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
                _ = watched.stopped() => {}
            }
        })
        .await
        .context("serving gRPC")?;
    node.shutdown().await;
    match node.stopped().await {
        // Exit non-zero so a supervisor restarts the node, which recovers
        // from what the disk really holds.
        Some(fatal) => anyhow::bail!("raft node failed: {fatal}"),
        None => Ok(()),
    }
}
