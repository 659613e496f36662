//! Log replication: the leader's side (pipelined AppendEntries, heartbeats,
//! the commit rule, check-quorum) and the follower's side.

use super::progress::ReplicationState;
use super::{Message, MessageBody, Raft, Role};
use crate::types::{Entry, NodeId};

impl Raft {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                tracing::warn!(
                    node = self.cfg.id,
                    term = self.term,
                    "lost contact with a quorum; stepping down"
                );
                self.become_follower(self.term, None);
                return;
            }
            if let Some(target) = self.transfer_target {
                tracing::warn!(node = self.cfg.id, target, "leadership transfer timed out");
                self.transfer_target = None;
            }
        }
        let (stall_limit, snapshot_limit) =
            (self.cfg.election_tick, self.cfg.snapshot_timeout_tick);
        for pr in self.progress.values_mut() {
            let limit = match pr.state {
                ReplicationState::Snapshot { .. } => snapshot_limit,
                _ => stall_limit,
            };
            if pr.note_tick_stalled() >= limit {
                // Batches or a snapshot in flight were lost: find the match
                // point again.
                let next = pr.after_matched();
                pr.become_probe(next);
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            for pr in self.progress.values_mut() {
                pr.reset_by_reject = false;
            }
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum (this node included) was heard from since the last
    /// check; resets the marks for the next round.
    fn quorum_active(&mut self) -> bool {
        let membership = self.configs.current();
        let mut active = usize::from(membership.is_voter(self.cfg.id));
        for (id, pr) in self.progress.iter_mut() {
            if pr.recent_active && membership.is_voter(*id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.quorum()
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.read_only.start_round();
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            let commit = self.progress[&to].matched.min(self.log.committed);
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
                0,
                false,
            );
        }
        // A lone voter confirms its own rounds.
        self.advance_reads();
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to);
        }
    }

    /// Sends AppendEntries to `to` while its window allows and there is
    /// something to send. A probe is sent even when there is nothing new.
    pub(super) fn send_append(&mut self, to: NodeId) {
        let last = self.log.last_index();
        loop {
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if !pr.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes) {
                return;
            }
            let probing = pr.state == ReplicationState::Probe;
            if pr.next > last && !probing {
                return;
            }
            let prev = pr.next - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // Compacted away: only the snapshot can bring it up to date.
                self.send_snapshot(to);
                return;
            };
            let entries = self.log.slice(pr.next, last, self.cfg.max_batch_bytes);
            let (sent_last, bytes) = (
                prev + entries.len() as u64,
                entries.iter().map(Entry::size).sum(),
            );
            let body = MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.committed,
            };
            self.send(to, body, 0, false);
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.sent(sent_last, bytes);
            }
            if probing {
                return;
            }
        }
    }

    pub(super) fn step_leader_response(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match m.body {
            MessageBody::AppendEntriesResponse {
                success: true,
                index,
                ..
            } => {
                if pr.acknowledge(index) {
                    self.maybe_commit();
                    if self.transfer_target == Some(from) {
                        self.maybe_send_timeout_now(from);
                    }
                }
                self.send_append(from);
            }
            MessageBody::AppendEntriesResponse {
                success: false,
                index,
                conflict_term,
                conflict_index,
            } => {
                let replicating = pr.state == ReplicationState::Replicate;
                let stale = match pr.state {
                    // Below `matched`: older than what we know. Otherwise an
                    // earlier AppendEntries was reordered or lost; one
                    // restart per heartbeat interval resends them all.
                    ReplicationState::Replicate => index <= pr.matched || pr.reset_by_reject,
                    ReplicationState::Probe => index.saturating_add(1) != pr.next,
                    // Sent before the snapshot, which supersedes it.
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                let next = self.next_after_reject(index, conflict_term, conflict_index);
                if let Some(pr) = self.progress.get_mut(&from) {
                    pr.become_probe(next);
                    pr.reset_by_reject |= replicating;
                }
                self.send_append(from);
            }
            MessageBody::HeartbeatResponse { read_round } => {
                pr.acked_round = pr.acked_round.max(read_round);
                // A probe that was lost is retried on the next heartbeat.
                pr.probe_sent = false;
                if pr.matched < self.log.last_index() || pr.state == ReplicationState::Probe {
                    self.send_append(from);
                }
                self.advance_reads();
            }
            MessageBody::InstallSnapshotResponse { index } => {
                self.handle_snapshot_response(from, index)
            }
            _ => {}
        }
    }

    /// Fast back-off (etcd's findConflictByTerm, leader side): the
    /// follower's log cannot match after `conflict_index`, whose entry has
    /// `conflict_term` there; ours cannot match it past our last entry with
    /// a term at most that. Probe there, always below the index tried.
    /// A follower whose log may match only below our snapshot gets `next`
    /// at or below the snapshot, which sends the snapshot.
    fn next_after_reject(&self, tried: u64, conflict_term: u64, conflict_index: u64) -> u64 {
        if conflict_index < self.log.offset() {
            return conflict_index.saturating_add(1).clamp(1, tried.max(1));
        }
        let matchable = self
            .log
            .last_index_with_term_at_most(conflict_index, conflict_term);
        matchable.saturating_add(1).clamp(1, tried.max(1))
    }

    /// The commit rule: the highest index stored durably by a quorum, but
    /// only if it belongs to the current term (Raft §5.4.2).
    pub(super) fn maybe_commit(&mut self) {
        let matched = self.progress.iter().map(|(&id, p)| (id, p.matched));
        let quorum_index = self.quorum_value(matched, self.log.persisted);
        if quorum_index > self.log.committed && self.log.term(quorum_index) == Some(self.term) {
            self.log.committed = quorum_index;
            self.advance_reads();
            self.maybe_step_down_removed();
        }
    }

    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let up_to_date = self
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if up_to_date {
            tracing::info!(
                node = self.cfg.id,
                to,
                term = self.term,
                "transferring leadership"
            );
            self.send(to, MessageBody::TimeoutNow, 0, false);
        } else {
            self.send_append(to);
        }
    }

    pub(super) fn handle_append_entries(
        &mut self,
        m: &Message,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: &[Entry],
        leader_commit: u64,
    ) {
        let body = if prev_log_index < self.log.committed {
            // Everything up to our commit already matches the leader.
            let skip = (self.log.committed - prev_log_index) as usize;
            let rest = entries.get(skip..).unwrap_or(&[]);
            let Some(last) = self.accept_entries(self.log.committed, rest, leader_commit) else {
                return;
            };
            MessageBody::AppendEntriesResponse {
                success: true,
                index: last.max(self.log.committed),
                conflict_term: 0,
                conflict_index: 0,
            }
        } else if self.log.term(prev_log_index) == Some(prev_log_term) {
            let Some(last) = self.accept_entries(prev_log_index, entries, leader_commit) else {
                return;
            };
            MessageBody::AppendEntriesResponse {
                success: true,
                index: last,
                conflict_term: 0,
                conflict_index: 0,
            }
        } else {
            // The leader holds no term above prev_log_term up to
            // prev_log_index, so none of our entries with a higher term
            // there can match: point it at the last one that might (etcd's
            // findConflictByTerm), never below our commit index, which
            // matches. A log with a long divergent tail of many short terms
            // is then skipped in a round trip or two, not one term per trip.
            let hint = self
                .log
                .last_index_with_term_at_most(prev_log_index, prev_log_term)
                .max(self.log.committed);
            MessageBody::AppendEntriesResponse {
                success: false,
                index: prev_log_index,
                conflict_term: self.log.term(hint).unwrap_or(0),
                conflict_index: hint,
            }
        };
        // The acknowledgement says "durable": it waits for the disk.
        self.send(m.from, body, m.rpc_id, true);
    }

    /// Appends after `prev` and moves the commit index, never past the last
    /// entry this request proved to match. Returns that entry's index.
    /// `None`, with nothing changed, when the request contradicts a
    /// committed entry.
    fn accept_entries(&mut self, prev: u64, entries: &[Entry], leader_commit: u64) -> Option<u64> {
        let last_new = match self.log.append_after(prev, entries) {
            Ok(last) => last,
            Err(index) => {
                tracing::error!(
                    node = self.cfg.id,
                    index,
                    commit = self.log.committed,
                    "refusing AppendEntries that conflicts with a committed entry: \
                     the sender's log disagrees with what this node knows is committed"
                );
                return None;
            }
        };
        let commit = leader_commit.min(last_new);
        if commit > self.log.committed {
            self.log.committed = commit;
        }
        // A configuration is in force from the moment it is in the log,
        // and no longer once it is truncated away.
        let dropped = self.configs.drop_truncated(&self.log);
        let added = self.configs.note_appended(self.cfg.id, entries);
        if dropped || added {
            self.on_membership_changed();
        }
        Some(last_new)
    }

    pub(super) fn handle_heartbeat(&mut self, m: &Message, commit: u64, read_round: u64) {
        // The leader sends min(its commit, what we are known to match).
        let commit = commit.min(self.log.last_index());
        if commit > self.log.committed {
            self.log.committed = commit;
        }
        self.send(
            m.from,
            MessageBody::HeartbeatResponse { read_round },
            m.rpc_id,
            false,
        );
    }

    /// Leader: how far each other member's log is known to match.
    pub fn progress_matched(&self) -> Option<std::collections::BTreeMap<NodeId, u64>> {
        if self.role != Role::Leader {
            return None;
        }
        Some(
            self.progress
                .iter()
                .map(|(&id, p)| (id, p.matched))
                .collect(),
        )
    }

    /// The leader's view of a follower, for status pages.
    pub fn follower_match(&self, id: NodeId) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress.get(&id).map(|p| p.matched)
    }
}
