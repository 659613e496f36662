//! The deterministic, sans-IO Raft state machine, in the style of
//! etcd-io/raft.
//!
//! Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`],
//! [`Raft::read_index`], [`Raft::on_persisted`]. Output: [`Raft::ready`],
//! which says what to persist, what to send (now, or only once the
//! persistence is durable), what is committed and which reads are confirmed.
//! The core never blocks and owns no clock, socket or file, so the same code
//! runs in the simulator and in the tokio driver.

mod election;
mod membership;
#[cfg(test)]
mod membership_tests;
mod message;
mod progress;
mod raft_log;
mod read_index;
mod replication;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
mod step;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod untrusted_tests;

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use self::membership::Configs;
pub use self::message::{Message, MessageBody};
use self::progress::Progress;
use self::raft_log::RaftLog;
use self::read_index::ReadOnly;
use crate::types::{Entry, EntryKind, HardState, Membership, NodeId, SnapshotMeta};

/// Static settings of one core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (not zero).
    pub id: NodeId,
    /// The voters the cluster was started with, this node included; empty
    /// for a node that joins a running cluster (it learns the members from
    /// the leader's log or snapshot, and never campaigns before). Once the
    /// log or a snapshot holds a configuration, that one is in force.
    pub voters: Vec<NodeId>,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between leader heartbeats (must be below `election_tick`).
    pub heartbeat_tick: u32,
    /// Ask for pre-votes before an election, so a node that was cut off does
    /// not raise the term and depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; voters ignore elections while they hear from a leader.
    pub check_quorum: bool,
    /// AppendEntries in flight per follower.
    pub max_inflight_msgs: usize,
    /// Bytes of entries in flight per follower.
    pub max_inflight_bytes: usize,
    /// Bytes of entries in one AppendEntries (at least one entry is sent).
    pub max_batch_bytes: usize,
    /// Ticks a leader waits for the answer to an InstallSnapshot before it
    /// asks for the snapshot to be sent again. The driver reports a failed
    /// transfer at once ([`Raft::report_snapshot_failure`]); this only
    /// covers an answer that never comes, so it must exceed the time to
    /// stream the largest snapshot.
    pub snapshot_timeout_tick: u32,
    /// Seed for the randomised election timeouts.
    pub seed: u64,
}

impl Config {
    /// Defaults that suit a LAN or loopback with a ~100 ms tick.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_inflight_bytes: 32 << 20,
            max_batch_bytes: 1 << 20,
            snapshot_timeout_tick: 1200,
            seed: id,
        }
    }

    fn validate(&self) -> Result<(), RaftError> {
        let bad = |why: &str| Err(RaftError::Config(why.to_string()));
        if self.id == 0 {
            return bad("node id 0 is reserved");
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return bad("voters must include this node (or be empty, to join a cluster)");
        }
        if self.voters.contains(&0) {
            return bad("node id 0 is reserved");
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick {
            return bad("heartbeat_tick must be at least 1 and below election_tick");
        }
        if self.max_inflight_msgs == 0 || self.max_batch_bytes == 0 {
            return bad("in-flight limits must be positive");
        }
        if self.snapshot_timeout_tick == 0 {
            return bad("snapshot_timeout_tick must be positive");
        }
        Ok(())
    }
}

/// Errors building a core.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The configuration cannot work.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// The recovered state contradicts itself.
    #[error("inconsistent recovered state: {0}")]
    Recovered(String),
}

/// Why a proposal or read was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals and reads.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed to another node.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A membership change cannot start yet (the previous one is not
    /// committed, or the leader is new); retry shortly.
    #[error("membership change refused for now: {0}")]
    ChangeInProgress(String),
    /// The proposed configuration is not a single-server change.
    #[error("invalid membership change: {0}")]
    InvalidChange(String),
}

