//! The durable Raft log: segment files of checksummed frames, plus the hard
//! state (term and vote) in a file of its own.
//!
//! # On disk
//!
//! A store is a directory holding `hardstate` and segment files named by the
//! index of their first entry, zero-padded so they sort
//! (`00000000000000000001.seg`). Each [`LogStore::append`] writes exactly one
//! frame holding the whole batch (see `frame.rs` for the layout); a segment
//! is closed and a new one started once it passes
//! [`LogStoreOptions::segment_bytes`].
//!
//! # Recovery
//!
//! The driver syncs after each append before writing the next, and a closed
//! segment is synced before the next one is created, so a crash can damage
//! only the last frame of the last segment. On open, a frame that fails its
//! magic, length or CRC check is therefore a torn tail if it is in the last
//! segment and no valid frame follows it: the file is cut there. Anything
//! else — a bad frame in an earlier segment, a bad frame followed by a good
//! one, a gap in the indices — is [`StoreError::Corrupt`], and the store
//! refuses to open rather than drop entries that may have been acknowledged.
//!
//! # Snapshots and compaction
//!
//! The `snapshot` file records the snapshot the log starts after (its
//! index, term and membership; the snapshot's data belongs to the driver).
//! [`LogStore::save_snapshot`] records a snapshot of this node's own state
//! machine and deletes the segments it wholly covers, oldest first;
//! [`LogStore::install_snapshot`] records one received from the leader and
//! deletes every segment, newest first. Either way the metadata is durable
//! before any segment goes, and the directory is fsynced after. Recovery
//! finishes whatever a crash interrupted: it deletes segments the snapshot
//! covers, skips entries at or below its index in the first segment left,
//! and drops the whole log if it disagrees with the snapshot at its index
//! (the log a received snapshot replaced).
//!
//! # Truncation
//!
//! Raft truncates a conflicting suffix only of entries that were never
//! committed, but the entries *before* the cut may be committed and must
//! survive a crash at any point. Truncation is therefore made durable before
//! it returns, and a cut inside a frame rewrites the segment's surviving
//! prefix into a temporary file that is renamed over the segment, instead of
//! cutting the frame in place and rewriting it (which would leave a window
//! in which the kept entries exist nowhere on disk).

mod atomic_file;
mod error;
mod frame;
mod hard_state;
mod segment;
mod snapshot_meta;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use self::error::io_err;
pub use self::error::StoreError;
use self::segment::Segment;
use crate::types::{Entry, HardState, SnapshotMeta};

/// Settings of a [`LogStore`].
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    /// Once the current segment holds at least this many bytes, the next
    /// append starts a new segment. A single frame is never split, so a
    /// segment can exceed this by up to one batch.
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    /// 64 MiB segments, as etcd's WAL uses.
    fn default() -> Self {
        LogStoreOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// What [`LogStore::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last saved term and vote (the default if none was ever saved).
    pub hard_state: HardState,
    /// The snapshot the log starts after (index 0 if none).
    pub snapshot: SnapshotMeta,
    /// Every entry in the log, contiguous, starting at `snapshot.index + 1`
    /// (or empty).
    pub entries: Vec<Entry>,
}

/// The durable log of one Raft node. Not thread-safe by itself: the driver
/// owns it from one blocking thread. Two processes must not open the same
/// directory.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    /// The directory, open so that it can be fsynced after a segment file is
    /// created, renamed or removed.
    dir_file: File,
    opts: LogStoreOptions,
    /// The snapshot the log starts after. The first segment may still hold
    /// entries at or below its index; they are not part of the log.
    snapshot: SnapshotMeta,
    /// Every segment in index order; only the last one takes appends.
    segments: Vec<Segment>,
    /// Write handle of the last segment (`Some` exactly when there is one).
    active: Option<File>,
    /// The last segment has writes that are not yet fdatasynced.
    active_dirty: bool,
    /// A segment was created or removed since the directory was last fsynced.
    dir_dirty: bool,
    /// A write or sync failed: what is on disk is unknown, refuse to go on.
    failed: bool,
}

/// The index of the first entry of a log that was never compacted.
const FIRST_INDEX: u64 = 1;

