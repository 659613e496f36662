//! Membership changes, one server at a time (Raft thesis §4.1).
//!
//! A configuration takes effect on a node as soon as its `Config` entry is
//! in the node's log, committed or not; if the entry is later truncated
//! away, the previous configuration is back in force. So the core keeps the
//! configuration of every `Config` entry still in its log, above a base:
//! the configuration at the snapshot the log starts after (or the one the
//! cluster was started with).
//!
//! Safety of single-server changes rests on two rules enforced here: a
//! leader proposes a change only once the previous one is committed, and
//! only after it has committed an entry of its own term (otherwise a
//! change proposed by an earlier leader, never committed, could overlap
//! with this one: the bug described on the raft-dev list in 2015).

use super::progress::Progress;
use super::raft_log::RaftLog;
use super::{MessageBody, ProposeError, Raft, Role};
use crate::types::{Entry, EntryKind, Membership, NodeId};

/// The configuration set by one entry of the log (or the base).
#[derive(Clone, Debug)]
struct ConfigAt {
    index: u64,
    term: u64,
    membership: Membership,
}

/// The configurations of the log, oldest first; the first is the base and
/// is never dropped by truncation.
#[derive(Clone, Debug)]
pub(crate) struct Configs {
    list: Vec<ConfigAt>,
}

impl Configs {
    /// Only the base: `membership` is in force as of `index` (term `term`).
    pub(crate) fn new(index: u64, term: u64, membership: Membership) -> Self {
        Configs {
            list: vec![ConfigAt {
                index,
                term,
                membership,
            }],
        }
    }

    /// The configuration in force: the newest in the log.
    pub(crate) fn current(&self) -> &Membership {
        &self.last().membership
    }

    /// Index of the entry that set the configuration in force (the base's
    /// index for the base).
    pub(crate) fn current_index(&self) -> u64 {
        self.last().index
    }

    /// The configuration in force as of `index`: set by the newest entry at
    /// or below it (the base if none).
    pub(crate) fn at(&self, index: u64) -> &Membership {
        let pos = self.list.partition_point(|c| c.index <= index).max(1);
        &self.list[pos - 1].membership
    }

    fn last(&self) -> &ConfigAt {
        self.list.last().expect("the base is never dropped")
    }

    /// Records the `Config` entries among `entries`, appended to the log
    /// after every configuration known so far.
    pub(crate) fn note_appended(&mut self, node: NodeId, entries: &[Entry]) -> bool {
        let after = self.current_index();
        let mut changed = false;
        for e in entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config && e.index > after)
        {
            match Membership::decode(&e.data) {
                Ok(membership) => {
                    self.list.push(ConfigAt {
                        index: e.index,
                        term: e.term,
                        membership,
                    });
                    changed = true;
                }
                // Written by a leader that encoded it: damage or a newer
                // format. Keep the previous configuration, loudly.
                Err(why) => tracing::error!(
                    node,
                    index = e.index,
                    error = %why,
                    "ignoring a configuration entry that cannot be decoded"
                ),
            }
        }
        changed
    }

    /// Forgets the configurations whose entries are no longer in `log`
    /// (truncated by a new leader). Returns whether the one in force
    /// changed.
    pub(crate) fn drop_truncated(&mut self, log: &RaftLog) -> bool {
        let before = self.list.len();
        while self.list.len() > 1 {
            let last = self.last();
            if log.term(last.index) == Some(last.term) {
                break;
            }
            self.list.pop();
        }
        self.list.len() != before
    }

    /// The log was compacted up to `index`: the configuration in force
    /// there becomes the base. Returns it.
    pub(crate) fn compact(&mut self, index: u64, term: u64) -> Membership {
        let keep_from = self.list.partition_point(|c| c.index <= index);
        let base = self.list[keep_from - 1].membership.clone();
        self.list.drain(..keep_from);
        self.list.insert(
            0,
            ConfigAt {
                index,
                term,
                membership: base.clone(),
            },
        );
        base
    }
}

impl Raft {
    /// The configuration in force on this node (the newest in its log).
    pub fn membership(&self) -> &Membership {
        self.configs.current()
    }

    /// Index of the entry that set the configuration in force (0 for the
    /// configuration the cluster was started with).
    pub fn membership_index(&self) -> u64 {
        self.configs.current_index()
    }

    /// Bumped each time the configuration in force changes: a cheap way for
    /// the driver to notice, once per Ready, without comparing members.
    pub fn membership_generation(&self) -> u64 {
        self.membership_generation
    }

