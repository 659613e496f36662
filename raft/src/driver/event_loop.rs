//! The event loop: one tokio task owns the core.
//!
//! Each turn takes one batch of inputs (a tick, the messages queued from
//! peers, the proposals queued by clients, the reads queued, or a persist
//! completion), then drains `ready()`:
//!
//! - new proposals were registered with the apply thread while they were
//!   proposed, on the same ordered channel their committed entries take
//!   later, so no outcome is missed;
//! - `messages` go out at once: the leader's AppendEntries leave while its
//!   own copy is still being written (parallel leader append);
//! - `hard_state`, `entries` and `persisted_messages` go to the persist
//!   thread as one job; when it reports them durable the loop calls
//!   `on_persisted` and only then sends those messages;
//! - `committed_entries` go to the apply thread;
//! - confirmed reads are answered with their read index (the caller then
//!   waits for the applied index); dropped reads fail.
//!
//! Draining every queued proposal before calling `ready()` is group commit:
//! many proposals become one Ready, one append and one fsync.
//!
//! Snapshots: once enough entries (or bytes) were applied since the last
//! one, the apply thread is asked for a snapshot; when it is written the
//! core compacts and the persist thread publishes it and compacts the log
//! store. A snapshot installed from the leader goes to the persist thread
//! and then to the apply thread for the restore; only then is it
//! acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::apply::{ApplyCmd, SnapshotEvent};
use super::peers::Peers;
use super::persist::{
    PersistDone, PersistHandle, PersistJob, PersistOutcome, SnapshotOp, MAX_INFLIGHT_JOBS,
};
use super::snapshot_dir::SnapshotDir;
use super::{Fatal, ProposeError, SnapshotPolicy};
use crate::core::{self, Message, Raft, Ready, Role, Status};
use crate::transport::{convert, Inbound};
use crate::types::{Membership, NodeId};

/// Peer messages stepped per turn.
const MAX_INBOUND_PER_TURN: usize = 1024;
/// Proposals taken per turn (one Ready, one append).
const MAX_PROPOSALS_PER_TURN: usize = 4096;
/// Bytes of proposals taken per turn.
const MAX_PROPOSAL_BYTES_PER_TURN: usize = 8 << 20;
/// Reads taken per turn (they share one heartbeat round).
const MAX_READS_PER_TURN: usize = 4096;

/// A client's proposal.
pub(crate) struct Proposal<O> {
    pub(crate) data: Bytes,
    pub(crate) reply: oneshot::Sender<Result<O, ProposeError>>,
}

/// A client's linearizable read: answered with the index to wait for.
pub(crate) struct ReadRequest {
    pub(crate) reply: oneshot::Sender<Result<u64, ProposeError>>,
}

/// An operator's request to the node.
pub(crate) enum Command {
    /// Hand leadership to `to`.
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Propose `next` as the configuration; answered once it is applied.
    ChangeMembership {
        next: Membership,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Leader: how far each other member's log matches.
    Progress {
        reply: oneshot::Sender<Option<BTreeMap<NodeId, u64>>>,
    },
}

/// Everything the event loop is built from.
pub(crate) struct Parts<O> {
    pub(crate) core: Raft,
    pub(crate) tick: Duration,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    pub(crate) proposals: mpsc::Receiver<Proposal<O>>,
    pub(crate) reads: mpsc::Receiver<ReadRequest>,
    pub(crate) persist: PersistHandle,
    pub(crate) persist_done: mpsc::Receiver<PersistOutcome>,
    pub(crate) apply: mpsc::Sender<ApplyCmd<O>>,
    pub(crate) apply_thread: JoinHandle<()>,
    pub(crate) peers: Peers,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) membership: watch::Sender<Membership>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) stopped: Arc<watch::Sender<bool>>,
    pub(crate) fatal: Fatal,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) snapshot_events: mpsc::Receiver<SnapshotEvent>,
    pub(crate) snapshot_failures: mpsc::Receiver<NodeId>,
    pub(crate) snapshot_dir: SnapshotDir,
    pub(crate) policy: SnapshotPolicy,
}

