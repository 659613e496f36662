//! Behaviour of the log store as the driver and an operator see it: what
//! comes back after a restart, what damage is repaired and what is refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::frame::{self, HEADER_LEN};
use super::segment::{self, FrameMeta};
use super::*;
use crate::types::EntryKind;

fn ents(first: u64, n: u64, term: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|index| Entry {
            term,
            index,
            kind: if index % 4 == 0 {
                EntryKind::Noop
            } else {
                EntryKind::Normal
            },
            data: Bytes::from(format!("entry {index} of term {term}")),
        })
        .collect()
}

fn opts(segment_bytes: u64) -> LogStoreOptions {
    LogStoreOptions { segment_bytes }
}

fn open(dir: &Path, segment_bytes: u64) -> (LogStore, Recovered) {
    LogStore::open(dir, opts(segment_bytes)).unwrap()
}

fn reopen_entries(dir: &Path) -> Vec<Entry> {
    open(dir, 64 << 20).1.entries
}

/// Appends each batch and syncs after it, as the driver does.
fn append_batches(store: &mut LogStore, batches: &[Vec<Entry>]) {
    for b in batches {
        store.append(b).unwrap();
        store.sync().unwrap();
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn seg_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(segment::file_name(first_index))
}

fn frames_of(store: &LogStore, segment: usize) -> Vec<FrameMeta> {
    store.segments[segment].frames.clone()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut buf = fs::read(path).unwrap();
    buf[offset as usize] ^= 0x20;
    fs::write(path, buf).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, String) {
    match LogStore::open(dir, LogStoreOptions::default()) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            let StoreError::Corrupt { path, offset, .. } = e else {
                unreachable!()
            };
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
            (path, offset, msg)
        }
        Err(other) => panic!("expected a corruption error, got {other}"),
        Ok((_, rec)) => panic!(
            "expected a corruption error, opened with {} entries",
            rec.entries.len()
        ),
    }
}

#[test]
fn empty_store_starts_at_index_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(dir.path(), 1024);
    assert_eq!(rec, Recovered::default());
    assert_eq!((store.first_index(), store.last_index()), (1, 0));
    assert!(files(dir.path()).is_empty());
}

#[test]
fn open_creates_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let (mut store, _) = open(&nested, 1024);
    append_batches(&mut store, &[ents(1, 2, 1)]);
    drop(store);
    assert_eq!(reopen_entries(&nested), ents(1, 2, 1));
}

#[test]
fn round_trip_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    let batches = [ents(1, 1, 1), ents(2, 5, 1), ents(7, 3, 2)];
    append_batches(&mut store, &batches);
    let hs = HardState {
        term: 2,
        vote: Some(3),
    };
    store.save_hard_state(hs).unwrap();
    assert_eq!(store.last_index(), 9);
    drop(store);

    let (store, rec) = open(dir.path(), 64 << 20);
    assert_eq!(rec.hard_state, hs);
    assert_eq!(rec.entries, batches.concat());
    assert_eq!((store.first_index(), store.last_index()), (1, 9));
    assert_eq!(files(dir.path()), ["00000000000000000001.seg", "hardstate"]);
}

#[test]
fn one_append_writes_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 100, 1), ents(101, 1, 1)]);
    let frames = frames_of(&store, 0);
    assert_eq!(frames.len(), 2);
    assert_eq!((frames[0].first_index, frames[0].last_index), (1, 100));
    let len = fs::metadata(seg_path(dir.path(), 1)).unwrap().len();
    assert_eq!(len, frames[1].end());
}

#[test]
fn rolls_into_segments_named_by_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 300);
    let batches: Vec<_> = (0..20).map(|i| ents(1 + 3 * i, 3, 1 + i / 5)).collect();
    append_batches(&mut store, &batches);
    let firsts: Vec<u64> = store.segments.iter().map(|s| s.first_index).collect();
    assert!(
        firsts.len() >= 4,
        "expected several segments, got {firsts:?}"
    );
    let expected: Vec<String> = firsts.iter().map(|&i| segment::file_name(i)).collect();
    assert_eq!(files(dir.path()), expected);
    for seg in &store.segments {
        // Rolled once past the limit: no segment holds a frame started
        // after it was full.
        let last = seg.frames.last().unwrap();
        assert!(last.offset < 300, "{seg:?}");
    }
    drop(store);

    let (mut store, rec) = open(dir.path(), 300);
    assert_eq!(rec.entries, batches.concat());
    append_batches(&mut store, &[ents(61, 2, 9)]);
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [batches.concat(), ents(61, 2, 9)].concat()
    );
}

