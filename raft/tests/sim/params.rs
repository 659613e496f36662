//! The cluster's settings, drawn per seed.

use rand::rngs::SmallRng;
use rand::Rng;

/// Nominal time units per tick.
pub const TICK: u64 = 10;

/// The cluster's settings, drawn from the seed so that seeds cover many
/// configurations.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_msgs: usize,
    pub max_batch_bytes: usize,
    /// Ticks a leader waits for a snapshot's answer before resending it.
    pub snapshot_timeout_tick: u32,
    /// Chance that a node snapshots its state machine and compacts its log
    /// after applying entries (0 in some seeds: runs without snapshots).
    pub compact_p: f64,
    /// Time units between two ticks of each node (their clocks drift).
    pub tick_interval: Vec<u64>,
    /// Usual fsync latency: 1..=disk_max time units.
    pub disk_max: u64,
    /// Ticks between faults: 1..=fault_every (storms and calmer runs).
    pub fault_every: u64,
    /// Faults aimed at the moments where bugs turn into lost data; off in
    /// a quarter of the runs.
    pub aimed: AimedFaults,
}

/// Chances of a fault right after a node did something that its disk or
/// its peers must back.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AimedFaults {
    /// Crash a voter just after it granted a vote.
    pub crash_after_vote: f64,
    /// Crash a follower just after it acknowledged an append.
    pub crash_after_ack: f64,
    /// Crash a leader just after an acknowledgement advanced its commit
    /// index, and often the follower that sent it too.
    pub crash_after_commit: f64,
    /// Cut a new leader off at once, so that its log diverges.
    pub isolate_new_leader: f64,
}

impl Params {
    pub fn draw(rng: &mut SmallRng, nodes: usize) -> Self {
        let election_tick = rng.random_range(4..=10);
        // 1 byte: one entry per AppendEntries, which lets a follower hold
        // an older leader's entries without the new leader's (Figure 8).
        let max_batch_bytes = [1, 100, 1 << 20][rng.random_range(0..3)];
        // One entry per round trip would be too slow to catch up in time.
        let max_inflight_msgs = if max_batch_bytes == 1 {
            [4, 64][rng.random_range(0..2)]
        } else {
            [1, 2, 4, 64][rng.random_range(0..4)]
        };
        Params {
            election_tick,
            heartbeat_tick: rng.random_range(1..=2),
            pre_vote: rng.random_bool(0.75),
            check_quorum: rng.random_bool(0.75),
            max_inflight_msgs,
            max_batch_bytes,
            snapshot_timeout_tick: rng.random_range(2..=4) * election_tick,
            compact_p: [0.0, 0.02, 0.1, 0.3][rng.random_range(0..4)],
            tick_interval: (0..nodes)
                .map(|_| rng.random_range(TICK - 1..=TICK + 1))
                .collect(),
            disk_max: rng.random_range(1..=8),
            fault_every: [3, 6, 12][rng.random_range(0..3)],
            aimed: if rng.random_bool(0.75) {
                AimedFaults {
                    crash_after_vote: 0.1,
                    crash_after_ack: 0.01,
                    crash_after_commit: 0.2,
                    isolate_new_leader: 0.5,
                }
            } else {
                AimedFaults::default()
            },
        }
    }
}
