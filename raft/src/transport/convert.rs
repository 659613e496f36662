//! Conversions between the core's [`Message`] and the generated gRPC types.
//!
//! Requests travel as their own RPC (`RequestVote`, `AppendEntries`,
//! `Heartbeat`, `TimeoutNow`) and each reply type belongs to one request
//! type, so conversion is split by direction: a request the core wants to
//! send becomes an [`OutboundRequest`]; a request received from a peer
//! becomes a [`Message`]; the core's reply becomes the proto reply of the
//! RPC it answers; a reply received from a peer becomes a [`Message`].

use resqlite_proto::raft as pb;

use crate::core::{Message, MessageBody};
use crate::types::{Entry, EntryKind};

/// Why a message could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A peer sent an entry kind this node does not know.
    #[error("unknown entry kind {0}")]
    UnknownEntryKind(i32),
    /// The message is not of the kind the RPC carries (e.g. a vote reply
    /// produced for a heartbeat).
    #[error("expected {expected}, got another message kind")]
    UnexpectedBody {
        /// What the RPC needed.
        expected: &'static str,
    },
}

/// A request the core wants sent, as the proto message of its RPC.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundRequest {
    /// `RequestVote` (unary).
    Vote(pb::RequestVoteRequest),
    /// `AppendEntries` (one long-lived bidi stream per peer).
    Append(pb::AppendEntriesRequest),
    /// `Heartbeat` (unary).
    Heartbeat(pb::HeartbeatRequest),
    /// `TimeoutNow` (unary).
    TimeoutNow(pb::TimeoutNowRequest),
}

/// Converts one entry to its wire form.
pub fn entry_to_proto(e: &Entry) -> pb::Entry {
    let kind = match e.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::Noop => pb::EntryKind::Noop,
        EntryKind::Config => pb::EntryKind::Config,
    };
    pb::Entry {
        term: e.term,
        index: e.index,
        kind: kind as i32,
        data: e.data.clone(),
    }
}

/// Converts one entry from its wire form.
pub fn entry_from_proto(e: pb::Entry) -> Result<Entry, ConvertError> {
    let kind = match pb::EntryKind::try_from(e.kind) {
        Ok(pb::EntryKind::Normal) => EntryKind::Normal,
        Ok(pb::EntryKind::Noop) => EntryKind::Noop,
        Ok(pb::EntryKind::Config) => EntryKind::Config,
        Err(_) => return Err(ConvertError::UnknownEntryKind(e.kind)),
    };
    Ok(Entry {
        term: e.term,
        index: e.index,
        kind,
        data: e.data,
    })
}

/// Converts a request produced by the core into the proto message of its
/// RPC. Fails for replies, which travel back on the RPC they answer.
pub fn request_to_proto(m: Message) -> Result<OutboundRequest, ConvertError> {
    let Message {
        from,
        to,
        term,
        rpc_id,
        body,
    } = m;
    Ok(match body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            transfer,
        } => OutboundRequest::Vote(pb::RequestVoteRequest {
            term,
            from,
            to,
            last_log_index,
            last_log_term,
            pre_vote,
            transfer,
            rpc_id,
        }),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => OutboundRequest::Append(pb::AppendEntriesRequest {
            term,
            from,
            to,
            prev_log_index,
            prev_log_term,
            entries: entries.iter().map(entry_to_proto).collect(),
            leader_commit,
            rpc_id,
        }),
        MessageBody::Heartbeat { commit, read_round } => {
            OutboundRequest::Heartbeat(pb::HeartbeatRequest {
                term,
                from,
                to,
                commit,
                read_round,
                rpc_id,
            })
        }
        MessageBody::TimeoutNow => OutboundRequest::TimeoutNow(pb::TimeoutNowRequest {
            term,
            from,
            to,
            rpc_id,
        }),
        // Streamed by the snapshot sender, not converted here.
        MessageBody::InstallSnapshot { .. } => {
            return Err(ConvertError::UnexpectedBody {
                expected: "a request other than InstallSnapshot",
            })
        }
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::AppendEntriesResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::InstallSnapshotResponse { .. } => {
            return Err(ConvertError::UnexpectedBody {
                expected: "a request",
            })
        }
    })
}

/// A `RequestVote` received from a peer.
pub fn vote_request_from_proto(r: pb::RequestVoteRequest) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::RequestVote {
            last_log_index: r.last_log_index,
            last_log_term: r.last_log_term,
            pre_vote: r.pre_vote,
            transfer: r.transfer,
        },
    }
}

/// An `AppendEntries` received from a peer.
pub fn append_request_from_proto(r: pb::AppendEntriesRequest) -> Result<Message, ConvertError> {
    let entries = r
        .entries
        .into_iter()
        .map(entry_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::AppendEntries {
            prev_log_index: r.prev_log_index,
            prev_log_term: r.prev_log_term,
            entries,
            leader_commit: r.leader_commit,
        },
    })
}

/// A `Heartbeat` received from a peer.
pub fn heartbeat_request_from_proto(r: pb::HeartbeatRequest) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::Heartbeat {
            commit: r.commit,
            read_round: r.read_round,
        },
    }
}

/// A `TimeoutNow` received from a peer.
pub fn timeout_now_from_proto(r: pb::TimeoutNowRequest) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::TimeoutNow,
    }
}

/// The core's answer to a `RequestVote`.
pub fn vote_response_to_proto(m: Message) -> Result<pb::RequestVoteResponse, ConvertError> {
    match m.body {
        MessageBody::RequestVoteResponse { granted, pre_vote } => Ok(pb::RequestVoteResponse {
            term: m.term,
            from: m.from,
            to: m.to,
            granted,
            pre_vote,
            rpc_id: m.rpc_id,
        }),
        _ => Err(ConvertError::UnexpectedBody {
            expected: "RequestVoteResponse",
        }),
    }
}

