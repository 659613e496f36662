//! Fault schedules: what the nemesis breaks, and how it heals it.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::history::History;
use super::proxy::Network;
use super::workload::{classify, Endpoints, ErrorClass, Shared};
use crate::cluster::NodeId;
use crate::sql_cluster::SqlCluster;

/// A fault schedule: one kind of fault, injected again and again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// kill -9 of the leader, restart it later; measures failover time.
    LeaderKill,
    /// kill -9 of any node, restart it later.
    RandomKill,
    /// SIGSTOP the leader longer than an election timeout, then SIGCONT.
    LeaderPause,
    /// Cut the leader off from every peer (a minority of one); probes that
    /// it neither acknowledges writes nor answers reads meanwhile.
    IsolateLeader,
    /// Random majority / minority split (5 nodes: 3 | 2).
    Split,
    /// Two halves that cannot see each other and one node that sees both
    /// (5 nodes: 2 | 1 | 2).
    Bridge,
    /// kill -9 of every node at once, restart them all.
    FullKill,
    /// 20–150 ms of added delay on every link.
    SlowNetwork,
}

impl Schedule {
    pub const ALL: [Schedule; 8] = [
        Schedule::LeaderKill,
        Schedule::RandomKill,
        Schedule::LeaderPause,
        Schedule::IsolateLeader,
        Schedule::Split,
        Schedule::Bridge,
        Schedule::FullKill,
        Schedule::SlowNetwork,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::LeaderKill => "leader-kill",
            Schedule::RandomKill => "random-kill",
            Schedule::LeaderPause => "leader-pause",
            Schedule::IsolateLeader => "isolate-leader",
            Schedule::Split => "split",
            Schedule::Bridge => "bridge",
            Schedule::FullKill => "full-kill",
            Schedule::SlowNetwork => "slow-network",
        }
    }

    pub fn from_name(name: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Cluster size: 5 where the fault needs two sides of two nodes.
    pub fn nodes(self) -> u64 {
        match self {
            Schedule::Split | Schedule::Bridge => 5,
            _ => 3,
        }
    }
}

/// The nemesis of one run: it owns the cluster and the network while the
/// clients run.
pub struct Nemesis<'a> {
    pub cluster: &'a mut SqlCluster,
    pub net: &'a Network,
    pub shared: &'a Shared,
    pub rng: SmallRng,
    pub faults: usize,
    /// Leader kill → first acknowledged write, per kill.
    pub failovers: Vec<Duration>,
    /// Safety violations seen directly (not through the history).
    pub anomalies: Vec<String>,
}