/// Where the node stands with snapshots.
struct SnapshotState {
    policy: SnapshotPolicy,
    /// Entries and bytes applied since the last snapshot.
    entries: u64,
    bytes: u64,
    /// A snapshot is being taken.
    running: bool,
    /// False once the state machine said it takes none.
    supported: bool,
}

/// Why the loop ended.
enum Stop {
    Shutdown,
    Fatal(String),
}

pub(crate) struct EventLoop<O> {
    id: NodeId,
    core: Raft,
    tick: Duration,
    inbound: mpsc::Receiver<Inbound>,
    proposals: mpsc::Receiver<Proposal<O>>,
    reads: mpsc::Receiver<ReadRequest>,
    persist: PersistHandle,
    persist_done: mpsc::Receiver<PersistOutcome>,
    /// Jobs handed to the persist thread and not yet reported durable.
    persist_inflight: usize,
    apply: mpsc::Sender<ApplyCmd<O>>,
    apply_thread: JoinHandle<()>,
    peers: Peers,
    /// Where the replies to peers' requests go, by local rpc_id.
    responders: HashMap<u64, oneshot::Sender<Message>>,
    /// Requests stepped since the last full drain of `ready()`.
    stepped: Vec<u64>,
    /// Replies among those that wait for the disk.
    deferred: HashSet<u64>,
    /// Reads waiting for a quorum, by ctx.
    pending_reads: HashMap<u64, oneshot::Sender<Result<u64, ProposeError>>>,
    next_read_ctx: u64,
    /// Role and term as of the last soft state, to notice leadership loss.
    role: Role,
    term: u64,
    status: watch::Sender<Status>,
    /// The configuration in force, for the application (addresses).
    membership: watch::Sender<Membership>,
    /// The core's membership generation the senders and `membership`
    /// follow.
    membership_seen: u64,
    shutdown: watch::Receiver<bool>,
    stopped: Arc<watch::Sender<bool>>,
    fatal: Fatal,
    commands: mpsc::Receiver<Command>,
    snapshot_events: mpsc::Receiver<SnapshotEvent>,
    snapshot_failures: mpsc::Receiver<NodeId>,
    snapshot_dir: SnapshotDir,
    snapshots: SnapshotState,
}

