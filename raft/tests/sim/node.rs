//! One simulated node: a Raft core, its disk, the writes not yet fsynced,
//! and the state machine.

use std::collections::VecDeque;
use std::rc::Rc;

use resqlite_raft::{Entry, HardState, Membership, Message, NodeId, Raft, SnapshotMeta};

use super::checker::{LogView, Seen};

/// A snapshot file: the state machine (one entry hash per index, from 1)
/// as of `meta.index`. Written whole and fsynced before anyone hears of
/// it, as the driver does.
#[derive(Debug)]
pub struct SimSnapshot {
    pub meta: SnapshotMeta,
    pub state: Vec<u64>,
}

/// What survives a crash: the last fsynced hard state, snapshot and log.
#[derive(Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The snapshot the log starts after.
    pub snapshot: Option<Rc<SimSnapshot>>,
    /// Contiguous from the snapshot's index + 1.
    pub log: Vec<Entry>,
}

impl Disk {
    pub fn write_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Index of the last entry the log compacted away (0 if none).
    pub fn offset(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    pub fn last_index(&self) -> u64 {
        self.offset() + self.log.len() as u64
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let pos = index.checked_sub(self.offset() + 1)?;
        self.log.get(pos as usize)
    }

    /// Truncates the log from `from` and appends `entries` (which start at
    /// `from`). Returns false if that would leave a gap or rewrite what a
    /// snapshot covers.
    #[must_use]
    pub fn write_entries(&mut self, from: u64, entries: &[Entry]) -> bool {
        if from <= self.offset() || from > self.last_index() + 1 {
            return false;
        }
        self.log.truncate((from - self.offset() - 1) as usize);
        self.log.extend_from_slice(entries);
        true
    }

    /// Installs a snapshot received from the leader: the whole log is
    /// replaced by it.
    pub fn install(&mut self, snapshot: Rc<SimSnapshot>) {
        self.log.clear();
        self.snapshot = Some(snapshot);
    }

    /// Compaction: a snapshot of this node's own state machine; the log
    /// before it is dropped.
    pub fn compact(&mut self, snapshot: Rc<SimSnapshot>) {
        let drop = (snapshot.meta.index - self.offset()) as usize;
        self.log.drain(..drop.min(self.log.len()));
        self.snapshot = Some(snapshot);
    }
}

/// One Ready's worth of persistence: written in order, made durable by a
/// later sync, after which its messages may leave the node.
#[derive(Debug)]
pub struct PersistJob {
    pub hard_state: Option<HardState>,
    /// A snapshot to install before the entries.
    pub snapshot: Option<Rc<SimSnapshot>>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
}

pub struct SimNode {
    pub id: NodeId,
    /// The voters it is started with (empty: it joins a running cluster).
    pub voters: Vec<NodeId>,
    /// A machine runs this node: started once, restarted after crashes.
    pub in_use: bool,
    /// Shut down for good by the operator after its removal committed.
    pub retired: bool,
    /// None while crashed.
    pub core: Option<Raft>,
    /// Bumped at every crash and restart; timers of older lives are ignored.
    pub life: u64,
    pub disk: Disk,
    /// Persistence handed to the disk and not yet durable, oldest first.
    pub pending: VecDeque<PersistJob>,
    pub sync_scheduled: bool,
    /// Hash of each applied entry, from index 1. The state machine survives
    /// crashes (like SQLite), except perhaps its last few applies.
    pub state_machine: Vec<u64>,
    /// The newest snapshot file this node holds (taken or received), which
    /// its driver streams when the core asks for an InstallSnapshot.
    pub snapshot_file: Option<Rc<SimSnapshot>>,
    /// A snapshot that arrived with the message being stepped.
    pub incoming: Option<Rc<SimSnapshot>>,
    /// The core's log as reported through Ready.
    pub view: LogView,
    pub seen: Seen,
}

impl SimNode {
    /// Node `id`, started (later) with `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        let started_with = Membership::from_voters(&voters);
        SimNode {
            id,
            voters,
            in_use: false,
            retired: false,
            core: None,
            life: 0,
            disk: Disk::default(),
            pending: VecDeque::new(),
            sync_scheduled: false,
            state_machine: Vec::new(),
            snapshot_file: None,
            incoming: None,
            view: LogView::new(started_with),
            seen: Seen::fresh(),
        }
    }

    pub fn alive(&self) -> bool {
        self.core.is_some()
    }

    /// Down, but its machine may start it again.
    pub fn restartable(&self) -> bool {
        self.in_use && !self.retired && self.core.is_none()
    }

    /// What the node handed to its state machine: a snapshot waiting to
    /// be installed counts as applied (the core has moved past it).
    pub fn applied(&self) -> u64 {
        self.pending
            .iter()
            .rev()
            .find_map(|j| j.snapshot.as_ref().map(|s| s.meta.index))
            .unwrap_or(self.state_machine.len() as u64)
    }

    pub fn summary(&self) -> String {
        match &self.core {
            None if !self.in_use => format!("n{}: not started", self.id),
            None if self.retired => format!("n{}: retired", self.id),
            None => format!(
                "n{}: down (disk term {} vote {:?} snapshot {} last {})",
                self.id,
                self.disk.hard_state.term,
                self.disk.hard_state.vote,
                self.disk.offset(),
                self.disk.last_index()
            ),
            Some(core) => {
                let st = core.status();
                let m = core.membership();
                format!(
                    "n{}: {:?} term {} vote {:?} leader {:?} commit {} last {}/{} persisted {} applied {} snapshot {} pending {} voters {:?} learners {:?}",
                    st.id,
                    st.role,
                    st.term,
                    st.vote,
                    st.leader,
                    st.commit,
                    st.last_index,
                    st.last_term,
                    st.persisted,
                    st.applied,
                    st.snapshot,
                    self.pending.len(),
                    m.voters().collect::<Vec<_>>(),
                    m.learners().collect::<Vec<_>>()
                )
            }
        }
    }
}