/// What a node recovered from its disk at start.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// Term and vote.
    pub hard_state: HardState,
    /// The newest durable snapshot (index 0 if none): the log starts after it.
    pub snapshot: SnapshotMeta,
    /// The whole durable log, contiguous from `snapshot.index + 1`.
    pub entries: Vec<Entry>,
    /// Last index the state machine has applied (its state survives
    /// restarts). At least `snapshot.index`: a state machine that is behind
    /// the snapshot must be restored from it first.
    pub applied: u64,
}

/// Why [`Raft::compact`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The log already starts after `index` (a newer snapshot was taken or
    /// installed meanwhile).
    #[error("index {index} is already compacted (the log starts after {offset})")]
    Compacted {
        /// The index asked for.
        index: u64,
        /// The current snapshot's index.
        offset: u64,
    },
    /// The state machine has not applied `index`, so no snapshot can hold it.
    #[error("index {index} is not applied yet (applied: {applied})")]
    NotApplied {
        /// The index asked for.
        index: u64,
        /// The applied index.
        applied: u64,
    },
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; has not changed term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the current term.
    Leader,
}

/// Role and leader, reported when either changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
}

/// A linearizable read confirmed by a quorum: it may be served once the
/// state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context from [`Raft::read_index`].
    pub ctx: u64,
    /// Apply at least up to here before reading.
    pub index: u64,
}

/// Everything the driver must do after feeding inputs to the core.
#[derive(Debug, Default)]
pub struct Ready {
    /// Role, leader or term changed.
    pub soft_state: Option<SoftState>,
    /// Must be durable before `persisted_messages` are sent.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to install before `entries`:
    /// the durable log is replaced by this snapshot (every entry is
    /// dropped, the log continues after `snapshot.index`) and the state
    /// machine is restored from it. Both must be done before
    /// `persisted_messages` are sent: they hold the acknowledgement.
    pub snapshot: Option<SnapshotMeta>,
    /// Append to the durable log, first truncating it from `entries[0].index`.
    /// Then call [`Raft::on_persisted`] with the last one.
    pub entries: Vec<Entry>,
    /// Send now: the leader's AppendEntries and heartbeats, which do not
    /// depend on its own disk.
    pub messages: Vec<Message>,
    /// Send only once `hard_state` and `entries` (and those of every earlier
    /// Ready) are durable: votes and acknowledgements.
    pub persisted_messages: Vec<Message>,
    /// Committed, durable entries to apply, in log order.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed by a quorum.
    pub read_states: Vec<ReadState>,
    /// Reads that can no longer be confirmed here (leadership was lost).
    pub dropped_reads: Vec<u64>,
}

impl Ready {
    /// Whether the durable store must be written for this Ready.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// A snapshot of a core's state for logs, status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// Its vote in that term.
    pub vote: Option<NodeId>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit: u64,
    /// Last index of its log.
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: u64,
    /// Highest index durable on its disk.
    pub persisted: u64,
    /// Highest index handed to the state machine.
    pub applied: u64,
    /// Index of the snapshot the log starts after (0 if none).
    pub snapshot: u64,
}

/// One Raft node's consensus state machine.
pub struct Raft {
    cfg: Config,
    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// The configurations in the log; the newest is in force.
    configs: Configs,
    /// Counts changes of the configuration in force.
    membership_generation: u64,
    /// Leader only: replication state of every other member (learners too).
    progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate: the answers received.
    votes: BTreeMap<NodeId, bool>,
    read_only: ReadOnly,
    /// Leader only: the node leadership is being handed to, and since when.
    transfer_target: Option<NodeId>,
    /// Leader only: proposals were appended since the last broadcast.
    append_pending: bool,
    /// A snapshot received from the leader, for the next Ready to install.
    snapshot_to_install: Option<SnapshotMeta>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SmallRng,
    // Outputs gathered until the next `ready()`.
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    /// The state machine stopped applying after a node-local failure: this
    /// node must not lead, since it could neither answer reads nor report
    /// the outcome of writes.
    state_machine_halted: bool,
}

