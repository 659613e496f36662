//! One run: a cluster behind proxies, clients, a nemesis, then heal, final
//! reads, convergence, the checkers and `resqlite check`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::checker::{check_register, check_set, Linearizability};
use super::history::{id_set, History, OpKind, OpRecord, OpValue, Outcome};
use super::nemesis::{find_leader, Nemesis, Schedule};
use super::proxy::Network;
use super::workload::{self, run_client, Endpoints, Shared, Workload, KEYS, SCHEMA};
use crate::check::check_cluster;
use crate::cluster::{wait_until, NodeId};
use crate::sql_cluster::SqlCluster;

/// Register clients and set clients per run.
const REGISTER_CLIENTS: usize = 4;
const SET_CLIENTS: usize = 2;
/// Ops the clients must complete on the healed cluster before they stop.
const OPS_AFTER_HEAL: usize = 50;
/// Search budget of the linearizability checker, per register.
const MAX_STEPS: u64 = 20_000_000;
/// How long the final `resqlite check` may take, every node included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `resqlite` binary.
    pub bin: PathBuf,
    pub schedule: Schedule,
    /// How long faults are injected (clients run a little longer).
    pub duration: Duration,
    pub seed: u64,
    /// Where a failing run's history and node logs are kept.
    pub out_dir: PathBuf,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub schedule: Schedule,
    pub seed: u64,
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    pub faults: usize,
    pub anomalies: Vec<String>,
    pub failovers: Vec<Duration>,
    /// Set when the run failed: its history file.
    pub history_path: Option<PathBuf>,
    pub elapsed: Duration,
}

impl RunReport {
    /// `schedule=<name> ops=<n> ok=<n> unknown=<n> faults=<n> anomalies=<n>`
    pub fn summary(&self) -> String {
        format!(
            "schedule={} ops={} ok={} unknown={} faults={} anomalies={}",
            self.schedule.name(),
            self.ops,
            self.ok,
            self.unknown,
            self.faults,
            self.anomalies.len()
        )
    }
}

/// Median and max of failover times.
pub fn median_max(samples: &[Duration]) -> Option<(Duration, Duration)> {
    let mut s = samples.to_vec();
    s.sort();
    let max = *s.last()?;
    Some((s[s.len() / 2], max))
}

/// Runs one schedule against a fresh cluster.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let n = cfg.schedule.nodes();
    let mut cluster = SqlCluster::prepare(&cfg.bin, n)?;
    let ids = cluster.ids();
    let net = Network::start(&ids, |id| cluster.raft_port(id)).await?;
    for &a in &ids {
        for &b in &ids {
            if a != b {
                cluster.route(a, b, format!("127.0.0.1:{}", net.port(a, b)));
            }
        }
    }
    cluster.start_all()?;
    let ends = Endpoints {
        pg_ports: ids.iter().map(|&id| (id, cluster.pg_port(id))).collect(),
    };
    let history = Arc::new(History::new());
    let shared = Shared::new(ends.clone(), history.clone());
    setup(&ends).await.context("creating the schema")?;

    let mut clients = Vec::new();
    for p in 0..REGISTER_CLIENTS + SET_CLIENTS {
        let w = if p < REGISTER_CLIENTS {
            Workload::Registers
        } else {
            Workload::Set
        };
        clients.push(tokio::spawn(run_client(shared.clone(), p, w, cfg.seed)));
    }

    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        net: &net,
        shared: &shared,
        rng: SmallRng::seed_from_u64(cfg.seed),
        faults: 0,
        failovers: Vec::new(),
        anomalies: Vec::new(),
    };
    let nemesis_result = nemesis
        .run(cfg.schedule, Instant::now() + cfg.duration)
        .await;
    let (faults, failovers, mut anomalies) = (
        nemesis.faults,
        nemesis.failovers.clone(),
        nemesis.anomalies.clone(),
    );
    drop(nemesis);

    // Healed: the cluster must serve again; clients keep going meanwhile.
    let recovered = match nemesis_result {
        Ok(()) => recover(&ends, &history).await,
        Err(e) => Err(e),
    };
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    if let Err(e) = recovered {
        anomalies.push(format!("no recovery after healing: {e:#}"));
    } else {
        final_checks(&cluster, &ends, &history, &mut anomalies).await;
    }

    let ops = history.ops();
    let count = |o: Outcome| ops.iter().filter(|r| r.outcome == o).count();
    let mut report = RunReport {
        schedule: cfg.schedule,
        seed: cfg.seed,
        ops: ops.len(),
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        faults,
        anomalies,
        failovers,
        history_path: None,
        elapsed: started.elapsed(),
    };
    if !report.anomalies.is_empty() {
        report.history_path = Some(keep(cfg, &cluster, &history, &report)?);
    }
    Ok(report)
}

