//! One sender task per peer.
//!
//! AppendEntries ride one long-lived bidi stream, so pipelined batches reach
//! the follower in the order the leader sent them; the replies read from the
//! same stream are fed back to the event loop. Heartbeats ride a second
//! long-lived stream, so they never wait behind a large batch, yet a
//! ReadIndex round costs one message each way rather than a new HTTP/2
//! stream per follower. While the heartbeat stream is down (backing off, or
//! a peer of an older version without it) heartbeats go as unary calls.
//! Votes and TimeoutNow are unary calls spawned concurrently. A snapshot is
//! streamed by a task of its own, one at a time per peer; a failed transfer
//! is reported to the core. Nothing here retries a message: when a queue is
//! full or a stream is broken the message is dropped and counted, and Raft
//! resends what matters (a stalled follower is probed again, a lost vote is
//! asked again at the next election, a ReadIndex round is sent again).

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

/// Heartbeats queued on their stream. A round is one heartbeat, and the core
/// has one ReadIndex round in flight besides the periodic ones.
const HEARTBEAT_QUEUE: usize = 64;

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
    let mut endpoint = match &opts.tls {
        // Mutual TLS: the peer must prove it is node `peer`.
        Some(tls) => Endpoint::from_shared(https(url))?
            .tls_config(tls.client_config(&super::tls::node_name(peer)))?,
        None => Endpoint::from_shared(url.to_string())?,
    };
    endpoint = endpoint
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
        append: None,
        append_link: Arc::new(Mutex::new(Backoff::new(opts.reconnect_backoff))),
        heartbeats: None,
        heartbeat_link: Arc::new(Mutex::new(Backoff::new(opts.reconnect_backoff))),
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

/// `url` with the `https` scheme (membership entries carry `http://`
/// addresses; the scheme only tells tonic whether to speak TLS).
fn https(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_string(),
    }
}

/// Delay before a broken stream may be reopened.
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

/// An open request stream to a peer; a task reads its replies.
struct OpenStream<T> {
    tx: mpsc::Sender<T>,
    broken: Arc<AtomicBool>,
}

impl<T> OpenStream<T> {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Acquire) && !self.tx.is_closed()
    }
}

/// The two long-lived streams to a peer, for logs.
#[derive(Clone, Copy, Debug)]
enum StreamKind {
    Append,
    Heartbeat,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Append => "append",
            StreamKind::Heartbeat => "heartbeat",
        }
    }
}

