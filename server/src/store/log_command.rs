//! What a Raft entry's payload holds: a client's write statement, or one of
//! ReSQLite's own commands (the consistency check and its verdict).
//!
//! Every payload is decoded first as a [`proto::LogCommand`], whose fields
//! start at 16. A [`WriteStatement`] only uses fields 1–3, which a
//! `LogCommand` does not know and skips, so a write — including every entry
//! written before `LogCommand` existed — decodes with no kind set and is
//! then decoded as the write it is. New kinds of entries never change the
//! meaning of old logs.

use bytes::Bytes;
use prost::Message as _;
use resqlite_proto::client::{self as proto, log_command::Kind, WriteStatement};

use super::check::DbHash;

/// One decoded Raft entry payload.
#[derive(Clone, Debug, PartialEq)]
pub enum LogCommand {
    /// A client's write statement with its parameters.
    Write(WriteStatement),
    /// A consistency check or its verdict (see [`super::check`]).
    Check(CheckEntry),
    /// CREATE, ALTER or DROP ROLE (see [`super::roles`]).
    Role(proto::RoleChange),
    /// A client's transaction (see [`super::speculation`]).
    Transaction(proto::TransactionEntry),
}

/// The entries of `resqlite check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckEntry {
    /// Every member hashes its database as of this entry.
    Run,
    /// The leader's hash of the database at the check entry `index`.
    Verdict {
        /// Log index of the check entry.
        index: u64,
        /// The leader's hash there.
        hash: DbHash,
    },
}

/// Why a payload could not be decoded. The same bytes fail the same way on
/// every node.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf message of ours.
    #[error("{0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A verdict whose hash has the wrong length.
    #[error("the check verdict for index {index} carries a {len}-byte hash, expected 32")]
    HashLength {
        /// The check it names.
        index: u64,
        /// The length it carries.
        len: usize,
    },
}

/// Decodes one Normal entry's payload.
pub fn decode(payload: &[u8]) -> Result<LogCommand, DecodeError> {
    match proto::LogCommand::decode(payload)?.kind {
        None => Ok(LogCommand::Write(WriteStatement::decode(payload)?)),
        Some(Kind::Check(proto::ConsistencyCheck {})) => Ok(LogCommand::Check(CheckEntry::Run)),
        Some(Kind::Role(change)) => Ok(LogCommand::Role(change)),
        Some(Kind::Transaction(t)) => Ok(LogCommand::Transaction(t)),
        Some(Kind::Verdict(v)) => {
            let hash =
                <[u8; 32]>::try_from(v.hash.as_ref()).map_err(|_| DecodeError::HashLength {
                    index: v.index,
                    len: v.hash.len(),
                })?;
            Ok(LogCommand::Check(CheckEntry::Verdict {
                index: v.index,
                hash: DbHash(hash),
            }))
        }
    }
}

/// The payload of a check entry.
pub fn encode_check() -> Bytes {
    proto::LogCommand {
        kind: Some(Kind::Check(proto::ConsistencyCheck {})),
    }
    .encode_to_vec()
    .into()
}

/// The payload of a role change.
pub fn encode_role(change: proto::RoleChange) -> Bytes {
    proto::LogCommand {
        kind: Some(Kind::Role(change)),
    }
    .encode_to_vec()
    .into()
}

/// The payload of a client's transaction.
pub fn encode_transaction(entry: proto::TransactionEntry) -> Bytes {
    proto::LogCommand {
        kind: Some(Kind::Transaction(entry)),
    }
    .encode_to_vec()
    .into()
}

/// The payload of the leader's verdict on the check at `index`.
pub fn encode_verdict(index: u64, hash: &DbHash) -> Bytes {
    proto::LogCommand {
        kind: Some(Kind::Verdict(proto::CheckVerdict {
            index,
            hash: Bytes::copy_from_slice(&hash.0),
        })),
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use resqlite_proto::client::{value, Value};

    fn legacy_write() -> WriteStatement {
        WriteStatement {
            semantics: 0,
            sql: "INSERT INTO t (a, b) VALUES ($1, $2)".into(),
            params: vec![
                Value {
                    kind: Some(value::Kind::Integer(7)),
                },
                Value {
                    kind: Some(value::Kind::Text("x".into())),
                },
            ],
            command: "INSERT".into(),
        }
    }

    #[test]
    fn a_legacy_write_statement_payload_decodes_as_that_write() {
        let write = legacy_write();
        let payload = write.encode_to_vec();
        assert_eq!(decode(&payload).unwrap(), LogCommand::Write(write));
        // The encoder the apply path uses produces the same kind of payload.
        let ours = super::super::encode_write("SELECT 1", &[], "SELECT");
        match decode(&ours).unwrap() {
            LogCommand::Write(w) => assert_eq!(w.sql, "SELECT 1"),
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn an_empty_payload_is_an_empty_write_as_before() {
        assert_eq!(
            decode(&[]).unwrap(),
            LogCommand::Write(WriteStatement::default())
        );
    }

    #[test]
    fn check_and_verdict_round_trip() {
        assert_eq!(
            decode(&encode_check()).unwrap(),
            LogCommand::Check(CheckEntry::Run)
        );
        let hash = DbHash([0xab; 32]);
        assert_eq!(
            decode(&encode_verdict(42, &hash)).unwrap(),
            LogCommand::Check(CheckEntry::Verdict { index: 42, hash })
        );
    }

    #[test]
    fn new_commands_are_not_mistaken_for_writes_and_bad_ones_are_refused() {
        // A check entry read by the old decoder would have been an empty
        // write; the new one must never run it as SQL.
        assert!(!matches!(
            decode(&encode_check()).unwrap(),
            LogCommand::Write(_)
        ));
        let short = proto::LogCommand {
            kind: Some(Kind::Verdict(proto::CheckVerdict {
                index: 3,
                hash: vec![1, 2, 3].into(),
            })),
        }
        .encode_to_vec();
        assert!(matches!(
            decode(&short),
            Err(DecodeError::HashLength { index: 3, len: 3 })
        ));
        assert!(matches!(
            decode(&[0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
