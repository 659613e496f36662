//! Term rules and dispatch of incoming messages.

use super::{Message, MessageBody, Raft, Role};

impl Raft {
    /// Feeds one message from a peer into the core.
    pub fn step(&mut self, m: Message) {
        if m.to != self.cfg.id || m.from == self.cfg.id {
            return;
        }
        if m.term > self.term {
            match m.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
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

    /// A message from an older term. Tell a stale leader our term so it steps
    /// down (with check-quorum and pre-vote our term only rises through a
    /// real election), and reject stale pre-votes so the sender learns too.
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
            MessageBody::RequestVote { pre_vote: true, .. } => MessageBody::RequestVoteResponse {
                granted: false,
                pre_vote: true,
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
