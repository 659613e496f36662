//! The gRPC transport between Raft nodes (tonic).
//!
//! - [`server`]: the `Raft` service. Each request becomes an [`Inbound`]
//!   message for the event loop, with a responder the reply goes back
//!   through.
//! - [`peer`]: one sender task per peer. AppendEntries ride one long-lived
//!   bidi stream (pipelined batches stay in order); heartbeats ride a second
//!   one, so a heartbeat never waits behind a large batch and a ReadIndex
//!   round opens no HTTP/2 stream; votes and TimeoutNow are unary calls made
//!   concurrently.
//! - [`convert`]: core messages to and from the proto types.
//! - `snapshot`: InstallSnapshot, streamed in chunks with a checksum of the
//!   whole file.
//! - `snapshot_admission`: whether an incoming snapshot stream may be
//!   written at all, decided on its first chunk (sender, term, size, free
//!   space, one stream at a time).

pub mod convert;
mod free_space;
pub mod peer;
pub mod server;
mod snapshot;
mod snapshot_admission;
pub mod tls;
#[cfg(test)]
mod untrusted_tests;

use std::time::Duration;

use tokio::sync::oneshot;

use crate::core::Message;

pub use server::{RaftGrpc, RaftService};
pub(crate) use snapshot_admission::SnapshotAdmission;
pub use tls::TlsFiles;

/// Largest gRPC message accepted or sent between nodes. It must stay well
/// above the core's `max_batch_bytes` so a full batch always fits.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A message for the event loop, from a peer.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// The message, with `rpc_id` set by this node when it is a request.
    pub(crate) msg: Message,
    /// Where the core's reply goes, for a request that expects one.
    /// Dropped without a value when the core does not answer.
    pub(crate) responder: Option<oneshot::Sender<Message>>,
}

/// Timeouts and limits of the transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Time allowed to open a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Deadline of one unary call (vote, TimeoutNow, a heartbeat while its
    /// stream is down); about an election timeout, after which the answer is
    /// useless anyway.
    pub rpc_timeout: Duration,
    /// HTTP/2 keepalive ping interval, to notice a dead peer on an idle
    /// connection.
    pub keepalive_interval: Duration,
    /// Messages queued for one peer before new ones are dropped.
    pub queue_len: usize,
    /// Unary calls in flight to one peer before new ones are dropped.
    pub max_unary_inflight: usize,
    /// First and largest delay before reopening a broken AppendEntries or
    /// heartbeat stream.
    pub reconnect_backoff: (Duration, Duration),
    /// Mutual TLS with every peer, when set: peers are dialled over TLS
    /// and must prove their node id, and the Raft service accepts a
    /// message only from a certificate naming its sender (see [`tls`]).
    pub tls: Option<TlsFiles>,
    /// Largest snapshot this node accepts from a leader, in bytes. A
    /// stream announcing more is refused before anything is written; the
    /// free space of the snapshot directory is checked as well, so this is
    /// a ceiling for file systems whose free space says little (quotas,
    /// network mounts). Raise it for a database larger than the default.
    pub snapshot_max_bytes: u64,
    /// Bytes of the snapshot directory's file system that an incoming
    /// snapshot must leave free, for the log and the state machine.
    pub snapshot_disk_reserve: u64,
    /// An incoming snapshot stream that sends no chunk for this long is
    /// dropped and its temporary file removed, so a stalled or hostile
    /// sender does not hold the one receiving slot (and the disk) forever.
    pub snapshot_idle_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_millis(500),
            rpc_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(5),
            queue_len: 4096,
            max_unary_inflight: 64,
            reconnect_backoff: (Duration::from_millis(20), Duration::from_secs(1)),
            tls: None,
            snapshot_max_bytes: 64 << 30,
            snapshot_disk_reserve: 256 << 20,
            snapshot_idle_timeout: Duration::from_secs(30),
        }
    }
}
