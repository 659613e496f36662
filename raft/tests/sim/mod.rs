//! A deterministic simulator for the sans-IO Raft core.
//!
//! A cluster of cores runs against a simulated clock, network and disks,
//! all driven by one seeded RNG and one event queue ordered by (time,
//! sequence number), so a seed replays exactly. A chaos phase injects
//! faults (loss, duplication, delay and reordering, partitions, one-way
//! cuts, crashes that lose everything not yet fsynced, restarts,
//! leadership transfers) while nodes snapshot and compact their logs at
//! random points, so lagging nodes catch up by InstallSnapshot; the
//! [`checker`] checks Raft's safety properties
//! after every event. With [`Options::membership`], an operator also adds
//! new nodes as learners, promotes them and removes members, the leader
//! included (see [`operator`]), under the same faults. A liveness phase
//! then heals everything and requires a leader and a proposal committed on
//! every member within a bounded time.

mod checker;
mod configs;
mod faults;
mod log_view;
mod network;
mod node;
mod operator;
mod params;
mod ready;
mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use resqlite_raft::{Config, Membership, Message, MessageBody, NodeId};

pub use self::checker::Violation;
use self::checker::{verify_view, Checker};
use self::network::Network;
use self::node::{SimNode, SimSnapshot};
use self::params::{Params, TICK};
use self::trace::Trace;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Voters the cluster starts with.
    pub nodes: usize,
    /// Let an operator change the membership (add, promote, remove).
    pub membership: bool,
    /// Events in the chaos phase.
    pub steps: u64,
    /// Trace lines kept for the failure report (0: no trace).
    pub trace_tail: usize,
    /// Print every trace line to stderr.
    pub echo: bool,
}

/// What a passing run did, for summaries and the determinism check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub sim_time: u64,
    pub leaders: u64,
    pub committed: u64,
    pub crashes: u64,
    pub reads_confirmed: u64,
    pub messages: u64,
    /// Logs compacted to a snapshot.
    pub compactions: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Simulated time from the heal to the first proposal applied everywhere.
    pub recovery_time: u64,
    /// Membership changes the leader accepted.
    pub changes_proposed: u64,
    /// Configuration entries committed.
    pub changes_committed: u64,
    /// Nodes that joined (started empty, added as learners).
    pub joins: u64,
    /// Removals of the leader that proposed them, accepted.
    pub leader_removals: u64,
    /// A hash of every event processed, in order.
    pub digest: u64,
}

/// A run that broke a property.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub nodes: usize,
    pub step: u64,
    pub time: u64,
    pub params: String,
    pub violation: Violation,
    pub trace: Vec<String>,
    pub cluster: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Raft simulator: {}", self.violation)?;
        writeln!(
            f,
            "seed {} with {} nodes, at step {} (simulated time {})",
            self.seed, self.nodes, self.step, self.time
        )?;
        writeln!(f, "params: {}", self.params)?;
        writeln!(f, "cluster:")?;
        for line in &self.cluster {
            writeln!(f, "  {line}")?;
        }
        if !self.trace.is_empty() {
            writeln!(f, "last {} trace lines:", self.trace.len())?;
            for line in &self.trace {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Runs one seed.
pub fn run(opts: &Options) -> Result<Stats, Box<Failure>> {
    let mut sim = Sim::new(opts);
    match sim.run(opts.steps) {
        Ok(()) => Ok(sim.stats()),
        Err(violation) => Err(Box::new(Failure {
            seed: opts.seed,
            nodes: opts.nodes,
            step: sim.step,
            time: sim.now,
            params: format!("{:?}; network {}", sim.params, sim.net.describe()),
            violation,
            trace: sim.trace.take(),
            cluster: sim.nodes.iter().map(SimNode::summary).collect(),
        })),
    }
}

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        life: u64,
    },
    /// A message; an InstallSnapshot carries the snapshot file its sender's
    /// driver streams.
    Deliver(Message, Option<Rc<SimSnapshot>>),
    /// The disk finished an fsync.
    DiskSync {
        node: usize,
        life: u64,
    },
    Restart {
        node: usize,
        life: u64,
    },
    /// Power loss, scheduled right after a node did something that its disk
    /// must back (see [`params::AimedFaults`]).
    Crash {
        node: usize,
        life: u64,
    },
    /// Clients propose and read (or, in the liveness phase, the probe).
    Client,
    Fault,
    /// The operator changes the membership.
    Operator,
}

