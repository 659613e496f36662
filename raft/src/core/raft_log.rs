//! The in-memory view of the replicated log, with the indexes that say how
//! far it is committed, durable and handed to the state machine.

use crate::types::Entry;

/// The log as the core sees it. Everything appended here is eventually
/// handed to storage through [`super::Ready::entries`].
#[derive(Debug, Default)]
pub(crate) struct RaftLog {
    /// Entries from index `offset + 1` on.
    entries: Vec<Entry>,
    /// Index just before `entries[0]` (0 until compaction exists).
    offset: u64,
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
    /// A log recovered from disk: everything in it is durable.
    pub(crate) fn recovered(entries: Vec<Entry>, applied: u64) -> Self {
        let last = entries.last().map_or(0, |e| e.index);
        RaftLog {
            entries,
            offset: 0,
            committed: applied,
            persisted: last,
            unstable_from: last + 1,
            applied,
        }
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// Term of the entry at `index`; `Some(0)` for index 0, `None` when absent.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(0);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as
    /// up to date as this one (Raft §5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
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
    /// Returns the index of the last entry of the request.
    pub(crate) fn append_after(&mut self, prev_index: u64, entries: &[Entry]) -> u64 {
        let last_new = prev_index + entries.len() as u64;
        let first_conflict = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term));
        if let Some(pos) = first_conflict {
            let from = entries[pos].index;
            assert!(
                from > self.committed,
                "conflicting entry at {from} is at or below commit {} — the leader's log disagrees with a committed entry",
                self.committed
            );
            self.truncate_from(from);
            self.entries.extend_from_slice(&entries[pos..]);
        }
        last_new
    }

    /// Drops every entry at or after `from`.
    fn truncate_from(&mut self, from: u64) {
        let keep = from.saturating_sub(self.offset + 1) as usize;
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

    /// First index of the run of entries with `term` that contains `index`.
    pub(crate) fn first_index_of_term(&self, index: u64, term: u64) -> u64 {
        let mut i = index;
        while i > self.offset + 1 && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Last index whose entry has `term`, if the log has any.
    pub(crate) fn last_index_of_term(&self, term: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term <= term)
            .filter(|e| e.term == term)
            .map(|e| e.index)
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
        let mut log = RaftLog::recovered(vec![e(1, 1), e(2, 1), e(3, 2)], 0);
        // A delayed, shorter AppendEntries must not cut entry 3.
        let last = log.append_after(0, &[e(1, 1), e(2, 1)]);
        assert_eq!(last, 2);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.persisted, 3);
    }

    #[test]
    fn conflict_truncates_from_first_conflict_only() {
        let mut log = RaftLog::recovered(vec![e(1, 1), e(2, 1), e(3, 1)], 0);
        log.append_after(1, &[e(2, 1), e(3, 2), e(4, 2)]);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.persisted, 2);
        assert_eq!(log.unstable_from, 3);
        assert_eq!(log.take_unstable().len(), 2);
    }

    #[test]
    fn committed_entries_wait_for_durability() {
        let mut log = RaftLog::recovered(vec![e(1, 1)], 0);
        log.push(e(2, 1));
        log.committed = 2;
        assert_eq!(log.take_committed().len(), 1);
        log.take_unstable();
        assert!(!log.has_committed_to_apply());
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed()[0].index, 2);
    }
}
