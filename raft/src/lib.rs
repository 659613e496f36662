//! ReSQLite's Raft: a deterministic, sans-IO consensus core ([`core`]), a
//! durable segmented log store ([`log_store`]), and a tokio driver with a
//! tonic gRPC transport that run the core against real disks and sockets.
//!
//! The core holds no sockets, clock or files: time, messages and proposals
//! are inputs, and each [`Ready`] says what to persist, send and apply. The
//! same core runs unchanged in the deterministic simulator in `tests/`.

pub mod core;
pub mod driver;
pub mod log_store;
pub mod transport;
pub mod types;

pub use crate::core::{
    CompactError, Config, Message, MessageBody, Persisted, ProposeError, Raft, RaftError,
    ReadState, Ready, Role, SoftState, Status,
};
pub use crate::log_store::{LogStore, LogStoreOptions, Recovered, StoreError};
pub use crate::types::{
    Entry, EntryKind, HardState, Member, Membership, MembershipChange, NodeId, SnapshotMeta,
};
