//! Which database file the node's connections are on.
//!
//! Restoring a snapshot renames a new file over the database. A connection
//! opened before that still reads the old (unlinked) inode, and one that
//! opens its WAL index by path during the swap could even share the new
//! file's `-shm` with the old inode's view. So the swap happens under the
//! write side of a lock that every read holds while it uses a connection,
//! and bumps a generation that tells the read pool which connections to
//! discard.

use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The generation of the database file, shared by the state machine (which
/// replaces the file) and the read pool (which follows it).
#[derive(Clone, Debug, Default)]
pub struct DbGeneration(Arc<RwLock<u64>>);

impl DbGeneration {
    /// Holds the current file in place until the guard drops; the guard
    /// derefs to its generation.
    pub(super) fn hold(&self) -> RwLockReadGuard<'_, u64> {
        // A panic while holding the lock leaves the counter intact.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `swap`, which replaces the file, with every read waited for and
    /// none starting; then moves to the next generation, whatever `swap`
    /// returned (a failed swap may have closed or moved files too).
    pub(super) fn replace<R>(&self, swap: impl FnOnce() -> R) -> R {
        let mut generation = self.0.write().unwrap_or_else(|e| e.into_inner());
        let result = swap();
        *generation += 1;
        result
    }

    /// The current generation.
    pub fn current(&self) -> u64 {
        *self.hold()
    }
}
