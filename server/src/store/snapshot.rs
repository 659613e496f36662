//! Snapshot files of the state machine's SQLite database: a consistent
//! online copy at a known applied index, and the checks and file moves
//! that put a received copy in the database's place.
//!
//! The copy is the SQLite backup API run on a read-only connection whose
//! read transaction starts between two applies: in WAL mode it sees exactly
//! the database as of that applied index, for as long as it stays open,
//! while the writer goes on committing. It copies pages, not rows, so it
//! costs little more than reading the file.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use resqlite_raft::driver::{SnapshotError, SnapshotWriter};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The applied index stored with the data.
pub(super) fn read_applied(conn: &Connection) -> rusqlite::Result<u64> {
    let applied: i64 = conn.query_row(
        "SELECT value FROM _resqlite_meta WHERE key = 'applied'",
        [],
        |r| r.get(0),
    )?;
    Ok(applied.max(0) as u64)
}

/// Starts a read transaction on the database at `db_path`, which the
/// writer has committed up to `applied` and is not writing right now, and
/// returns the job that copies what that transaction sees.
pub(super) fn prepare_writer(
    db_path: &Path,
    applied: u64,
) -> Result<SnapshotWriter, SnapshotError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(db_path, flags)?;
    // BEGIN alone takes no snapshot; the first read does.
    src.execute_batch("BEGIN")?;
    let seen = read_applied(&src)?;
    if seen != applied {
        return Err(format!(
            "the snapshot connection sees applied index {seen}, the writer {applied}"
        )
        .into());
    }
    Ok(Box::new(move |dest: &Path| write_copy(src, dest, applied)))
}

/// Copies the database `src` sees (in an open read transaction, at
/// `applied`) into a new file at `dest`, self-contained (no `-wal`) and
/// fsynced.
fn write_copy(src: Connection, dest: &Path, applied: u64) -> Result<u64, SnapshotError> {
    let mut dst = Connection::open(dest)?;
    let page_size: i64 = src.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    dst.pragma_update(None, "page_size", page_size)?;
    // A WAL-mode destination takes the source's WAL header as is; turning
    // WAL off afterwards checkpoints the copy into one plain file.
    dst.pragma_update(None, "journal_mode", "WAL")?;
    dst.pragma_update(None, "synchronous", "OFF")?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        // -1: every page in one step, inside the source's read transaction,
        // so the copy cannot restart or mix two versions.
        match backup.step(-1)? {
            StepResult::Done => {}
            other => return Err(format!("the snapshot copy stopped early: {other:?}").into()),
        }
    }
    src.execute_batch("COMMIT")?;
    drop(src);
    let mode: String = dst.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("the snapshot copy stayed in journal mode {mode}").into());
    }
    let copied = read_applied(&dst)?;
    if copied != applied {
        return Err(format!("the snapshot copy holds index {copied}, expected {applied}").into());
    }
    dst.close().map_err(|(_, e)| e)?;
    File::open(dest)?.sync_all()?;
    Ok(applied)
}

/// Copies the snapshot file at `snapshot` next to the database at
/// `db_path` (the snapshot file stays: the driver serves it to other
/// peers) and checks that it is a SQLite database holding `index`.
/// Returns the staged file, fsynced, ready for [`swap_in`].
pub(super) fn stage(snapshot: &Path, db_path: &Path, index: u64) -> Result<PathBuf, SnapshotError> {
    let staged = sibling(db_path, ".restore");
    remove_sidecars(&staged)?;
    fs::copy(snapshot, &staged)?;
    let mut magic = [0u8; 16];
    File::open(&staged)?
        .read_exact(&mut magic)
        .map_err(|e| format!("{} is not a SQLite database: {e}", snapshot.display()))?;
    if &magic != SQLITE_MAGIC {
        let _ = fs::remove_file(&staged);
        return Err(format!("{} is not a SQLite database", snapshot.display()).into());
    }
    let check = (|| -> Result<(), SnapshotError> {
        let conn = Connection::open_with_flags(&staged, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let held =
            read_applied(&conn).map_err(|e| format!("no applied index in the snapshot: {e}"))?;
        if held != index {
            return Err(format!("the snapshot holds index {held}, expected {index}").into());
        }
        conn.close().map_err(|(_, e)| e)?;
        File::open(&staged)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = check {
        let _ = fs::remove_file(&staged);
        let _ = remove_sidecars(&staged);
        return Err(e);
    }
    Ok(staged)
}

/// Removes a staged file left by a crash before [`swap_in`]: the restore
/// it belonged to starts over from the snapshot file at the next start.
pub(super) fn discard_staged(db_path: &Path) -> io::Result<()> {
    let staged = sibling(db_path, ".restore");
    match fs::remove_file(&staged) {
        Ok(()) => tracing::info!(path = %staged.display(), "removed an unfinished restore"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    remove_sidecars(&staged)
}

/// Puts the staged file in the place of the database at `db_path`, whose
/// writer must be closed. The old WAL goes first: its frames would
/// otherwise be replayed onto the new file.
pub(super) fn swap_in(staged: &Path, db_path: &Path) -> io::Result<()> {
    remove_sidecars(db_path)?;
    fs::rename(staged, db_path)?;
    let dir = match db_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn remove_sidecars(db: &Path) -> io::Result<()> {
    for suffix in ["-wal", "-shm", "-journal"] {
        match fs::remove_file(sibling(db, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}
