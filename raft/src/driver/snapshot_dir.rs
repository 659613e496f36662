//! The directory of snapshot files (`data_dir/snapshots`): the state
//! machine's snapshots and those received from a leader.
//!
//! A file is written under a temporary name, fsynced, renamed to
//! `<index>-<term>.snap` and the directory fsynced, so a `.snap` file is
//! always whole. The log store's snapshot metadata says which one is
//! current; the others are deleted once a newer one is recorded, and at
//! start. Blocking: call from a driver thread or `spawn_blocking`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::types::SnapshotMeta;

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

/// The current snapshot: what a leader streams to a follower that needs it.
pub(crate) type Current = Arc<Mutex<Option<(SnapshotMeta, PathBuf)>>>;

/// The snapshot directory of one node.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    next_tmp: Arc<AtomicU64>,
    /// The newest snapshot recorded in the log store.
    pub(crate) current: Current,
}

impl SnapshotDir {
    /// Opens (creating) `dir`.
    pub(crate) fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(SnapshotDir {
            dir,
            next_tmp: Arc::new(AtomicU64::new(0)),
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the snapshot `meta` lives once published.
    pub(crate) fn path_for(&self, meta: &SnapshotMeta) -> PathBuf {
        self.dir
            .join(format!("{:020}-{:020}{SUFFIX}", meta.index, meta.term))
    }

    /// A fresh temporary file name in the directory.
    pub(crate) fn temp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("incoming-{}-{n}{TMP_SUFFIX}", std::process::id()))
    }

    /// Makes the whole file at `tmp` durable under the name of `meta`.
    pub(crate) fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        File::open(tmp)?.sync_all()?;
        let path = self.path_for(meta);
        fs::rename(tmp, &path)?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Records `meta` (whose file is published) as current and deletes
    /// every other published file. Streams already reading an older file
    /// keep it open until they finish; temporary files may be in the middle
    /// of a write and stay.
    pub(crate) fn set_current(&self, meta: &SnapshotMeta) -> io::Result<()> {
        let path = self.path_for(meta);
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((meta.clone(), path.clone()));
        }
        self.remove_all_but(Some(&path), false)
    }

    /// Deletes every published file but `keep`, and with `temp` the
    /// temporary ones too (at start, when no write can be running).
    pub(crate) fn remove_all_but(&self, keep: Option<&Path>, temp: bool) -> io::Result<()> {
        for dirent in fs::read_dir(&self.dir)? {
            let path = dirent?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // A temporary file is `incoming-….tmp`, and whatever its writer
            // left beside it (SQLite's `-wal`, `-shm`, `-journal`).
            let temporary = name.starts_with("incoming-") && name.contains(TMP_SUFFIX);
            let ours = name.ends_with(SUFFIX) || (temp && temporary);
            if Some(path.as_path()) == keep || !ours {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed old snapshot file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_clears_temporary_files_and_their_sidecars_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(root.path().join("snapshots")).unwrap();
        let meta = SnapshotMeta {
            index: 7,
            term: 2,
            membership: crate::types::Membership::from_voters(&[1]),
        };
        let tmp = dir.temp_path();
        fs::write(&tmp, b"x").unwrap();
        let published = dir.publish(&tmp, &meta).unwrap();
        let leftovers = [
            "incoming-1-0.tmp",
            "incoming-1-0.tmp-wal",
            "incoming-1-0.tmp-shm",
        ];
        for name in leftovers {
            fs::write(dir.dir.join(name), b"x").unwrap();
        }
        fs::write(dir.dir.join("notes.txt"), b"someone else's").unwrap();
        dir.remove_all_but(Some(&published), true).unwrap();
        let mut left: Vec<String> = fs::read_dir(&dir.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let published_name = published.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(left, vec![published_name, "notes.txt".to_string()]);
    }
}
