//! The leader's write transaction, run before it is replicated.
//!
//! A client inside `BEGIN … COMMIT` must see its own writes at once (the
//! id `INSERT … RETURNING` made, the real row count) although nothing is
//! replicated until `COMMIT`. So the leader runs the transaction's
//! statements on a connection of its own — guarded exactly like the apply
//! connection, with the same code (`statement::run_in_savepoint`) — inside
//! `BEGIN IMMEDIATE`, records each write with a hash of what it returned,
//! and at `COMMIT` rolls the speculation back and proposes the recorded
//! steps as one entry ([`TransactionEntry`]). Every node, the leader too,
//! then applies that entry to a database in the same state, and gets the
//! same results; if the state or a result differs, the entry is rolled
//! back everywhere (see `apply`).
//!
//! One speculation at a time per node (the node lets one write
//! transaction in at a time), on one thread that keeps its connection and
//! prepared statements from one transaction to the next. The apply thread
//! may preempt it at any moment (see [`super::write_token`]): the
//! transaction is then rolled back and its next call fails with 40001.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use resqlite_proto::client::{transaction_step::Step, TransactionEntry, TransactionStep};
use resqlite_proto::client::{RoleChange, WriteStatement};
use resqlite_wire::{Description, Outcome, SqlError, Value};
use rusqlite::{Connection, InterruptHandle};

use super::db_file::DbGeneration;
use super::errors::sql_error;
use super::pinned::{Pinned, PinnedState};
use super::statement::{self, outcome_hash, quote_identifier, Deferred, StatementFailure};
use super::txid::{self, TxidCell};
use super::values::to_proto;
use super::write_token::WriteToken;
use crate::sql::sqlstate;

/// The most bytes of SQL text and parameters one transaction may
/// replicate: its entry must fit well inside a Raft message.
pub const MAX_TRANSACTION_BYTES: usize = 16 << 20;

/// What a transaction read before its first write: the applied index of
/// its snapshot and, when each read's whole result is known, the reads
/// themselves with a hash of what they returned.
#[derive(Clone, Debug)]
pub struct ReadAt {
    /// The applied index the snapshot showed.
    pub index: u64,
    /// The reads in order; `None` when one of them streamed (its result
    /// was never held whole), so they cannot be checked again.
    pub reads: Option<Vec<RecordedRead>>,
}

/// One read of a transaction, to run again when it starts writing.
#[derive(Clone, Debug)]
pub struct RecordedRead {
    /// The statement (SQLite's dialect) and its parameters.
    pub sql: String,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Its tag's command word.
    pub command: &'static str,
    /// [`statement::outcome_hash`] of what it returned.
    pub hash: [u8; 32],
}

/// The node's speculation thread.
#[derive(Clone)]
pub struct Speculation {
    thread: Pinned<State>,
}

struct State {
    path: PathBuf,
    generation: DbGeneration,
    token: WriteToken,
    /// The guarded connection and the file generation it was opened on.
    conn: Option<(u64, Connection, Arc<AtomicBool>)>,
    /// The transaction under way, if any.
    open: Option<Open>,
    /// This thread holds the write token (and SQLite's write lock).
    holding: bool,
    /// The open transaction's id, for `resqlite_txid()`.
    txid: TxidCell,
    /// Interrupts the connection's running statement (the apply thread
    /// uses it to be served at once).
    interrupt: Arc<std::sync::Mutex<Option<InterruptHandle>>>,
}

/// One transaction's speculation.
struct Open {
    /// Which transaction (the node's serial number for it).
    serial: u64,
    /// What it will replicate, in order.
    steps: Vec<TransactionStep>,
    /// Bytes of SQL and parameters in `steps`.
    bytes: usize,
    /// The applied index its reads and writes were taken at.
    base: u64,
    /// Rolled back under it (preempted, or SQLite rolled it back): every
    /// later call fails with this error.
    lost: Option<SqlError>,
    /// The node's write gate, held for the transaction: given up as soon as
    /// the transaction is rolled back here (preempted while its client
    /// idles, say), so that other writers need not wait for the client.
    gate: Option<WriteGate>,
}

/// The node's right to write, held by its one write transaction (see
/// `node::txn`).
pub type WriteGate = tokio::sync::OwnedRwLockWriteGuard<()>;

impl PinnedState for State {
    /// None: the write token keeps the speculation off the file while a
    /// restore replaces it (the restore takes the apply thread's turn
    /// first, which makes the speculation roll back and wait), and a job
    /// holding the file while it waits for the token would deadlock it.
    fn generation(&self) -> Option<DbGeneration> {
        None
    }

    fn interrupt_handle(&self) -> Option<InterruptHandle> {
        self.conn.as_ref().map(|(_, c, _)| c.get_interrupt_handle())
    }
}