/// Creates the tables and the registers (value 0), retrying through
/// elections; a retried insert that already happened is fine.
async fn setup(ends: &Endpoints) -> anyhow::Result<()> {
    let ids: Vec<NodeId> = ends.pg_ports.keys().copied().collect();
    let mut stmts: Vec<String> = SCHEMA.iter().map(|s| s.to_string()).collect();
    for k in 0..KEYS {
        stmts.push(format!(
            "INSERT INTO registers (k, v) VALUES ({k}, 0) ON CONFLICT DO NOTHING"
        ));
    }
    let done = std::cell::Cell::new(0usize);
    wait_until("the schema to be created", Duration::from_secs(60), || {
        let ids = ids.clone();
        let stmts = &stmts;
        let done = &done;
        async move {
            let leader = find_leader(ends, &ids).await?;
            let c = ends.connect(leader).await.ok()?;
            while done.get() < stmts.len() {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.batch_execute(&stmts[done.get()]),
                )
                .await;
                match r {
                    Ok(Ok(())) => done.set(done.get() + 1),
                    _ => return None,
                }
            }
            Some(())
        }
    })
    .await
}

/// After healing: a leader must be found and a write acknowledged again.
async fn recover(ends: &Endpoints, history: &History) -> anyhow::Result<()> {
    let ids: Vec<NodeId> = ends.pg_ports.keys().copied().collect();
    let before = Instant::now();
    wait_until(
        "a write to succeed after healing",
        Duration::from_secs(60),
        || {
            let ids = ids.clone();
            async move {
                let leader = find_leader(ends, &ids).await?;
                let c = ends.connect(leader).await.ok()?;
                let r = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.execute("UPDATE registers SET v = v WHERE k = $1", &[&-1i64]),
                )
                .await;
                matches!(r, Ok(Ok(_))).then_some(())
            }
        },
    )
    .await?;
    history.fault(format!("recovered after heal in {:?}", before.elapsed()));
    // The clients themselves must work on the healed cluster, so the
    // history ends with ops the checkers can order after every fault.
    let healed = history.now_us();
    wait_until(
        "clients to complete ops on the healed cluster",
        Duration::from_secs(30),
        || async { (history.ok_since(healed) >= OPS_AFTER_HEAL).then_some(()) },
    )
    .await?;
    Ok(())
}

