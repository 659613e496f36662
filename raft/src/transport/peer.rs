//! One sender task per peer.
//!
//! AppendEntries ride one long-lived bidi stream, so pipelined batches reach
//! the follower in the order the leader sent them; the replies read from the
//! same stream are fed back to the event loop. Votes, heartbeats and
//! TimeoutNow are unary calls spawned concurrently, so a heartbeat never
//! waits behind a large batch. A snapshot is streamed by a task of its own,
//! one at a time per peer; a failed transfer is reported to the core. Nothing here retries a message: when a queue
//! is full or a stream is broken the message is dropped and counted, and
//! Raft resends what matters (a stalled follower is probed again, a lost
//! vote is asked again at the next election).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resqlite_proto::raft as pb;
use resqlite_proto::raft::raft_client::RaftClient;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::convert::{self, OutboundRequest};
use super::{snapshot, Inbound, TransportOptions, MAX_MESSAGE_BYTES};
use crate::core::{Message, MessageBody};
use crate::driver::snapshot_dir::Current;
use crate::types::NodeId;

/// AppendEntries queued on one stream. The core keeps at most
/// `max_inflight_msgs` batches in flight per follower, so this is rarely
/// reached.
const STREAM_QUEUE: usize = 256;

/// The event loop's side of a peer sender: a bounded queue.
#[derive(Debug)]
pub(crate) struct PeerHandle {
    peer: NodeId,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl PeerHandle {
    /// Queues `msg` without waiting; drops and counts it when the queue is
    /// full (Raft recovers from lost messages).
    pub(crate) fn send(&self, msg: Message) {
        if self.tx.try_send(msg).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                peer = self.peer,
                dropped = n,
                "peer queue full or closed; message dropped"
            );
        }
    }
}

/// What a peer sender talks back to.
pub(crate) struct PeerLinks {
    /// Replies go to the event loop.
    pub(crate) inbound: mpsc::Sender<Inbound>,
    /// The snapshot file to stream when the core asks for one.
    pub(crate) snapshots: Current,
    /// Where a failed snapshot transfer is reported.
    pub(crate) snapshot_failures: mpsc::Sender<NodeId>,
}

/// Starts the sender task for `peer` at `url` (`http://host:port`).
pub(crate) fn spawn_peer(
    me: NodeId,
    peer: NodeId,
    url: &str,
    links: PeerLinks,
    opts: &TransportOptions,
) -> Result<PeerHandle, tonic::transport::Error> {
    let PeerLinks {
        inbound,
        snapshots,
        snapshot_failures,
    } = links;
    let endpoint = Endpoint::from_shared(url.to_string())?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_interval)
        .keep_alive_while_idle(true);
    let client = RaftClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(opts.queue_len);
    let dropped = Arc::new(AtomicU64::new(0));
    let task = PeerTask {
        me,
        peer,
        client,
        inbound,
        stream: None,
        link: Arc::new(Mutex::new(Backoff::new(opts.reconnect_backoff))),
        unary: Arc::new(Semaphore::new(opts.max_unary_inflight)),
        rpc_timeout: opts.rpc_timeout,
        dropped: dropped.clone(),
        snapshots,
        snapshot_failures,
        snapshot_busy: Arc::new(AtomicBool::new(false)),
    };
    tokio::spawn(task.run(rx));
    Ok(PeerHandle { peer, tx, dropped })
}

/// Delay before the AppendEntries stream may be reopened.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    delay: Duration,
    retry_at: Option<Instant>,
    connected: bool,
}

impl Backoff {
    fn new((min, max): (Duration, Duration)) -> Self {
        Backoff {
            min,
            max,
            delay: min,
            retry_at: None,
            connected: false,
        }
    }

