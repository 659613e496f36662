//! Snapshots in the log store: compaction, installing a leader's snapshot,
//! and recovery after a crash at every step of either (before the rename of
//! the metadata, after it, part way through deleting segments).

use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::types::EntryKind;

fn ents(first: u64, n: u64, term: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(format!("entry {index} of term {term}")),
        })
        .collect()
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        membership: crate::types::Membership::from_voters(&[1, 2, 3]),
    }
}

/// One segment per batch of 10: 1..=10, 11..=20, … up to `last`.
fn store_with_segments(dir: &Path, last: u64, term: u64) -> LogStore {
    let (mut store, _) = LogStore::open(dir, LogStoreOptions { segment_bytes: 1 }).unwrap();
    for first in (1..=last).step_by(10) {
        store.append(&ents(first, 10, term)).unwrap();
        store.sync().unwrap();
    }
    store
}

fn reopen(dir: &Path) -> Recovered {
    LogStore::open(dir, LogStoreOptions { segment_bytes: 1 })
        .unwrap()
        .1
}

fn segment_starts(dir: &Path) -> Vec<u64> {
    let mut starts: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|d| segment::parse_file_name(d.unwrap().file_name().to_str()?))
        .collect();
    starts.sort_unstable();
    starts
}

fn indexes(entries: &[Entry]) -> (u64, u64) {
    (
        entries.first().map_or(0, |e| e.index),
        entries.last().map_or(0, |e| e.index),
    )
}

#[test]
fn compaction_deletes_covered_segments_and_recovery_starts_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 100, 1);
    store.save_snapshot(&meta(35, 1)).unwrap();
    assert_eq!(store.first_index(), 36);
    assert_eq!(segment_starts(dir.path()), vec![31, 41, 51, 61, 71, 81, 91]);
    // The log goes on as before.
    store.append(&ents(101, 5, 2)).unwrap();
    store.sync().unwrap();
    store.truncate_from(103).unwrap();
    assert!(matches!(
        store.append(&ents(30, 1, 2)),
        Err(StoreError::BeforeStart {
            index: 30,
            first_index: 36
        })
    ));
    drop(store);

    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, meta(35, 1));
    assert_eq!(indexes(&rec.entries), (36, 102));
    assert_eq!(rec.entries[0], ents(36, 1, 1)[0]);
}

#[test]
fn a_snapshot_at_the_last_index_empties_the_log_and_appends_go_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 30, 1);
    store.save_snapshot(&meta(30, 1)).unwrap();
    assert!(segment_starts(dir.path()).is_empty());
    assert_eq!((store.first_index(), store.last_index()), (31, 30));
    store.append(&ents(31, 3, 2)).unwrap();
    store.sync().unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert_eq!(indexes(&rec.entries), (31, 33));
    assert_eq!(segment_starts(dir.path()), vec![31]);
}

#[test]
fn a_snapshot_beyond_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 20, 1);
    assert!(matches!(
        store.save_snapshot(&meta(25, 1)),
        Err(StoreError::Gap { .. })
    ));
}

#[test]
fn crash_before_the_metadata_rename_keeps_the_old_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 50, 1);
    store.save_snapshot(&meta(15, 1)).unwrap();
    drop(store);
    // A newer metadata file was being written (perhaps torn) when the
    // power went.
    fs::write(dir.path().join(snapshot_meta::TMP_FILE_NAME), b"half").unwrap();
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, meta(15, 1));
    assert_eq!(indexes(&rec.entries), (16, 50));
    assert!(!dir.path().join(snapshot_meta::TMP_FILE_NAME).exists());
}

#[test]
fn crash_after_the_rename_before_any_delete_finishes_the_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_segments(dir.path(), 50, 1);
    snapshot_meta::save(dir.path(), &store.dir_file, &meta(35, 1)).unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, meta(35, 1));
    assert_eq!(indexes(&rec.entries), (36, 50));
    assert_eq!(segment_starts(dir.path()), vec![31, 41]);
}

#[test]
fn crash_part_way_through_the_deletes_finishes_the_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_segments(dir.path(), 50, 1);
    snapshot_meta::save(dir.path(), &store.dir_file, &meta(35, 1)).unwrap();
    // Oldest first: segment 1 went, 11 and 21 did not.
    fs::remove_file(&store.segments[0].path).unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert_eq!(indexes(&rec.entries), (36, 50));
    assert_eq!(segment_starts(dir.path()), vec![31, 41]);
}

#[test]
fn a_missing_segment_after_the_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 50, 1);
    store.save_snapshot(&meta(15, 1)).unwrap();
    let lost = store.segments[0].path.clone();
    drop(store);
    fs::remove_file(lost).unwrap();
    assert!(matches!(
        LogStore::open(dir.path(), LogStoreOptions::default()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn installing_a_snapshot_replaces_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_segments(dir.path(), 50, 1);
    store.install_snapshot(&meta(500, 3)).unwrap();
    assert!(segment_starts(dir.path()).is_empty());
    assert_eq!((store.first_index(), store.last_index()), (501, 500));
    assert!(matches!(
        store.append(&ents(502, 1, 3)),
        Err(StoreError::Gap { .. })
    ));
    store.append(&ents(501, 2, 3)).unwrap();
    store.sync().unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, meta(500, 3));
    assert_eq!(indexes(&rec.entries), (501, 502));
}

#[test]
fn crash_after_installing_the_metadata_drops_a_log_that_disagrees_with_it() {
    // The old log holds index 30 with term 1; the leader's snapshot says
    // term 2 there, so everything after it is a stale suffix.
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_segments(dir.path(), 50, 1);
    snapshot_meta::save(dir.path(), &store.dir_file, &meta(30, 2)).unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, meta(30, 2));
    assert!(rec.entries.is_empty());
    assert!(segment_starts(dir.path()).is_empty());
}

#[test]
fn crash_after_installing_the_metadata_drops_a_log_shorter_than_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_segments(dir.path(), 50, 1);
    snapshot_meta::save(dir.path(), &store.dir_file, &meta(80, 2)).unwrap();
    // Newest first: 41 went before the crash.
    fs::remove_file(&store.segments[4].path).unwrap();
    drop(store);
    let rec = reopen(dir.path());
    assert!(rec.entries.is_empty());
    assert!(segment_starts(dir.path()).is_empty());
    let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
    store.append(&ents(81, 1, 2)).unwrap();
    store.sync().unwrap();
}
