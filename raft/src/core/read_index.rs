//! ReadIndex: linearizable reads confirmed by one heartbeat round to a
//! quorum. Every read waiting when a round starts shares that round.

use std::collections::VecDeque;

use super::{ProposeError, Raft, ReadState, Role};

#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The last heartbeat round started.
    round: u64,
    /// The last round started before this node became leader: no answer
    /// to it will come, so it is not in flight.
    leadership_began: u64,
    /// Reads are waiting for a round that has not started yet.
    requested: bool,
    /// Reads that arrived before the leader committed an entry of its own
    /// term: until then its commit index may be behind the cluster's.
    waiting_commit: Vec<u64>,
    /// (ctx, read index, round that must be confirmed).
    pending: VecDeque<(u64, u64, u64)>,
}

impl ReadOnly {
    pub(crate) fn round_requested(&self) -> bool {
        self.requested
    }

    pub(crate) fn start_round(&mut self) -> u64 {
        self.round += 1;
        self.requested = false;
        self.round
    }

    /// Marks the start of a leadership: earlier rounds are not in flight.
    pub(crate) fn begin_leadership(&mut self) {
        self.leadership_began = self.round;
    }

    /// Every read not yet confirmed; forgets them.
    pub(crate) fn drain(&mut self) -> Vec<u64> {
        let mut out = std::mem::take(&mut self.waiting_commit);
        out.extend(self.pending.drain(..).map(|(ctx, _, _)| ctx));
        self.requested = false;
        out
    }
}

impl Raft {
    /// Asks for a linearizable read. `ctx` comes back in
    /// [`super::Ready::read_states`] with the index to apply before reading,
    /// once a quorum has confirmed this node is still the leader; or in
    /// [`super::Ready::dropped_reads`] if leadership is lost first.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            self.read_only.waiting_commit.push(ctx);
            return Ok(());
        }
        self.queue_read(ctx);
        self.advance_reads();
        Ok(())
    }

    fn queue_read(&mut self, ctx: u64) {
        let ro = &mut self.read_only;
        ro.pending
            .push_back((ctx, self.log.committed, ro.round + 1));
        ro.requested = true;
    }

    /// Releases the reads whose round a quorum has confirmed.
    pub(super) fn advance_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if !self.read_only.waiting_commit.is_empty()
            && self.log.term(self.log.committed) == Some(self.term)
        {
            for ctx in std::mem::take(&mut self.read_only.waiting_commit) {
                self.queue_read(ctx);
            }
        }
        let confirmed = self.confirmed_read_round();
        while let Some(&(ctx, index, round)) = self.read_only.pending.front() {
            if round > confirmed {
                break;
            }
            self.read_only.pending.pop_front();
            self.read_states.push(ReadState { ctx, index });
        }
    }

    /// The newest heartbeat round a quorum (this node included) has
    /// answered.
    fn confirmed_read_round(&self) -> u64 {
        let rounds = self.progress.iter().map(|(&id, p)| (id, p.acked_round));
        self.quorum_value(rounds, self.read_only.round)
    }

    /// Whether reads wait for a round that should start now. While a round
    /// is still unanswered the next one waits for it: the reads that
    /// arrive meanwhile then share one round instead of starting one each,
    /// which under load is most of the leader's and followers' work. A
    /// round whose answers are lost is overtaken by the periodic heartbeat,
    /// which starts a round of its own.
    pub(super) fn read_round_due(&self) -> bool {
        let ro = &self.read_only;
        ro.round_requested() && self.confirmed_read_round().max(ro.leadership_began) >= ro.round
    }
}
