//! Deterministic bounds on the work and memory of one replicated write.
//!
//! Every node applies every write, so a write that runs forever or grows
//! without bound takes the whole cluster down at once, and replays the
//! outage after a restart. The bounds here are counted in units every node
//! counts alike — SQLite VM instructions and bytes — never in time, and
//! they are constants of the code, never per-node flags: a write over a
//! bound fails with `54000` on every node alike, nothing of it is applied,
//! and the cluster goes on.

use resqlite_wire::SqlError;
use rusqlite::limits::Limit;
use rusqlite::Connection;

use super::write_watch::{self, Violation};
use crate::sql::sqlstate::PROGRAM_LIMIT_EXCEEDED;

/// SQLite calls the progress handler once every this many VM instructions.
const PROGRESS_INTERVAL: i32 = 1_000;
/// VM instructions one write statement may execute (about 0.3–1 s of one
/// core at release speed; a bulk `INSERT … SELECT` costs roughly 10–20 per
/// row).
pub const WRITE_VM_STEPS: u64 = 50_000_000;
/// The longest string or BLOB, and the largest row, a write may build.
pub const MAX_VALUE_BYTES: i32 = 16 << 20;
/// The longest SQL text SQLite accepts on the apply connection: twice the
/// front end's statement limit, so a PostgreSQL-to-SQLite rewrite that
/// lengthens a statement at the limit still applies.
pub const MAX_SQL_BYTES: i32 = 2 * resqlite_wire::MAX_STATEMENT_BYTES as i32;
/// Bytes of rows one write may return (`RETURNING`): counted on every node,
/// kept only where a client waits for them.
pub const MAX_WRITE_RESULT_BYTES: u64 = 64 << 20;

/// A bound a write went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// [`WRITE_VM_STEPS`].
    VmSteps,
    /// [`MAX_WRITE_RESULT_BYTES`].
    ResultBytes,
}

impl Exceeded {
    pub(crate) fn to_sql_error(self) -> SqlError {
        let message = match self {
            Exceeded::VmSteps => format!(
                "the write exceeded its work budget of {WRITE_VM_STEPS} SQLite VM steps (the same \
                 on every node) and was rolled back; split it into smaller writes"
            ),
            Exceeded::ResultBytes => format!(
                "the write's RETURNING rows exceed {MAX_WRITE_RESULT_BYTES} bytes; it was rolled \
                 back: return fewer or smaller rows"
            ),
        };
        SqlError::new(PROGRAM_LIMIT_EXCEEDED, message)
    }
}

/// Sets the length limits and the VM-step budget on the apply connection.
pub(crate) fn bound_apply_connection(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)?;
    let calls_allowed = WRITE_VM_STEPS / PROGRESS_INTERVAL as u64;
    conn.progress_handler(
        PROGRESS_INTERVAL,
        Some(move || {
            let calls = write_watch::count_progress();
            if calls > calls_allowed {
                write_watch::record(Violation::Budget(Exceeded::VmSteps));
                return true; // interrupt
            }
            false
        }),
    )
}

/// Counts the bytes of a write's result rows against
/// [`MAX_WRITE_RESULT_BYTES`].
#[derive(Default)]
pub(crate) struct ResultBytes {
    total: u64,
}

impl ResultBytes {
    /// Adds one value of `len` bytes (plus a small per-value overhead, so
    /// that millions of NULLs count too); `Err` once over the bound.
    pub(crate) fn add(&mut self, len: usize) -> Result<(), Exceeded> {
        self.total = self.total.saturating_add(len as u64 + 8);
        if self.total > MAX_WRITE_RESULT_BYTES {
            return Err(Exceeded::ResultBytes);
        }
        Ok(())
    }
}
