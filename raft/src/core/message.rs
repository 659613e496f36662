//! Messages exchanged between Raft cores. The transport maps them to gRPC.

use crate::types::{Entry, NodeId, SnapshotMeta};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote reply, the term asked about).
    pub term: u64,
    /// Opaque to the core: copied from a request into its reply so the
    /// transport can match them.
    pub rpc_id: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq)]
pub enum MessageBody {
    /// Ask for a vote (or, with `pre_vote`, whether a vote would be granted).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: u64,
        /// Term of the candidate's last entry.
        last_log_term: u64,
        /// A pre-vote: nobody changes term or vote because of it.
        pre_vote: bool,
        /// The election follows a leadership transfer; voters skip the
        /// check-quorum lease.
        transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether the vote (or pre-vote) is granted.
        granted: bool,
        /// Echoes the request's flag.
        pre_vote: bool,
    },
    /// Replicate entries following `prev_log_index`.
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: u64,
        /// Term of that entry.
        prev_log_term: u64,
        /// The entries to append (empty for a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: u64,
    },
    /// The answer to [`MessageBody::AppendEntries`], sent after the entries are durable.
    AppendEntriesResponse {
        /// Whether the follower's log matched at `prev_log_index`.
        success: bool,
        /// On success, the last index known to match the leader; on
        /// rejection, the `prev_log_index` that was tried.
        index: u64,
        /// On rejection: the term of the follower's entry at `conflict_index`
        /// (0 for index 0).
        conflict_term: u64,
        /// On rejection: the last index, at or below the tried one, where the
        /// follower's log could still match the leader's (its last entry with
        /// a term at most the request's `prev_log_term`, or its commit index
        /// if higher). The leader probes next at or below it.
        conflict_index: u64,
    },
    /// Leader liveness, commit propagation and ReadIndex confirmation.
    Heartbeat {
        /// min(leader commit, what the follower is known to match).
        commit: u64,
        /// ReadIndex round, echoed back.
        read_round: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echoes the request's round.
        read_round: u64,
    },
    /// Leadership transfer: start an election now.
    TimeoutNow,
    /// The follower needs entries the leader's log no longer holds: replace
    /// its state with the leader's snapshot. The core only names the
    /// snapshot; the driver streams its bytes, and delivers this message to
    /// the receiving core once they are all there and verified.
    InstallSnapshot {
        /// What the snapshot covers.
        snapshot: SnapshotMeta,
    },
    /// The answer to [`MessageBody::InstallSnapshot`], sent once the
    /// snapshot is durable and the state machine restored from it.
    InstallSnapshotResponse {
        /// The last index the follower now holds that matches the leader:
        /// the snapshot's, or its commit index if that was already higher.
        index: u64,
    },
}

impl MessageBody {
    /// Whether this message is a reply to a request.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVoteResponse { .. }
                | MessageBody::AppendEntriesResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::InstallSnapshotResponse { .. }
        )
    }
}
