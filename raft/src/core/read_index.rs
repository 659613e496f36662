//! ReadIndex: linearizable reads confirmed by one heartbeat round to a
//! quorum. Every read waiting when a round starts shares that round.

use std::collections::VecDeque;

use super::{ProposeError, Raft, ReadState, Role};

#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The last heartbeat round started.
    round: u64,
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
        let mut rounds: Vec<u64> = self.progress.values().map(|p| p.acked_round).collect();
        rounds.push(self.read_only.round);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds[self.quorum() - 1];
        while let Some(&(ctx, index, round)) = self.read_only.pending.front() {
            if round > confirmed {
                break;
            }
            self.read_only.pending.pop_front();
            self.read_states.push(ReadState { ctx, index });
        }
    }
}
