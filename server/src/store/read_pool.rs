//! Read-only connections for reads on the leader. In WAL mode they never
//! block the writer, and a read whose caller goes away (cancel, disconnect)
//! is interrupted inside SQLite. After a snapshot restore replaced the
//! file, connections to the old one are discarded as they come up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use resqlite_wire::{Description, SqlError, Value};
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use tokio::sync::Semaphore;

use super::db_file::DbGeneration;
use super::errors::sql_error;
use super::exec::{bind, parameter_count, result_types, run_typed, RowSet};
use super::guard::guard_read_connection;
use crate::sql::sqlstate;

/// A fixed set of read-only connections shared by all client sessions.
pub struct ReadPool {
    path: PathBuf,
    /// Idle connections, each with the file generation it was opened on.
    idle: Arc<Mutex<Vec<(u64, Connection)>>>,
    permits: Arc<Semaphore>,
    generation: DbGeneration,
}

/// Interrupts a running read if its caller stops waiting for it.
struct InterruptOnDrop(Arc<Mutex<Option<InterruptHandle>>>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Ok(slot) = self.0.lock() {
            if let Some(handle) = slot.as_ref() {
                handle.interrupt();
            }
        }
    }
}

impl ReadPool {
    /// Opens `size` read-only connections to the database at `path` (which
    /// the state machine has already created), following the state
    /// machine's `generation` of the file.
    pub fn open(path: &Path, size: usize, generation: DbGeneration) -> rusqlite::Result<Self> {
        let current = generation.current();
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            conns.push((current, open_read_connection(path)?));
        }
        Ok(ReadPool {
            path: path.to_path_buf(),
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Arc::new(Mutex::new(conns)),
            generation,
        })
    }

    /// Runs `f` on an idle connection, on a blocking thread.
    async fn with_connection<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, SqlError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SqlError::new(sqlstate::INTERNAL_ERROR, "read pool closed"))?;
        let idle = self.idle.clone();
        let path = self.path.clone();
        let generation = self.generation.clone();
        let running = Arc::new(Mutex::new(None));
        let guard = InterruptOnDrop(running.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // The file stays in place while the read runs.
            let held = generation.hold();
            let current = *held;
            let conn = match take_current(&idle, current) {
                Some(c) => c,
                None => open_read_connection(&path).map_err(|e| sql_error(&e))?,
            };
            if let Ok(mut slot) = running.lock() {
                *slot = Some(conn.get_interrupt_handle());
            }
            let result = f(&conn);
            // Disarm before the connection can serve anyone else.
            if let Ok(mut slot) = running.lock() {
                *slot = None;
            }
            if let Ok(mut v) = idle.lock() {
                v.push((current, conn));
            }
            drop(held);
            result
        });
        let result = task
            .await
            .map_err(|e| SqlError::new(sqlstate::INTERNAL_ERROR, format!("read task failed: {e}")));
        drop(guard);
        result?
    }

    /// Runs a read with its parameters. SQLite has the last word: a
    /// statement it does not call read-only is never run here.
    pub async fn query(&self, sql: String, params: Vec<Value>) -> Result<RowSet, SqlError> {
        self.with_connection(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| sql_error(&e))?;
            if !stmt.readonly() {
                return Err(SqlError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "statement is not read-only: it cannot run as a read",
                ));
            }
            let types = result_types(conn, &sql, &stmt);
            bind(&mut stmt, &params)?;
            run_typed(&mut stmt, types)
        })
        .await
    }

    /// Parameter count and result columns of a statement, without running it.
    /// Parameters and result columns whose type nothing settles are
    /// described as text; `infer` types the parameters.
    pub async fn describe(
        &self,
        sql: String,
        infer: impl FnOnce(&Connection, usize) -> Vec<resqlite_wire::PgType> + Send + 'static,
    ) -> Result<Description, SqlError> {
        self.with_connection(move |conn| {
            let stmt = conn.prepare(&sql).map_err(|e| sql_error(&e))?;
            let count = parameter_count(&stmt)?;
            let columns = result_types(conn, &sql, &stmt)
                .into_iter()
                .map(|(name, t)| resqlite_wire::Column {
                    name,
                    pg_type: t.unwrap_or(resqlite_wire::PgType::Text),
                })
                .collect();
            drop(stmt);
            Ok(Description {
                params: infer(conn, count),
                columns,
            })
        })
        .await
    }
}

/// An idle connection to the current file; those to an older one are
/// closed on the way.
fn take_current(idle: &Mutex<Vec<(u64, Connection)>>, current: u64) -> Option<Connection> {
    let mut idle = idle.lock().ok()?;
    while let Some((generation, conn)) = idle.pop() {
        if generation == current {
            return Some(conn);
        }
    }
    None
}

fn open_read_connection(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(256);
    register_version(&conn)?;
    guard_read_connection(&mut conn)?;
    Ok(conn)
}

/// `SELECT version()` answers like PostgreSQL first (psql, pgjdbc and
/// SQLAlchemy read it), then names ReSQLite and its SQLite.
fn register_version(conn: &Connection) -> rusqlite::Result<()> {
    let text = format!(
        "PostgreSQL {} (ReSQLite {}, SQLite {})",
        crate::PG_VERSION,
        env!("CARGO_PKG_VERSION"),
        rusqlite::version()
    );
    conn.create_scalar_function(
        "version",
        0,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        move |_| Ok(text.clone()),
    )
}
