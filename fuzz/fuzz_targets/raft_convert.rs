//! What a peer sends over gRPC, decoded as each Raft request type and
//! converted as the transport converts it; and a Raft entry's payload
//! decoded as the state machine decodes it. A request that converts must
//! convert back to the same message; a write that decodes must re-encode
//! to a payload that decodes to the same write.
//!
//! Input: one byte picking the message type, then its protobuf bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use resqlite::store::log_command::{self, LogCommand};
use resqlite_proto::raft as pb;
use resqlite_raft::transport::convert::{self, OutboundRequest};
use resqlite_raft::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(r) = pb::AppendEntriesRequest::decode(bytes) {
                round_trip(
                    OutboundRequest::Append(r.clone()),
                    convert::append_request_from_proto(r),
                );
            }
        }
        1 => {
            if let Ok(r) = pb::HeartbeatRequest::decode(bytes) {
                round_trip(
                    OutboundRequest::Heartbeat(r.clone()),
                    convert::heartbeat_request_from_proto(r),
                );
            }
        }
        2 => {
            if let Ok(r) = pb::RequestVoteRequest::decode(bytes) {
                round_trip(
                    OutboundRequest::Vote(r.clone()),
                    convert::vote_request_from_proto(r),
                );
            }
        }
        3 => {
            if let Ok(r) = pb::TimeoutNowRequest::decode(bytes) {
                round_trip(
                    OutboundRequest::TimeoutNow(r.clone()),
                    convert::timeout_now_from_proto(r),
                );
            }
        }
        4 => {
            if let Ok(c) = pb::InstallSnapshotChunk::decode(bytes) {
                let _ = convert::check_snapshot_header(&c);
            }
        }
        5 => {
            // Replies come from peers too; the event loop checks them.
            if let Ok(r) = pb::RequestVoteResponse::decode(bytes) {
                let _ = convert::check_message(&convert::vote_response_from_proto(r));
            }
            if let Ok(r) = pb::AppendEntriesResponse::decode(bytes) {
                let _ = convert::check_message(&convert::append_response_from_proto(r));
            }
            if let Ok(r) = pb::HeartbeatResponse::decode(bytes) {
                let _ = convert::check_message(&convert::heartbeat_response_from_proto(r));
            }
        }
        _ => {
            if let Ok(LogCommand::Write(w)) = log_command::decode(bytes) {
                match log_command::decode(&w.encode_to_vec()) {
                    // Bytes, not values: a NaN parameter is not equal to itself.
                    Ok(LogCommand::Write(again)) => {
                        assert_eq!(again.encode_to_vec(), w.encode_to_vec())
                    }
                    other => panic!("a re-encoded write decodes as {other:?}"),
                }
            }
        }
    }
});

/// A request the transport accepted converts back to what was received.
fn round_trip(received: OutboundRequest, converted: Result<Message, convert::ConvertError>) {
    let Ok(message) = converted else { return };
    if let Err(e) = convert::check_message(&message) {
        panic!("an accepted request fails check_message: {e}");
    }
    let back = convert::request_to_proto(message).expect("a request converts back");
    assert_eq!(back, received);
}
