//! The tokio driver: runs the sans-IO core against a real disk and real
//! sockets.
//!
//! One task owns the core (the [event loop](event_loop)); the durable log is
//! written by a [persist thread](persist) and the state machine runs on an
//! [apply thread](apply), so no tokio worker ever waits on fsync or on the
//! state machine. [`RaftNode`] is the cheap handle applications use;
//! [`RaftService`] is the gRPC service peers talk to, which the application
//! adds to its own tonic server next to its own services.

mod apply;
mod event_loop;
mod peers;
mod persist;
pub(crate) mod snapshot_dir;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{Config, Persisted, Raft, RaftError, Status};
use crate::log_store::{LogStore, LogStoreOptions, StoreError};
use crate::transport::{RaftGrpc, SnapshotAdmission, TransportOptions};
use crate::types::{Entry, Membership, NodeId};

pub use crate::transport::RaftService;

use self::apply::{ApplyCmd, SnapshotSide};
use self::event_loop::{Command, EventLoop, Proposal, ReadRequest};
use self::peers::Peers;
use self::snapshot_dir::SnapshotDir;

/// Proposals queued for the event loop; callers wait when it is full.
const PROPOSAL_QUEUE: usize = 4096;
/// Read requests queued for the event loop.
const READ_QUEUE: usize = 4096;
/// Messages from peers queued for the event loop.
const INBOUND_QUEUE: usize = 4096;
/// Commands queued for the apply thread.
const APPLY_QUEUE: usize = 4096;
/// Operator commands queued for the event loop.
const COMMAND_QUEUE: usize = 16;
/// Snapshot events (taken, restored) queued for the event loop; at most a
/// few exist at a time.
const SNAPSHOT_EVENT_QUEUE: usize = 16;
/// Failed snapshot transfers queued for the event loop (one per peer at a
/// time, dropped when full: the core also times out).
const SNAPSHOT_FAILURE_QUEUE: usize = 64;

/// The replicated state machine, fed committed entries in log order.
///
/// It runs on its own OS thread, never on a tokio worker, so it may block
/// (SQLite, fsync).
pub trait StateMachine: Send + 'static {
    /// What applying one entry produces; handed to the proposer.
    type Output: Send + 'static;

    /// Applies `entries` (contiguous, in log order) and returns one output per
    /// entry, in order. `Noop` entries are passed too, so the state machine
    /// can record the index it has reached. `wanted[i]` says whether anyone
    /// on this node waits for the output of `entries[i]` (the node that
    /// proposed it); a state machine may skip building outputs nobody
    /// reads, but its effects must not depend on `wanted`.
    ///
    /// An `Err` is a node-local failure (disk full, I/O error, …), not a
    /// property of the entries: the state machine must then hold none of
    /// the batch's effects, and the driver stops applying for good (the
    /// node no longer leads; restarted, it retries the same entries).
    fn apply(&mut self, entries: &[Entry], wanted: &[bool]) -> Result<Vec<Self::Output>, Halt>;

    /// The last index whose effects the state machine holds (0 if none).
    /// Read once at start: entries after it are applied again from the log.
    fn applied_index(&self) -> u64;

    /// Prepares a snapshot, on the apply thread between two applies, and
    /// returns the job that writes it. The driver runs the job on a thread
    /// of its own while applies go on, so it must not share the state
    /// machine's writer: it writes a consistent copy of the state to the
    /// file it is given and returns the applied index that copy holds.
    ///
    /// The default refuses; the driver then never compacts the log.
    fn snapshot(&mut self) -> Result<SnapshotWriter, SnapshotError> {
        Err("this state machine does not take snapshots".into())
    }

    /// Replaces the whole state with the snapshot in `path`, which holds
    /// the state as of `index`. Called on the apply thread, so no apply
    /// runs meanwhile; afterwards [`StateMachine::applied_index`] is
    /// `index` and the next entry applied is `index + 1`.
    fn restore(&mut self, path: &Path, index: u64) -> Result<(), SnapshotError> {
        let _ = (path, index);
        Err("this state machine cannot restore snapshots".into())
    }
}

/// Why a state machine stopped applying: a node-local failure that the
/// other nodes do not share, so the entries it could not apply must never
/// be skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Halt {
    /// What failed, for operators (`resqlite status`).
    pub reason: String,
}

