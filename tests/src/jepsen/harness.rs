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
use super::history::{describe, describe_value, History, OpKind, OpRecord, Outcome};
use super::nemesis::{find_leader, Nemesis, Schedule};
use super::proxy::Network;
use super::transactions::{self, ACCOUNTS, COUNTER_ID, TOTAL};
use super::txn_checker::{check_balances, check_bank, check_counter};
use super::workload::{self, run_client, Endpoints, Shared, Workload, KEYS, SCHEMA};
use crate::check::check_cluster;
use crate::cluster::{wait_until, NodeId};
use crate::sql_cluster::SqlCluster;

/// Clients per workload by default, all in every run: the transactional
/// workloads share the cluster (and its faults) with the single-statement
/// ones.
pub const CLIENTS: [(Workload, usize); 4] = [
    (Workload::Registers, 4),
    (Workload::Set, 2),
    (Workload::Bank, 2),
    (Workload::Counter, 2),
];
/// Ops the clients must complete on the healed cluster before they stop,
/// in all and of each workload.
const OPS_AFTER_HEAL: usize = 50;
const OPS_AFTER_HEAL_EACH: usize = 5;
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
    /// Keep them for a run without anomalies too.
    pub keep_always: bool,
    /// How many clients run each workload (see [`CLIENTS`]).
    pub clients: Vec<(Workload, usize)>,
}