struct PeerTask {
    me: NodeId,
    peer: NodeId,
    client: RaftClient<Channel>,
    inbound: mpsc::Sender<Inbound>,
    append: Option<OpenStream<pb::AppendEntriesRequest>>,
    append_link: Arc<Mutex<Backoff>>,
    heartbeats: Option<OpenStream<pb::HeartbeatRequest>>,
    heartbeat_link: Arc<Mutex<Backoff>>,
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
                Ok(OutboundRequest::Heartbeat(req)) => self.send_heartbeat(req),
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
        if !self.append.as_ref().is_some_and(OpenStream::usable) {
            self.append = None;
            if !may_open(&self.append_link) {
                return self.drop_msg("append stream backing off");
            }
            let (stream, requests) = open_stream(STREAM_QUEUE);
            let mut client = self.client.clone();
            let replies = async move { client.append_entries(requests).await };
            self.spawn_replies(StreamKind::Append, &stream, replies, |reply| {
                convert::append_response_from_proto(reply)
            });
            self.append = Some(stream);
        }
        let Some(stream) = &self.append else { return };
        match stream.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_msg("append stream queue full"),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.append = None;
                self.drop_msg("append stream closed");
            }
        }
    }

    fn send_heartbeat(&mut self, req: pb::HeartbeatRequest) {
        if !self.heartbeats.as_ref().is_some_and(OpenStream::usable) {
            self.heartbeats = None;
            if may_open(&self.heartbeat_link) {
                let (stream, requests) = open_stream(HEARTBEAT_QUEUE);
                let mut client = self.client.clone();
                let replies = async move { client.heartbeats(requests).await };
                self.spawn_replies(StreamKind::Heartbeat, &stream, replies, |reply| {
                    convert::heartbeat_response_from_proto(reply)
                });
                self.heartbeats = Some(stream);
            }
        }
        let req = match &self.heartbeats {
            Some(stream) => match stream.tx.try_send(req) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return self.drop_msg("heartbeat stream queue full")
                }
                Err(mpsc::error::TrySendError::Closed(req)) => {
                    self.heartbeats = None;
                    req
                }
            },
            None => req,
        };
        // The stream is down: a unary call still reaches a peer that is up
        // but lacks the stream (an older version during a rolling upgrade).
        self.spawn_unary(Unary::Heartbeat(req));
    }

    /// Starts the call that opens a stream, on a task that feeds its replies
    /// to the event loop until it breaks, then marks `stream` broken and
    /// backs its link off.
    fn spawn_replies<R: Send + 'static>(
        &self,
        kind: StreamKind,
        stream: &OpenStream<impl Send>,
        call: impl std::future::Future<
                Output = Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>,
            > + Send
            + 'static,
        from_proto: fn(R) -> Message,
    ) {
        let inbound = self.inbound.clone();
        let link = match kind {
            StreamKind::Append => self.append_link.clone(),
            StreamKind::Heartbeat => self.heartbeat_link.clone(),
        };
        let flag = stream.broken.clone();
        let (me, peer, stream) = (self.me, self.peer, kind.name());
        tokio::spawn(async move {
            let error = match call.await {
                Ok(response) => {
                    let mut replies = response.into_inner();
                    loop {
                        match replies.message().await {
                            Ok(Some(reply)) => {
                                let was_down =
                                    link.lock().map(|mut b| b.succeeded()).unwrap_or(false);
                                if was_down {
                                    tracing::info!(node = me, peer, stream, "stream connected");
                                }
                                let inb = Inbound {
                                    msg: from_proto(reply),
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
                    tracing::warn!(node = me, peer, stream, code = ?status.code(), message = status.message(), "stream broke")
                }
                Some(status) => {
                    tracing::debug!(node = me, peer, stream, code = ?status.code(), message = status.message(), "stream failed")
                }
                None => tracing::debug!(node = me, peer, stream, "stream closed by peer"),
            }
        });
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

fn may_open(link: &Mutex<Backoff>) -> bool {
    link.lock().map(|b| b.may_open()).unwrap_or(true)
}

/// A new request stream: the sender side, and the body of the call that
/// opens it.
fn open_stream<T>(queue: usize) -> (OpenStream<T>, ReceiverStream<T>) {
    let (tx, rx) = mpsc::channel(queue);
    let stream = OpenStream {
        tx,
        broken: Arc::new(AtomicBool::new(false)),
    };
    (stream, ReceiverStream::new(rx))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::driver::snapshot_dir::SnapshotDir;
    use crate::transport::RaftGrpc;

    async fn next<T>(rx: &mut mpsc::Receiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a message within 10 s")
            .expect("channel open")
    }

    fn heartbeat(rpc_id: u64, read_round: u64) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 5,
            rpc_id,
            body: MessageBody::Heartbeat {
                commit: 0,
                read_round,
            },
        }
    }

    /// Heartbeats from a peer sender to a follower's service: each reply
    /// reaches the leader with the leader's own rpc_id, in the order the
    /// follower answers, and one the follower never answers holds up none.
    #[tokio::test]
    async fn heartbeat_replies_come_back_matched_as_the_follower_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (follower_tx, mut follower_rx) = mpsc::channel(16);
        let snapshots = SnapshotDir::open(dir.path().join("snapshots")).unwrap();
        let service = RaftGrpc::new(2, follower_tx, snapshots).into_service();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let (leader_tx, mut leader_rx) = mpsc::channel(16);
        let (failures, _failures_rx) = mpsc::channel(1);
        let links = PeerLinks {
            inbound: leader_tx,
            snapshots: Arc::new(Mutex::new(None)),
            snapshot_failures: failures,
        };
        let opts = TransportOptions::default();
        let handle = spawn_peer(1, 2, &format!("http://{addr}"), links, &opts).unwrap();
        for round in 1..=3 {
            handle.send(heartbeat(100 + round, round));
        }

        let mut received = Vec::new();
        for _ in 0..3 {
            let inb: Inbound = next(&mut follower_rx).await;
            let MessageBody::Heartbeat { read_round, .. } = inb.msg.body else {
                panic!("expected a heartbeat, got {:?}", inb.msg.body);
            };
            let responder = inb.responder.expect("a heartbeat expects a reply");
            received.push((read_round, inb.msg.rpc_id, responder));
        }
        let rounds: Vec<u64> = received.iter().map(|r| r.0).collect();
        assert_eq!(rounds, [1, 2, 3]);
        let reply = |read_round, rpc_id| Message {
            from: 2,
            to: 1,
            term: 5,
            rpc_id,
            body: MessageBody::HeartbeatResponse { read_round },
        };
        // Answer the last first, never answer the second.
        let (first, second, third) = {
            let mut it = received.into_iter();
            (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
        };
        third.2.send(reply(3, third.1)).unwrap();
        drop(second);
        first.2.send(reply(1, first.1)).unwrap();

        for (round, rpc_id) in [(3, 103), (1, 101)] {
            let inb: Inbound = next(&mut leader_rx).await;
            assert!(inb.responder.is_none());
            assert_eq!(inb.msg.rpc_id, rpc_id);
            assert_eq!(
                inb.msg.body,
                MessageBody::HeartbeatResponse { read_round: round }
            );
        }
        server.abort();
    }
}
