//! The `Raft` gRPC service: hands peers' requests to the event loop and
//! sends the core's replies back.
//!
//! Each request gets a fresh local `rpc_id` (the core copies it into its
//! reply, which is how the event loop finds the responder); the peer's own
//! `rpc_id` is restored in the reply. A request the core drops (stale, not
//! addressed to us, or a vote refused without an answer) gets no reply:
//! `Status::unavailable` on a unary call, nothing on a stream.
//!
//! With mutual TLS on, every message's `from` must be named by the
//! sender's certificate ([`super::tls`]); a message that is not is refused
//! (`permission_denied`) and a stream carrying one is closed, before the
//! core sees it.
//!
//! A malformed request (a term or index out of range, entries that are not
//! a piece of a log; see [`convert::check_message`]) never reaches the
//! core: a unary call answers `invalid_argument`, and a stream stops there
//! and ends with `invalid_argument` after the replies already due.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use resqlite_proto::raft as pb;
use resqlite_proto::raft::raft_server::{Raft, RaftServer};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, ConvertError};
use super::snapshot_admission::{SnapshotAdmission, SnapshotLimits};
use super::tls::SenderCheck;
use super::{snapshot, Inbound, TransportOptions, MAX_MESSAGE_BYTES};
use crate::core::{Message, MessageBody};
use crate::driver::snapshot_dir::SnapshotDir;
use crate::types::NodeId;

/// Replies not yet sent on one AppendEntries stream; when full, reading
/// further requests waits (back-pressure on the leader's stream).
const STREAM_PENDING: usize = 1024;

/// Heartbeats awaiting the core's reply on one heartbeat stream. A leader
/// has at most a round or two in flight; when full, reading waits.
const HEARTBEATS_PENDING: usize = 64;

/// The tonic service value a node adds to its gRPC server.
pub type RaftService = RaftServer<RaftGrpc>;

/// Implementation of the generated `Raft` service trait.
#[derive(Clone, Debug)]
pub struct RaftGrpc {
    id: NodeId,
    inbound: mpsc::Sender<Inbound>,
    next_rpc_id: Arc<AtomicU64>,
    /// Where received snapshots are written.
    snapshots: SnapshotDir,
    /// Whether senders must prove their node id with a TLS certificate.
    authenticate: bool,
    /// Which snapshot streams may be written there.
    admission: SnapshotAdmission,
}

impl RaftGrpc {
    pub(crate) fn new(id: NodeId, inbound: mpsc::Sender<Inbound>, snapshots: SnapshotDir) -> Self {
        let limits = SnapshotLimits::from(&TransportOptions::default());
        RaftGrpc {
            id,
            inbound,
            next_rpc_id: Arc::new(AtomicU64::new(1)),
            snapshots,
            admission: SnapshotAdmission::new(id, limits),
            authenticate: false,
        }
    }

    /// Requires every message's sender to be named by the peer's TLS
    /// certificate (the server must then run with mutual TLS).
    pub(crate) fn authenticating_peers(mut self, on: bool) -> Self {
        self.authenticate = on;
        self
    }

    /// What the sender of `request` is allowed to claim to be.
    fn sender_check<T>(&self, request: &Request<T>) -> SenderCheck {
        if self.authenticate {
            SenderCheck::Certificates {
                certs: request.peer_certs(),
                proven: None,
            }
        } else {
            SenderCheck::Off
        }
    }

    /// Holds incoming snapshots to `admission` (the node's term and limits)
    /// instead of the default limits with no term check.
    pub(crate) fn with_snapshot_admission(mut self, admission: SnapshotAdmission) -> Self {
        self.admission = admission;
        self
    }