/// The error of a transaction the apply thread rolled back.
pub(crate) fn preempted() -> SqlError {
    SqlError::new(
        sqlstate::SERIALIZATION_FAILURE,
        "the transaction was rolled back because the node had to apply a cluster change while \
         it was open; retry it",
    )
}

fn conflict() -> SqlError {
    SqlError::new(
        sqlstate::SERIALIZATION_FAILURE,
        "could not serialize access: another transaction wrote after this one read; retry it",
    )
}

/// A transaction the speculation no longer has: it was rolled back under
/// its client (preempted) and another took its place.
fn not_open() -> SqlError {
    SqlError::new(
        sqlstate::SERIALIZATION_FAILURE,
        "the transaction was rolled back while it was open; retry it",
    )
}

impl State {
    /// The connection, reopened if a restored snapshot replaced the file.
    fn connection(&mut self) -> Result<(&Connection, &AtomicBool), SqlError> {
        let current = self.generation.current();
        if self.conn.as_ref().is_some_and(|(g, _, _)| *g != current) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let (conn, internal) = super::apply::open_guarded(&self.path)
                .and_then(|(conn, internal)| {
                    txid::register_txid(&conn, self.txid.clone())?;
                    Ok((conn, internal))
                })
                .map_err(|e| sql_error(&e))?;
            *self.interrupt.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(conn.get_interrupt_handle());
            self.conn = Some((current, conn, internal));
        }
        let (_, conn, internal) = self.conn.as_ref().expect("just opened");
        Ok((conn, internal))
    }

    fn open(&mut self, serial: u64) -> Result<&mut Open, SqlError> {
        match &mut self.open {
            Some(open) if open.serial == serial => match &open.lost {
                Some(e) => Err(e.clone()),
                None => Ok(open),
            },
            _ => Err(not_open()),
        }
    }

    /// Rolls the speculation back and gives the write lock up.
    fn end(&mut self) {
        if let Some((_, conn, internal)) = &self.conn {
            if !conn.is_autocommit() {
                let _ = statement::internal(conn, internal, "ROLLBACK");
            }
        }
        if self.holding {
            self.holding = false;
            self.token.leave_speculation();
        }
        txid::set(&self.txid, None);
        if let Some(open) = &mut self.open {
            open.gate = None;
        }
    }

    /// The apply thread needs the lock: roll back, mark the transaction.
    fn yield_to_apply(&mut self) {
        if self.holding && self.token.apply_waits() {
            self.end();
            if let Some(open) = &mut self.open {
                open.lost = Some(preempted());
            }
        }
    }

    fn begin(
        &mut self,
        serial: u64,
        txid: String,
        read_at: Option<ReadAt>,
        savepoints: &[String],
        gate: Option<WriteGate>,
    ) -> Result<u64, SqlError> {
        if self.open.is_some() {
            // A previous transaction was never ended: end it now.
            self.end();
            self.open = None;
        }
        self.token.enter_speculation();
        self.holding = true;
        txid::set(&self.txid, Some(txid));
        match self.begin_locked(read_at, savepoints) {
            Ok((base, steps)) => {
                self.open = Some(Open {
                    serial,
                    steps,
                    bytes: 0,
                    base,
                    lost: None,
                    gate,
                });
                Ok(base)
            }
            Err(e) => {
                self.open = None;
                self.end();
                Err(e)
            }
        }
    }

    fn begin_locked(
        &mut self,
        read_at: Option<ReadAt>,
        savepoints: &[String],
    ) -> Result<(u64, Vec<TransactionStep>), SqlError> {
        let (conn, internal) = self.connection()?;
        statement::internal(conn, internal, "BEGIN IMMEDIATE").map_err(|e| sql_error(&e))?;
        let (applied, last_write) =
            super::apply::read_positions(conn, internal).map_err(|e| sql_error(&e))?;
        let base = match read_at {
            None => applied,
            Some(at) if last_write <= at.index => at.index,
            // A write was applied after the transaction's reads: they hold
            // only if they return the same now; then the transaction goes
            // on as if it had read here.
            Some(ReadAt {
                reads: Some(reads), ..
            }) if reads_still_hold(conn, internal, &reads) => applied,
            Some(_) => return Err(conflict()),
        };
        let mut steps = Vec::with_capacity(savepoints.len());
        for name in savepoints {
            statement::internal(
                conn,
                internal,
                &format!("SAVEPOINT {}", quote_identifier(name)),
            )
            .map_err(|e| sql_error(&e))?;
            steps.push(TransactionStep {
                step: Some(Step::Savepoint(name.clone())),
                outcome_hash: Default::default(),
            });
        }
        Ok((base, steps))
    }

    fn execute(
        &mut self,
        serial: u64,
        sql: &str,
        params: Vec<Value>,
        command: &str,
        write: bool,
    ) -> Result<Outcome, SqlError> {
        self.open(serial)?;
        let bytes = resqlite_wire::statement_bytes(sql, &params);
        let result = {
            let (conn, internal) = self.connection()?;
            statement::run_in_savepoint(
                conn,
                internal,
                sql,
                &params,
                command,
                true,
                Deferred::AtCommit,
            )
        };
        // Preempted while the statement ran: it was interrupted or is
        // about to be rolled back with the rest.
        self.yield_to_apply();
        let open = self.open(serial)?;
        match result {
            Ok(outcome) => {
                if write {
                    if open.bytes + bytes > MAX_TRANSACTION_BYTES {
                        return Err(SqlError::new(
                            sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "the transaction's writes exceed {} MiB of SQL and parameters: \
                                 commit it in smaller transactions",
                                MAX_TRANSACTION_BYTES >> 20
                            ),
                        ));
                    }
                    open.bytes += bytes;
                    open.steps.push(TransactionStep {
                        step: Some(Step::Statement(WriteStatement {
                            sql: sql.to_string(),
                            params: params.iter().map(to_proto).collect(),
                            command: command.to_string(),
                            // The transaction's stamp is what counts.
                            semantics: super::semantics::CURRENT,
                        })),
                        outcome_hash: outcome_hash(&outcome).to_vec().into(),
                    });
                }
                Ok(outcome)
            }
            Err(StatementFailure::Failed(e)) => Err(e),
            Err(StatementFailure::TransactionLost(e)) => {
                open.lost = Some(SqlError::new(
                    sqlstate::IN_FAILED_SQL_TRANSACTION,
                    format!(
                        "the transaction was rolled back by an earlier error: {}",
                        e.message
                    ),
                ));
                self.end();
                Err(e)
            }
            Err(StatementFailure::NodeLocal { error, .. })
                if error.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
            {
                // Cancelled or timed out: SQLite rolled back more than the
                // statement.
                let e = SqlError::new(
                    sqlstate::IN_FAILED_SQL_TRANSACTION,
                    "the transaction was rolled back when one of its statements was cancelled",
                );
                open.lost = Some(e.clone());
                self.end();
                Err(e)
            }
            Err(StatementFailure::NodeLocal { doing, error }) => {
                let e = SqlError::new("58030", format!("{doing}: {error}"));
                open.lost = Some(e.clone());
                self.end();
                Err(e)
            }
        }
    }

    fn change_role(&mut self, serial: u64, change: RoleChange) -> Result<Outcome, SqlError> {
        self.open(serial)?;
        let result = {
            let (conn, internal) = self.connection()?;
            super::roles::apply_in_savepoint(conn, internal, &change)
        };
        self.yield_to_apply();
        let open = self.open(serial)?;
        let outcome =
            result.map_err(|e| SqlError::new("58030", format!("changing a role: {e}")))??;
        open.steps.push(TransactionStep {
            outcome_hash: outcome_hash(&outcome).to_vec().into(),
            step: Some(Step::Role(change)),
        });
        Ok(outcome)
    }

    fn savepoint_step(&mut self, serial: u64, step: Step) -> Result<(), SqlError> {
        self.open(serial)?;
        let sql = match &step {
            Step::Savepoint(name) => format!("SAVEPOINT {}", quote_identifier(name)),
            Step::Release(name) => format!("RELEASE {}", quote_identifier(name)),
            Step::RollbackTo(name) => format!("ROLLBACK TO {}", quote_identifier(name)),
            Step::Statement(_) | Step::Role(_) => return Err(not_open()),
        };
        let result = {
            let (conn, internal) = self.connection()?;
            statement::internal(conn, internal, &sql).map_err(|e| sql_error(&e))
        };
        self.yield_to_apply();
        let open = self.open(serial)?;
        result?;
        open.steps.push(TransactionStep {
            step: Some(step),
            outcome_hash: Default::default(),
        });
        Ok(())
    }

    fn describe(&mut self, serial: u64, sql: &str) -> Result<Description, SqlError> {
        self.open(serial)?;
        let (conn, _) = self.connection()?;
        super::read_pool::describe_on(conn, sql)
    }

    /// Ends the speculation; the entry to replicate, unless it was lost.
    fn finish(
        &mut self,
        serial: u64,
    ) -> Result<(Option<TransactionEntry>, Option<WriteGate>), SqlError> {
        self.open(serial)?;
        // Deferred constraints are checked at COMMIT, as in PostgreSQL.
        let violated = self
            .conn
            .as_ref()
            .is_some_and(|(_, conn, _)| statement::deferred_violations(conn));
        if violated {
            self.end();
            self.open = None;
            return Err(statement::deferred_violation());
        }
        let txid = self
            .txid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        // The gate stays held until the entry is applied (the caller drops
        // it then), so that no writer starts on the state before it.
        let gate = self.open.as_mut().and_then(|o| o.gate.take());
        self.end();
        let open = self.open.take().ok_or_else(not_open)?;
        // Savepoint verbs alone change nothing: nothing to replicate.
        if open
            .steps
            .iter()
            .all(|s| !matches!(s.step, Some(Step::Statement(_) | Step::Role(_))))
        {
            return Ok((None, None));
        }
        let entry = TransactionEntry {
            txid,
            base_version: open.base,
            steps: open.steps,
            semantics: super::semantics::CURRENT,
        };
        Ok((Some(entry), gate))
    }

    fn abort(&mut self, serial: u64) {
        if self.open.as_ref().is_some_and(|o| o.serial == serial) {
            self.end();
            self.open = None;
        }
    }
}

