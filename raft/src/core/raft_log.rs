//! The in-memory view of the replicated log, with the indexes that say how
//! far it is committed, durable and handed to the state machine.

use crate::types::{Entry, Membership, SnapshotMeta};

/// The log as the core sees it. Everything appended here is eventually
/// handed to storage through [`super::Ready::entries`].
#[derive(Debug, Default)]
pub(crate) struct RaftLog {
    /// Entries from index `snapshot.index + 1` on.
    entries: Vec<Entry>,
    /// The snapshot the log continues: everything up to its index was
    /// compacted away (index 0 for a log that was never compacted).
    snapshot: SnapshotMeta,
    /// Highest index known committed.
    pub(crate) committed: u64,
    /// Highest index known durable on this node (the log up to it is on disk).
    pub(crate) persisted: u64,
    /// First index not yet handed to storage.
    pub(crate) unstable_from: u64,
    /// Highest index handed to the state machine.
    pub(crate) applied: u64,
}

impl RaftLog {
    /// A log recovered from disk: everything in it is durable. `entries`
    /// follow `snapshot` (the caller checked that they are contiguous).
    pub(crate) fn recovered(snapshot: SnapshotMeta, entries: Vec<Entry>, applied: u64) -> Self {
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        RaftLog {
            entries,
            snapshot,
            committed: applied,
            persisted: last,
            unstable_from: last + 1,
            applied,
        }
    }

    /// Index of the last compacted entry (0 if none).
    pub(crate) fn offset(&self) -> u64 {
        self.snapshot.index
    }