#[test]
fn truncate_inside_a_frame_keeps_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 8, 1)]);
    let before = fs::metadata(seg_path(dir.path(), 1)).unwrap().len();

    store.truncate_from(6).unwrap();
    assert_eq!(store.last_index(), 5);
    let after = fs::metadata(seg_path(dir.path(), 1)).unwrap().len();
    assert!(after < before);
    assert_eq!(
        files(dir.path()),
        ["00000000000000000001.seg"],
        "no temporary file left"
    );
    // Durable on return: a reopen without sync sees the truncation.
    assert_eq!(reopen_entries(dir.path()), ents(1, 5, 1));

    append_batches(&mut store, &[ents(6, 3, 2)]);
    drop(store);
    let (store, rec) = open(dir.path(), 64 << 20);
    assert_eq!(rec.entries, [ents(1, 5, 1), ents(6, 3, 2)].concat());
    assert_eq!(store.last_index(), 8);
}

#[test]
fn truncate_at_a_frame_boundary_inside_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 3, 1), ents(4, 3, 1), ents(7, 3, 1)]);
    let cut = frames_of(&store, 0)[1].offset;

    store.truncate_from(4).unwrap();
    assert_eq!(store.last_index(), 3);
    assert_eq!(fs::metadata(seg_path(dir.path(), 1)).unwrap().len(), cut);

    append_batches(&mut store, &[ents(4, 1, 2)]);
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [ents(1, 3, 1), ents(4, 1, 2)].concat()
    );
}

#[test]
fn truncate_at_a_segment_boundary_removes_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Zero: every frame gets a segment of its own.
    let (mut store, _) = open(dir.path(), 0);
    let batches: Vec<_> = (0..4).map(|i| ents(1 + 3 * i, 3, 1)).collect();
    append_batches(&mut store, &batches);
    assert_eq!(files(dir.path()).len(), 4);

    store.truncate_from(7).unwrap();
    assert_eq!(store.last_index(), 6);
    assert_eq!(
        files(dir.path()),
        ["00000000000000000001.seg", "00000000000000000004.seg"]
    );

    append_batches(&mut store, &[ents(7, 2, 2)]);
    assert_eq!(files(dir.path()).len(), 3);
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [ents(1, 6, 1), ents(7, 2, 2)].concat()
    );
}

#[test]
fn truncate_inside_a_frame_of_an_earlier_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    let batches: Vec<_> = (0..5).map(|i| ents(1 + 4 * i, 4, 1)).collect();
    append_batches(&mut store, &batches);

    store.truncate_from(7).unwrap(); // inside the frame 5..=8 of segment 5
    assert_eq!(store.last_index(), 6);
    assert_eq!(
        files(dir.path()),
        ["00000000000000000001.seg", "00000000000000000005.seg"]
    );
    assert_eq!(reopen_entries(dir.path()), ents(1, 6, 1));

    append_batches(&mut store, &[ents(7, 3, 3), ents(10, 1, 3)]);
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [ents(1, 6, 1), ents(7, 4, 3)].concat()
    );
}

#[test]
fn truncate_everything_then_start_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 2, 1)]);

    store.truncate_from(5).unwrap(); // past the end: nothing to do
    assert_eq!(store.last_index(), 4);
    store.truncate_from(1).unwrap();
    assert_eq!(store.last_index(), 0);
    assert!(files(dir.path()).is_empty());

    append_batches(&mut store, &[ents(1, 1, 5)]);
    drop(store);
    assert_eq!(reopen_entries(dir.path()), ents(1, 1, 5));
}

#[test]
fn append_over_a_conflicting_suffix_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 5, 1)]);

    append_batches(&mut store, &[ents(3, 2, 2)]);
    assert_eq!(store.last_index(), 4);
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [ents(1, 2, 1), ents(3, 2, 2)].concat()
    );
}

#[test]
fn append_that_does_not_continue_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    assert!(matches!(
        store.append(&ents(2, 1, 1)),
        Err(StoreError::Gap {
            index: 2,
            last_index: 0
        })
    ));
    append_batches(&mut store, &[ents(1, 3, 1)]);
    assert!(matches!(
        store.append(&ents(5, 2, 1)),
        Err(StoreError::Gap {
            index: 5,
            last_index: 3
        })
    ));
    assert!(matches!(
        store.append(&ents(0, 2, 1)),
        Err(StoreError::BeforeStart {
            index: 0,
            first_index: 1
        })
    ));
    let mut holey = ents(4, 3, 1);
    holey[2].index = 9;
    assert!(matches!(
        store.append(&holey),
        Err(StoreError::NotContiguous {
            index: 9,
            expected: 6
        })
    ));
    store.append(&[]).unwrap();

    // Refused appends change nothing and leave the store usable.
    assert_eq!(store.last_index(), 3);
    append_batches(&mut store, &[ents(4, 1, 1)]);
    drop(store);
    assert_eq!(reopen_entries(dir.path()), ents(1, 4, 1));
}

