//! Election timers, pre-vote, votes and role transitions.

use super::progress::Progress;
use super::{MessageBody, Raft, Role};
use crate::types::{EntryKind, NodeId, MAX_TERM_OR_INDEX};
use bytes::Bytes;

impl Raft {
    pub(super) fn tick_election(&mut self) {
        // A node that may not campaign keeps counting: its leader lease
        // must lapse, or it would ignore the elections of the others
        // forever (found by the simulator).
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_timeout && self.may_campaign() {
            self.election_elapsed = 0;
            self.start_election(false);
        }
    }

    /// Starts an election now (as after an election timeout).
    pub fn campaign(&mut self) {
        self.start_election(false);
    }

    /// `transfer`: the election was asked for by the leader (TimeoutNow), so
    /// it skips pre-vote and voters' leases.
    pub(super) fn start_election(&mut self, transfer: bool) {
        if self.role == Role::Leader {
            return;
        }
        if !self.may_campaign() {
            // A learner, a node that is joining or one that was removed:
            // its vote counts nowhere, and its election would only disturb.
            return;
        }
        if self.next_term().is_none() {
            self.refuse_campaign_at_max_term();
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote: nothing is persisted.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        let Some(term) = self.next_term() else {
            // The term rose to the bound while pre-voting.
            self.refuse_campaign_at_max_term();
            self.become_follower(self.term, None);
            return;
        };
        self.term = term;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let me = self.cfg.id;
        self.votes.insert(me, true);
        if self.tally_votes() {
            return;
        }
        let term = if pre_vote {
            // Checked by start_election, and a pre-candidate's term has not
            // moved since (a higher one would have made it a follower).
            self.next_term().unwrap_or(self.term)
        } else {
            self.term
        };
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let peers: Vec<NodeId> = self.voter_peers().collect();
        for to in peers {
            let body = MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                pre_vote,
                transfer,
            };
            // Votes depend on the term and vote just taken: after persist.
            let msg = super::Message {
                from: me,
                to,
                term,
                rpc_id: 0,
                body,
            };
            self.msgs_after_persist.push(msg);
        }
    }

    /// The term an election would be held in; `None` at the bound, where
    /// `+ 1` would leave the range every node accepts (or wrap to 0, after
    /// which this node could never win: every vote would be stale).
    fn next_term(&self) -> Option<u64> {
        self.term.checked_add(1).filter(|&t| t <= MAX_TERM_OR_INDEX)
    }

    /// Only a peer that forged its term (or 2^63 elections) gets a node
    /// here; operators must know, since no election can succeed.
    fn refuse_campaign_at_max_term(&self) {
        tracing::error!(
            node = self.cfg.id,
            term = self.term,
            "term is at its maximum; refusing to campaign (a peer sent a forged term?)"
        );
    }

    /// Counts answers; moves on when a quorum decided. Returns whether the
    /// role changed.
    fn tally_votes(&mut self) -> bool {
        // Only the voters in force count (an answer may come from a node
        // a configuration change removed meanwhile).
        let membership = self.configs.current();
        let counted = self
            .votes
            .iter()
            .filter(|(id, _)| membership.is_voter(**id));
        let (granted, rejected) = counted.fold(
            (0, 0),
            |(g, r), (_, &yes)| {
                if yes {
                    (g + 1, r)
                } else {
                    (g, r + 1)
                }
            },
        );
        if granted >= self.quorum() {
            if self.role == Role::PreCandidate {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
            true
        } else if rejected >= self.quorum() {
            self.become_follower(self.term, None);
            true
        } else {
            false
        }
    }

    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.abandon_leadership();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.read_only.begin_leadership();
        self.election_elapsed = 0;
        self.transfer_target = None;
        let next = self.log.last_index().saturating_add(1);
        let peers: Vec<NodeId> = self.member_peers().collect();
        self.progress = peers
            .into_iter()
            .map(|p| (p, Progress::new(next)))
            .collect();
        tracing::info!(node = self.cfg.id, term = self.term, "became leader");
        // Entries of earlier terms commit only through one of this term.
        self.append_own(EntryKind::Noop, Bytes::new());
    }

    fn abandon_leadership(&mut self) {
        self.progress.clear();
        self.transfer_target = None;
        let dropped = self.read_only.drain();
        self.dropped_reads.extend(dropped);
    }

    pub(super) fn handle_request_vote(
        &mut self,
        m: &super::Message,
        last_log_index: u64,
        last_log_term: u64,
        pre_vote: bool,
    ) {
        // In a pre-vote, a higher term does not change ours, but a node
        // that would vote for anyone in that term may grant it.
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted && !pre_vote {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
        }
        // A granted pre-vote answers in the term asked about, so the
        // pre-candidate does not mistake it for a newer term.
        let term = if granted && pre_vote {
            m.term
        } else {
            self.term
        };
        let msg = super::Message {
            from: self.cfg.id,
            to: m.from,
            term,
            rpc_id: m.rpc_id,
            body: MessageBody::RequestVoteResponse { granted, pre_vote },
        };
        self.msgs_after_persist.push(msg);
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool, pre_vote: bool) {
        let expected = match self.role {
            Role::PreCandidate => pre_vote,
            Role::Candidate => !pre_vote,
            _ => return,
        };
        if !expected {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }

    /// Whether this node heard from a leader within the minimum election
    /// timeout: then it ignores elections (check-quorum lease).
    pub(super) fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_tick
    }
}