pub(crate) struct Sim {
    seed: u64,
    rng: SmallRng,
    params: Params,
    now: u64,
    seq: u64,
    step: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    net: Network,
    checker: Checker,
    trace: Trace,
    /// False once the liveness phase has started.
    chaos: bool,
    next_ctx: u64,
    next_proposal: u64,
    /// Liveness phase: the probe proposal (index, term, entry hash).
    probe: Option<(u64, u64, u64)>,
    recovered: bool,
    crashes: u64,
    messages: u64,
    compactions: u64,
    snapshots_installed: u64,
    recovery_time: u64,
    digest: u64,
    /// The operator runs (membership changes).
    membership: bool,
    changes_proposed: u64,
    joins: u64,
    leader_removals: u64,
}

/// Nodes an operator may add in one run (each with a new id).
const MAX_JOINS: usize = 10;

impl Sim {
    fn new(opts: &Options) -> Self {
        assert!(opts.nodes >= 1, "a cluster needs a node");
        let mut rng = SmallRng::seed_from_u64(
            opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ opts.nodes as u64,
        );
        let slots = opts.nodes + if opts.membership { MAX_JOINS } else { 0 };
        let params = Params::draw(&mut rng, slots);
        let initial: Vec<NodeId> = (1..=opts.nodes as NodeId).collect();
        let nodes = (1..=slots as NodeId)
            .map(|id| {
                let voters = if id <= opts.nodes as NodeId {
                    initial.clone()
                } else {
                    Vec::new()
                };
                SimNode::new(id, voters)
            })
            .collect();
        Sim {
            seed: opts.seed,
            net: Network::new(slots, TICK),
            rng,
            params,
            now: 0,
            seq: 0,
            step: 0,
            queue: BTreeMap::new(),
            nodes,
            checker: Checker::new(Membership::from_voters(&initial)),
            trace: Trace::new(opts.trace_tail, opts.echo),
            chaos: true,
            next_ctx: 1,
            next_proposal: 1,
            probe: None,
            recovered: false,
            crashes: 0,
            messages: 0,
            compactions: 0,
            snapshots_installed: 0,
            recovery_time: 0,
            digest: 0,
            membership: opts.membership,
            changes_proposed: 0,
            joins: 0,
            leader_removals: 0,
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            steps: self.step,
            sim_time: self.now,
            leaders: self.checker.stats.leaders,
            committed: self.checker.committed_len(),
            crashes: self.crashes,
            reads_confirmed: self.checker.stats.reads_confirmed,
            messages: self.messages,
            compactions: self.compactions,
            snapshots_installed: self.snapshots_installed,
            recovery_time: self.recovery_time,
            changes_proposed: self.changes_proposed,
            changes_committed: self.checker.history.committed_count(),
            joins: self.joins,
            leader_removals: self.leader_removals,
            digest: self.digest,
        }
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn config(&mut self, node: usize) -> Config {
        let p = &self.params;
        let mut cfg = Config::new(self.nodes[node].id, self.nodes[node].voters.clone());
        cfg.election_tick = p.election_tick;
        cfg.heartbeat_tick = p.heartbeat_tick;
        cfg.pre_vote = p.pre_vote;
        cfg.check_quorum = p.check_quorum;
        cfg.max_inflight_msgs = p.max_inflight_msgs;
        cfg.max_batch_bytes = p.max_batch_bytes;
        cfg.snapshot_timeout_tick = p.snapshot_timeout_tick;
        // Each life of a node draws different election timeouts.
        cfg.seed = self.rng.random();
        cfg
    }

    fn run(&mut self, steps: u64) -> Result<(), Violation> {
        if self.trace.on() {
            self.trace
                .push(format!("seed {} params {:?}", self.seed, self.params));
        }
        for n in 0..self.nodes.len() {
            if !self.nodes[n].voters.is_empty() {
                self.restart(n)?;
            }
        }
        if self.membership {
            let first = self.rng.random_range(1..=20 * TICK);
            self.schedule(first, Event::Operator);
        }
        let (client, fault) = (
            self.rng.random_range(1..=TICK),
            self.rng.random_range(1..=20 * TICK),
        );
        self.schedule(client, Event::Client);
        self.schedule(fault, Event::Fault);
        while self.step < steps {
            self.next_event()?;
        }
        self.liveness()?;
        self.verify_views()
    }

    fn next_event(&mut self) -> Result<(), Violation> {
        let ((at, _), ev) = self
            .queue
            .pop_first()
            .expect("ticks and clients keep the queue non-empty");
        self.now = at;
        self.step += 1;
        if self.trace.on() {
            self.trace.push(format!(
                "t={} #{} {}",
                self.now,
                self.step,
                self.describe(&ev)
            ));
        }
        self.digest = mix(self.digest ^ self.now ^ event_code(&ev));
        let touched = match ev {
            Event::Tick { node, life } => {
                if self.nodes[node].life != life {
                    return Ok(());
                }
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.tick();
                }
                let next = self.now + self.params.tick_interval[node];
                self.schedule(next, Event::Tick { node, life });
                self.after_input(node)?;
                Some(node)
            }
            Event::Deliver(mut m, snapshot) => {
                let (from, to) = (m.from as usize - 1, m.to as usize - 1);
                // A link cut while the message was in flight loses it too.
                if !self.net.up(from, to) {
                    return Ok(());
                }
                let Some(core) = self.nodes[to].core.as_mut() else {
                    return Ok(());
                };
                let commit_before = core.status().commit;
                let ack = matches!(
                    m.body,
                    MessageBody::AppendEntriesResponse { success: true, .. }
                        | MessageBody::InstallSnapshotResponse { .. }
                );
                if let (MessageBody::InstallSnapshot { snapshot: meta }, Some(file)) =
                    (&mut m.body, &snapshot)
                {
                    // The driver hands the core the snapshot it received,
                    // which may be newer than the one the sender's core named.
                    *meta = file.meta.clone();
                }
                self.nodes[to].incoming = snapshot;
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.step(m);
                }
                self.after_input(to)?;
                self.nodes[to].incoming = None;
                if ack {
                    self.after_ack(to, from, commit_before);
                }
                Some(to)
            }
            Event::DiskSync { node, life } => {
                if self.nodes[node].life != life {
                    return Ok(());
                }
                self.sync_disk(node)?;
                Some(node)
            }
            Event::Restart { node, life } => {
                if self.nodes[node].life != life
                    || self.nodes[node].alive()
                    || self.nodes[node].retired
                {
                    return Ok(());
                }
                self.restart(node)?;
                Some(node)
            }
            Event::Crash { node, life } => {
                if self.nodes[node].life != life || !self.chaos {
                    return Ok(());
                }
                self.crash(node)?;
                Some(node)
            }
            Event::Client => {
                if self.chaos {
                    self.client()?;
                } else {
                    self.probe()?;
                }
                None
            }
            Event::Fault => {
                if self.chaos {
                    self.fault()?;
                }
                None
            }
            Event::Operator => {
                if self.chaos {
                    self.operator()?;
                }
                None
            }
        };
        if self.trace.on() {
            if let Some(n) = touched {
                let line = format!("    {}", self.nodes[n].summary());
                self.trace.push(line);
            }
        }
        if self.step.is_multiple_of(1024) {
            self.verify_views()?;
        }
        Ok(())
    }

    /// Heal the network, restart every node, stop faults; then a leader
    /// must commit a fresh proposal on every node within 50 election
    /// timeouts.
    fn liveness(&mut self) -> Result<(), Violation> {
        self.chaos = false;
        self.net.heal();
        self.net.calm();
        if self.trace.on() {
            self.trace.push(format!(
                "t={} liveness phase: healed, restarting every node",
                self.now
            ));
        }
        self.retire_removed(false);
        for n in 0..self.nodes.len() {
            if self.nodes[n].restartable() {
                self.restart(n)?;
            }
        }
        let start = self.now;
        let max_interval = self
            .params
            .tick_interval
            .iter()
            .copied()
            .max()
            .unwrap_or(TICK);
        let ticks = 50 * u64::from(self.params.election_tick);
        let deadline = start + ticks * max_interval;
        // A healthy cluster handles a few events per node per tick; a storm
        // of messages is a bug (and would make the run crawl).
        let budget = self.step + 50 * ticks * self.nodes.len() as u64;
        while !self.recovered {
            if self.step > budget {
                return Err(Violation::new(
                    "liveness",
                    format!(
                        "message storm: over {} events in the liveness phase",
                        50 * ticks * self.nodes.len() as u64
                    ),
                ));
            }
            if self
                .queue
                .first_key_value()
                .is_none_or(|(&(at, _), _)| at > deadline)
            {
                let cluster: Vec<String> = self.nodes.iter().map(SimNode::summary).collect();
                return Err(Violation::new(
                    "liveness",
                    format!(
                        "{ticks} ticks after the heal no leader has committed a proposal on \
                         every node (probe {:?}): {}",
                        self.probe,
                        cluster.join("; ")
                    ),
                ));
            }
            self.next_event()?;
        }
        self.recovery_time = self.now - start;
        Ok(())
    }

    /// Compares every live core's whole log with what it reported.
    fn verify_views(&self) -> Result<(), Violation> {
        for node in &self.nodes {
            let Some(core) = &node.core else { continue };
            let (last, offset) = (core.status().last_index, core.status().snapshot);
            let check = if last != node.view.len() {
                Err(format!("log ends at {last}, reported {}", node.view.len()))
            } else {
                verify_view(
                    &node.view,
                    offset,
                    (offset + 1..=last).map(|i| core.entry(i)),
                )
            };
            if let Err(why) = check {
                return Err(Violation::new(
                    "ready contract",
                    format!("node {}: {why}", node.id),
                ));
            }
        }
        Ok(())
    }

    /// A live node's commit index (0 when down).
    fn commit_of(&self, n: usize) -> u64 {
        self.nodes[n].core.as_ref().map_or(0, |c| c.status().commit)
    }

    fn describe(&self, ev: &Event) -> String {
        match ev {
            Event::Tick { node, life } => {
                format!("tick n{}{}", node + 1, stale(self.nodes[*node].life, *life))
            }
            Event::Deliver(m, _) => format!("deliver {}", trace::describe(m)),
            Event::DiskSync { node, life } => {
                format!(
                    "fsync n{}{}",
                    node + 1,
                    stale(self.nodes[*node].life, *life)
                )
            }
            Event::Restart { node, life } => {
                format!(
                    "restart n{}{}",
                    node + 1,
                    stale(self.nodes[*node].life, *life)
                )
            }
            Event::Crash { node, life } => {
                format!(
                    "crash n{}{}",
                    node + 1,
                    stale(self.nodes[*node].life, *life)
                )
            }
            Event::Client => "client".to_string(),
            Event::Fault => "fault".to_string(),
            Event::Operator => "operator".to_string(),
        }
    }
}

fn stale(now: u64, then: u64) -> &'static str {
    if now == then {
        ""
    } else {
        " (stale)"
    }
}

fn event_code(ev: &Event) -> u64 {
    match ev {
        Event::Tick { node, .. } => 1 << 8 | *node as u64,
        Event::Deliver(m, _) => 2 << 8 | m.to << 4 | m.from,
        Event::DiskSync { node, .. } => 3 << 8 | *node as u64,
        Event::Restart { node, .. } => 4 << 8 | *node as u64,
        Event::Crash { node, .. } => 5 << 8 | *node as u64,
        Event::Client => 6 << 8,
        Event::Fault => 7 << 8,
        Event::Operator => 8 << 8,
    }
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