/// Cuts the last frame at several points (inside the header, inside the
/// payload, one byte short): each is a torn tail, cut back to the last
/// whole frame, after which the store appends and reopens normally.
#[test]
fn torn_last_frame_is_cut() {
    for into_frame in [1, 5, HEADER_LEN as u64 + 3, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 64 << 20);
        append_batches(&mut store, &[ents(1, 2, 1), ents(3, 3, 1), ents(6, 4, 1)]);
        let last = frames_of(&store, 0)[2];
        drop(store);
        let path = seg_path(dir.path(), 1);
        let cut = if into_frame == 0 {
            last.end() - 1
        } else {
            last.offset + into_frame
        };
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let (mut store, rec) = open(dir.path(), 64 << 20);
        assert_eq!(rec.entries, ents(1, 5, 1), "cut at {cut}");
        assert_eq!(store.last_index(), 5);
        assert_eq!(fs::metadata(&path).unwrap().len(), last.offset);

        append_batches(&mut store, &[ents(6, 1, 2)]);
        drop(store);
        assert_eq!(
            reopen_entries(dir.path()),
            [ents(1, 5, 1), ents(6, 1, 2)].concat()
        );
    }
}

#[test]
fn zeros_or_garbage_after_the_last_frame_are_cut() {
    // Deterministic noise (an LCG): no magic, so nothing in it is a frame.
    let mut x: u32 = 12345;
    let noise: Vec<u8> = (0..3000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for tail in [
        vec![0u8; 4096],
        noise,
        b"\x32\x4a\xb5\xd1 half a frame".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 64 << 20);
        append_batches(&mut store, &[ents(1, 2, 1), ents(3, 3, 1)]);
        drop(store);
        let path = seg_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        append_bytes(&path, &tail);

        let (_, rec) = open(dir.path(), 64 << 20);
        assert_eq!(rec.entries, ents(1, 5, 1));
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
    }
}

#[test]
fn torn_first_frame_of_the_last_segment_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 2, 1), ents(5, 2, 1)]);
    drop(store);
    let last = seg_path(dir.path(), 5);
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(7)
        .unwrap();

    let (mut store, rec) = open(dir.path(), 0);
    assert_eq!(rec.entries, ents(1, 4, 1));
    assert!(!last.exists(), "the empty last segment is removed");
    append_batches(&mut store, &[ents(5, 1, 2)]);
    assert!(last.exists());
    drop(store);
    assert_eq!(
        reopen_entries(dir.path()),
        [ents(1, 4, 1), ents(5, 1, 2)].concat()
    );
}

#[test]
fn damaged_frame_followed_by_a_valid_one_is_corrupt() {
    // A flipped payload byte, and a flipped length field.
    for into_frame in [HEADER_LEN as u64 + 10, 5] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 64 << 20);
        append_batches(&mut store, &[ents(1, 2, 1), ents(3, 3, 1), ents(6, 4, 1)]);
        let bad = frames_of(&store, 0)[1];
        let good = frames_of(&store, 0)[2];
        drop(store);
        let path = seg_path(dir.path(), 1);
        flip_byte(&path, bad.offset + into_frame);
        let len = fs::metadata(&path).unwrap().len();

        let (at, offset, msg) = expect_corrupt(dir.path());
        assert_eq!(at, path);
        assert_eq!(offset, bad.offset);
        assert!(
            msg.contains(&format!("valid frame follows at offset {}", good.offset)),
            "{msg}"
        );
        // Nothing was cut: the damage is left for an operator to inspect.
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
    }
}

#[test]
fn damage_in_a_segment_before_the_last_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 2, 1), ents(5, 2, 1)]);
    drop(store);
    // The last byte of the middle segment's only frame: nothing follows it
    // in that segment, yet it cannot be a torn tail.
    let middle = seg_path(dir.path(), 3);
    let len = fs::metadata(&middle).unwrap().len();
    flip_byte(&middle, len - 1);

    let (at, offset, msg) = expect_corrupt(dir.path());
    assert_eq!((at, offset), (middle, 0));
    assert!(msg.contains("not the last"), "{msg}");
}

