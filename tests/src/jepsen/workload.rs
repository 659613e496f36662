//! Clients over the PostgreSQL protocol. Each connects to some node, follows
//! `not the leader; leader: host:port` redirects, and records every op with
//! its outcome: ok, fail (certainly not executed: 25006, 57P03 — the node
//! refused before proposing) or unknown (timeout, lost connection, 40003, any
//! other error after the statement may have reached the log).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};

use super::history::{History, OpKind, OpRecord, OpValue, Outcome};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Registers,
    Set,
}

/// One client's connection, kept across ops and re-aimed by redirects.
struct Session {
    node: NodeId,
    client: Option<Client>,
}

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
            match shared.ends.connect(s.node).await {
                Ok(c) => s.client = Some(c),
                Err(_) => {
                    s.node = ids[rng.random_range(0..ids.len())];
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let kind = match workload {
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
        };
        let client = s.client.as_ref().expect("connected just above");
        let sent_to = s.node;
        let invoke_us = shared.history.now_us();
        let result = tokio::time::timeout(OP_TIMEOUT, execute(client, kind)).await;
        let complete_us = shared.history.now_us();
        let (outcome, value, error, backoff) = match result {
            Ok(Ok(v)) => (Outcome::Ok, v, String::new(), false),
            Err(_) => {
                // Maybe stuck on a paused or cut-off node: go elsewhere.
                s.client = None;
                s.node = ids[rng.random_range(0..ids.len())];
                (
                    Outcome::Unknown,
                    OpValue::None,
                    "timeout".to_string(),
                    false,
                )
            }
            Ok(Err(e)) => {
                let text = e
                    .as_db_error()
                    .map(|d| format!("{} {}", d.code().code(), d.message()))
                    .unwrap_or_else(|| e.to_string());
                match classify(&e, &shared.ends) {
                    ErrorClass::NotLeader(leader) => {
                        s.client = None;
                        s.node = leader.unwrap_or_else(|| ids[rng.random_range(0..ids.len())]);
                        (Outcome::Fail, OpValue::None, text, leader.is_none())
                    }
                    ErrorClass::Unavailable => {
                        s.client = None;
                        s.node = ids[rng.random_range(0..ids.len())];
                        (Outcome::Fail, OpValue::None, text, true)
                    }
                    ErrorClass::Indefinite => {
                        if e.is_closed() || e.as_db_error().is_none() {
                            s.client = None;
                            s.node = ids[rng.random_range(0..ids.len())];
                        }
                        (Outcome::Unknown, OpValue::None, text, true)
                    }
                }
            }
        };
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
            error,
        });
        if backoff {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    }
}
