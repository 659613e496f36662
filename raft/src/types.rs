//! Plain data shared by the Raft core, the log store and the driver.

use bytes::Bytes;

/// A node's id in the cluster. Zero is reserved for "none".
pub type NodeId = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the state machine, proposed by a client.
    Normal,
    /// Appended by a new leader so that it can commit entries of earlier terms.
    Noop,
    /// A membership change (filled in by the membership issue).
    Config,
}

impl EntryKind {
    /// The stable one-byte code of this kind, used on disk.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Config => 2,
        }
    }

    /// The kind for a code written by [`EntryKind::code`], if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Opaque payload for the state machine.
    pub data: Bytes,
}

impl Entry {
    /// Approximate size in bytes, used to bound batches and in-flight data.
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must be on disk before any message that depends on it is
/// sent: the current term and the vote cast in it, always written together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// What a snapshot of the state machine covers: every entry up to and
/// including `index` (whose term is `term`), and the voters in force there.
/// A log compacted to a snapshot starts at `index + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes (0: no snapshot).
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The voting members as of `index`. Membership is static for now, but
    /// it travels with the snapshot so that a node restored from one knows
    /// the configuration without the log entries that set it.
    pub voters: Vec<NodeId>,
}