impl Raft {
    /// Builds a core from its configuration and what was recovered from disk.
    pub fn new(cfg: Config, persisted: Persisted) -> Result<Self, RaftError> {
        cfg.validate()?;
        let Persisted {
            hard_state,
            snapshot,
            entries,
            applied,
        } = persisted;
        let first = snapshot.index + 1;
        for (i, e) in entries.iter().enumerate() {
            if e.index != first + i as u64 {
                return Err(RaftError::Recovered(format!(
                    "log is not contiguous from {first}: position {i} holds index {}",
                    e.index
                )));
            }
        }
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        if applied > last {
            return Err(RaftError::Recovered(format!(
                "state machine applied {applied} but the log ends at {last}"
            )));
        }
        if applied < snapshot.index {
            return Err(RaftError::Recovered(format!(
                "state machine applied {applied}, behind the snapshot at {}: restore it first",
                snapshot.index
            )));
        }
        let last_term = entries.last().map_or(snapshot.term, |e| e.term);
        if last_term > hard_state.term {
            return Err(RaftError::Recovered(format!(
                "log holds term {last_term} but the saved term is {}",
                hard_state.term
            )));
        }
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let timeout = rng.random_range(cfg.election_tick..2 * cfg.election_tick);
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
            term: hard_state.term,
        };
        // A snapshot of the first format, or of a log that never changed
        // its members, may name no members: the started-with ones hold.
        let base = if snapshot.membership.members.is_empty() {
            Membership::from_voters(&cfg.voters)
        } else {
            snapshot.membership.clone()
        };
        let mut configs = Configs::new(snapshot.index, snapshot.term, base);
        configs.note_appended(cfg.id, &entries);
        Ok(Raft {
            configs,
            membership_generation: 0,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::recovered(snapshot, entries, applied),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            read_only: ReadOnly::default(),
            transfer_target: None,
            append_pending: false,
            snapshot_to_install: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: timeout,
            rng,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            prev_hard_state: hard_state,
            prev_soft_state: soft,
            state_machine_halted: false,
            cfg,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The current role, term, leader and log positions.
    pub fn status(&self) -> Status {
        Status {
            id: self.cfg.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            persisted: self.log.persisted,
            applied: self.log.applied,
            snapshot: self.log.offset(),
        }
    }

    /// The entry at `index`, if this node's log holds it (for tests and
    /// tools; entries up to [`Status::snapshot`] are compacted away).
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Proposes `data` as a new entry. Returns its index and term; it is
    /// committed once it comes back in [`Ready::committed_entries`] with
    /// that term at that index.
    pub fn propose(&mut self, data: Bytes) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        // Proposals that arrive together leave in one AppendEntries per
        // follower: the broadcast waits for the next `ready()`.
        let index = self.append_entry(EntryKind::Normal, data);
        self.append_pending = true;
        Ok((index, self.term))
    }

    /// The state machine stopped applying (a node-local failure: disk
    /// full, I/O error …). From now on this node never campaigns; a leader
    /// hands leadership to the most caught-up voter and steps down. Its log
    /// and its vote still count, so the cluster keeps its quorum.
    pub fn halt_state_machine(&mut self) {
        if self.state_machine_halted {
            return;
        }
        self.state_machine_halted = true;
        tracing::warn!(
            node = self.cfg.id,
            term = self.term,
            "state machine halted; this node will not lead"
        );
        if self.role == Role::Leader {
            self.hand_over_and_step_down("state machine halted");
        }
    }

    /// Asks to hand leadership to `to`: once its log is up to date it is
    /// told to start an election at once.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.cfg.id || !self.progress.contains_key(&to) || !self.membership().is_voter(to)
        {
            return Ok(());
        }
        self.transfer_target = Some(to);
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// Whether [`Raft::ready`] has anything to report.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.log.unstable_from <= self.log.last_index()
            || self.log.has_committed_to_apply()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || self.hard_state() != self.prev_hard_state
            || self.soft_state() != self.prev_soft_state
            || (self.role == Role::Leader && self.read_round_due())
            || self.append_pending
            || self.snapshot_to_install.is_some()
    }