/// Why a snapshot could not be taken or restored.
pub type SnapshotError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Writes a snapshot to the given file and returns the applied index it
/// holds (see [`StateMachine::snapshot`]).
pub type SnapshotWriter = Box<dyn FnOnce(&Path) -> Result<u64, SnapshotError> + Send + 'static>;

/// When to snapshot the state machine and compact the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot that trigger the next one.
    pub entries: u64,
    /// Bytes of entries applied since the last snapshot that trigger the
    /// next one.
    pub bytes: u64,
}

impl Default for SnapshotPolicy {
    /// 10,000 entries or 64 MiB, whichever comes first.
    fn default() -> Self {
        SnapshotPolicy {
            entries: 10_000,
            bytes: 64 << 20,
        }
    }
}

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (not zero).
    pub id: NodeId,
    /// The other voters the cluster was started with and their gRPC URLs
    /// (`http://host:port`). An entry for `id` itself is ignored. Empty for
    /// a node that joins a running cluster. Members added later are reached
    /// at the address their configuration entry carries.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the node keeps its state; the Raft log lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// Length of one core tick (default 50 ms).
    pub tick: Duration,
    /// Settings of the core. Its `id` must be `id` and its voters `id` plus
    /// the keys of `peers` (none for a node that joins).
    pub raft: Config,
    /// Timeouts and queue sizes of the gRPC transport.
    pub transport: TransportOptions,
    /// When to snapshot and compact (tests use a few entries).
    pub snapshot: SnapshotPolicy,
}

impl NodeConfig {
    /// A configuration with the default core settings, a random election
    /// seed, a 50 ms tick (so an election timeout of 0.5–1 s) and unary RPC
    /// timeouts of one election timeout.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        let mut voters: Vec<NodeId> = peers.keys().copied().filter(|&p| p != id).collect();
        voters.push(id);
        voters.sort_unstable();
        let mut raft = Config::new(id, voters);
        // The core's default seed is the id: deterministic, which the
        // simulator wants but a real cluster does not (the same node would
        // win every first election, and a restarted cluster would replay
        // the same timeouts, split votes included).
        raft.seed = rand::random();
        let tick = Duration::from_millis(50);
        let transport = TransportOptions {
            rpc_timeout: tick * raft.election_tick,
            ..TransportOptions::default()
        };
        NodeConfig {
            id,
            peers,
            data_dir,
            tick,
            raft,
            transport,
            snapshot: SnapshotPolicy::default(),
        }
    }

    /// A node that joins a running cluster: it starts with no members,
    /// never campaigns, and learns the configuration from the leader once
    /// an operator (or `serve --join`) has added it.
    pub fn joining(id: NodeId, data_dir: PathBuf) -> Self {
        let mut cfg = NodeConfig::new(id, BTreeMap::new(), data_dir);
        cfg.raft.voters.clear();
        cfg
    }

    fn validate(&self) -> Result<(), DriverError> {
        let bad = |why: String| Err(DriverError::Config(why));
        if self.raft.id != self.id {
            return bad(format!(
                "raft.id {} differs from id {}",
                self.raft.id, self.id
            ));
        }
        let joining = self.raft.voters.is_empty();
        if joining && self.peers.keys().any(|&p| p != self.id) {
            return bad("a joining node (no voters) must have no peers".to_string());
        }
        let mut expected: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect();
        expected.push(self.id);
        expected.sort_unstable();
        let mut voters = self.raft.voters.clone();
        voters.sort_unstable();
        if !joining && voters != expected {
            return bad(format!(
                "raft.voters {voters:?} must be this node and its peers {expected:?}"
            ));
        }
        if self.tick.is_zero() {
            return bad("tick must be positive".to_string());
        }
        if self.snapshot.entries == 0 || self.snapshot.bytes == 0 {
            return bad("snapshot thresholds must be positive".to_string());
        }
        Ok(())
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The configuration cannot work.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The log store could not be opened or recovered.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The recovered state was refused by the core.
    #[error(transparent)]
    Core(#[from] RaftError),
    /// A peer's URL is not usable.
    #[error("peer {peer}: bad or missing URL {url:?}: {reason}")]
    PeerUrl {
        /// The peer.
        peer: NodeId,
        /// The URL given for it.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot the log starts after could not be restored into the
    /// state machine, or its directory could not be used.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A driver thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a proposal or read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader (or is handing leadership over); retry at
    /// `leader` when known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost while the entry waited to commit: it may or may
    /// not be applied. The client must find out before retrying.
    #[error(
        "leadership changed before the outcome was known; the write may or may not be applied"
    )]
    OutcomeUnknown,
    /// The entry's index was filled by another leader's entry: it was
    /// definitely not applied and can be retried.
    #[error("the entry was overwritten by a new leader and not applied")]
    Dropped,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// A membership change cannot start yet (the previous one is not
    /// committed, or the leader is new): retry shortly.
    #[error("membership change refused for now: {0}")]
    ChangeInProgress(String),
    /// The requested configuration is not a single-server change.
    #[error("invalid membership change: {0}")]
    InvalidChange(String),
    /// The node stopped after a storage failure.
    #[error("the node stopped after a storage failure: {0}")]
    Storage(String),
}

