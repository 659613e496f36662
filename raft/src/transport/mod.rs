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

pub mod convert;
pub mod peer;
pub mod server;
mod snapshot;
pub mod tls;

use std::time::Duration;

use tokio::sync::oneshot;

use crate::core::Message;

pub use server::{RaftGrpc, RaftService};
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

/// Timeouts and limits of the outbound side.
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
        }
    }
}
