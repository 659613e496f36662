//! Conversions between the core's [`Message`] and the generated gRPC types.
//!
//! Requests travel as their own RPC (`RequestVote`, `AppendEntries`,
//! `Heartbeat`, `TimeoutNow`) and each reply type belongs to one request
//! type, so conversion is split by direction: a request the core wants to
//! send becomes an [`OutboundRequest`]; a request received from a peer
//! becomes a [`Message`]; the core's reply becomes the proto reply of the
//! RPC it answers; a reply received from a peer becomes a [`Message`].
//!
//! Everything a peer sends is untrusted input: a request whose term or an
//! index is beyond [`MAX_TERM_OR_INDEX`], or whose entries do not form a
//! piece of a log, is refused here as malformed and never reaches the core
//! ([`check_message`]). Replies, which the peer senders hand straight to
//! the event loop, are checked there with the same function.

use resqlite_proto::raft as pb;

use crate::core::{Message, MessageBody};
use crate::types::{Entry, EntryKind, MAX_TERM_OR_INDEX};

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
    /// A term or index no real cluster reaches: arithmetic on it could
    /// overflow, so the message is refused as malformed.
    #[error("{field} {value} is out of range (terms and indexes stop at 2^63 - 1)")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: u64,
    },
    /// The entries of an AppendEntries are not the log that follows its
    /// `prev_log_index`: indexes must count up from it by one, and terms
    /// never decrease and never exceed the sender's term.
    #[error("entries are not a piece of a log: {0}")]
    NotALog(String),
}

/// Refuses a message whose term or any index is out of range, or whose
/// entries cannot be a piece of the sender's log. A message that passes
/// is safe for the core's arithmetic: the sum of any two of its values
/// fits in a `u64`.
pub fn check_message(m: &Message) -> Result<(), ConvertError> {
    bounded("term", m.term)?;
    match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => {
            bounded("last_log_index", *last_log_index)?;
            bounded("last_log_term", *last_log_term)
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            bounded("prev_log_index", *prev_log_index)?;
            bounded("prev_log_term", *prev_log_term)?;
            bounded("leader_commit", *leader_commit)?;
            check_entries(m.term, *prev_log_index, *prev_log_term, entries)
        }
        MessageBody::AppendEntriesResponse {
            index,
            conflict_term,
            conflict_index,
            ..
        } => {
            bounded("index", *index)?;
            bounded("conflict_term", *conflict_term)?;
            bounded("conflict_index", *conflict_index)
        }
        MessageBody::Heartbeat { commit, .. } => bounded("commit", *commit),
        MessageBody::InstallSnapshot { snapshot } => {
            bounded("last_included_index", snapshot.index)?;
            bounded("last_included_term", snapshot.term)
        }
        MessageBody::InstallSnapshotResponse { index } => bounded("index", *index),
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow => Ok(()),
    }
}

/// The first chunk of an InstallSnapshot stream, checked as
/// [`check_message`] checks a message (the later chunks must repeat it).
pub fn check_snapshot_header(c: &pb::InstallSnapshotChunk) -> Result<(), ConvertError> {
    bounded("term", c.term)?;
    bounded("last_included_index", c.last_included_index)?;
    bounded("last_included_term", c.last_included_term)
}

fn bounded(field: &'static str, value: u64) -> Result<(), ConvertError> {
    if value > MAX_TERM_OR_INDEX {
        Err(ConvertError::OutOfRange { field, value })
    } else {
        Ok(())
    }
}