/// The reason the node stopped by itself, shared with every handle.
type Fatal = Arc<Mutex<Option<String>>>;

/// Why the state machine halted ([`Halt`]), shared with every handle.
pub(crate) type Halted = Arc<Mutex<Option<String>>>;

/// A running Raft node. Cheap to clone; every clone drives the same node.
/// Dropping the last clone shuts the node down.
pub struct RaftNode<S: StateMachine> {
    id: NodeId,
    proposals: mpsc::Sender<Proposal<S::Output>>,
    reads: mpsc::Sender<ReadRequest>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    membership: watch::Receiver<Membership>,
    applied: watch::Receiver<u64>,
    shutdown: Arc<watch::Sender<bool>>,
    stopped: watch::Receiver<bool>,
    fatal: Fatal,
    halted: Halted,
}

impl<S: StateMachine> Clone for RaftNode<S> {
    fn clone(&self) -> Self {
        RaftNode {
            id: self.id,
            proposals: self.proposals.clone(),
            reads: self.reads.clone(),
            commands: self.commands.clone(),
            status: self.status.clone(),
            membership: self.membership.clone(),
            applied: self.applied.clone(),
            shutdown: self.shutdown.clone(),
            stopped: self.stopped.clone(),
            fatal: self.fatal.clone(),
            halted: self.halted.clone(),
        }
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Opens the log in `cfg.data_dir/raft`, recovers, and starts the event
    /// loop, the persist and apply threads and one sender per peer. Returns
    /// the handle and the gRPC service to serve to peers.
    pub async fn start(cfg: NodeConfig, sm: S) -> Result<(RaftNode<S>, RaftService), DriverError> {
        cfg.validate()?;
        let id = cfg.id;
        let dir = cfg.data_dir.join("raft");
        // Opening replays the log from disk: a blocking job.
        let opened =
            tokio::task::spawn_blocking(move || LogStore::open(&dir, LogStoreOptions::default()))
                .await
                .map_err(|e| DriverError::Config(format!("log store open task failed: {e}")))?;
        let (store, recovered) = opened?;
        let authenticate_peers = cfg.transport.tls.is_some();
        let snapshot_dir = SnapshotDir::open(cfg.data_dir.join("snapshots"))
            .map_err(|e| DriverError::Snapshot(format!("snapshot directory: {e}")))?;
        let (sm, applied) = {
            let (dir, meta) = (snapshot_dir.clone(), recovered.snapshot.clone());
            tokio::task::spawn_blocking(move || restore_on_start(id, sm, &dir, &meta))
                .await
                .map_err(|e| DriverError::Snapshot(format!("restore task failed: {e}")))??
        };
        tracing::info!(
            node = id,
            term = recovered.hard_state.term,
            vote = ?recovered.hard_state.vote,
            snapshot = recovered.snapshot.index,
            last_index = recovered.entries.last().map_or(recovered.snapshot.index, |e| e.index),
            applied,
            "recovered raft state"
        );
        let core = Raft::new(
            cfg.raft.clone(),
            Persisted {
                hard_state: recovered.hard_state,
                snapshot: recovered.snapshot,
                entries: recovered.entries,
                applied,
            },
        )?;

        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (failures_tx, failures_rx) = mpsc::channel(SNAPSHOT_FAILURE_QUEUE);
        let mut peers = Peers::new(
            cfg.peers.clone(),
            inbound_tx.clone(),
            snapshot_dir.current.clone(),
            failures_tx,
            cfg.transport.clone(),
        );
        if let Some(bad) = peers.sync(id, core.membership()).into_iter().next() {
            return Err(DriverError::PeerUrl {
                peer: bad.peer,
                url: bad.url,
                reason: bad
                    .source
                    .map_or_else(|| "no address known".to_string(), |e| e.to_string()),
            });
        }
        let (membership_tx, membership_rx) = watch::channel(core.membership().clone());

        let fatal: Fatal = Arc::new(Mutex::new(None));
        let halted: Halted = Arc::new(Mutex::new(None));
        let (persist, persist_done) = persist::spawn(id, store, snapshot_dir.clone())?;
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (apply_tx, apply_rx) = mpsc::channel::<ApplyCmd<S::Output>>(APPLY_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(SNAPSHOT_EVENT_QUEUE);
        let side = SnapshotSide {
            dir: snapshot_dir.clone(),
            events: events_tx,
            halted: halted.clone(),
        };
        let apply_thread = apply::spawn(id, sm, apply_rx, applied_tx, side)?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);

        let (proposals_tx, proposals_rx) = mpsc::channel(PROPOSAL_QUEUE);
        let (reads_tx, reads_rx) = mpsc::channel(READ_QUEUE);
        let (status_tx, status_rx) = watch::channel(core.status());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let stopped_tx = Arc::new(stopped_tx);

        let ev = EventLoop::new(event_loop::Parts {
            core,
            tick: cfg.tick,
            inbound: inbound_rx,
            proposals: proposals_rx,
            reads: reads_rx,
            persist,
            persist_done,
            apply: apply_tx,
            apply_thread,
            peers,
            status: status_tx,
            membership: membership_tx,
            shutdown: shutdown_rx,
            stopped: stopped_tx.clone(),
            fatal: fatal.clone(),
            commands: commands_rx,
            snapshot_events: events_rx,
            snapshot_failures: failures_rx,
            snapshot_dir: snapshot_dir.clone(),
            policy: cfg.snapshot,
        });
        let event_loop = tokio::spawn(ev.run());
        // A panic in the event loop (the core asserts its invariants) must
        // not leave a half-dead node behind: callers and the binary learn
        // that it stopped. The threads exit as the loop's channels drop.
        let fatal_on_panic = fatal.clone();
        tokio::spawn(async move {
            if let Err(e) = event_loop.await {
                let why = format!("the event loop panicked: {e}");
                tracing::error!(node = id, error = %why, "raft node stopped");
                if let Ok(mut f) = fatal_on_panic.lock() {
                    *f = Some(why);
                }
                stopped_tx.send_replace(true);
            }
        });

        let node = RaftNode {
            id,
            proposals: proposals_tx,
            reads: reads_tx,
            commands: commands_tx,
            status: status_rx,
            membership: membership_rx,
            applied: applied_rx,
            shutdown: Arc::new(shutdown_tx),
            stopped: stopped_rx,
            fatal,
            halted,
        };
        // The service refuses stale snapshots by the term the event loop
        // publishes with the status.
        let admission =
            SnapshotAdmission::new(id, (&cfg.transport).into()).with_term(node.status.clone());
        let service = RaftGrpc::new(id, inbound_tx, snapshot_dir)
            .with_snapshot_admission(admission)
            .authenticating_peers(authenticate_peers)
            .into_service();
        Ok((node, service))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Proposes `data` and waits until it is committed and applied here;
    /// returns what the state machine produced for it.
    ///
    /// Many concurrent proposals are appended and fsynced together (group
    /// commit).
    pub async fn propose(&self, data: Bytes) -> Result<S::Output, ProposeError> {
        let (reply, rx) = oneshot::channel();
        if self.proposals.send(Proposal { data, reply }).await.is_err() {
            return Err(self.stopped_error());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Waits until a read on the local state machine is linearizable: a
    /// quorum confirmed this node is still the leader (ReadIndex), and the
    /// state machine has applied up to the commit index of that moment.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        if self.reads.send(ReadRequest { reply }).await.is_err() {
            return Err(self.stopped_error());
        }
        let index = match rx.await {
            Ok(result) => result?,
            Err(_) => return Err(self.stopped_error()),
        };
        let mut applied = self.applied.clone();
        if applied.wait_for(|&a| a >= index).await.is_err() {
            return Err(self.stopped_error());
        }
        Ok(())
    }

    /// Asks this node, which must lead, to hand leadership to `to`: once
    /// `to`'s log is up to date it is told to start an election at once
    /// (TimeoutNow), so the cluster has no leaderless election timeout.
    /// Returns when the request is accepted, not when `to` has won; new
    /// proposals are refused meanwhile. A transfer that does not complete
    /// within an election timeout is abandoned.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::TransferLeader { to, reply })
            .await
            .is_err()
        {
            return Err(self.stopped_error());
        }
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// Proposes `next` as the cluster's configuration (see
    /// [`crate::MembershipChange::apply_to`] to build it from
    /// [`RaftNode::membership`]) and waits until it is committed and
    /// applied here. Only one voter may differ; learners and addresses may
    /// change freely. A node removed this way stops getting entries; a
    /// leader that removes itself steps down once the change commits.
    pub async fn change_membership(&self, next: Membership) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::ChangeMembership { next, reply })
            .await
            .is_err()
        {
            return Err(self.stopped_error());
        }
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// The configuration in force on this node (the newest in its log).
    pub fn membership(&self) -> Membership {
        self.membership.borrow().clone()
    }

    /// A receiver that sees every change of the configuration in force.
    pub fn watch_membership(&self) -> watch::Receiver<Membership> {
        self.membership.clone()
    }

    /// On the leader: how far each other member's log is known to match
    /// (`None` on a follower).
    pub async fn member_progress(&self) -> Result<Option<BTreeMap<NodeId, u64>>, ProposeError> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Progress { reply })
            .await
            .is_err()
        {
            return Err(self.stopped_error());
        }
        rx.await.map_err(|_| self.stopped_error())
    }

    /// The core's latest status (role, term, leader, log positions).
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.status.borrow().leader
    }

    /// The last index the state machine has applied.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that sees the applied index move.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops the node: the event loop ends, log writes not yet started are
    /// abandoned (nothing was acknowledged for them), the apply thread
    /// applies what it was given, and waiting calls get
    /// [`ProposeError::Shutdown`]. Returns once everything has stopped.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let mut stopped = self.stopped.clone();
        // An error means the event loop is already gone.
        let _ = stopped.wait_for(|&s| s).await;
    }

    /// Why the state machine stopped applying, if it did ([`Halt`]): the
    /// node keeps its log and its vote but no longer leads, and its applied
    /// index stays below the commit index until it is restarted.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }

    /// Whether the node has stopped (shut down or after a fatal error).
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once the node has stopped, by [`RaftNode::shutdown`] or by
    /// itself after a fatal error (a failed write or fsync of the log, a
    /// stopped driver thread). Returns the fatal error, if any: a process
    /// should then exit and be restarted, which recovers from what the disk
    /// really holds.
    pub async fn stopped(&self) -> Option<String> {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|&s| s).await;
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    fn stopped_error(&self) -> ProposeError {
        match self.fatal.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(why) => ProposeError::Storage(why.clone()),
                None => ProposeError::Shutdown,
            },
            Err(_) => ProposeError::Shutdown,
        }
    }
}

