//! Term rules and dispatch of incoming messages.

use super::{Message, MessageBody, Raft, Role};

impl Raft {
    /// Feeds one message from a peer into the core.
    pub fn step(&mut self, m: Message) {
        if m.to != self.cfg.id || m.from == self.cfg.id {
            return;
        }
        if !self.may_call_election(&m) {
            tracing::debug!(
                node = self.cfg.id,
                term = self.term,
                from = m.from,
                msg_term = m.term,
                "ignoring an election message from a node that may not call one"
            );
            return;
        }
        if m.term > self.term {
            match m.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    // A transfer is asked for by the leader of a
                    // configuration we hold, so only its voters skip it.
                    let transfer = transfer && self.configs.current().is_voter(m.from);
                    if self.in_leader_lease() && !transfer {
                        // A leader is alive: a node that was cut off must
                        // not depose it (check-quorum lease). No reply.
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            self.answer_stale(&m);
            return;
        }

        match m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                pre_vote,
                ..
            } => self.handle_request_vote(&m, last_log_index, last_log_term, pre_vote),
            MessageBody::RequestVoteResponse { granted, pre_vote } => {
                self.handle_vote_response(m.from, granted, pre_vote)
            }
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow => self.step_from_leader(m),
            MessageBody::AppendEntriesResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. } => {
                if self.role == Role::Leader {
                    self.step_leader_response(m)
                }
            }
        }
    }

    /// Whether `m`, if it asks for a vote or an election, comes from a node
    /// entitled to: checked before anything else, so a refused one changes
    /// no term and gets no reply.
    ///
    /// A vote or pre-vote request must come from a voter of the
    /// configuration in force here (the newest in this log, committed or
    /// not), or from a candidate whose log is strictly more up to date than
    /// ours. The exception is what keeps the cluster live: such a candidate
    /// may hold the configuration entry that made it a voter while we do
    /// not yet (a node that joined and has nothing yet, a lagging
    /// follower), and it may need our vote to win in that configuration
    /// (found by the simulator: a lone voter that had just added a second
    /// one could never be elected again). A candidate whose log is not
    /// ahead of ours knows no configuration we do not (equal last entries
    /// mean equal logs), so if it is not a voter here it is a removed node,
    /// a learner or an outsider, whose election would only raise our term
    /// and depose a healthy leader; and we would refuse it our vote anyway.
    /// Such a candidate never skips the leader lease either (see `step`).
    ///
    /// TimeoutNow must come from the leader this node follows in its
    /// current term. That is stricter than "a voter": only the leader sends
    /// it, and only once this node acknowledged its entries in this term.
    /// It is not "a voter" because a leader that has just removed itself
    /// hands over with TimeoutNow once its removal is in force.
    ///
    /// AppendEntries, Heartbeat and InstallSnapshot are not filtered by
    /// membership, deliberately: a lagging follower may not yet hold the
    /// configuration entry that added the current leader (a majority of the
    /// new configuration can elect that leader without it), and the only
    /// way it ever gets that entry is from that leader. Dropping its
    /// messages as coming from a "non-member" would wedge the follower for
    /// good. Who may send them at all is for the transport to establish
    /// (authenticated peers).
    fn may_call_election(&self, m: &Message) -> bool {
        match m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                self.configs.current().is_voter(m.from)
                    || self.log.is_ahead_of_us(last_log_index, last_log_term)
            }
            MessageBody::TimeoutNow => m.term == self.term && self.leader == Some(m.from),
            _ => true,
        }
    }

    /// A message from an older term. Tell a stale leader our term so it steps
    /// down (with check-quorum and pre-vote our term only rises through a
    /// real election), and reject stale votes and pre-votes so the sender
    /// learns too: a candidate may hear of newer terms from no one else,
    /// since it ignores the elections of nodes that are not voters in its
    /// configuration (found by the simulator: a candidate left many terms
    /// behind by a removed node's elections never caught up).
    fn answer_stale(&mut self, m: &Message) {
        let body = match m.body {
            MessageBody::AppendEntries { prev_log_index, .. } => {
                MessageBody::AppendEntriesResponse {
                    success: false,
                    index: prev_log_index,
                    conflict_term: 0,
                    conflict_index: 0,
                }
            }
            MessageBody::Heartbeat { .. } => MessageBody::HeartbeatResponse { read_round: 0 },
            MessageBody::InstallSnapshot { .. } => {
                MessageBody::InstallSnapshotResponse { index: 0 }
            }
            MessageBody::RequestVote { pre_vote, .. } => MessageBody::RequestVoteResponse {
                granted: false,
                pre_vote,
            },
            _ => return,
        };
        self.send(m.from, body, m.rpc_id, false);
    }

    /// AppendEntries, Heartbeat or TimeoutNow from the leader of our term.
    fn step_from_leader(&mut self, m: Message) {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen; ignore rather than crash.
            tracing::error!(
                node = self.cfg.id,
                term = self.term,
                from = m.from,
                "message from another leader of my term"
            );
            return;
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(m.from));
        }
        self.leader = Some(m.from);
        self.election_elapsed = 0;
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                ref entries,
                leader_commit,
            } => self.handle_append_entries(
                &m,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                self.handle_heartbeat(&m, commit, read_round)
            }
            MessageBody::InstallSnapshot { ref snapshot } => {
                self.handle_install_snapshot(&m, snapshot)
            }
            MessageBody::TimeoutNow => {
                tracing::info!(
                    node = self.cfg.id,
                    term = self.term,
                    "leadership transfer: starting election"
                );
                self.start_election(true);
            }
            _ => {}
        }
    }
}
