//! A node's log as the checker sees it: built only from what the core
//! reported through `Ready` (and from the disk at restart), as hashes.

use resqlite_raft::{Entry, Membership};

/// A stable 64-bit hash of one entry (index, term, kind and payload).
pub fn entry_hash(e: &Entry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let head = [e.index.to_le_bytes(), e.term.to_le_bytes()];
    let kind = [e.kind.code()];
    for &b in head.iter().flatten().chain(&kind).chain(e.data.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of a log prefix ending with an entry whose hash is `entry`.
pub fn chain(prev: u64, entry: u64) -> u64 {
    let mut z = prev.rotate_left(23) ^ entry ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node's log as the core reported it through `Ready::entries`: the term
/// and the prefix hash at each index, and the configurations in it.
#[derive(Debug)]
pub struct LogView {
    pub(super) terms: Vec<u64>,
    pub(super) prefix: Vec<u64>,
    /// The configuration the node was started with.
    pub(super) started_with: Membership,
    /// The configuration before the first entry: the snapshot's, or the
    /// started-with one.
    pub(super) base: Membership,
    /// (index, configuration) of each `Config` entry of the log.
    pub(super) configs: Vec<(u64, Membership)>,
    /// Bumped whenever `configs` or `base` change.
    pub(super) config_gen: u64,
}

impl LogView {
    pub fn new(started_with: Membership) -> Self {
        LogView {
            terms: Vec::new(),
            prefix: Vec::new(),
            base: started_with.clone(),
            started_with,
            configs: Vec::new(),
            config_gen: 0,
        }
    }

    /// The configuration the log puts in force: its newest.
    pub fn in_force(&self) -> &Membership {
        self.configs.last().map_or(&self.base, |(_, m)| m)
    }

    /// The configuration in force at `index` (at most the log's end).
    pub fn in_force_at(&self, index: u64) -> &Membership {
        let pos = self.configs.partition_point(|(i, _)| *i <= index);
        self.configs[..pos].last().map_or(&self.base, |(_, m)| m)
    }

    /// Index of the entry that set it (`offset`, the log's start, when
    /// that is later: the core folds older ones into its snapshot).
    pub fn in_force_index(&self, offset: u64) -> u64 {
        self.configs.last().map_or(0, |(i, _)| *i).max(offset)
    }

    pub fn len(&self) -> u64 {
        self.terms.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.terms.last().copied().unwrap_or(0)
    }

    /// Term of the entry at `index` (0 for index 0).
    pub fn term(&self, index: u64) -> u64 {
        if index == 0 {
            0
        } else {
            self.terms[index as usize - 1]
        }
    }

    /// Hash of the log up to and including `index` (0 for the empty prefix).
    pub fn prefix(&self, index: u64) -> u64 {
        if index == 0 {
            0
        } else {
            self.prefix[index as usize - 1]
        }
    }
}

/// Compares a whole log, whose entries start after `offset`, with the view
/// built from Ready (slow; used rarely).
pub fn verify_view<'a>(
    view: &LogView,
    offset: u64,
    entries: impl Iterator<Item = Option<&'a Entry>>,
) -> Result<(), String> {
    if offset > view.len() {
        return Err(format!(
            "the log starts after {offset} but the view ends at {}",
            view.len()
        ));
    }
    let mut prev = view.prefix(offset);
    for (i, e) in entries.enumerate() {
        let index = offset + i as u64 + 1;
        let Some(e) = e else {
            return Err(format!("the core has no entry at {index}"));
        };
        prev = chain(prev, entry_hash(e));
        if index > view.len() || view.prefix(index) != prev {
            return Err(format!(
                "entry {index} differs from what the core reported through Ready"
            ));
        }
    }
    Ok(())
}