#[test]
fn missing_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 2, 1), ents(5, 2, 1)]);
    drop(store);
    fs::remove_file(seg_path(dir.path(), 3)).unwrap();

    let (at, _, msg) = expect_corrupt(dir.path());
    assert_eq!(at, seg_path(dir.path(), 5));
    assert!(msg.contains("continues at 3"), "{msg}");
}

#[test]
fn missing_first_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 0);
    append_batches(&mut store, &[ents(1, 2, 1), ents(3, 2, 1)]);
    drop(store);
    fs::remove_file(seg_path(dir.path(), 1)).unwrap();
    let (at, offset, _) = expect_corrupt(dir.path());
    assert_eq!((at, offset), (seg_path(dir.path(), 3), 0));
}

#[test]
fn frame_with_a_good_crc_but_wrong_indices_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 2, 1)]);
    let end = store.segments[0].size;
    drop(store);
    let path = seg_path(dir.path(), 1);
    // A whole, checksummed frame that skips index 3: written wrong, not torn.
    append_bytes(&path, &frame::encode(&ents(4, 1, 1)).unwrap());

    let (at, offset, msg) = expect_corrupt(dir.path());
    assert_eq!((at, offset), (path, end));
    assert!(msg.contains("index 4, expected 3"), "{msg}");
}

#[test]
fn leftover_segment_rewrite_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 4, 1)]);
    drop(store);
    // A truncation that crashed before its rename.
    let tmp = dir.path().join("00000000000000000001.seg.tmp");
    fs::write(&tmp, b"half a rewrite").unwrap();

    assert_eq!(reopen_entries(dir.path()), ents(1, 4, 1));
    assert!(!tmp.exists());
}

#[test]
fn hard_state_round_trips_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    store
        .save_hard_state(HardState {
            term: 1,
            vote: Some(1),
        })
        .unwrap();
    let hs = HardState {
        term: 4,
        vote: None,
    };
    store.save_hard_state(hs).unwrap();
    assert_eq!(files(dir.path()), ["hardstate"]);
    drop(store);
    assert_eq!(open(dir.path(), 64 << 20).1.hard_state, hs);

    // A crash after writing the temporary file but before the rename: the
    // old value stands and the leftover is removed.
    let tmp = dir.path().join(hard_state::TMP_FILE_NAME);
    fs::write(&tmp, b"torn").unwrap();
    let (mut store, rec) = open(dir.path(), 64 << 20);
    assert_eq!(rec.hard_state, hs);
    assert!(!tmp.exists());

    let newer = HardState {
        term: 5,
        vote: Some(2),
    };
    store.save_hard_state(newer).unwrap();
    drop(store);
    assert_eq!(open(dir.path(), 64 << 20).1.hard_state, newer);
}

#[test]
fn damaged_hard_state_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    store
        .save_hard_state(HardState {
            term: 9,
            vote: Some(2),
        })
        .unwrap();
    drop(store);
    let path = dir.path().join(hard_state::FILE_NAME);
    flip_byte(&path, 6);

    let (at, offset, msg) = expect_corrupt(dir.path());
    assert_eq!((at, offset), (path, 0));
    assert!(msg.contains("CRC"), "{msg}");
}

#[test]
fn large_entries_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 1 << 20);
    let big: Vec<Entry> = (1..=3)
        .map(|index| Entry {
            term: 1,
            index,
            kind: EntryKind::Config,
            data: Bytes::from(vec![index as u8; 700 << 10]),
        })
        .collect();
    append_batches(&mut store, &[big[..1].to_vec(), big[1..].to_vec()]);
    drop(store);
    assert_eq!(reopen_entries(dir.path()), big);
}

#[test]
fn store_refuses_work_after_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), 64 << 20);
    append_batches(&mut store, &[ents(1, 4, 1)]);
    // Pull the segment out from under the store: the rewrite for a cut
    // inside its frame cannot read it.
    let path = seg_path(dir.path(), 1);
    fs::remove_file(&path).unwrap();

    let err = store.truncate_from(3).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(matches!(
        store.append(&ents(3, 1, 2)),
        Err(StoreError::Failed)
    ));
    assert!(matches!(store.sync(), Err(StoreError::Failed)));
    assert!(matches!(
        store.save_hard_state(HardState::default()),
        Err(StoreError::Failed)
    ));
}