/// Whether every read returns what it returned before, on `conn` now.
fn reads_still_hold(conn: &Connection, internal: &AtomicBool, reads: &[RecordedRead]) -> bool {
    reads.iter().all(|read| {
        statement::run_in_savepoint(
            conn,
            internal,
            &read.sql,
            &read.params,
            read.command,
            true,
            Deferred::AtCommit,
        )
        .is_ok_and(|outcome| outcome_hash(&outcome) == read.hash)
    })
}

impl Speculation {
    /// Starts the speculation thread for the database at `path`, and
    /// registers with `token` how the apply thread makes it yield.
    pub fn start(
        path: &Path,
        generation: DbGeneration,
        token: WriteToken,
    ) -> std::io::Result<Self> {
        let state = State {
            path: path.to_path_buf(),
            generation,
            token: token.clone(),
            conn: None,
            open: None,
            holding: false,
            txid: TxidCell::default(),
            interrupt: Arc::default(),
        };
        let interrupt = state.interrupt.clone();
        let thread = Pinned::spawn("resqlite-txn-write".into(), state)?;
        let preempt_thread = thread.clone();
        token.set_preempt(Arc::new(move || {
            preempt_thread.send(|state: &mut State| state.yield_to_apply());
            if let Some(handle) = &*interrupt.lock().unwrap_or_else(|e| e.into_inner()) {
                handle.interrupt();
            }
        }));
        Ok(Speculation { thread })
    }

