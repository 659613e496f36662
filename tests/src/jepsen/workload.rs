//! Clients over the PostgreSQL protocol. Each connects to some node, follows
//! `not the leader; leader: host:port` redirects, and records every op with
//! its outcome: ok, fail (certainly not executed: 25006, 57P03 — the node
//! refused before proposing) or unknown (timeout, lost connection, 40003, any
//! other error after the statement may have reached the log). The bank
//! and counter workloads run transactions instead (see [`super::transactions`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};

use super::history::{History, OpKind, OpRecord, OpValue, Outcome, TransferMode};
use super::transactions::{self, ACCOUNTS};
use crate::cluster::NodeId;

/// Registers (keys `0..KEYS`) every run creates with value 0.
pub const KEYS: i64 = 5;
/// How long one statement may take before its outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The schema every run starts with.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS registers (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS set_items (id INTEGER PRIMARY KEY, client INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS probes (id INTEGER PRIMARY KEY)",
];

/// Where the nodes take client connections.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub pg_ports: BTreeMap<NodeId, u16>,
}

impl Endpoints {
    /// The node whose client port is `port`.
    pub fn node_of_port(&self, port: u16) -> Option<NodeId> {
        self.pg_ports
            .iter()
            .find(|(_, &p)| p == port)
            .map(|(&id, _)| id)
    }

    /// Opens a connection to node `id`, within [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, id: NodeId) -> anyhow::Result<Client> {
        let port = self.pg_ports[&id];
        let conninfo = format!("host=127.0.0.1 port={port} user=resqlite connect_timeout=1");
        let (client, conn) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(&conninfo, NoTls))
                .await
                .map_err(|_| anyhow::anyhow!("connect to node {id} timed out"))??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// How a failed statement is to be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not executed; the leader is at this node, if known.
    NotLeader(Option<NodeId>),
    /// Not executed; no leader right now.
    Unavailable,
    /// May or may not have been executed.
    Indefinite,
}

/// Classifies an error of a statement that was sent.
pub fn classify(e: &tokio_postgres::Error, ends: &Endpoints) -> ErrorClass {
    let Some(db) = e.as_db_error() else {
        return ErrorClass::Indefinite;
    };
    match db.code().code() {
        "25006" => {
            let leader = db
                .message()
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .and_then(|p| ends.node_of_port(p));
            ErrorClass::NotLeader(leader)
        }
        "57P03" => ErrorClass::Unavailable,
        _ => ErrorClass::Indefinite,
    }
}

/// Shared by all clients of a run.
pub struct Shared {
    pub ends: Endpoints,
    pub history: Arc<History>,
    pub stop: AtomicBool,
    next_value: AtomicI64,
}

impl Shared {
    pub fn new(ends: Endpoints, history: Arc<History>) -> Arc<Shared> {
        Arc::new(Shared {
            ends,
            history,
            stop: AtomicBool::new(false),
            next_value: AtomicI64::new(1),
        })
    }

    /// A value no client has written or inserted before.
    pub fn fresh(&self) -> i64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which workload a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    Registers,
    Set,
    /// Transfers between accounts and reads of every balance, in
    /// transactions.
    Bank,
    /// Read-modify-write increments of one row, in transactions.
    Counter,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Registers,
        Workload::Set,
        Workload::Bank,
        Workload::Counter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Registers => "registers",
            Workload::Set => "set",
            Workload::Bank => "bank",
            Workload::Counter => "counter",
        }
    }

    /// Its ops are transactions (`BEGIN … COMMIT`).
    fn transactional(self) -> bool {
        matches!(self, Workload::Bank | Workload::Counter)
    }
}

/// Where a client goes after an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keeps its connection.
    Stay,
    /// Connects to this node (the leader a redirect named).
    Node(NodeId),
    /// Connects to a random node.
    Anywhere,
}

/// How an op ended, and what its client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpEnding {
    pub outcome: Outcome,
    pub value: OpValue,
    /// The error that made it fail or unknown.
    pub error: String,
    pub next: Next,
    /// Wait a little before the next op (no leader, or an error).
    pub backoff: bool,
}

/// `SQLSTATE message`, or the client library's text if the server sent none.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} {}", d.code().code(), d.message()))
        .unwrap_or_else(|| e.to_string())
}

/// One client's connection, kept across ops and re-aimed by redirects.
struct Session {
    node: NodeId,
    client: Option<Client>,
}

/// How long a transaction waits for another to release the write gate
/// before it gives up with 55P03 (certainly not applied), rather than
/// running into [`OP_TIMEOUT`].
const LOCK_TIMEOUT: &str = "1s";