/// Brings the state machine up to the snapshot the log starts after (it
/// may be behind after a crash between installing a snapshot and restoring
/// it), and clears the snapshot directory of everything else.
fn restore_on_start<S: StateMachine>(
    node: NodeId,
    mut sm: S,
    dir: &SnapshotDir,
    meta: &crate::types::SnapshotMeta,
) -> Result<(S, u64), DriverError> {
    let err = |what: String| DriverError::Snapshot(what);
    if meta.index == 0 {
        dir.remove_all_but(None, true)
            .map_err(|e| err(format!("cleaning the snapshot directory: {e}")))?;
        let applied = sm.applied_index();
        return Ok((sm, applied));
    }
    let path = dir.path_for(meta);
    if !path.is_file() {
        return Err(err(format!(
            "the log starts after snapshot {}/{} but {} is missing",
            meta.index,
            meta.term,
            path.display()
        )));
    }
    if sm.applied_index() < meta.index {
        tracing::info!(
            node,
            index = meta.index,
            applied = sm.applied_index(),
            "state machine is behind the snapshot; restoring it"
        );
        sm.restore(&path, meta.index)
            .map_err(|e| err(format!("restoring {}: {e}", path.display())))?;
    }
    dir.set_current(meta)
        .and_then(|()| dir.remove_all_but(Some(&path), true))
        .map_err(|e| err(format!("cleaning the snapshot directory: {e}")))?;
    let applied = sm.applied_index();
    Ok((sm, applied))
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
