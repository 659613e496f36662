//! Log compaction and InstallSnapshot: the leader sends its snapshot to a
//! follower that needs entries it compacted away; the follower replaces its
//! log and state with it.
//!
//! The core never touches snapshot bytes. The driver takes a snapshot of
//! the state machine, makes it durable and calls [`Raft::compact`]; when
//! the core asks for an [`MessageBody::InstallSnapshot`], the driver streams
//! the file, and the receiving driver steps the message into its core only
//! once the whole file is there and verified.

use super::membership::Configs;
use super::progress::ReplicationState;
use super::{CompactError, Message, MessageBody, Raft};
use crate::types::{Membership, NodeId, SnapshotMeta};

impl Raft {
    /// A durable snapshot of the state machine at `index` exists: forget the
    /// log up to it. Returns the snapshot's metadata (its term and the
    /// voters), which the driver stores with it. Followers that need the
    /// forgotten entries will be sent the snapshot instead.
    pub fn compact(&mut self, index: u64) -> Result<SnapshotMeta, CompactError> {
        let offset = self.log.offset();
        if index <= offset {
            return Err(CompactError::Compacted { index, offset });
        }
        if index > self.log.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        let term = self
            .log
            .term(index)
            .expect("an applied index above the offset is in the log");
        let membership = self.configs.compact(index, term);
        let meta = self.log.compact(index, membership);
        tracing::debug!(node = self.cfg.id, index, term = meta.term, "log compacted");
        Ok(meta)
    }

    /// The snapshot this node's log starts after (index 0 if none).
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.log.snapshot()
    }

    /// The driver could not deliver a snapshot to `to` (connection lost,
    /// refused): go back to probing, and send it again once the follower
    /// answers a heartbeat.
    pub fn report_snapshot_failure(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if matches!(pr.state, ReplicationState::Snapshot { .. }) {
            let next = pr.after_matched();
            pr.become_probe(next);
            // Wait for a heartbeat reply: a follower that is down would
            // otherwise be sent the snapshot again at once, in a loop.
            pr.probe_sent = true;
        }
    }

    /// Leader: `to` needs entries before the log's start. Send the snapshot.
    pub(super) fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot().clone();
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        tracing::info!(
            node = self.cfg.id,
            to,
            index = snapshot.index,
            term = snapshot.term,
            matched = pr.matched,
            "follower is behind the compacted log; sending a snapshot"
        );
        pr.become_snapshot(snapshot.index);
        self.send(to, MessageBody::InstallSnapshot { snapshot }, 0, false);
    }

    /// Leader: `from` answered a snapshot, holding the log up to `index`.
    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, index: u64) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let moved = pr.acknowledge(index);
        if matches!(pr.state, ReplicationState::Snapshot { .. }) {
            // An answer to an older snapshot: still behind the current one.
            let next = pr.after_matched();
            pr.become_probe(next);
        }
        if moved {
            self.maybe_commit();
            if self.transfer_target == Some(from) {
                self.maybe_send_timeout_now(from);
            }
        }
        self.send_append(from);
    }

    /// Follower: the leader of our term sent its snapshot.
    ///
    /// A snapshot at or below our commit index tells nothing new. If our log
    /// holds the snapshot's last entry with the same term, everything up to
    /// it is committed and our log already has it: commit it and keep the
    /// log, which is applied as usual (the retention rule of the Raft paper,
    /// §7, as etcd applies it). Otherwise the log is replaced by the
    /// snapshot and the state machine restored from it. The commit index
    /// never moves back, and the answer waits for the disk: it goes out
    /// only once the snapshot is durable and restored.
    pub(super) fn handle_install_snapshot(&mut self, m: &Message, snapshot: &SnapshotMeta) {
        let index = if snapshot.index <= self.log.committed {
            self.log.committed
        } else if self.log.term(snapshot.index) == Some(snapshot.term) {
            self.log.committed = snapshot.index;
            snapshot.index
        } else {
            tracing::info!(
                node = self.cfg.id,
                index = snapshot.index,
                term = snapshot.term,
                commit = self.log.committed,
                "installing snapshot from the leader"
            );
            self.log.restore(snapshot.clone());
            let base = if snapshot.membership.members.is_empty() {
                Membership::from_voters(&self.cfg.voters)
            } else {
                snapshot.membership.clone()
            };
            self.configs = Configs::new(snapshot.index, snapshot.term, base);
            self.on_membership_changed();
            self.snapshot_to_install = Some(snapshot.clone());
            snapshot.index
        };
        self.send(
            m.from,
            MessageBody::InstallSnapshotResponse { index },
            m.rpc_id,
            true,
        );
    }
}