    /// Leader: proposes `next` as the new configuration. It may differ from
    /// the one in force by at most one voter (added, removed, or a learner
    /// promoted); learners and addresses may change freely. Returns the
    /// entry's index and term, like [`Raft::propose`].
    pub fn propose_membership(&mut self, next: Membership) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ProposeError::ChangeInProgress(
                "the leader has not committed an entry of its term yet".to_string(),
            ));
        }
        let pending = self.configs.current_index();
        if pending > self.log.committed {
            return Err(ProposeError::ChangeInProgress(format!(
                "the membership change at index {pending} is not committed yet"
            )));
        }
        let current = self.configs.current();
        let old: Vec<NodeId> = current.voters().collect();
        let new: Vec<NodeId> = next.voters().collect();
        if new.is_empty() {
            return Err(ProposeError::InvalidChange(
                "a configuration needs at least one voter".to_string(),
            ));
        }
        let changed = old.iter().filter(|v| !new.contains(v)).count()
            + new.iter().filter(|v| !old.contains(v)).count();
        if changed > 1 {
            return Err(ProposeError::InvalidChange(format!(
                "voters {old:?} → {new:?} change more than one server at a time"
            )));
        }
        if next.members.contains_key(&0) {
            return Err(ProposeError::InvalidChange(
                "node id 0 is reserved".to_string(),
            ));
        }
        tracing::info!(
            node = self.cfg.id,
            term = self.term,
            voters = ?new,
            learners = ?next.learners().collect::<Vec<_>>(),
            "proposing a membership change"
        );
        let index = self.append_entry(EntryKind::Config, next.encode());
        self.append_pending = true;
        Ok((index, self.term))
    }

    /// Whether this node votes in the configuration in force.
    pub(super) fn is_voter(&self) -> bool {
        self.configs.current().is_voter(self.cfg.id)
    }

    /// Whether this node may start an election: it votes in the
    /// configuration in force, or in the committed one. The second case is
    /// a node whose own removal is in its log but not committed: if that
    /// entry never reaches the others, they still need this node (their
    /// configuration holds it, and its longer log may keep them from
    /// winning without it). It then counts votes from the configuration in
    /// force, as any candidate, leads without counting itself, commits its
    /// removal and hands over (found by the simulator).
    pub(super) fn may_campaign(&self) -> bool {
        if self.state_machine_halted {
            return false;
        }
        self.is_voter() || self.configs.at(self.log.committed).is_voter(self.cfg.id)
    }

    /// After the configuration in force changed: a leader starts or stops
    /// replicating to the members added or removed, and re-evaluates what
    /// the new quorum has stored.
    pub(super) fn on_membership_changed(&mut self) {
        self.membership_generation += 1;
        let membership = self.configs.current().clone();
        tracing::info!(
            node = self.cfg.id,
            index = self.configs.current_index(),
            voters = ?membership.voters().collect::<Vec<_>>(),
            learners = ?membership.learners().collect::<Vec<_>>(),
            "membership in force changed"
        );
        if self.role != Role::Leader {
            return;
        }
        let me = self.cfg.id;
        self.progress
            .retain(|id, _| *id != me && membership.contains(*id));
        let next = self.log.last_index().saturating_add(1);
        for &id in membership.members.keys().filter(|&&id| id != me) {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
        if self
            .transfer_target
            .is_some_and(|t| !membership.is_voter(t))
        {
            self.transfer_target = None;
        }
        self.maybe_commit();
        self.advance_reads();
        self.broadcast_append();
    }

    /// Leader: once the configuration that removed this node is committed,
    /// hand leadership to the most caught-up voter and step down (thesis
    /// §4.2.2). Until then it led a cluster it is not part of, without
    /// counting itself in any quorum.
    pub(super) fn maybe_step_down_removed(&mut self) {
        if self.role != Role::Leader
            || self.is_voter()
            || self.log.committed < self.configs.current_index()
        {
            return;
        }
        self.hand_over_and_step_down("removed from the cluster");
    }

    /// Leader: tells the most caught-up voter, if its log is complete, to
    /// campaign at once (TimeoutNow), and steps down.
    pub(super) fn hand_over_and_step_down(&mut self, why: &'static str) {
        let last = self.log.last_index();
        let membership = self.configs.current();
        let successor = self
            .progress
            .iter()
            .filter(|(id, _)| membership.is_voter(**id))
            .max_by_key(|(_, p)| p.matched)
            .map(|(&id, p)| (id, p.matched));
        tracing::info!(
            node = self.cfg.id,
            term = self.term,
            ?successor,
            "{why}; stepping down"
        );
        if let Some((to, matched)) = successor {
            if matched == last {
                self.send(to, MessageBody::TimeoutNow, 0, false);
            }
        }
        self.become_follower(self.term, None);
    }
}