/// Final reads through the leader (recorded as ops), convergence of every
/// node, then the checkers.
async fn final_checks(
    cluster: &SqlCluster,
    ends: &Endpoints,
    history: &History,
    anomalies: &mut Vec<String>,
) {
    let ids: Vec<NodeId> = ends.pg_ports.keys().copied().collect();
    // One linearizable read per register, and of the whole set.
    let final_set = wait_until("final reads", Duration::from_secs(60), || {
        let ids = ids.clone();
        async move {
            let leader = find_leader(ends, &ids).await?;
            let c = ends.connect(leader).await.ok()?;
            for key in 0..KEYS {
                let kind = OpKind::Read { key };
                let invoke_us = history.now_us();
                let r =
                    tokio::time::timeout(workload::OP_TIMEOUT, workload::execute(&c, kind)).await;
                let Ok(Ok(value)) = r else { return None };
                history.record(OpRecord {
                    process: usize::MAX,
                    node: leader,
                    kind,
                    outcome: Outcome::Ok,
                    value,
                    invoke_us,
                    complete_us: history.now_us(),
                    error: String::new(),
                });
            }
            let rows = tokio::time::timeout(
                Duration::from_secs(5),
                c.query("SELECT id FROM set_items ORDER BY id", &[]),
            )
            .await
            .ok()?
            .ok()?;
            Some(
                rows.iter()
                    .map(|r| r.get::<_, i64>(0))
                    .collect::<BTreeSet<i64>>(),
            )
        }
    })
    .await;
    let final_set = match final_set {
        Ok(s) => s,
        Err(e) => {
            anomalies.push(format!("final reads failed: {e:#}"));
            return;
        }
    };

    // Every node, read by itself, converges to the same contents.
    let final_set = &final_set;
    let content = "SELECT 'r', k, v FROM registers UNION ALL SELECT 's', id, client FROM set_items ORDER BY 1, 2";
    let converged = wait_until(
        "every node to hold the same contents",
        Duration::from_secs(30),
        || {
            let ids = ids.clone();
            async move {
                let mut hashes = BTreeMap::new();
                for id in ids {
                    let rows = cluster.local_rows(id, content).await.ok()?;
                    let set: BTreeSet<i64> = id_set(
                        &rows
                            .iter()
                            .filter(|r| r.first().map(String::as_str) == Some("s"))
                            .map(|r| r[1..].to_vec())
                            .collect::<Vec<_>>(),
                    );
                    if &set != final_set {
                        return None;
                    }
                    let mut h = DefaultHasher::new();
                    rows.hash(&mut h);
                    hashes.insert(id, h.finish());
                }
                let first = *hashes.values().next()?;
                hashes.values().all(|&h| h == first).then_some(hashes)
            }
        },
    )
    .await;
    match converged {
        Ok(hashes) => history.fault(format!("converged: content hash per node {hashes:x?}")),
        Err(e) => {
            let mut per_node = Vec::new();
            for &id in &ids {
                let rows = cluster.local_rows(id, content).await;
                let summary = match rows {
                    Ok(rows) => {
                        let mut h = DefaultHasher::new();
                        rows.hash(&mut h);
                        format!("node {id}: {} rows, hash {:x}", rows.len(), h.finish())
                    }
                    Err(e) => format!("node {id}: {e:#}"),
                };
                per_node.push(summary);
            }
            anomalies.push(format!(
                "nodes did not converge: {e:#}; {}",
                per_node.join("; ")
            ));
        }
    }

    let ops = history.ops();
    for (key, reg) in History::register_ops(&ops) {
        match check_register(Some(0), &reg, MAX_STEPS) {
            Linearizability::Ok => {}
            Linearizability::Violation { stuck_at, prefix } => anomalies.push(format!(
                "register {key} is not linearizable ({} ops): no order fits op#{stuck_at} ({}); \
                 deepest linearization: {} ops ending {:?}",
                reg.len(),
                describe_op(&ops[stuck_at]),
                prefix.len(),
                &prefix[prefix.len().saturating_sub(5)..]
            )),
            Linearizability::Undecided { steps } => history.fault(format!(
                "WARNING register {key}: linearizability undecided after {steps} steps"
            )),
        }
    }
    let set = check_set(&History::inserts(&ops), final_set);
    if !set.lost.is_empty() {
        anomalies.push(format!("acknowledged inserts lost: {:?}", set.lost));
    }
    if !set.unexpected.is_empty() {
        anomalies.push(format!("rows no client inserted: {:?}", set.unexpected));
    }
    if !set.failed_but_present.is_empty() {
        anomalies.push(format!(
            "inserts reported as not executed are present: {:?}",
            set.failed_but_present
        ));
    }

    // Last, the replicas prove they are identical: one check entry through
    // the log, every node's own hash of its whole database at it.
    match check_cluster(cluster, CHECK_TIMEOUT).await {
        Ok(report) if report.identical() => {
            history.fault(format!("resqlite check: identical, {}", report.describe()))
        }
        Ok(report) => anomalies.push(format!(
            "resqlite check: replicas differ: {}",
            report.describe()
        )),
        Err(e) => anomalies.push(format!("resqlite check could not run: {e:#}")),
    }
}

fn describe_op(o: &OpRecord) -> String {
    let value = match o.value {
        OpValue::Read(v) => format!(" -> {v:?}"),
        OpValue::Applied(a) => format!(" -> applied={a}"),
        OpValue::None => String::new(),
    };
    format!(
        "{:?}{value} {:?} by p{} on node {} at {}..{} us",
        o.kind, o.outcome, o.process, o.node, o.invoke_us, o.complete_us
    )
}

/// Keeps a failing run's history and node logs; returns the history path.
fn keep(
    cfg: &RunConfig,
    cluster: &SqlCluster,
    history: &History,
    report: &RunReport,
) -> anyhow::Result<PathBuf> {
    let dir = cfg
        .out_dir
        .join(format!("{}-seed{}", cfg.schedule.name(), cfg.seed));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("history.txt");
    let mut notes = vec![report.summary(), format!("seed={}", cfg.seed)];
    notes.extend(report.anomalies.iter().map(|a| format!("ANOMALY {a}")));
    history.write_to(&path, &notes)?;
    for id in cluster.ids() {
        let _ = std::fs::copy(cluster.log_path(id), dir.join(format!("node-{id}.log")));
    }
    Ok(path)
}