    /// Collects what must be done now. Call after any input; act on every
    /// field (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader && self.read_round_due() {
            self.broadcast_heartbeat();
        }
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.broadcast_append();
        }
        let mut ready = Ready::default();
        let hs = self.hard_state();
        if hs != self.prev_hard_state {
            ready.hard_state = Some(hs);
            self.prev_hard_state = hs;
        }
        let ss = self.soft_state();
        if ss != self.prev_soft_state {
            ready.soft_state = Some(ss);
            self.prev_soft_state = ss;
        }
        ready.snapshot = self.snapshot_to_install.take();
        ready.entries = self.log.take_unstable();
        ready.messages = std::mem::take(&mut self.msgs);
        ready.persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        if ready.hard_state.is_some() {
            // Anything said in a term or after a vote that is not yet on
            // disk waits for the disk.
            let now = std::mem::take(&mut ready.messages);
            ready.persisted_messages.splice(0..0, now);
        }
        ready.committed_entries = self.log.take_committed();
        ready.read_states = std::mem::take(&mut self.read_states);
        ready.dropped_reads = std::mem::take(&mut self.dropped_reads);
        ready
    }

    /// Storage made the log durable up to `index` (whose entry has `term`).
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        self.log.persisted_to(index, term);
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    /// Votes (or acknowledgements) that make a majority of the voters in
    /// force.
    fn quorum(&self) -> usize {
        self.configs.current().voters().count() / 2 + 1
    }

    /// The other voters: whom a candidate asks for votes.
    fn voter_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.cfg.id;
        self.configs.current().voters().filter(move |&p| p != me)
    }

    /// Every other member, learners included: whom a leader replicates to.
    fn member_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.cfg.id;
        self.configs
            .current()
            .members
            .keys()
            .copied()
            .filter(move |&p| p != me)
    }

    /// Of `values` (one per other member, with its id) and this node's own
    /// `mine`, the highest value a quorum of voters has reached: what the
    /// commit rule and ReadIndex confirmation count. A leader that is not
    /// a voter (it is removing itself) does not count itself.
    fn quorum_value(&self, values: impl Iterator<Item = (NodeId, u64)>, mine: u64) -> u64 {
        let membership = self.configs.current();
        let mut voted: Vec<u64> = values
            .filter(|(id, _)| membership.is_voter(*id))
            .map(|(_, v)| v)
            .collect();
        if membership.is_voter(self.cfg.id) {
            voted.push(mine);
        }
        voted.sort_unstable_by(|a, b| b.cmp(a));
        voted.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let et = self.cfg.election_tick;
        self.randomized_election_timeout = self.rng.random_range(et..2 * et);
    }

    /// Queues a message; `after_persist` ones wait for the disk.
    fn send(&mut self, to: NodeId, body: MessageBody, rpc_id: u64, after_persist: bool) {
        // A leader's term is surely durable only once an entry of its term
        // is: a lone voter wins its election before its vote is on disk,
        // and if it crashed then, another node could lead the same term.
        // Until then nothing it says in that term may leave before the
        // disk (found by the simulator: a learner kept such a leader's
        // entries, which then collided with the other leader's).
        let after_persist = after_persist
            || (self.role == Role::Leader && self.log.term(self.log.persisted) != Some(self.term));
        let msg = Message {
            from: self.cfg.id,
            to,
            term: self.term,
            rpc_id,
            body,
        };
        if after_persist {
            self.msgs_after_persist.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    /// Appends an entry of the leader's own, sends it at once and returns
    /// its index.
    fn append_own(&mut self, kind: EntryKind, data: Bytes) -> u64 {
        let index = self.append_entry(kind, data);
        self.broadcast_append();
        index
    }

    /// Appends an entry of the leader's own without sending it yet.
    fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> u64 {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            kind,
            data,
        };
        if kind == EntryKind::Config
            && self
                .configs
                .note_appended(self.cfg.id, std::slice::from_ref(&entry))
        {
            self.log.push(entry);
            self.on_membership_changed();
        } else {
            self.log.push(entry);
        }
        if self.quorum() == 1 {
            self.maybe_commit();
        }
        index
    }
}