    /// Wraps this service for a tonic router, with message limits that fit
    /// the largest AppendEntries batch.
    pub(crate) fn into_service(self) -> RaftService {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Hands `msg` to the event loop; returns where its reply will arrive.
    async fn submit(&self, mut msg: Message) -> Result<oneshot::Receiver<Message>, Status> {
        msg.rpc_id = self.next_rpc_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inbound
            .send(Inbound {
                msg,
                responder: Some(tx),
            })
            .await
            .map_err(|_| Status::unavailable("raft node is shut down"))?;
        Ok(rx)
    }

    /// A unary request: submit it and wait for the core's reply.
    async fn call(&self, msg: Message) -> Result<Message, Status> {
        let rx = self.submit(msg).await?;
        rx.await
            .map_err(|_| Status::unavailable("raft did not answer this request"))
    }

    /// Reads a peer's request stream into the event loop on a task of its
    /// own, queueing each request's peer `rpc_id` and reply receiver on
    /// `pending` for the reply stream. Stops at the end of the stream, at a
    /// malformed request (whose refusal goes to `refused`), or when the
    /// reply stream is gone.
    fn forward_stream<T: Send + 'static>(
        &self,
        mut sender: SenderCheck,
        mut requests: Streaming<T>,
        rpc: &'static str,
        peer_rpc_id: fn(&T) -> u64,
        from_proto: fn(T) -> Result<Message, ConvertError>,
        (pending, refused): StreamReplies,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let req = match requests.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = this.id, rpc, code = ?status.code(), "stream from peer ended");
                        break;
                    }
                };
                let id = peer_rpc_id(&req);
                let msg = match from_proto(req) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(node = this.id, rpc, error = %e, "malformed request on stream");
                        let _ = refused.send(malformed(e));
                        break;
                    }
                };
                if !sender.allows(msg.from) {
                    tracing::warn!(
                        node = this.id,
                        rpc,
                        from = msg.from,
                        "message whose sender's certificate does not name it; closing the stream"
                    );
                    let _ = refused.send(not_the_sender(msg.from));
                    break;
                }
                let Ok(rx) = this.submit(msg).await else {
                    break;
                };
                if pending.send((id, rx)).await.is_err() {
                    // The reply stream is gone: the peer hung up.
                    break;
                }
            }
        });
    }
}

/// Where a forwarded stream's requests go for their replies, and where the
/// refusal that ends it goes.
type StreamReplies = (
    mpsc::Sender<(u64, oneshot::Receiver<Message>)>,
    oneshot::Sender<Status>,
);

/// `msg`, if its sender's certificate names its `from`.
fn proven(sender: &mut SenderCheck, msg: Message) -> Result<Message, Status> {
    if sender.allows(msg.from) {
        Ok(msg)
    } else {
        Err(not_the_sender(msg.from))
    }
}

/// The refusal of a message whose claimed sender the certificate does not
/// name.
pub(crate) fn not_the_sender(from: NodeId) -> Status {
    Status::permission_denied(format!(
        "the client certificate does not name node {from}, the message's sender"
    ))
}

fn internal(e: ConvertError) -> Status {
    Status::internal(e.to_string())
}

/// A peer's request this node refuses to read.
fn malformed(e: ConvertError) -> Status {
    Status::invalid_argument(format!("malformed raft message: {e}"))
}

/// `replies`, then the refusal of the request stream, if it was cut.
fn then_refusal<T>(
    replies: impl Stream<Item = Result<T, Status>>,
    refused: oneshot::Receiver<Status>,
) -> impl Stream<Item = Result<T, Status>> {
    // `refused` is settled once the reading task ends, which is before the
    // replies end: dropped without a value when nothing was refused.
    let refusal = futures::stream::once(refused).filter_map(|r| async move { r.ok().map(Err) });
    replies.chain(refusal)
}

type AppendReplies =
    Pin<Box<dyn Stream<Item = Result<pb::AppendEntriesResponse, Status>> + Send + 'static>>;
