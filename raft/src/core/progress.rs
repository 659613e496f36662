//! What the leader knows about each follower's log, and the window of
//! pipelined AppendEntries in flight to it.

use std::collections::VecDeque;

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// Where the follower's log matches is unknown: one AppendEntries at a
    /// time until one succeeds.
    Probe,
    /// The follower's log matches up to `matched`: send optimistically,
    /// several batches in flight.
    Replicate,
    /// The follower needs entries this log compacted away: a snapshot
    /// covering up to `index` is on its way, and nothing else is sent until
    /// it is answered (or times out).
    Snapshot {
        /// The snapshot's last index.
        index: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) matched: u64,
    /// Next index to send.
    pub(crate) next: u64,
    pub(crate) state: ReplicationState,
    /// In Probe: an AppendEntries is outstanding; wait for its reply or a heartbeat reply.
    pub(crate) probe_sent: bool,
    /// Last index and size of each AppendEntries in flight, oldest first.
    inflight: VecDeque<(u64, usize)>,
    inflight_bytes: usize,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest ReadIndex round the follower has confirmed.
    pub(crate) acked_round: u64,
    /// Ticks with batches in flight and no AppendEntries reply.
    stalled_ticks: u32,
    /// A rejection already sent this follower from Replicate back to Probe
    /// in the current heartbeat interval. In Replicate every rejection
    /// means an earlier AppendEntries of the stream was reordered or lost,
    /// and one restart resends everything after `matched`. Acting on each
    /// rejection of an old window would restart the window again and
    /// again, each time drawing more rejections: a message storm.
    pub(crate) reset_by_reject: bool,
}

impl Progress {
    pub(crate) fn new(next: u64) -> Self {
        Progress {
            matched: 0,
            next,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            acked_round: 0,
            stalled_ticks: 0,
            reset_by_reject: false,
        }
    }

    /// Whether another AppendEntries with entries may be sent now.
    pub(crate) fn can_send(&self, max_msgs: usize, max_bytes: usize) -> bool {
        match self.state {
            ReplicationState::Probe => !self.probe_sent,
            ReplicationState::Replicate => {
                self.inflight.len() < max_msgs && self.inflight_bytes < max_bytes
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// Records an AppendEntries ending at `last` (of `bytes` bytes) as sent.
    pub(crate) fn sent(&mut self, last: u64, bytes: usize) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                self.next = last.saturating_add(1);
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// A success reply: the follower matches up to `index`. Returns whether
    /// `matched` moved.
    pub(crate) fn acknowledge(&mut self, index: u64) -> bool {
        self.stalled_ticks = 0;
        let moved = index > self.matched;
        if moved {
            self.matched = index;
        }
        // `index` comes from the follower: saturate rather than trust it.
        self.next = self.next.max(index.saturating_add(1));
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        let snapshot_done =
            matches!(self.state, ReplicationState::Snapshot { index } if self.matched >= index);
        if self.state == ReplicationState::Probe || snapshot_done {
            self.become_replicate();
        }
        moved
    }

    /// A snapshot up to `index` is being sent: stop sending entries.
    pub(crate) fn become_snapshot(&mut self, index: u64) {
        self.stalled_ticks = 0;
        self.state = ReplicationState::Snapshot { index };
        self.probe_sent = false;
        self.clear_inflight();
    }

    fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next = self.after_matched();
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// Counts a tick; returns how long batches (or a snapshot) have waited
    /// for a reply.
    pub(crate) fn note_tick_stalled(&mut self) -> u32 {
        let waiting = matches!(self.state, ReplicationState::Snapshot { .. });
        if self.inflight.is_empty() && !waiting {
            self.stalled_ticks = 0;
        } else {
            self.stalled_ticks += 1;
        }
        self.stalled_ticks
    }

    /// Back to one-at-a-time probing from `next`.
    pub(crate) fn become_probe(&mut self, next: u64) {
        self.stalled_ticks = 0;
        self.state = ReplicationState::Probe;
        self.next = next.max(self.after_matched());
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// The first index the follower may lack. `matched` was reported by
    /// the follower, so the sum saturates rather than trusting it.
    pub(crate) fn after_matched(&self) -> u64 {
        self.matched.saturating_add(1)
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}