impl<O: Send + 'static> EventLoop<O> {
    pub(crate) fn new(p: Parts<O>) -> Self {
        EventLoop {
            id: p.core.id(),
            role: p.core.status().role,
            term: p.core.status().term,
            membership_seen: p.core.membership_generation(),
            core: p.core,
            tick: p.tick,
            inbound: p.inbound,
            proposals: p.proposals,
            reads: p.reads,
            persist: p.persist,
            persist_done: p.persist_done,
            persist_inflight: 0,
            apply: p.apply,
            apply_thread: p.apply_thread,
            peers: p.peers,
            responders: HashMap::new(),
            stepped: Vec::new(),
            deferred: HashSet::new(),
            pending_reads: HashMap::new(),
            next_read_ctx: 0,
            status: p.status,
            membership: p.membership,
            shutdown: p.shutdown,
            stopped: p.stopped,
            fatal: p.fatal,
            commands: p.commands,
            snapshot_events: p.snapshot_events,
            snapshot_failures: p.snapshot_failures,
            snapshot_dir: p.snapshot_dir,
            snapshots: SnapshotState {
                policy: p.policy,
                entries: 0,
                bytes: 0,
                running: false,
                supported: true,
            },
        }
    }

    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = loop {
            // At the in-flight cap the loop only waits for the disk, so the
            // persist channels can never fill up.
            let open = self.persist_inflight < MAX_INFLIGHT_JOBS;
            let turn = tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break Stop::Shutdown;
                    }
                    Ok(())
                }
                done = self.persist_done.recv() => self.on_persist_done(done).await,
                // May queue a compaction job: also held back at the cap.
                Some(event) = self.snapshot_events.recv(), if open => self.on_snapshot_event(event).await,
                Some(peer) = self.snapshot_failures.recv() => {
                    self.core.report_snapshot_failure(peer);
                    Ok(())
                }
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = ticker.tick(), if open => {
                    self.core.tick();
                    Ok(())
                }
                Some(first) = self.inbound.recv(), if open => {
                    self.step_inbound(first);
                    Ok(())
                }
                Some(first) = self.proposals.recv(), if open => self.take_proposals(first).await,
                Some(first) = self.reads.recv(), if open => {
                    self.take_reads(first);
                    Ok(())
                }
            };
            let turn = match turn {
                Ok(()) => self.drain_ready().await,
                Err(e) => Err(e),
            };
            if let Err(why) = turn {
                break Stop::Fatal(why);
            }
        };
        self.finish(stop).await;
    }

    async fn on_persist_done(&mut self, done: Option<PersistOutcome>) -> Result<(), String> {
        let done: PersistDone = match done {
            Some(Ok(done)) => done,
            Some(Err(why)) => return Err(why),
            None => return Err("the persist thread stopped".to_string()),
        };
        self.persist_inflight -= done.jobs;
        if let Some((index, term)) = done.last {
            self.core.on_persisted(index, term);
        }
        for m in done.messages {
            self.route(m);
        }
        if let Some((meta, messages)) = done.installed {
            let path = self.snapshot_dir.path_for(&meta);
            self.send_apply(ApplyCmd::Restore {
                meta,
                path,
                messages,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_snapshot_event(&mut self, event: SnapshotEvent) -> Result<(), String> {
        match event {
            SnapshotEvent::Taken { index, tmp } => {
                self.snapshots.running = false;
                match self.core.compact(index) {
                    Ok(meta) => {
                        let job = PersistJob {
                            hard_state: None,
                            snapshot: Some(SnapshotOp::Compact { meta, tmp }),
                            entries: Vec::new(),
                            messages: Vec::new(),
                        };
                        self.queue_persist(job)?;
                        // Entries applied while it was being written may
                        // already call for the next one.
                        return self.note_applied(0, 0).await;
                    }
                    Err(e) => {
                        // A newer snapshot was installed meanwhile.
                        tracing::info!(node = self.id, index, error = %e, "snapshot not used");
                        tokio::task::spawn_blocking(move || std::fs::remove_file(tmp));
                    }
                }
            }
            SnapshotEvent::Failed { why, unsupported } => {
                self.snapshots.running = false;
                if unsupported {
                    tracing::info!(node = self.id, reason = %why, "snapshots disabled");
                    self.snapshots.supported = false;
                } else {
                    // Try again after another threshold's worth of entries.
                    tracing::warn!(node = self.id, error = %why, "snapshot failed");
                    self.snapshots.entries = 0;
                    self.snapshots.bytes = 0;
                }
            }
            SnapshotEvent::Halted { reason } => {
                tracing::warn!(node = self.id, %reason, "state machine halted");
                self.core.halt_state_machine();
            }
            SnapshotEvent::Restored { result, messages } => {
                result?;
                self.snapshots.entries = 0;
                self.snapshots.bytes = 0;
                for m in messages {
                    self.route(m);
                }
            }
        }
        Ok(())
    }

    async fn command(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::TransferLeader { to, reply } => {
                let result = self.core.transfer_leader(to).map_err(refusal);
                let _ = reply.send(result);
            }
            Command::ChangeMembership { next, reply } => {
                let (index, term) = match self.core.propose_membership(next) {
                    Ok(at) => at,
                    Err(e) => {
                        let _ = reply.send(Err(refusal(e)));
                        return Ok(());
                    }
                };
                // The entry's outcome comes back like a proposal's; the
                // caller only wants to know that it is applied.
                let (outcome, applied) = oneshot::channel();
                let cmd = ApplyCmd::Register {
                    index,
                    term,
                    reply: outcome,
                };
                self.send_apply(cmd).await?;
                tokio::spawn(async move {
                    let result = match applied.await {
                        Ok(r) => r.map(|_| ()),
                        Err(_) => Err(ProposeError::Shutdown),
                    };
                    let _ = reply.send(result);
                });
            }
            Command::Progress { reply } => {
                let _ = reply.send(self.core.progress_matched());
            }
        }
        Ok(())
    }

    /// Counts applied entries; asks for a snapshot past a threshold.
    async fn note_applied(&mut self, count: u64, bytes: u64) -> Result<(), String> {
        let st = &mut self.snapshots;
        st.entries += count;
        st.bytes += bytes;
        let due = st.entries >= st.policy.entries || st.bytes >= st.policy.bytes;
        if due && st.supported && !st.running {
            st.running = true;
            st.entries = 0;
            st.bytes = 0;
            self.send_apply(ApplyCmd::TakeSnapshot).await?;
        }
        Ok(())
    }

    fn step_inbound(&mut self, first: Inbound) {
        self.step_one(first);
        for _ in 1..MAX_INBOUND_PER_TURN {
            match self.inbound.try_recv() {
                Ok(inb) => self.step_one(inb),
                Err(_) => break,
            }
        }
    }

    fn step_one(&mut self, inb: Inbound) {
        let Inbound { msg, responder } = inb;
        // Requests were checked where the service read them; replies come
        // from the peer senders as they arrived, so they are checked here.
        if let Err(e) = convert::check_message(&msg) {
            tracing::warn!(node = self.id, from = msg.from, error = %e, "dropping a malformed message");
            return;
        }
        if let Some(r) = responder {
            self.stepped.push(msg.rpc_id);
            self.responders.insert(msg.rpc_id, r);
        }
        self.core.step(msg);
    }

    async fn take_proposals(&mut self, first: Proposal<O>) -> Result<(), String> {
        let mut bytes = first.data.len();
        self.propose(first).await?;
        for _ in 1..MAX_PROPOSALS_PER_TURN {
            if bytes >= MAX_PROPOSAL_BYTES_PER_TURN {
                break;
            }
            let Ok(p) = self.proposals.try_recv() else {
                break;
            };
            bytes += p.data.len();
            self.propose(p).await?;
        }
        Ok(())
    }

    async fn propose(&mut self, p: Proposal<O>) -> Result<(), String> {
        match self.core.propose(p.data) {
            Ok((index, term)) => {
                let cmd = ApplyCmd::Register {
                    index,
                    term,
                    reply: p.reply,
                };
                self.apply
                    .send(cmd)
                    .await
                    .map_err(|_| "the apply thread stopped".to_string())
            }
            Err(e) => {
                let _ = p.reply.send(Err(refusal(e)));
                Ok(())
            }
        }
    }

    fn take_reads(&mut self, first: ReadRequest) {
        self.read(first);
        for _ in 1..MAX_READS_PER_TURN {
            let Ok(r) = self.reads.try_recv() else { break };
            self.read(r);
        }
    }

    fn read(&mut self, r: ReadRequest) {
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx;
        match self.core.read_index(ctx) {
            Ok(()) => {
                self.pending_reads.insert(ctx, r.reply);
            }
            Err(e) => {
                let _ = r.reply.send(Err(refusal(e)));
            }
        }
    }

    /// Handles every Ready the core has. Stops early at the persist cap and
    /// resumes once the disk catches up.
    async fn drain_ready(&mut self) -> Result<(), String> {
        let mut drained = false;
        loop {
            if !self.core.has_ready() {
                drained = true;
                break;
            }
            if self.persist_inflight >= MAX_INFLIGHT_JOBS {
                break;
            }
            let rd = self.core.ready();
            if ready_is_empty(&rd) {
                // has_ready() said yes but there was nothing: do not spin.
                drained = true;
                break;
            }
            self.handle_ready(rd).await?;
        }
        if drained {
            // Every request stepped so far has been answered, or its answer
            // waits for the disk; the core will never answer the others.
            for id in self.stepped.drain(..) {
                if !self.deferred.contains(&id) {
                    self.responders.remove(&id);
                }
            }
            self.deferred.clear();
        }
        self.publish_status();
        Ok(())
    }

    async fn handle_ready(&mut self, rd: Ready) -> Result<(), String> {
        let Ready {
            soft_state,
            hard_state,
            snapshot: install,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            dropped_reads,
        } = rd;

        let mut lost_leadership = false;
        if let Some(ss) = soft_state {
            tracing::info!(node = self.id, term = ss.term, role = ?ss.role, leader = ?ss.leader, "raft state changed");
            // Also a new term as leader again: the old term's pending
            // entries may have been replaced in between.
            lost_leadership =
                self.role == Role::Leader && (ss.role != Role::Leader || ss.term != self.term);
            self.role = ss.role;
            self.term = ss.term;
        }

        // Messages of this Ready may be for a member it just added.
        self.sync_membership();
        for m in messages {
            self.route(m);
        }

        let snapshot = install.map(SnapshotOp::Install);
        if hard_state.is_some() || snapshot.is_some() || !entries.is_empty() {
            self.send_persist_job(hard_state, snapshot, entries, persisted_messages)?;
        } else if !persisted_messages.is_empty() {
            if self.persist_inflight > 0 {
                // They depend on earlier Readys still being written.
                self.send_persist_job(None, None, Vec::new(), persisted_messages)?;
            } else {
                for m in persisted_messages {
                    self.route(m);
                }
            }
        }

        if !committed_entries.is_empty() {
            let count = committed_entries.len() as u64;
            let bytes = committed_entries.iter().map(|e| e.size() as u64).sum();
            self.send_apply(ApplyCmd::Apply(committed_entries)).await?;
            self.note_applied(count, bytes).await?;
        }
        if lost_leadership {
            let commit = self.core.status().commit;
            self.send_apply(ApplyCmd::FailPending { commit }).await?;
        }

        for rs in read_states {
            if let Some(reply) = self.pending_reads.remove(&rs.ctx) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        if !dropped_reads.is_empty() {
            let leader = self.core.status().leader;
            for ctx in dropped_reads {
                if let Some(reply) = self.pending_reads.remove(&ctx) {
                    let _ = reply.send(Err(ProposeError::NotLeader { leader }));
                }
            }
        }
        Ok(())
    }

    fn send_persist_job(
        &mut self,
        hard_state: Option<crate::types::HardState>,
        snapshot: Option<SnapshotOp>,
        entries: Vec<crate::types::Entry>,
        messages: Vec<Message>,
    ) -> Result<(), String> {
        for m in &messages {
            if m.body.is_response() {
                self.deferred.insert(m.rpc_id);
            }
        }
        self.queue_persist(PersistJob {
            hard_state,
            snapshot,
            entries,
            messages,
        })
    }

    fn queue_persist(&mut self, job: PersistJob) -> Result<(), String> {
        // Never full: at most MAX_INFLIGHT_JOBS are in flight.
        match self.persist.jobs.try_send(job) {
            Ok(()) => {
                self.persist_inflight += 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err("persist queue full despite the in-flight cap".to_string())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err("the persist thread stopped".to_string())
            }
        }
    }

    async fn send_apply(&mut self, cmd: ApplyCmd<O>) -> Result<(), String> {
        // Waiting here when the state machine lags is back-pressure.
        self.apply
            .send(cmd)
            .await
            .map_err(|_| "the apply thread stopped".to_string())
    }

    /// Sends a message from the core: a reply goes back through the
    /// responder of the request it answers; a request goes to its peer.
    fn route(&mut self, m: Message) {
        if m.body.is_response() {
            match self.responders.remove(&m.rpc_id) {
                Some(r) => {
                    // The caller may have given up; nothing to do then.
                    let _ = r.send(m);
                }
                None => {
                    tracing::trace!(
                        node = self.id,
                        to = m.to,
                        rpc_id = m.rpc_id,
                        "reply with no waiting request dropped"
                    )
                }
            }
        } else if let Some(peer) = self.peers.get(m.to) {
            peer.send(m);
        } else {
            tracing::warn!(
                node = self.id,
                to = m.to,
                "message for an unknown peer dropped"
            );
        }
    }

    /// Follows the configuration in force: senders for new members,
    /// none for removed ones, and the application told.
    fn sync_membership(&mut self) {
        let generation = self.core.membership_generation();
        if generation == self.membership_seen {
            return;
        }
        self.membership_seen = generation;
        let now = self.core.membership();
        self.peers.sync(self.id, now);
        self.membership.send_replace(now.clone());
    }

    fn publish_status(&self) {
        let now = self.core.status();
        self.status.send_if_modified(|s| {
            if *s == now {
                false
            } else {
                *s = now;
                true
            }
        });
    }

    async fn finish(self, stop: Stop) {
        let EventLoop {
            id,
            persist,
            apply,
            apply_thread,
            peers,
            responders,
            pending_reads,
            stopped,
            fatal,
            persist_done,
            snapshot_events,
            ..
        } = self;
        // The apply thread may be reporting a snapshot event: it must not
        // wait on a receiver that nobody reads while it is being joined.
        drop(snapshot_events);
        if let Stop::Fatal(why) = &stop {
            tracing::error!(node = id, error = %why, "raft node stopped");
            if let Ok(mut f) = fatal.lock() {
                *f = Some(why.clone());
            }
        }
        let reason = match &stop {
            Stop::Shutdown => ProposeError::Shutdown,
            Stop::Fatal(why) => ProposeError::Storage(why.clone()),
        };
        for (_, reply) in pending_reads {
            let _ = reply.send(Err(reason.clone()));
        }
        // Peers stop when their queues close; unanswered requests see
        // their responder dropped.
        drop(peers);
        drop(responders);
        drop(persist_done);
        let PersistHandle { jobs, thread } = persist;
        drop(jobs);
        drop(apply);
        // The threads finish queued work and exit; joining them blocks.
        let joined = tokio::task::spawn_blocking(move || {
            let persist_ok = thread.join().is_ok();
            let apply_ok = apply_thread.join().is_ok();
            (persist_ok, apply_ok)
        })
        .await;
        match joined {
            Ok((true, true)) => {}
            other => tracing::error!(node = id, result = ?other, "a driver thread panicked"),
        }
        tracing::info!(node = id, "raft node stopped");
        stopped.send_replace(true);
    }
}

/// Maps the core's refusal to the driver's error.
fn refusal(e: core::ProposeError) -> ProposeError {
    match e {
        core::ProposeError::NotLeader { leader } => ProposeError::NotLeader { leader },
        // The leader is handing over: no leader to send the client to yet.
        core::ProposeError::TransferInProgress => ProposeError::NotLeader { leader: None },
        core::ProposeError::ChangeInProgress(why) => ProposeError::ChangeInProgress(why),
        core::ProposeError::InvalidChange(why) => ProposeError::InvalidChange(why),
    }
}

fn ready_is_empty(rd: &Ready) -> bool {
    rd.soft_state.is_none()
        && rd.hard_state.is_none()
        && rd.snapshot.is_none()
        && rd.entries.is_empty()
        && rd.messages.is_empty()
        && rd.persisted_messages.is_empty()
        && rd.committed_entries.is_empty()
        && rd.read_states.is_empty()
        && rd.dropped_reads.is_empty()
}