    /// Opens transaction `serial`'s speculation (its id `txid`): takes SQLite's write lock
    /// and returns the applied index its statements see. `read_at`: what
    /// the transaction already read (it fails with 40001 if a write was
    /// applied since and its reads no longer return the same);
    /// `savepoints`: those it set while reading; `gate`: the node's write
    /// gate, kept with the speculation (released when it is rolled back, or
    /// handed back by [`Speculation::finish`]).
    pub async fn begin(
        &self,
        serial: u64,
        txid: String,
        read_at: Option<ReadAt>,
        savepoints: Vec<String>,
        gate: Option<WriteGate>,
    ) -> Result<u64, SqlError> {
        self.thread
            .run(move |s| s.begin(serial, txid, read_at, &savepoints, gate))
            .await
    }

    /// Runs one statement; a `write` is recorded for replication.
    pub async fn execute(
        &self,
        serial: u64,
        sql: String,
        params: Vec<Value>,
        command: &'static str,
        write: bool,
    ) -> Result<Outcome, SqlError> {
        self.thread
            .run(move |s| s.execute(serial, &sql, params, command, write))
            .await
    }

    /// CREATE, ALTER or DROP ROLE, run and recorded.
    pub async fn change_role(&self, serial: u64, change: RoleChange) -> Result<Outcome, SqlError> {
        self.thread
            .run(move |s| s.change_role(serial, change))
            .await
    }

    /// `SAVEPOINT`, `RELEASE` or `ROLLBACK TO`, run and recorded.
    pub async fn savepoint_step(&self, serial: u64, step: Step) -> Result<(), SqlError> {
        self.thread
            .run(move |s| s.savepoint_step(serial, step))
            .await
    }

    /// Describes a statement as the transaction sees the database.
    pub async fn describe(&self, serial: u64, sql: String) -> Result<Description, SqlError> {
        self.thread.run(move |s| s.describe(serial, &sql)).await
    }

    /// Ends the speculation (rolled back: the entry replays it) and returns
    /// the entry to replicate, `None` if the transaction wrote nothing, with
    /// the write gate, to hold until the entry is applied.
    pub async fn finish(
        &self,
        serial: u64,
    ) -> Result<(Option<TransactionEntry>, Option<WriteGate>), SqlError> {
        self.thread.run(move |s| s.finish(serial)).await
    }

    /// Rolls transaction `serial` back, without waiting.
    pub fn abort(&self, serial: u64) {
        self.thread.send(move |s| s.abort(serial));
    }
}