impl LogStore {
    /// Opens or creates the store in `dir`, and returns it with the hard
    /// state and every entry found there.
    ///
    /// Cuts a torn tail (a damaged last frame of the last segment with
    /// nothing valid after it) and logs a warning; refuses any other damage
    /// with [`StoreError::Corrupt`], naming the file and offset.
    pub fn open(dir: &Path, opts: LogStoreOptions) -> Result<(LogStore, Recovered), StoreError> {
        create_dir_durably(dir)?;
        let dir_file = File::open(dir).map_err(io_err("open directory", dir))?;
        let hard_state = hard_state::load(dir)?;
        let snapshot = snapshot_meta::load(dir)?;

        let mut names = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let dirent = dirent.map_err(io_err("list", dir))?;
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(first_index) = segment::parse_file_name(&name) {
                names.push((first_index, dirent.path()));
            } else if segment::is_tmp_file_name(&name) {
                // A truncation that crashed before its rename: the segment
                // it was replacing is intact.
                let path = dirent.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                tracing::info!(path = %path.display(), "removed unfinished segment rewrite");
            }
        }
        names.sort_unstable();

        let mut dir_dirty = false;
        let mut segments = Vec::with_capacity(names.len());
        let mut entries = Vec::new();
        let mut next = names
            .first()
            .map_or(FIRST_INDEX, |(first, _)| (*first).min(snapshot.index + 1));
        let count = names.len();
        for (i, (first_index, path)) in names.into_iter().enumerate() {
            if first_index != next {
                return Err(StoreError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at index {first_index} but the log continues at \
                         {next}: a segment is missing or misnamed"
                    ),
                });
            }
            let is_last = i + 1 == count;
            let (seg, found) = segment::recover(&path, first_index, is_last)?;
            if seg.frames.is_empty() {
                if !is_last {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: 0,
                        reason: "empty segment before the last one".to_string(),
                    });
                }
                // Created by a roll that crashed before its first frame was
                // durable (or whose only frame was torn).
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                tracing::warn!(path = %path.display(), "removed empty last segment");
                dir_dirty = true;
                continue;
            }
            next = seg.last_index().unwrap_or(next - 1) + 1;
            entries.extend(found);
            segments.push(seg);
        }

        if snapshot.index > 0 {
            dir_dirty |= finish_snapshot(&snapshot, &mut segments, &mut entries)?;
        }

        let active = segments.last().map(segment::open_for_append).transpose()?;
        let mut store = LogStore {
            dir: dir.to_path_buf(),
            dir_file,
            opts,
            snapshot: snapshot.clone(),
            segments,
            active,
            active_dirty: false,
            dir_dirty,
            failed: false,
        };
        store.sync()?;
        tracing::info!(
            dir = %dir.display(),
            segments = store.segments.len(),
            snapshot = store.snapshot.index,
            last_index = store.last_index(),
            term = hard_state.term,
            "opened log store"
        );
        Ok((
            store,
            Recovered {
                hard_state,
                snapshot,
                entries,
            },
        ))
    }

    /// Appends `entries`, which must have consecutive indices starting at or
    /// before `last_index() + 1`. Entries at and after `entries[0].index`
    /// that are already in the log (a conflicting suffix) are truncated
    /// first. The batch is written as one frame with one `write`; it is not
    /// durable until [`LogStore::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.first_index() {
            return Err(StoreError::BeforeStart {
                index: first.index,
                first_index: self.first_index(),
            });
        }
        if first.index > self.last_index() + 1 {
            return Err(StoreError::Gap {
                index: first.index,
                last_index: self.last_index(),
            });
        }
        for (e, expected) in entries.iter().zip(first.index..) {
            if e.index != expected {
                return Err(StoreError::NotContiguous {
                    index: e.index,
                    expected,
                });
            }
        }
        let buf = frame::encode(entries).map_err(|bytes| StoreError::TooLarge { bytes })?;
        let last_index = first.index + entries.len() as u64 - 1;
        self.fail_on_error(|s| s.write_frame(&buf, first.index, last_index))
    }

    /// Removes every entry with index `from` or later (nothing if `from` is
    /// past the end). Durable on return: a later append then never lands
    /// after stale bytes that a crash could resurrect.
    pub fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        self.check_usable()?;
        if from > self.last_index() {
            return Ok(());
        }
        let from = from.max(self.first_index());
        self.fail_on_error(|s| s.truncate(from))
    }

    /// Records that a durable snapshot of this node's state machine covers
    /// the log up to `meta.index`, which must be in the log, and deletes the
    /// segments it wholly covers. Durable on return. A crash part way
    /// leaves segments that the next [`LogStore::open`] deletes.
    pub fn save_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        self.check_usable()?;
        if meta.index <= self.snapshot.index {
            return Ok(());
        }
        if meta.index > self.last_index() {
            return Err(StoreError::Gap {
                index: meta.index,
                last_index: self.last_index(),
            });
        }
        self.fail_on_error(|s| {
            snapshot_meta::save(&s.dir, &s.dir_file, meta)?;
            s.snapshot = meta.clone();
            s.remove_covered_segments()
        })
    }

    /// Replaces the whole log with a snapshot received from the leader: the
    /// log continues at `meta.index + 1`. Durable on return.
    pub fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        self.check_usable()?;
        self.fail_on_error(|s| {
            snapshot_meta::save(&s.dir, &s.dir_file, meta)?;
            s.snapshot = meta.clone();
            s.active = None;
            s.active_dirty = false;
            // Newest first: a crash in between leaves a prefix of the old
            // log, which recovery recognises and drops.
            while let Some(seg) = s.segments.pop() {
                fs::remove_file(&seg.path).map_err(io_err("remove", &seg.path))?;
                s.dir_dirty = true;
            }
            s.sync_inner()
        })
    }

    /// The snapshot the log starts after (index 0 if none).
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Deletes, oldest first, the segments whose entries are all at or
    /// below the snapshot's index, then fsyncs the directory.
    fn remove_covered_segments(&mut self) -> Result<(), StoreError> {
        let covered = |segs: &[Segment], i: usize| match segs.get(i + 1) {
            Some(next) => next.first_index <= self.snapshot.index + 1,
            None => segs[i]
                .last_index()
                .is_none_or(|last| last <= self.snapshot.index),
        };
        let mut removed = 0;
        while removed < self.segments.len() && covered(&self.segments, removed) {
            let path = &self.segments[removed].path;
            fs::remove_file(path).map_err(io_err("remove", path))?;
            tracing::debug!(path = %path.display(), snapshot = self.snapshot.index, "removed compacted segment");
            removed += 1;
        }
        if removed == self.segments.len() && removed > 0 {
            self.active = None;
            self.active_dirty = false;
        }
        self.segments.drain(..removed);
        if removed > 0 {
            self.dir_dirty = true;
        }
        self.sync_inner()
    }

    /// Makes every append and truncation so far durable: fdatasync of the
    /// segment written to, and fsync of the directory if a segment file was
    /// created or removed since the last sync.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check_usable()?;
        self.fail_on_error(Self::sync_inner)
    }

    /// Durably and atomically replaces the term and vote: written to
    /// `hardstate.tmp` with a CRC, fsynced, renamed over `hardstate`, and the
    /// directory fsynced. Durable on return.
    pub fn save_hard_state(&mut self, hs: HardState) -> Result<(), StoreError> {
        self.check_usable()?;
        self.fail_on_error(|s| hard_state::save(&s.dir, &s.dir_file, hs))
    }

    /// Index of the last entry; the snapshot's index when the log after it
    /// is empty (0 for a new store).
    pub fn last_index(&self) -> u64 {
        self.segments
            .last()
            .and_then(Segment::last_index)
            .unwrap_or(0)
            .max(self.snapshot.index)
    }

    /// Index of the first entry of the log: just after the snapshot (1 for a
    /// log never compacted, also when it is empty).
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        if self.failed {
            Err(StoreError::Failed)
        } else {
            Ok(())
        }
    }

    /// Runs a step that writes to disk; if it fails, the state of the disk
    /// (and, after a failed fsync, of the page cache) is unknown, so the
    /// store refuses all later writes.
    fn fail_on_error<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = f(self);
        if let Err(e) = &result {
            tracing::error!(dir = %self.dir.display(), error = %e, "log store failed");
            self.failed = true;
        }
        result
    }

    fn write_frame(
        &mut self,
        buf: &[u8],
        first_index: u64,
        last_index: u64,
    ) -> Result<(), StoreError> {
        if first_index <= self.last_index() {
            self.truncate(first_index)?;
        }
        let roll = match self.segments.last() {
            None => true,
            Some(seg) => seg.size > 0 && seg.size >= self.opts.segment_bytes,
        };
        if roll {
            self.roll(first_index)?;
        }
        let (Some(seg), Some(file)) = (self.segments.last_mut(), self.active.as_mut()) else {
            unreachable!("a segment and its write handle exist after roll");
        };
        self.active_dirty = true;
        file.write_all(buf).map_err(io_err("write", &seg.path))?;
        seg.frames.push(segment::FrameMeta {
            offset: seg.size,
            len: buf.len() as u64,
            first_index,
            last_index,
        });
        seg.size += buf.len() as u64;
        Ok(())
    }

    /// Closes the current segment and starts one at `first_index`.
    fn roll(&mut self, first_index: u64) -> Result<(), StoreError> {
        if let (Some(file), Some(seg)) = (self.active.take(), self.segments.last()) {
            // Keeps "only the last segment can have a torn tail" true even if
            // the caller did not sync after its last append.
            if self.active_dirty {
                file.sync_data().map_err(io_err("fdatasync", &seg.path))?;
                self.active_dirty = false;
            }
        }
        let seg = Segment::new(&self.dir, first_index);
        let file = segment::create(&seg)?;
        self.dir_dirty = true;
        tracing::debug!(path = %seg.path.display(), first_index, "started log segment");
        self.segments.push(seg);
        self.active = Some(file);
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        // Reopened at the new end below: a handle whose cursor is past a cut
        // would write after a hole.
        self.active = None;
        // Whole segments first, newest first, so that a crash in between
        // leaves a prefix of the log rather than a gap.
        while self.segments.last().is_some_and(|s| s.first_index >= from) {
            if let Some(seg) = self.segments.pop() {
                fs::remove_file(&seg.path).map_err(io_err("remove", &seg.path))?;
                self.dir_dirty = true;
                tracing::debug!(path = %seg.path.display(), from, "removed log segment");
            }
        }
        let Some(seg) = self.segments.last_mut() else {
            self.active_dirty = false;
            return self.sync_inner();
        };
        if let Some(pos) = seg.frame_holding(from) {
            let frame = seg.frames[pos];
            if frame.first_index == from {
                seg.frames.truncate(pos);
                seg.size = frame.offset;
                let file = segment::open_for_append(seg)?;
                file.set_len(seg.size)
                    .map_err(io_err("truncate", &seg.path))?;
                self.active = Some(file);
            } else {
                // The removals must be durable before the rename, or a crash
                // could leave the rewritten segment followed by one that no
                // longer continues it.
                if self.dir_dirty {
                    self.dir_file
                        .sync_all()
                        .map_err(io_err("fsync directory", &self.dir))?;
                }
                let new = segment::rewrite_prefix(seg, pos, from)?;
                seg.frames.truncate(pos);
                seg.frames.push(new);
                seg.size = new.end();
                self.dir_dirty = true;
            }
        }
        if self.active.is_none() {
            self.active = Some(segment::open_for_append(seg)?);
        }
        self.active_dirty = true;
        self.sync_inner()
    }

    fn sync_inner(&mut self) -> Result<(), StoreError> {
        if self.active_dirty {
            if let (Some(file), Some(seg)) = (&self.active, self.segments.last()) {
                file.sync_data().map_err(io_err("fdatasync", &seg.path))?;
            }
            self.active_dirty = false;
        }
        if self.dir_dirty {
            self.dir_file
                .sync_all()
                .map_err(io_err("fsync directory", &self.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

/// Recovery's half of [`LogStore::save_snapshot`] and
/// [`LogStore::install_snapshot`]: finishes what a crash interrupted, and
/// leaves in `entries` only the log after the snapshot. Returns whether a
/// segment was deleted.
///
/// The snapshot's own entry decides. A log that holds it with another term,
/// or that ends at or before it, is what a snapshot from the leader
/// replaced: every segment goes. Otherwise the segments that hold only
/// entries at or below it are the leftovers of a compaction. This must be
/// decided before anything is deleted: once the segment holding the
/// snapshot's entry is gone, a stale log that continues right after it
/// would look like the real one.
fn finish_snapshot(
    snapshot: &SnapshotMeta,
    segments: &mut Vec<Segment>,
    entries: &mut Vec<Entry>,
) -> Result<bool, StoreError> {
    let at_snapshot = entries
        .first()
        .and_then(|e| entries.get(snapshot.index.checked_sub(e.index)? as usize));
    let replaced = at_snapshot.is_some_and(|e| e.term != snapshot.term);
    let ends_before = entries.last().is_some_and(|e| e.index <= snapshot.index);
    let covered = if replaced || ends_before {
        entries.clear();
        segments.len()
    } else {
        let skip = entries
            .first()
            .map_or(0, |e| (snapshot.index + 1).saturating_sub(e.index) as usize);
        entries.drain(..skip.min(entries.len()));
        segments
            .iter()
            .take_while(|s| s.last_index().is_some_and(|l| l <= snapshot.index))
            .count()
    };
    // Newest first when the whole log goes, oldest first otherwise: either
    // way a crash here leaves what this function handles again.
    let doomed: Vec<Segment> = if covered == segments.len() {
        segments.drain(..).rev().collect()
    } else {
        segments.drain(..covered).collect()
    };
    for seg in &doomed {
        fs::remove_file(&seg.path).map_err(io_err("remove", &seg.path))?;
        tracing::info!(path = %seg.path.display(), snapshot = snapshot.index, replaced, "removed segment the snapshot covers");
    }
    Ok(!doomed.is_empty())
}

/// Creates `dir` if needed, and makes its creation durable by fsyncing the
/// parent, so a store that acknowledged writes cannot vanish in a crash.
fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)
                .and_then(|p| p.sync_all())
                .map_err(io_err("fsync directory", parent))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))
        }
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}
