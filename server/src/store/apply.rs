//! The replicated state machine: committed write statements applied in log
//! order on one writer connection, one SQLite transaction per batch, with
//! the last applied index stored in the same transaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost::Message as _;
use resqlite_proto::client::WriteStatement;
use resqlite_raft::driver::{SnapshotError, SnapshotWriter, StateMachine};
use resqlite_raft::{Entry, EntryKind};
use resqlite_wire::{Outcome, SqlError};
use rusqlite::Connection;

use super::db_file::DbGeneration;
use super::errors::sql_error;
use super::exec::{bind, run};
use super::guard::guard_apply_connection;
use super::snapshot;
use super::values::from_proto;
use crate::sql::sqlstate;

/// What applying one entry gives its client.
pub type ApplyResult = Result<Outcome, SqlError>;

/// The SQLite database every node keeps, driven by the Raft log.
pub struct SqliteStateMachine {
    conn: Connection,
    /// Set while ReSQLite runs its own statements, which the authorizer lets through.
    internal: Arc<AtomicBool>,
    applied: u64,
    path: PathBuf,
    /// Moves on when a restored snapshot replaces the file.
    generation: DbGeneration,
}

/// The writer connection, its authorizer switch and the applied index it
/// holds.
struct Writer {
    conn: Connection,
    internal: Arc<AtomicBool>,
    applied: u64,
}

impl SqliteStateMachine {
    /// Opens (or creates) the database at `path`, in WAL mode.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        snapshot::discard_staged(path).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "cannot remove an unfinished restore next to the database: {e}"
                )),
            )
        })?;
        let w = open_writer(path)?;
        Ok(SqliteStateMachine {
            conn: w.conn,
            internal: w.internal,
            applied: w.applied,
            path: path.to_path_buf(),
            generation: DbGeneration::default(),
        })
    }

    /// The generation of the database file, for a [`super::ReadPool`] on
    /// the same file to follow restores.
    pub fn generation(&self) -> DbGeneration {
        self.generation.clone()
    }

    /// Closes the writer, puts `staged` in the database's place and opens
    /// the writer on it. On error the writer may be left on an empty
    /// in-memory database: the node must stop.
    fn swap_in(&mut self, staged: &Path, index: u64) -> Result<(), SnapshotError> {
        // A connection cannot be closed in place: park an in-memory one.
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        old.close().map_err(|(_, e)| e)?;
        snapshot::swap_in(staged, &self.path)?;
        let w = open_writer(&self.path)?;
        if w.applied != index {
            return Err(format!(
                "the restored database holds index {}, expected {index}",
                w.applied
            )
            .into());
        }
        self.conn = w.conn;
        self.internal = w.internal;
        self.applied = w.applied;
        Ok(())
    }

    /// Runs ReSQLite's own statement, past the authorizer.
    fn internal(&self, sql: &str) -> rusqlite::Result<()> {
        self.internal.store(true, Ordering::Relaxed);
        let result = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.raw_execute().map(|_| ()));
        self.internal.store(false, Ordering::Relaxed);
        result
    }

    fn apply_normal(&self, payload: &[u8]) -> ApplyResult {
        let stmt = WriteStatement::decode(payload).map_err(|e| {
            SqlError::new(
                sqlstate::INTERNAL_ERROR,
                format!("undecodable log entry: {e}"),
            )
        })?;
        let params: Vec<_> = stmt.params.into_iter().map(from_proto).collect();
        self.internal("SAVEPOINT resqlite_stmt")
            .map_err(|e| sql_error(&e))?;
        let result = self.run_user_statement(&stmt.sql, &params);
        let undo = if result.is_err() {
            "ROLLBACK TO resqlite_stmt"
        } else {
            "RELEASE resqlite_stmt"
        };
        self.internal(undo).map_err(|e| sql_error(&e))?;
        if result.is_err() {
            self.internal("RELEASE resqlite_stmt")
                .map_err(|e| sql_error(&e))?;
        }
        let rows = result?;
        let count = if rows.columns.is_empty() || is_dml(&stmt.command) {
            self.conn.changes()
        } else {
            rows.rows.len() as u64
        };
        let tag = crate::sql::Classified::tag_for(&stmt.command, count);
        Ok(Outcome {
            tag,
            columns: rows.columns,
            rows: rows.rows,
        })
    }

    fn run_user_statement(
        &self,
        sql: &str,
        params: &[resqlite_wire::Value],
    ) -> Result<super::exec::RowSet, SqlError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
        bind(&mut stmt, params)?;
        run(&mut stmt)
    }

    fn apply_batch(&mut self, entries: &[Entry]) -> rusqlite::Result<Vec<ApplyResult>> {
        self.internal("BEGIN IMMEDIATE")?;
        let outputs = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::Normal => self.apply_normal(&e.data),
                EntryKind::Noop | EntryKind::Config => Ok(Outcome {
                    tag: String::new(),
                    columns: Vec::new(),
                    rows: Vec::new(),
                }),
            })
            .collect();
        let last = entries.last().map_or(self.applied, |e| e.index);
        self.internal.store(true, Ordering::Relaxed);
        let updated = self
            .conn
            .prepare_cached("UPDATE _resqlite_meta SET value = ?1 WHERE key = 'applied'")
            .and_then(|mut s| s.execute([last as i64]));
        self.internal.store(false, Ordering::Relaxed);
        updated?;
        self.internal("COMMIT")?;
        self.applied = last;
        Ok(outputs)
    }
}