/// Runs one client until `shared.stop` is set.
pub async fn run_client(shared: Arc<Shared>, process: usize, workload: Workload, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (process as u64).wrapping_mul(0x9e37));
    let ids: Vec<NodeId> = shared.ends.pg_ports.keys().copied().collect();
    let mut s = Session {
        node: ids[rng.random_range(0..ids.len())],
        client: None,
    };
    let mut last_seen: BTreeMap<i64, i64> = BTreeMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if s.client.is_none() {
            match connect(&shared.ends, s.node, workload).await {
                Ok(c) => s.client = Some(c),
                Err(_) => {
                    s.node = ids[rng.random_range(0..ids.len())];
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let kind = next_op(&shared, workload, &mut rng, &last_seen);
        let client = s.client.as_ref().expect("connected just above");
        let sent_to = s.node;
        let invoke_us = shared.history.now_us();
        let ending = if workload.transactional() {
            transactions::run(client, kind, &shared.ends).await
        } else {
            run_statement(client, kind, &shared.ends).await
        };
        let complete_us = shared.history.now_us();
        match ending.next {
            Next::Stay => {}
            Next::Node(id) => {
                s.client = None;
                s.node = id;
            }
            Next::Anywhere => {
                s.client = None;
                s.node = ids[rng.random_range(0..ids.len())];
            }
        }
        let (outcome, value) = (ending.outcome, ending.value);
        if let (OpKind::Read { key }, OpValue::Read(Some(v))) = (kind, value) {
            last_seen.insert(key, v);
        }
        if let (OpKind::Cas { key, to, .. }, OpValue::Applied(true)) = (kind, value) {
            last_seen.insert(key, to);
        }
        if let OpKind::Write { key, value: v } = kind {
            if outcome == Outcome::Ok {
                last_seen.insert(key, v);
            }
        }
        shared.history.record(OpRecord {
            process,
            node: sent_to,
            kind,
            outcome,
            value,
            invoke_us,
            complete_us,
            error: ending.error,
        });
        if ending.backoff {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connection for `workload`'s client: transactional ones wait at most
/// [`LOCK_TIMEOUT`] for the write gate.
async fn connect(ends: &Endpoints, node: NodeId, workload: Workload) -> anyhow::Result<Client> {
    let client = ends.connect(node).await?;
    if workload.transactional() {
        let set = format!("SET lock_timeout = '{LOCK_TIMEOUT}'");
        tokio::time::timeout(OP_TIMEOUT, client.batch_execute(&set))
            .await
            .map_err(|_| anyhow::anyhow!("SET lock_timeout on node {node} timed out"))??;
    }
    Ok(client)
}

/// The client's next op.
fn next_op(
    shared: &Shared,
    workload: Workload,
    rng: &mut SmallRng,
    last_seen: &BTreeMap<i64, i64>,
) -> OpKind {
    match workload {
        Workload::Set => OpKind::Insert { id: shared.fresh() },
        Workload::Registers => {
            let key = rng.random_range(0..KEYS);
            match rng.random_range(0..10) {
                0..=3 => OpKind::Read { key },
                4..=6 => OpKind::Write {
                    key,
                    value: shared.fresh(),
                },
                _ => OpKind::Cas {
                    key,
                    from: last_seen.get(&key).copied().unwrap_or(0),
                    to: shared.fresh(),
                },
            }
        }
        Workload::Bank => {
            if rng.random_range(0..10) < 3 {
                return OpKind::ReadBalances;
            }
            let from = rng.random_range(0..ACCOUNTS as i64);
            let to = (from + rng.random_range(1..ACCOUNTS as i64)) % ACCOUNTS as i64;
            OpKind::Transfer {
                from,
                to,
                amount: rng.random_range(1..=30),
                mode: match rng.random_range(0..10) {
                    0..=3 => TransferMode::Conditional,
                    4..=6 => TransferMode::LockFirst,
                    _ => TransferMode::ReadFirst,
                },
            }
        }
        Workload::Counter => OpKind::Increment {
            lock_first: rng.random_bool(0.5),
        },
    }
}

/// Runs one single-statement op (registers, set) and reads its ending.
async fn run_statement(client: &Client, kind: OpKind, ends: &Endpoints) -> OpEnding {
    let result = tokio::time::timeout(OP_TIMEOUT, execute(client, kind)).await;
    let e = match result {
        Ok(Ok(value)) => {
            return OpEnding {
                outcome: Outcome::Ok,
                value,
                error: String::new(),
                next: Next::Stay,
                backoff: false,
            }
        }
        // Maybe stuck on a paused or cut-off node: go elsewhere.
        Err(_) => {
            return OpEnding {
                outcome: Outcome::Unknown,
                value: OpValue::None,
                error: "timeout".to_string(),
                next: Next::Anywhere,
                backoff: false,
            }
        }
        Ok(Err(e)) => e,
    };
    let (outcome, next, backoff) = match classify(&e, ends) {
        ErrorClass::NotLeader(leader) => (
            Outcome::Fail,
            leader.map_or(Next::Anywhere, Next::Node),
            leader.is_none(),
        ),
        ErrorClass::Unavailable => (Outcome::Fail, Next::Anywhere, true),
        ErrorClass::Indefinite => {
            let next = if e.is_closed() || e.as_db_error().is_none() {
                Next::Anywhere
            } else {
                Next::Stay
            };
            (Outcome::Unknown, next, true)
        }
    };
    OpEnding {
        outcome,
        value: OpValue::None,
        error: error_text(&e),
        next,
        backoff,
    }
}

/// Runs one op's statement.
pub async fn execute(client: &Client, kind: OpKind) -> Result<OpValue, tokio_postgres::Error> {
    match kind {
        OpKind::Read { key } => {
            let rows = client
                .query("SELECT v FROM registers WHERE k = $1", &[&key])
                .await?;
            Ok(OpValue::Read(rows.first().map(|r| r.get::<_, i64>(0))))
        }
        OpKind::Write { key, value } => {
            client
                .execute("UPDATE registers SET v = $2 WHERE k = $1", &[&key, &value])
                .await?;
            Ok(OpValue::None)
        }
        OpKind::Cas { key, from, to } => {
            let n = client
                .execute(
                    "UPDATE registers SET v = $3 WHERE k = $1 AND v = $2",
                    &[&key, &from, &to],
                )
                .await?;
            Ok(OpValue::Applied(n == 1))
        }
        OpKind::Insert { id } => {
            client
                .execute(
                    "INSERT INTO set_items (id, client) VALUES ($1, $2)",
                    &[&id, &(id % 7)],
                )
                .await?;
            Ok(OpValue::None)
        }
        OpKind::Transfer { .. } | OpKind::ReadBalances | OpKind::Increment { .. } => {
            unreachable!("transactional ops run in transactions::execute")
        }
    }
}