type HeartbeatReplies =
    Pin<Box<dyn Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Raft for RaftGrpc {
    async fn request_vote(
        &self,
        request: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::RequestVoteResponse>, Status> {
        let mut sender = self.sender_check(&request);
        let req = request.into_inner();
        let peer_rpc_id = req.rpc_id;
        let msg = convert::vote_request_from_proto(req).map_err(malformed)?;
        let msg = proven(&mut sender, msg)?;
        let reply = self.call(msg).await?;
        let mut out = convert::vote_response_to_proto(reply).map_err(internal)?;
        out.rpc_id = peer_rpc_id;
        Ok(Response::new(out))
    }

    type AppendEntriesStream = AppendReplies;

    async fn append_entries(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::AppendEntriesStream>, Status> {
        let (pending_tx, pending_rx) = mpsc::channel(STREAM_PENDING);
        let (refused_tx, refused_rx) = oneshot::channel();
        self.forward_stream(
            self.sender_check(&request),
            request.into_inner(),
            "AppendEntries",
            |r| r.rpc_id,
            convert::append_request_from_proto,
            (pending_tx, refused_tx),
        );
        let replies = futures::stream::unfold(pending_rx, |mut pending| async move {
            loop {
                let (peer_rpc_id, rx) = pending.recv().await?;
                // A request the core dropped has no reply: skip it.
                let Ok(reply) = rx.await else { continue };
                let item = convert::append_response_to_proto(reply)
                    .map(|mut r| {
                        r.rpc_id = peer_rpc_id;
                        r
                    })
                    .map_err(internal);
                return Some((item, pending));
            }
        });
        Ok(Response::new(Box::pin(then_refusal(replies, refused_rx))))
    }

    type HeartbeatsStream = HeartbeatReplies;

    async fn heartbeats(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        let (pending_tx, pending_rx) = mpsc::channel(HEARTBEATS_PENDING);
        let (refused_tx, refused_rx) = oneshot::channel();
        self.forward_stream(
            self.sender_check(&request),
            request.into_inner(),
            "Heartbeat",
            |r| r.rpc_id,
            convert::heartbeat_request_from_proto,
            (pending_tx, refused_tx),
        );
        // Unlike AppendEntries, order does not matter (the leader matches
        // replies by round), so a reply the core defers until its term is
        // durable does not hold back the others.
        let replies = ReceiverStream::new(pending_rx)
            .map(|(peer_rpc_id, rx)| async move { rx.await.ok().map(|reply| (peer_rpc_id, reply)) })
            .buffer_unordered(HEARTBEATS_PENDING)
            // A request the core dropped has no reply: skip it.
            .filter_map(|answered| async move {
                let (peer_rpc_id, reply) = answered?;
                Some(
                    convert::heartbeat_response_to_proto(reply)
                        .map(|mut r| {
                            r.rpc_id = peer_rpc_id;
                            r
                        })
                        .map_err(internal),
                )
            });
        Ok(Response::new(Box::pin(then_refusal(replies, refused_rx))))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let mut sender = self.sender_check(&request);
        let req = request.into_inner();
        let peer_rpc_id = req.rpc_id;
        let msg = convert::heartbeat_request_from_proto(req).map_err(malformed)?;
        let msg = proven(&mut sender, msg)?;
        let reply = self.call(msg).await?;
        let mut out = convert::heartbeat_response_to_proto(reply).map_err(internal)?;
        out.rpc_id = peer_rpc_id;
        Ok(Response::new(out))
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        let mut sender = self.sender_check(&request);
        let req = request.into_inner();
        let term = req.term;
        // The core never answers TimeoutNow (it starts an election), so it
        // goes in without a responder and is acknowledged on receipt.
        let msg = convert::timeout_now_from_proto(req).map_err(malformed)?;
        let msg = proven(&mut sender, msg)?;
        self.inbound
            .send(Inbound {
                msg,
                responder: None,
            })
            .await
            .map_err(|_| Status::unavailable("raft node is shut down"))?;
        Ok(Response::new(pb::TimeoutNowResponse { term }))
    }

    /// The whole snapshot is received and published before the core hears
    /// of it; the answer comes once it is installed and restored.
    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotChunk>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let sender = self.sender_check(&request);
        let msg = snapshot::receive(
            self.id,
            sender,
            request.into_inner(),
            &self.snapshots,
            &self.admission,
        )
        .await?;
        let reply = self.call(msg).await?;
        let MessageBody::InstallSnapshotResponse { index } = reply.body else {
            return Err(internal(ConvertError::UnexpectedBody {
                expected: "InstallSnapshotResponse",
            }));
        };
        Ok(Response::new(pb::InstallSnapshotResponse {
            term: reply.term,
            from: reply.from,
            to: reply.to,
            accepted: true,
            error: String::new(),
            index,
        }))
    }
}