fn is_dml(command: &str) -> bool {
    matches!(command, "INSERT" | "UPDATE" | "DELETE")
}

impl StateMachine for SqliteStateMachine {
    type Output = ApplyResult;

    fn apply(&mut self, entries: &[Entry]) -> Vec<ApplyResult> {
        match self.apply_batch(entries) {
            Ok(outputs) => outputs,
            Err(e) => {
                // The transaction itself failed (disk full, I/O error): this
                // node cannot follow the log any more. Stopping is the only
                // safe answer; on restart it replays from its applied index.
                tracing::error!(error = %e, first = entries.first().map(|e| e.index), "cannot apply committed entries; stopping the node");
                std::process::exit(70);
            }
        }
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Called between two applies: no write transaction is open, so a new
    /// read transaction sees exactly `applied`.
    fn snapshot(&mut self) -> Result<SnapshotWriter, SnapshotError> {
        snapshot::prepare_writer(&self.path, self.applied)
    }

    fn restore(&mut self, path: &Path, index: u64) -> Result<(), SnapshotError> {
        // Checked before the live database is touched: a bad file changes
        // nothing.
        let staged = snapshot::stage(path, &self.path, index)?;
        let generation = self.generation.clone();
        generation.replace(|| self.swap_in(&staged, index))
    }
}

/// Opens (or creates) the database at `path` for the writer, in WAL mode.
/// Because the Raft log is durable and the applied index commits with the
/// data, a SQLite commit need not fsync (synchronous=NORMAL): after a crash
/// the node replays the log from the index SQLite kept.
fn open_writer(path: &Path) -> rusqlite::Result<Writer> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _resqlite_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT OR IGNORE INTO _resqlite_meta VALUES ('applied', 0);",
    )?;
    let applied = snapshot::read_applied(&conn)?;
    conn.set_prepared_statement_cache_capacity(512);
    let internal = Arc::new(AtomicBool::new(false));
    guard_apply_connection(&mut conn, internal.clone())?;
    Ok(Writer {
        conn,
        internal,
        applied,
    })
}

/// Encodes a write statement as a Raft entry payload.
pub fn encode_write(sql: &str, params: &[resqlite_wire::Value], command: &str) -> bytes::Bytes {
    let stmt = WriteStatement {
        sql: sql.to_string(),
        params: params.iter().map(super::values::to_proto).collect(),
        command: command.to_string(),
    };
    stmt.encode_to_vec().into()
}