/// Parses `registers=4,set=2,bank=2,counter=2`; a workload left out gets
/// no clients.
pub fn parse_clients(spec: &str) -> anyhow::Result<Vec<(Workload, usize)>> {
    spec.split(',')
        .map(|part| {
            let (name, n) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{part:?} is not workload=clients"))?;
            let w = Workload::ALL
                .into_iter()
                .find(|w| w.name() == name.trim())
                .ok_or_else(|| anyhow::anyhow!("unknown workload {name:?}"))?;
            Ok((w, n.trim().parse()?))
        })
        .collect()
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
    /// Per workload: ops, outcomes, anomalies and what its checker saw.
    pub workloads: Vec<WorkloadSummary>,
    pub failovers: Vec<Duration>,
    /// Set when the run failed (or `keep_always`): its history file.
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

/// One workload's part of a run.
#[derive(Clone, Debug)]
pub struct WorkloadSummary {
    pub workload: Workload,
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    /// Anomalies its own checker found (those starting `<name>: `).
    pub anomalies: usize,
    /// What its checker saw, as ` key=value` pairs.
    pub detail: String,
}

impl WorkloadSummary {
    /// `schedule=<name> workload=<name> ops=<n> ok=<n> fail=<n> unknown=<n> anomalies=<n> …`
    pub fn line(&self, schedule: Schedule) -> String {
        format!(
            "schedule={} workload={} ops={} ok={} fail={} unknown={} anomalies={}{}",
            schedule.name(),
            self.workload.name(),
            self.ops,
            self.ok,
            self.fail,
            self.unknown,
            self.anomalies,
            self.detail
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
    for w in cfg
        .clients
        .iter()
        .flat_map(|&(w, n)| std::iter::repeat_n(w, n))
    {
        let p = clients.len();
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
        Ok(()) => recover(&ends, &history, &cfg.clients).await,
        Err(e) => Err(e),
    };
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let mut details = BTreeMap::new();
    if let Err(e) = recovered {
        anomalies.push(format!("no recovery after healing: {e:#}"));
    } else {
        final_checks(&cluster, &ends, &history, &mut anomalies, &mut details).await;
    }

    let ops = history.ops();
    let count = |o: Outcome| ops.iter().filter(|r| r.outcome == o).count();
    let workloads = Workload::ALL
        .iter()
        .map(|&w| {
            let mine: Vec<&OpRecord> = ops.iter().filter(|o| o.kind.workload() == w).collect();
            let count = |o: Outcome| mine.iter().filter(|r| r.outcome == o).count();
            let prefix = format!("{}: ", w.name());
            WorkloadSummary {
                workload: w,
                ops: mine.len(),
                ok: count(Outcome::Ok),
                fail: count(Outcome::Fail),
                unknown: count(Outcome::Unknown),
                anomalies: anomalies.iter().filter(|a| a.starts_with(&prefix)).count(),
                detail: details.remove(&w).unwrap_or_default(),
            }
        })
        .collect();
    let mut report = RunReport {
        schedule: cfg.schedule,
        seed: cfg.seed,
        ops: ops.len(),
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        faults,
        anomalies,
        workloads,
        failovers,
        history_path: None,
        elapsed: started.elapsed(),
    };
    if !report.anomalies.is_empty() || cfg.keep_always {
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
    stmts.extend(transactions::setup_statements());
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
async fn recover(
    ends: &Endpoints,
    history: &History,
    clients: &[(Workload, usize)],
) -> anyhow::Result<()> {
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
    // history ends with ops the checkers can order after every fault;
    // transactions too must commit again.
    let healed = history.now_us();
    let waited = wait_until(
        "clients of every workload to complete ops on the healed cluster",
        Duration::from_secs(30),
        || async {
            let (all, per) = history.ok_since(healed);
            let each = clients
                .iter()
                .filter(|&&(_, n)| n > 0)
                .all(|(w, _)| per.get(w).copied().unwrap_or(0) >= OPS_AFTER_HEAL_EACH);
            (all >= OPS_AFTER_HEAL && each).then_some(())
        },
    )
    .await;
    if let Err(e) = waited {
        let (all, per) = history.ok_since(healed);
        anyhow::bail!("{e:#}: ok ops since the heal: {all} in all, per workload {per:?}");
    }
    Ok(())
}

/// Every node's contents, as its `local` read renders them: one row per
/// register (`r`), set item (`s`), account (`a`) and counter (`c`).
const CONTENT: &str =
    "SELECT 'r', k, v FROM registers UNION ALL SELECT 's', id, client FROM set_items \
     UNION ALL SELECT 'a', id, balance FROM accounts UNION ALL SELECT 'c', id, n FROM counter \
     ORDER BY 1, 2";

/// The `(id, value)` rows of one table tagged `tag` in [`CONTENT`].
fn tagged(rows: &[Vec<String>], tag: &str) -> Vec<(i64, i64)> {
    rows.iter()
        .filter(|r| r.first().map(String::as_str) == Some(tag))
        .filter_map(|r| Some((r.get(1)?.parse().ok()?, r.get(2)?.parse().ok()?)))
        .collect()
}

/// What the final reads through the leader returned.
struct FinalReads {
    set: BTreeSet<i64>,
    counter: i64,
}

/// One linearizable read of every register (recorded as ops), of the whole
/// set, of every balance (a recorded read-only transaction) and of the
/// counter, on the leader.
async fn final_reads(ends: &Endpoints, history: &History) -> Option<FinalReads> {
    let ids: Vec<NodeId> = ends.pg_ports.keys().copied().collect();
    let leader = find_leader(ends, &ids).await?;
    let c = ends.connect(leader).await.ok()?;
    let record = |kind, value, invoke_us| {
        history.record(OpRecord {
            process: usize::MAX,
            node: leader,
            kind,
            outcome: Outcome::Ok,
            value,
            invoke_us,
            complete_us: history.now_us(),
            error: String::new(),
        })
    };
    for key in 0..KEYS {
        let kind = OpKind::Read { key };
        let invoke_us = history.now_us();
        let r = tokio::time::timeout(workload::OP_TIMEOUT, workload::execute(&c, kind)).await;
        let Ok(Ok(value)) = r else { return None };
        record(kind, value, invoke_us);
    }
    let invoke_us = history.now_us();
    let value = transactions::execute(&c, OpKind::ReadBalances).await.ok()?;
    record(OpKind::ReadBalances, value, invoke_us);
    let rows = tokio::time::timeout(
        Duration::from_secs(5),
        c.query("SELECT id FROM set_items ORDER BY id", &[]),
    )
    .await
    .ok()?
    .ok()?;
    let counter = tokio::time::timeout(
        workload::OP_TIMEOUT,
        c.query_one("SELECT n FROM counter WHERE id = $1", &[&COUNTER_ID]),
    )
    .await
    .ok()?
    .ok()?;
    Some(FinalReads {
        set: rows.iter().map(|r| r.get::<_, i64>(0)).collect(),
        counter: counter.get(0),
    })
}

/// Final reads through the leader (recorded as ops), convergence of every
/// node, then the checkers. `details` gets what each workload's checker
/// saw, for its summary line.
async fn final_checks(
    cluster: &SqlCluster,
    ends: &Endpoints,
    history: &History,
    anomalies: &mut Vec<String>,
    details: &mut BTreeMap<Workload, String>,
) {
    let ids: Vec<NodeId> = ends.pg_ports.keys().copied().collect();
    let finals = wait_until("final reads", Duration::from_secs(60), || {
        final_reads(ends, history)
    })
    .await;
    let finals = match finals {
        Ok(f) => f,
        Err(e) => {
            anomalies.push(format!("final reads failed: {e:#}"));
            return;
        }
    };

    // Every node, read by itself, converges to the same contents.
    let final_set = &finals.set;
    let converged = wait_until(
        "every node to hold the same contents",
        Duration::from_secs(30),
        || {
            let ids = ids.clone();
            async move {
                let mut hashes = BTreeMap::new();
                for id in ids {
                    let rows = cluster.local_rows(id, CONTENT).await.ok()?;
                    let set: BTreeSet<i64> = tagged(&rows, "s").iter().map(|&(id, _)| id).collect();
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
    let mut per_node = BTreeMap::new();
    for &id in &ids {
        per_node.insert(id, cluster.local_rows(id, CONTENT).await);
    }
    match converged {
        Ok(hashes) => history.fault(format!("converged: content hash per node {hashes:x?}")),
        Err(e) => {
            let summary: Vec<String> = per_node
                .iter()
                .map(|(id, rows)| match rows {
                    Ok(rows) => {
                        let mut h = DefaultHasher::new();
                        rows.hash(&mut h);
                        format!("node {id}: {} rows, hash {:x}", rows.len(), h.finish())
                    }
                    Err(e) => format!("node {id}: {e:#}"),
                })
                .collect();
            anomalies.push(format!(
                "nodes did not converge: {e:#}; {}",
                summary.join("; ")
            ));
        }
    }
    // Each node's own bank and counter, whether or not they converged.
    for (id, rows) in &per_node {
        let Ok(rows) = rows else { continue };
        let accounts = tagged(rows, "a");
        let balances: Vec<i64> = accounts.iter().map(|&(_, b)| b).collect();
        if accounts.len() != ACCOUNTS {
            anomalies.push(format!("bank: node {id} holds accounts {accounts:?}"));
        } else if let Some(why) = check_balances(TOTAL, &balances) {
            anomalies.push(format!("bank: node {id}'s final balances: {why}"));
        }
        let counter = tagged(rows, "c");
        if counter != [(COUNTER_ID, finals.counter)] {
            anomalies.push(format!(
                "counter: node {id} holds {counter:?}, the leader read {}",
                finals.counter
            ));
        }
    }

    let ops = history.ops();
    for (key, reg) in History::register_ops(&ops) {
        match check_register(Some(0), &reg, MAX_STEPS) {
            Linearizability::Ok => {}
            Linearizability::Violation { stuck_at, prefix } => anomalies.push(format!(
                "registers: register {key} is not linearizable ({} ops): no order fits op#{stuck_at} ({}); \
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
        anomalies.push(format!("set: acknowledged inserts lost: {:?}", set.lost));
    }
    if !set.unexpected.is_empty() {
        anomalies.push(format!(
            "set: rows no client inserted: {:?}",
            set.unexpected
        ));
    }
    if !set.failed_but_present.is_empty() {
        anomalies.push(format!(
            "set: inserts reported as not executed are present: {:?}",
            set.failed_but_present
        ));
    }
    details.insert(
        Workload::Set,
        format!(
            " final={} unknown_present={}",
            final_set.len(),
            set.unknown_present
        ),
    );
    let bank = check_bank(TOTAL, &ops);
    anomalies.extend(bank.anomaly(&ops).map(|a| format!("bank: {a}")));
    details.insert(
        Workload::Bank,
        format!(
            " reads={} transfers_applied={} (read_first={}) transfers_refused={}",
            bank.reads, bank.applied, bank.applied_read_first, bank.refused
        ),
    );
    let counter = check_counter(&ops, finals.counter);
    anomalies.extend(counter.anomalies.iter().map(|a| format!("counter: {a}")));
    details.insert(
        Workload::Counter,
        format!(
            " final={} acked={} (read_first={}) unknown={}",
            counter.final_value, counter.acked, counter.acked_read_first, counter.unknown
        ),
    );

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
    format!(
        "{}{} {:?} by p{} on node {} at {}..{} us",
        describe(&o.kind),
        describe_value(&o.value),
        o.outcome,
        o.process,
        o.node,
        o.invoke_us,
        o.complete_us
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