/// The core's answer to an `AppendEntries`.
pub fn append_response_to_proto(m: Message) -> Result<pb::AppendEntriesResponse, ConvertError> {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success,
            index,
            conflict_term,
            conflict_index,
        } => Ok(pb::AppendEntriesResponse {
            term: m.term,
            from: m.from,
            to: m.to,
            success,
            index,
            conflict_term,
            conflict_index,
            rpc_id: m.rpc_id,
        }),
        _ => Err(ConvertError::UnexpectedBody {
            expected: "AppendEntriesResponse",
        }),
    }
}

/// The core's answer to a `Heartbeat`.
pub fn heartbeat_response_to_proto(m: Message) -> Result<pb::HeartbeatResponse, ConvertError> {
    match m.body {
        MessageBody::HeartbeatResponse { read_round } => Ok(pb::HeartbeatResponse {
            term: m.term,
            from: m.from,
            to: m.to,
            read_round,
            rpc_id: m.rpc_id,
        }),
        _ => Err(ConvertError::UnexpectedBody {
            expected: "HeartbeatResponse",
        }),
    }
}

/// A `RequestVote` reply received from a peer.
pub fn vote_response_from_proto(r: pb::RequestVoteResponse) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::RequestVoteResponse {
            granted: r.granted,
            pre_vote: r.pre_vote,
        },
    }
}

/// An `AppendEntries` reply received from a peer.
pub fn append_response_from_proto(r: pb::AppendEntriesResponse) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::AppendEntriesResponse {
            success: r.success,
            index: r.index,
            conflict_term: r.conflict_term,
            conflict_index: r.conflict_index,
        },
    }
}

/// A `Heartbeat` reply received from a peer.
pub fn heartbeat_response_from_proto(r: pb::HeartbeatResponse) -> Message {
    Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::HeartbeatResponse {
            read_round: r.read_round,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: MessageBody) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 7,
            rpc_id: 42,
            body,
        }
    }

    /// Sends a request through its wire form and back.
    fn request_round_trip(m: Message) -> Message {
        match request_to_proto(m).expect("a request converts") {
            OutboundRequest::Vote(r) => vote_request_from_proto(r),
            OutboundRequest::Append(r) => append_request_from_proto(r).expect("valid entries"),
            OutboundRequest::Heartbeat(r) => heartbeat_request_from_proto(r),
            OutboundRequest::TimeoutNow(r) => timeout_now_from_proto(r),
        }
    }

    #[test]
    fn requests_round_trip() {
        let entries = vec![
            Entry {
                term: 6,
                index: 10,
                kind: EntryKind::Noop,
                data: Bytes::new(),
            },
            Entry {
                term: 7,
                index: 11,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"insert"),
            },
            Entry {
                term: 7,
                index: 12,
                kind: EntryKind::Config,
                data: Bytes::from_static(b"\x00\x01"),
            },
        ];
        let bodies = vec![
            MessageBody::RequestVote {
                last_log_index: 9,
                last_log_term: 5,
                pre_vote: true,
                transfer: false,
            },
            MessageBody::RequestVote {
                last_log_index: 9,
                last_log_term: 5,
                pre_vote: false,
                transfer: true,
            },
            MessageBody::AppendEntries {
                prev_log_index: 9,
                prev_log_term: 5,
                entries,
                leader_commit: 8,
            },
            MessageBody::AppendEntries {
                prev_log_index: 3,
                prev_log_term: 2,
                entries: vec![],
                leader_commit: 3,
            },
            MessageBody::Heartbeat {
                commit: 8,
                read_round: 3,
            },
            MessageBody::TimeoutNow,
        ];
        for body in bodies {
            let m = msg(body);
            assert_eq!(request_round_trip(m.clone()), m);
        }
    }

    #[test]
    fn responses_round_trip() {
        let vote = msg(MessageBody::RequestVoteResponse {
            granted: true,
            pre_vote: true,
        });
        let back = vote_response_from_proto(vote_response_to_proto(vote.clone()).unwrap());
        assert_eq!(back, vote);

        for success in [true, false] {
            let append = msg(MessageBody::AppendEntriesResponse {
                success,
                index: 12,
                conflict_term: 4,
                conflict_index: 9,
            });
            let back =
                append_response_from_proto(append_response_to_proto(append.clone()).unwrap());
            assert_eq!(back, append);
        }

        let hb = msg(MessageBody::HeartbeatResponse { read_round: 5 });
        let back = heartbeat_response_from_proto(heartbeat_response_to_proto(hb.clone()).unwrap());
        assert_eq!(back, hb);
    }

    #[test]
    fn replies_do_not_convert_as_requests() {
        let reply = msg(MessageBody::HeartbeatResponse { read_round: 1 });
        assert!(request_to_proto(reply).is_err());
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_refused() {
        let hb = msg(MessageBody::HeartbeatResponse { read_round: 1 });
        assert!(vote_response_to_proto(hb.clone()).is_err());
        assert!(append_response_to_proto(hb).is_err());
    }

    #[test]
    fn unknown_entry_kind_is_refused() {
        let req = pb::AppendEntriesRequest {
            term: 1,
            from: 1,
            to: 2,
            entries: vec![pb::Entry {
                term: 1,
                index: 1,
                kind: 99,
                data: Bytes::new(),
            }],
            ..Default::default()
        };
        assert_eq!(
            append_request_from_proto(req),
            Err(ConvertError::UnknownEntryKind(99))
        );
    }
}