    fn may_open(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Returns whether the link was up before (to log the transition once).
    fn failed(&mut self) -> bool {
        self.retry_at = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(self.max);
        std::mem::replace(&mut self.connected, false)
    }

    /// Returns whether the link was down before.
    fn succeeded(&mut self) -> bool {
        self.delay = self.min;
        self.retry_at = None;
        !std::mem::replace(&mut self.connected, true)
    }
}

/// The requests that travel as unary calls.
enum Unary {
    Vote(pb::RequestVoteRequest),
    Heartbeat(pb::HeartbeatRequest),
    TimeoutNow(pb::TimeoutNowRequest),
}

/// The open AppendEntries stream to a peer.
struct AppendStream {
    tx: mpsc::Sender<pb::AppendEntriesRequest>,
    broken: Arc<AtomicBool>,
}

struct PeerTask {
    me: NodeId,
    peer: NodeId,
    client: RaftClient<Channel>,
    inbound: mpsc::Sender<Inbound>,
    stream: Option<AppendStream>,
    link: Arc<Mutex<Backoff>>,
    unary: Arc<Semaphore>,
    rpc_timeout: Duration,
    dropped: Arc<AtomicU64>,
    snapshots: Current,
    snapshot_failures: mpsc::Sender<NodeId>,
    /// A snapshot is being streamed to this peer.
    snapshot_busy: Arc<AtomicBool>,
}

impl PeerTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(msg) = rx.recv().await {
            if let MessageBody::InstallSnapshot { snapshot } = &msg.body {
                let requested = snapshot.clone();
                self.spawn_snapshot(msg, requested);
                continue;
            }
            match convert::request_to_proto(msg) {
                Ok(OutboundRequest::Append(req)) => self.send_append(req),
                Ok(OutboundRequest::Vote(req)) => self.spawn_unary(Unary::Vote(req)),
                Ok(OutboundRequest::Heartbeat(req)) => self.spawn_unary(Unary::Heartbeat(req)),
                Ok(OutboundRequest::TimeoutNow(req)) => self.spawn_unary(Unary::TimeoutNow(req)),
                Err(e) => {
                    tracing::warn!(node = self.me, peer = self.peer, error = %e, "not a request; not sent")
                }
            }
        }
        tracing::debug!(node = self.me, peer = self.peer, "peer sender stopped");
    }

    fn drop_msg(&self, why: &'static str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::trace!(
            node = self.me,
            peer = self.peer,
            dropped = n,
            why,
            "message dropped"
        );
    }

    fn send_append(&mut self, req: pb::AppendEntriesRequest) {
        let usable = self
            .stream
            .as_ref()
            .is_some_and(|s| !s.broken.load(Ordering::Acquire) && !s.tx.is_closed());
        if !usable {
            self.stream = None;
            let may_open = self.link.lock().map(|b| b.may_open()).unwrap_or(true);
            if !may_open {
                return self.drop_msg("append stream backing off");
            }
            self.stream = Some(self.open_stream());
        }
        let Some(stream) = &self.stream else { return };
        match stream.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_msg("append stream queue full"),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stream = None;
                self.drop_msg("append stream closed");
            }
        }
    }

    /// Opens a new AppendEntries stream; a task reads its replies into the
    /// event loop until it breaks.
    fn open_stream(&self) -> AppendStream {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let broken = Arc::new(AtomicBool::new(false));
        let mut client = self.client.clone();
        let inbound = self.inbound.clone();
        let link = self.link.clone();
        let flag = broken.clone();
        let (me, peer) = (self.me, self.peer);
        tokio::spawn(async move {
            let error = match client.append_entries(ReceiverStream::new(rx)).await {
                Ok(response) => {
                    let mut replies = response.into_inner();
                    loop {
                        match replies.message().await {
                            Ok(Some(reply)) => {
                                let was_down =
                                    link.lock().map(|mut b| b.succeeded()).unwrap_or(false);
                                if was_down {
                                    tracing::info!(node = me, peer, "append stream connected");
                                }
                                let msg = convert::append_response_from_proto(reply);
                                let inb = Inbound {
                                    msg,
                                    responder: None,
                                };
                                if inbound.send(inb).await.is_err() {
                                    // The node is shutting down.
                                    flag.store(true, Ordering::Release);
                                    return;
                                }
                            }
                            Ok(None) => break None,
                            Err(status) => break Some(status),
                        }
                    }
                }
                Err(status) => Some(status),
            };
            flag.store(true, Ordering::Release);
            let was_up = link.lock().map(|mut b| b.failed()).unwrap_or(false);
            match error {
                Some(status) if was_up => {
                    tracing::warn!(node = me, peer, code = ?status.code(), message = status.message(), "append stream broke")
                }
                Some(status) => {
                    tracing::debug!(node = me, peer, code = ?status.code(), message = status.message(), "append stream failed")
                }
                None => tracing::debug!(node = me, peer, "append stream closed by peer"),
            }
        });
        AppendStream { tx, broken }
    }

    /// Streams a snapshot unless one is already on its way to this peer
    /// (the core asks again when an answer is late; the transfer in flight
    /// answers both).
    fn spawn_snapshot(&self, msg: Message, requested: crate::types::SnapshotMeta) {
        if self.snapshot_busy.swap(true, Ordering::AcqRel) {
            return self.drop_msg("a snapshot is already being sent");
        }
        let busy = self.snapshot_busy.clone();
        let client = self.client.clone();
        let source = self.snapshots.clone();
        let inbound = self.inbound.clone();
        let failures = self.snapshot_failures.clone();
        let (me, peer) = (self.me, self.peer);
        tokio::spawn(async move {
            let outcome = snapshot::send(client, &msg, &requested, &source).await;
            busy.store(false, Ordering::Release);
            match outcome {
                Ok(reply) => {
                    let _ = inbound
                        .send(Inbound {
                            msg: reply,
                            responder: None,
                        })
                        .await;
                }
                Err(why) => {
                    tracing::warn!(node = me, peer, error = %why, "snapshot transfer failed");
                    // Full: the core's own timeout retries.
                    let _ = failures.try_send(peer);
                }
            }
        });
    }

    fn spawn_unary(&self, req: Unary) {
        let Ok(permit) = self.unary.clone().try_acquire_owned() else {
            return self.drop_msg("too many unary calls in flight");
        };
        let mut client = self.client.clone();
        let inbound = self.inbound.clone();
        let timeout = self.rpc_timeout;
        let (me, peer) = (self.me, self.peer);
        tokio::spawn(async move {
            let _permit = permit;
            let (rpc, reply) = match req {
                Unary::Vote(r) => (
                    "RequestVote",
                    unary(timeout, client.request_vote(with_deadline(r, timeout)))
                        .await
                        .map(|r| Some(convert::vote_response_from_proto(r))),
                ),
                Unary::Heartbeat(r) => (
                    "Heartbeat",
                    unary(timeout, client.heartbeat(with_deadline(r, timeout)))
                        .await
                        .map(|r| Some(convert::heartbeat_response_from_proto(r))),
                ),
                Unary::TimeoutNow(r) => (
                    "TimeoutNow",
                    unary(timeout, client.timeout_now(with_deadline(r, timeout)))
                        .await
                        .map(|_| None),
                ),
            };
            match reply {
                Ok(Some(msg)) => {
                    // Ignore a closed inbound queue: the node is shutting down.
                    let _ = inbound
                        .send(Inbound {
                            msg,
                            responder: None,
                        })
                        .await;
                }
                Ok(None) => {}
                Err(status) => {
                    tracing::debug!(node = me, peer, rpc, code = ?status.code(), message = status.message(), "rpc failed")
                }
            }
        });
    }
}

fn with_deadline<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Awaits a unary call with a client-side deadline as well (the connect
/// phase is not covered by the grpc-timeout header).
async fn unary<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "no answer within the rpc timeout",
        )),
    }
}