impl Nemesis<'_> {
    fn history(&self) -> &History {
        &self.shared.history
    }

    /// Nodes running and not paused.
    fn live(&self) -> Vec<NodeId> {
        self.cluster
            .running()
            .into_iter()
            .filter(|&id| !self.cluster.is_paused(id))
            .collect()
    }

    /// Runs `schedule` until `until`, then heals everything.
    pub async fn run(&mut self, schedule: Schedule, until: Instant) -> anyhow::Result<()> {
        while Instant::now() < until {
            let quiet = self.rng.random_range(1000..2500);
            tokio::time::sleep(Duration::from_millis(quiet)).await;
            if Instant::now() >= until {
                break;
            }
            let hold = Duration::from_millis(self.rng.random_range(3000..5000));
            self.inject(schedule, hold).await?;
            self.heal()?;
        }
        self.heal()
    }

    async fn inject(&mut self, schedule: Schedule, hold: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        match schedule {
            Schedule::LeaderKill => {
                let Some(leader) = find_leader(&self.shared.ends, &self.live()).await else {
                    return Ok(());
                };
                self.cluster.kill(leader)?;
                let killed = Instant::now();
                self.faults += 1;
                self.history().fault(format!("kill -9 leader {leader}"));
                match first_write(self.shared, leader, killed, Duration::from_secs(30)).await {
                    Some(d) => {
                        self.history()
                            .fault(format!("first write after the kill: {d:?}"));
                        self.failovers.push(d);
                    }
                    None => self.anomalies.push(format!(
                        "no write succeeded within 30 s of killing leader {leader}"
                    )),
                }
            }
            Schedule::RandomKill => {
                let live = self.live();
                let victim = live[self.rng.random_range(0..live.len())];
                self.cluster.kill(victim)?;
                self.faults += 1;
                self.history().fault(format!("kill -9 node {victim}"));
            }
            Schedule::LeaderPause => {
                let Some(leader) = find_leader(&self.shared.ends, &self.live()).await else {
                    return Ok(());
                };
                self.cluster.pause(leader)?;
                self.faults += 1;
                self.history().fault(format!("SIGSTOP leader {leader}"));
            }
            Schedule::IsolateLeader => {
                let Some(leader) = find_leader(&self.shared.ends, &self.live()).await else {
                    return Ok(());
                };
                self.net.isolate(leader);
                self.faults += 1;
                self.history().fault(format!("isolate leader {leader}"));
                // In-flight quorum rounds may finish just after the cut;
                // after a grace period nothing may succeed on it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.probe_isolated(leader, started + hold).await;
            }
            Schedule::Split => {
                let mut ids = self.cluster.ids();
                ids.shuffle(&mut self.rng);
                let minority = ids.len() / 2;
                let (a, b) = ids.split_at(minority);
                self.net.partition(&[a.to_vec(), b.to_vec()]);
                self.faults += 1;
                self.history().fault(format!("partition {a:?} | {b:?}"));
            }
            Schedule::Bridge => {
                let mut ids = self.cluster.ids();
                ids.shuffle(&mut self.rng);
                let half = ids.len() / 2;
                let bridge = ids[half];
                let left: Vec<NodeId> = ids[..half].to_vec();
                let right: Vec<NodeId> = ids[half + 1..].to_vec();
                self.net.apply(|x, y| {
                    x == bridge || y == bridge || (left.contains(&x) == left.contains(&y))
                });
                self.faults += 1;
                self.history()
                    .fault(format!("bridge {left:?} <- {bridge} -> {right:?}"));
            }
            Schedule::FullKill => {
                for id in self.cluster.ids() {
                    self.cluster.kill(id)?;
                }
                self.faults += 1;
                self.history().fault("kill -9 every node");
                let down = self.rng.random_range(200..1500);
                tokio::time::sleep(Duration::from_millis(down)).await;
                self.cluster.start_all()?;
                self.history().fault("restart every node");
            }
            Schedule::SlowNetwork => {
                let delays: Vec<u64> = (0..64).map(|_| self.rng.random_range(20..150)).collect();
                self.net
                    .set_latency(|a, b| Duration::from_millis(delays[((a * 8 + b) % 64) as usize]));
                self.faults += 1;
                self.history().fault("20-150 ms latency on every link");
            }
        }
        let deadline = started + hold;
        let now = Instant::now();
        if deadline > now {
            tokio::time::sleep(deadline - now).await;
        }
        Ok(())
    }

    /// Network healed, paused nodes resumed, dead nodes restarted.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let mut did = Vec::new();
        if self.net.describe() != "all links up" {
            did.push("network".to_string());
        }
        self.net.heal();
        for id in self.cluster.ids() {
            if self.cluster.is_paused(id) {
                self.cluster.resume(id)?;
                did.push(format!("SIGCONT {id}"));
            }
        }
        let running = self.cluster.running();
        for id in self.cluster.ids() {
            if !running.contains(&id) {
                self.cluster.start_node(id)?;
                did.push(format!("restart {id}"));
            }
        }
        if !did.is_empty() {
            self.history().fault(format!("heal: {}", did.join(", ")));
        }
        Ok(())
    }

    /// While `node` is cut off, asks it directly (no redirects) for a write
    /// and a linearizable read; either succeeding is a safety violation.
    async fn probe_isolated(&mut self, node: NodeId, until: Instant) {
        let ends = &self.shared.ends;
        while Instant::now() + Duration::from_millis(1200) < until {
            let Ok(client) = ends.connect(node).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let id = self.shared.fresh();
            let write = tokio::time::timeout(
                Duration::from_millis(1000),
                client.execute("INSERT INTO probes (id) VALUES ($1)", &[&id]),
            )
            .await;
            if let Ok(Ok(_)) = write {
                let msg = format!("isolated old leader {node} acknowledged a write (probe {id})");
                self.history().fault(format!("ANOMALY {msg}"));
                self.anomalies.push(msg);
            }
            let read = tokio::time::timeout(
                Duration::from_millis(1000),
                client.query("SELECT v FROM registers WHERE k = $1", &[&0i64]),
            )
            .await;
            if let Ok(Ok(_)) = read {
                let msg = format!("isolated old leader {node} served a linearizable read");
                self.history().fault(format!("ANOMALY {msg}"));
                self.anomalies.push(msg);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The node among `candidates` that says it leads (`transaction_read_only`
/// off), asking each for at most half a second.
pub async fn find_leader(ends: &Endpoints, candidates: &[NodeId]) -> Option<NodeId> {
    for &id in candidates {
        let ask = async {
            let c = ends.connect(id).await.ok()?;
            let row = c.query_one("SHOW transaction_read_only", &[]).await.ok()?;
            Some(row.get::<_, String>(0) == "off")
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_millis(1500), ask).await {
            return Some(id);
        }
    }
    None
}

/// Time from `since` until a write is acknowledged, trying any node but
/// `dead` and following redirects; `None` after `limit`.
pub async fn first_write(
    shared: &Shared,
    dead: NodeId,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let ends = &shared.ends;
    let others: Vec<NodeId> = ends
        .pg_ports
        .keys()
        .copied()
        .filter(|&i| i != dead)
        .collect();
    let mut target = others[0];
    let mut turn = 0;
    while since.elapsed() < limit {
        turn += 1;
        let attempt = async {
            let c = ends.connect(target).await.ok()?;
            let id = shared.fresh();
            Some(
                c.execute("INSERT INTO probes (id) VALUES ($1)", &[&id])
                    .await,
            )
        };
        match tokio::time::timeout(Duration::from_millis(1500), attempt).await {
            Ok(Some(Ok(_))) => return Some(since.elapsed()),
            Ok(Some(Err(e))) => {
                if let ErrorClass::NotLeader(Some(l)) = classify(&e, ends) {
                    if l != dead {
                        target = l;
                        continue;
                    }
                }
                target = others[turn % others.len()];
            }
            _ => target = others[turn % others.len()],
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
