//! Read connections held by open transactions: every read of a
//! transaction sees one snapshot, the database as of its first statement.
//!
//! A transaction that has not written yet reads through a connection of
//! its own inside a SQLite read transaction (which never blocks the
//! writer in WAL mode). Each connection lives on a thread of its own (see
//! [`super::pinned`]); a finished transaction hands its thread back for
//! the next one, so a busy node does not open a connection per
//! transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use resqlite_wire::{Description, Reply, SqlError, Value};
use rusqlite::{Connection, InterruptHandle};

use super::db_file::DbGeneration;
use super::errors::sql_error;
use super::pinned::{Pinned, PinnedState};
use super::read_pool::{describe_on, open_read_connection};
use super::statement::quote_identifier;
use super::txid::{self, TxidCell};
use crate::sql::sqlstate;

/// Idle reader threads kept for the next transactions.
const IDLE_READERS: usize = 16;

/// The node's transaction readers.
#[derive(Clone)]
pub struct SnapshotReaders(Arc<Shared>);

struct Shared {
    path: PathBuf,
    generation: DbGeneration,
    idle: Mutex<Vec<Pinned<State>>>,
    spawned: std::sync::atomic::AtomicU64,
}

struct State {
    path: PathBuf,
    generation: DbGeneration,
    /// The generation the running job holds.
    held_generation: u64,
    conn: Option<(u64, Connection)>,
    /// The transaction's id, for `resqlite_txid()`.
    txid: TxidCell,
}

impl PinnedState for State {
    fn generation(&self) -> Option<DbGeneration> {
        Some(self.generation.clone())
    }

    fn enter(&mut self, generation: u64) {
        self.held_generation = generation;
    }

    fn interrupt_handle(&self) -> Option<InterruptHandle> {
        self.conn.as_ref().map(|(_, c)| c.get_interrupt_handle())
    }
}

impl State {
    fn connection(&mut self) -> Result<&Connection, SqlError> {
        let current = self.held_generation;
        if self.conn.as_ref().is_some_and(|(g, _)| *g != current) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = open_read_connection(&self.path)
                .and_then(|conn| {
                    txid::register_txid(&conn, self.txid.clone())?;
                    Ok(conn)
                })
                .map_err(|e| sql_error(&e))?;
            self.conn = Some((current, conn));
        }
        Ok(&self.conn.as_ref().expect("just opened").1)
    }

    /// Ends whatever read transaction the connection has open.
    fn reset(&mut self) {
        if let Some((_, conn)) = &self.conn {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        txid::set(&self.txid, None);
    }
}

/// One transaction's snapshot; handed back when dropped.
pub struct SnapshotReader {
    thread: Option<Pinned<State>>,
    shared: SnapshotReaders,
}

impl SnapshotReaders {
    /// Transaction readers on the database at `path`.
    pub fn new(path: &Path, generation: DbGeneration) -> Self {
        SnapshotReaders(Arc::new(Shared {
            path: path.to_path_buf(),
            generation,
            idle: Mutex::new(Vec::new()),
            spawned: Default::default(),
        }))
    }

    /// Opens a snapshot of the database as it is now for transaction
    /// `txid`; returns it with the applied index it shows.
    pub async fn open(&self, txid: String) -> Result<(SnapshotReader, u64), SqlError> {
        let idle = self.0.idle.lock().ok().and_then(|mut idle| idle.pop());
        let thread = match idle {
            Some(thread) => thread,
            None => {
                let n = self
                    .0
                    .spawned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let state = State {
                    path: self.0.path.clone(),
                    generation: self.0.generation.clone(),
                    held_generation: 0,
                    conn: None,
                    txid: TxidCell::default(),
                };
                Pinned::spawn(format!("resqlite-txn-read-{n}"), state).map_err(|e| {
                    SqlError::new(
                        sqlstate::INTERNAL_ERROR,
                        format!("cannot start a transaction reader: {e}"),
                    )
                })?
            }
        };
        let reader = SnapshotReader {
            thread: Some(thread),
            shared: self.clone(),
        };
        let applied = reader
            .run(move |s| {
                s.reset();
                txid::set(&s.txid, Some(txid));
                let conn = s.connection()?;
                conn.execute_batch("BEGIN").map_err(|e| sql_error(&e))?;
                // The first read fixes the snapshot.
                let applied = conn
                    .query_row(
                        "SELECT value FROM _resqlite_meta WHERE key = 'applied'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(|e| sql_error(&e))?;
                Ok(applied as u64)
            })
            .await?;
        Ok((reader, applied))
    }
}

impl SnapshotReader {
    fn thread(&self) -> &Pinned<State> {
        self.thread.as_ref().expect("present until dropped")
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, SqlError> {
        self.thread().run(f).await
    }

    /// Runs a read in the snapshot; its rows stream as in the read pool.
    pub async fn stream(
        &self,
        sql: String,
        params: Vec<Value>,
        command: &'static str,
    ) -> Result<Reply, SqlError> {
        let (reply, guard) = self
            .thread()
            .call(move |s, answer| match s.connection() {
                Ok(conn) => super::read_stream::run(conn, &sql, &params, command, || false, answer),
                Err(e) => {
                    answer.send(Err(e));
                }
            })
            .await?;
        Ok(match reply {
            Reply::Rows(rows) => Reply::Rows(rows.guard(guard)),
            done => done,
        })
    }

    /// Describes a statement against the snapshot's schema.
    pub async fn describe(&self, sql: String) -> Result<Description, SqlError> {
        self.run(move |s| describe_on(s.connection()?, &sql)).await
    }

    /// `SAVEPOINT`, `RELEASE` or `ROLLBACK TO` (`verb`) `name`.
    pub async fn savepoint_verb(&self, verb: &'static str, name: String) -> Result<(), SqlError> {
        self.run(move |s| {
            s.connection()?
                .execute_batch(&format!("{verb} {}", quote_identifier(&name)))
                .map_err(|e| sql_error(&e))
        })
        .await
    }
}

impl Drop for SnapshotReader {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        thread.send(State::reset);
        if let Ok(mut idle) = self.shared.0.idle.lock() {
            if idle.len() < IDLE_READERS {
                idle.push(thread);
            }
        }
    }
}