/// Entries must follow `prev_index` one by one, with terms that never
/// decrease from `prev_term` and never exceed the sender's `term`: a log
/// with a gap or a term going back would break the core's invariants.
fn check_entries(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: &[Entry],
) -> Result<(), ConvertError> {
    let (mut index, mut last_term) = (prev_index, prev_term);
    for e in entries {
        // `index` is at most 2^63 - 1 here, so `+ 1` cannot overflow.
        if e.index != index + 1 {
            return Err(ConvertError::NotALog(format!(
                "index {} follows {index}",
                e.index
            )));
        }
        if e.term < last_term || e.term > term {
            return Err(ConvertError::NotALog(format!(
                "entry {} has term {} after term {last_term}, sent in term {term}",
                e.index, e.term
            )));
        }
        if e.index > MAX_TERM_OR_INDEX {
            return Err(ConvertError::OutOfRange {
                field: "entry index",
                value: e.index,
            });
        }
        (index, last_term) = (e.index, e.term);
    }
    Ok(())
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
pub fn vote_request_from_proto(r: pb::RequestVoteRequest) -> Result<Message, ConvertError> {
    checked(Message {
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
    })
}

/// An `AppendEntries` received from a peer.
pub fn append_request_from_proto(r: pb::AppendEntriesRequest) -> Result<Message, ConvertError> {
    let entries = r
        .entries
        .into_iter()
        .map(entry_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    checked(Message {
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
pub fn heartbeat_request_from_proto(r: pb::HeartbeatRequest) -> Result<Message, ConvertError> {
    checked(Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::Heartbeat {
            commit: r.commit,
            read_round: r.read_round,
        },
    })
}

/// A `TimeoutNow` received from a peer.
pub fn timeout_now_from_proto(r: pb::TimeoutNowRequest) -> Result<Message, ConvertError> {
    checked(Message {
        from: r.from,
        to: r.to,
        term: r.term,
        rpc_id: r.rpc_id,
        body: MessageBody::TimeoutNow,
    })
}

/// A request from a peer, once [`check_message`] accepts it.
fn checked(m: Message) -> Result<Message, ConvertError> {
    check_message(&m)?;
    Ok(m)
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
            OutboundRequest::Append(r) => append_request_from_proto(r),
            OutboundRequest::Heartbeat(r) => heartbeat_request_from_proto(r),
            OutboundRequest::TimeoutNow(r) => timeout_now_from_proto(r),
        }
        .expect("a valid request converts back")
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

    fn heartbeat(term: u64, commit: u64) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            term,
            from: 1,
            to: 2,
            commit,
            read_round: 1,
            rpc_id: 1,
        }
    }

    /// The attack: one Heartbeat at term u64::MAX left a cluster whose
    /// terms wrapped to 0 leaderless for good. It must not reach the core.
    #[test]
    fn a_term_or_index_beyond_2_63_is_refused_as_malformed() {
        for term in [u64::MAX, 1 << 63] {
            assert_eq!(
                heartbeat_request_from_proto(heartbeat(term, 0)),
                Err(ConvertError::OutOfRange {
                    field: "term",
                    value: term
                })
            );
            let vote = pb::RequestVoteRequest {
                term: 3,
                from: 1,
                to: 2,
                last_log_index: term,
                ..Default::default()
            };
            assert!(matches!(
                vote_request_from_proto(vote),
                Err(ConvertError::OutOfRange { .. })
            ));
            let timeout = pb::TimeoutNowRequest {
                term,
                from: 1,
                to: 2,
                rpc_id: 0,
            };
            assert!(timeout_now_from_proto(timeout).is_err());
            let append = pb::AppendEntriesRequest {
                term,
                from: 1,
                to: 2,
                ..Default::default()
            };
            assert!(append_request_from_proto(append).is_err());
        }
        assert!(heartbeat_request_from_proto(heartbeat(3, u64::MAX)).is_err());
        // The largest legal values pass.
        let at_bound = heartbeat(MAX_TERM_OR_INDEX, MAX_TERM_OR_INDEX);
        assert!(heartbeat_request_from_proto(at_bound).is_ok());
    }

    #[test]
    fn replies_with_an_out_of_range_index_are_refused() {
        let reply = msg(MessageBody::AppendEntriesResponse {
            success: true,
            index: u64::MAX,
            conflict_term: 0,
            conflict_index: 0,
        });
        assert!(check_message(&reply).is_err());
        let reply = Message {
            term: u64::MAX,
            ..msg(MessageBody::HeartbeatResponse { read_round: 1 })
        };
        assert!(check_message(&reply).is_err());
    }

    fn append(prev: (u64, u64), entries: &[(u64, u64)]) -> pb::AppendEntriesRequest {
        pb::AppendEntriesRequest {
            term: 5,
            from: 1,
            to: 2,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries
                .iter()
                .map(|&(index, term)| pb::Entry {
                    term,
                    index,
                    kind: pb::EntryKind::Normal as i32,
                    data: Bytes::new(),
                })
                .collect(),
            leader_commit: 0,
            rpc_id: 1,
        }
    }

    #[test]
    fn entries_that_are_not_a_piece_of_a_log_are_refused() {
        assert!(append_request_from_proto(append((3, 2), &[(4, 2), (5, 5)])).is_ok());
        let bad = [
            append((3, 2), &[(5, 2)]),                       // a gap
            append((3, 2), &[(4, 2), (4, 2)]),               // repeated
            append((3, 2), &[(4, 1)]),                       // term goes back
            append((3, 2), &[(4, 3), (5, 2)]),               // term goes back
            append((3, 2), &[(4, 6)]),                       // above the sender's term
            append((MAX_TERM_OR_INDEX, 2), &[(1 << 63, 2)]), // out of range
        ];
        for req in bad {
            let entries = req.entries.clone();
            assert!(
                append_request_from_proto(req).is_err(),
                "accepted {entries:?}"
            );
        }
    }
}