    /// The snapshot the log continues.
    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.offset() + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// Term of the entry at `index`: the snapshot's term at its index
    /// (`Some(0)` for index 0 of a log never compacted), `None` when the
    /// entry is compacted away or beyond the end.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.offset() {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset() {
            return None;
        }
        self.entries.get((index - self.offset() - 1) as usize)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as
    /// up to date as this one (Raft §5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Whether a log ending at (`last_index`, `last_term`) is strictly more
    /// up to date than this one: it holds an entry this log lacks.
    pub(crate) fn is_ahead_of_us(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index > self.last_index())
    }

    /// Appends one entry at the end.
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log must stay contiguous"
        );
        self.entries.push(entry);
    }

    /// Appends `entries` that follow `prev_index`, truncating only from the
    /// first entry that really conflicts; a matching suffix is kept.
    /// Returns the index of the last entry of the request, or, changing
    /// nothing, `Err(index)` of an entry that conflicts at or below the
    /// commit index: a committed entry never changes, so such a request
    /// comes from a broken or malicious peer and is refused.
    pub(crate) fn append_after(&mut self, prev_index: u64, entries: &[Entry]) -> Result<u64, u64> {
        // `prev_index` comes from the leader: saturate rather than trust it.
        let last_new = prev_index.saturating_add(entries.len() as u64);
        let first_conflict = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term));
        if let Some(pos) = first_conflict {
            let from = entries[pos].index;
            if from <= self.committed {
                return Err(from);
            }
            self.truncate_from(from);
            self.entries.extend_from_slice(&entries[pos..]);
        }
        Ok(last_new)
    }

    /// Drops every entry at or after `from`.
    fn truncate_from(&mut self, from: u64) {
        let keep = from.saturating_sub(self.offset() + 1) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(from - 1);
        self.unstable_from = self.unstable_from.min(from);
    }

    /// Entries in `[from, to]`, at most `max_bytes` of them (at least one).
    pub(crate) fn slice(&self, from: u64, to: u64, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i <= to {
            let Some(e) = self.entry(i) else { break };
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Entries not yet handed to storage; marks them handed.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let last = self.last_index();
        if self.unstable_from > last {
            return Vec::new();
        }
        let out = self.slice(self.unstable_from, last, usize::MAX);
        self.unstable_from = last + 1;
        out
    }

    /// Storage reports the log durable up to `index` whose entry had `term`.
    /// Ignored when that entry has since been replaced.
    pub(crate) fn persisted_to(&mut self, index: u64, term: u64) {
        if index > self.persisted && index < self.unstable_from && self.term(index) == Some(term) {
            self.persisted = index;
        }
    }

    /// Committed and durable entries not yet handed to the state machine.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let upto = self.committed.min(self.persisted);
        if upto <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, upto, usize::MAX);
        self.applied = upto;
        out
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.committed.min(self.persisted) > self.applied
    }

    /// The last index at or below `index` whose entry's term is at most
    /// `term` (the log's start if none). Terms never decrease along a log,
    /// so every entry after it, up to `index`, has a higher term.
    pub(crate) fn last_index_with_term_at_most(&self, index: u64, term: u64) -> u64 {
        let upto = index.min(self.last_index()).saturating_sub(self.offset()) as usize;
        self.offset() + self.entries[..upto].partition_point(|e| e.term <= term) as u64
    }

    /// Forgets the entries up to `index`, which a durable snapshot of the
    /// state machine now covers, and returns that snapshot's metadata.
    /// `index` must be applied, hence durable, and above the offset.
    pub(crate) fn compact(&mut self, index: u64, membership: Membership) -> SnapshotMeta {
        debug_assert!(self.offset() < index && index <= self.applied);
        let term = self
            .term(index)
            .expect("an applied index above the offset is in the log");
        self.entries.drain(..(index - self.offset()) as usize);
        self.snapshot = SnapshotMeta {
            index,
            term,
            membership,
        };
        self.snapshot.clone()
    }

    /// Replaces the whole log with `snapshot`, which is newer than anything
    /// committed here: the state machine is restored from it, so it counts
    /// as committed, applied and (once the Ready that carries it is
    /// written) durable.
    pub(crate) fn restore(&mut self, snapshot: SnapshotMeta) {
        debug_assert!(snapshot.index > self.committed);
        let index = snapshot.index;
        self.entries.clear();
        self.snapshot = snapshot;
        self.committed = index;
        self.applied = index;
        self.persisted = index;
        self.unstable_from = index.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    #[test]
    fn matching_suffix_is_not_truncated() {
        let mut log =
            RaftLog::recovered(SnapshotMeta::default(), vec![e(1, 1), e(2, 1), e(3, 2)], 0);
        // A delayed, shorter AppendEntries must not cut entry 3.
        let last = log.append_after(0, &[e(1, 1), e(2, 1)]);
        assert_eq!(last, Ok(2));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.persisted, 3);
    }

    #[test]
    fn conflict_truncates_from_first_conflict_only() {
        let mut log =
            RaftLog::recovered(SnapshotMeta::default(), vec![e(1, 1), e(2, 1), e(3, 1)], 0);
        assert_eq!(log.append_after(1, &[e(2, 1), e(3, 2), e(4, 2)]), Ok(4));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.persisted, 2);
        assert_eq!(log.unstable_from, 3);
        assert_eq!(log.take_unstable().len(), 2);
    }

    #[test]
    fn conflict_with_a_committed_entry_is_refused_and_changes_nothing() {
        let mut log =
            RaftLog::recovered(SnapshotMeta::default(), vec![e(1, 1), e(2, 1), e(3, 1)], 0);
        log.committed = 2;
        assert_eq!(log.append_after(1, &[e(2, 2), e(3, 2)]), Err(2));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.last_index(), 3);
    }

    #[test]
    fn last_index_with_term_at_most_skips_higher_terms() {
        let log = RaftLog::recovered(
            SnapshotMeta::default(),
            vec![e(1, 1), e(2, 1), e(3, 3), e(4, 5), e(5, 5), e(6, 6)],
            0,
        );
        assert_eq!(log.last_index_with_term_at_most(6, 5), 5);
        assert_eq!(log.last_index_with_term_at_most(6, 4), 3);
        assert_eq!(log.last_index_with_term_at_most(4, 2), 2);
        assert_eq!(log.last_index_with_term_at_most(2, 9), 2);
        assert_eq!(log.last_index_with_term_at_most(99, 9), 6);
        assert_eq!(log.last_index_with_term_at_most(6, 0), 0);
    }

    #[test]
    fn a_compacted_log_answers_the_snapshot_term_at_its_offset() {
        let mut log = RaftLog::recovered(
            SnapshotMeta::default(),
            vec![e(1, 1), e(2, 1), e(3, 2), e(4, 2)],
            3,
        );
        let meta = log.compact(3, Membership::from_voters(&[1, 2, 3]));
        assert_eq!((meta.index, meta.term), (3, 2));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None, "compacted");
        assert_eq!(log.term(0), None, "compacted");
        assert_eq!(log.entry(4).map(|x| x.term), Some(2));
        assert_eq!(log.last_index(), 4);
        // A conflicting probe below the offset is answered from the offset.
        assert_eq!(log.last_index_with_term_at_most(2, 1), 3);
        let mut empty = RaftLog::recovered(meta, Vec::new(), 3);
        assert_eq!((empty.last_index(), empty.last_term()), (3, 2));
        assert_eq!(empty.append_after(3, &[e(4, 3)]), Ok(4));
        assert_eq!(empty.take_unstable().len(), 1);
    }

    #[test]
    fn restore_replaces_the_log_and_never_hands_out_what_it_covers() {
        let mut log = RaftLog::recovered(SnapshotMeta::default(), vec![e(1, 1), e(2, 1)], 1);
        log.committed = 1;
        log.restore(SnapshotMeta {
            index: 10,
            term: 3,
            membership: Membership::from_voters(&[1]),
        });
        assert_eq!((log.last_index(), log.last_term()), (10, 3));
        assert_eq!((log.committed, log.applied, log.persisted), (10, 10, 10));
        assert!(log.take_unstable().is_empty());
        assert!(log.take_committed().is_empty());
        assert_eq!(log.entry(2), None);
    }

    #[test]
    fn committed_entries_wait_for_durability() {
        let mut log = RaftLog::recovered(SnapshotMeta::default(), vec![e(1, 1)], 0);
        log.push(e(2, 1));
        log.committed = 2;
        assert_eq!(log.take_committed().len(), 1);
        log.take_unstable();
        assert!(!log.has_committed_to_apply());
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed()[0].index, 2);
    }
}
