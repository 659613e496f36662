//! The replicated state machine: committed write statements applied in log
//! order on one writer connection, one SQLite transaction per batch, with
//! the last applied index stored in the same transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost::Message as _;
use resqlite_proto::client::transaction_step::Step;
use resqlite_proto::client::{TransactionEntry, TransactionStep, WriteStatement};
use resqlite_raft::driver::{Halt, SnapshotError, SnapshotWriter, StateMachine};
use resqlite_raft::{Entry, EntryKind};
use resqlite_wire::{Outcome, SqlError};
use rusqlite::{Connection, OpenFlags};

use super::check::{self, CheckLog};
use super::clock_vfs::{self, APPLY_VFS};
use super::db_file::DbGeneration;
use super::errors::node_local_failure;
use super::guard::guard_apply_connection;
use super::log_command::{self, LogCommand};
use super::roles::{self, RoleCache};
use super::semantics;
use super::snapshot;
use super::statement::{self, quote_identifier, Deferred, StatementFailure};
use super::txid::{self, TxidCell};
use super::values::from_proto;
use super::write_token::WriteToken;
use crate::sql::sqlstate;

/// How many log entries a committed transaction's id is remembered for
/// (`resqlite_txid_status`).
pub const TXID_RETENTION: u64 = 1_000_000;

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
    /// Set after a node-local failure: nothing more is applied.
    halted: Option<String>,
    /// This node's consistency-check hashes (`resqlite check`).
    checks: CheckLog,
    /// The roles as of `applied`, for the front end.
    roles: RoleCache,
    /// A role change was applied in the current batch: reload `roles`
    /// once it commits.
    roles_changed: std::cell::Cell<bool>,
    /// The index of the last applied entry that changed user data (as of
    /// the last committed batch): a transaction that read at an earlier
    /// index may no longer hold (see [`Self::apply_transaction`]).
    last_write: u64,
    /// What the current batch makes of `last_write`, once it commits.
    batch_last_write: std::cell::Cell<Option<u64>>,
    /// Shared with the leader's speculation (see [`super::write_token`]).
    token: WriteToken,
    /// The id of the transaction being applied, for `resqlite_txid()`.
    txid: TxidCell,
    /// The term of the last applied entry, as recorded in the database.
    applied_term: u64,
}

/// The writer connection, its authorizer switch and the applied index it
/// holds.
struct Writer {
    conn: Connection,
    internal: Arc<AtomicBool>,
    applied: u64,
    last_write: u64,
    txid: TxidCell,
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
        let roles = RoleCache::default();
        roles.replace(roles::load_all(&w.conn)?);
        Ok(SqliteStateMachine {
            conn: w.conn,
            internal: w.internal,
            applied: w.applied,
            path: path.to_path_buf(),
            generation: DbGeneration::default(),
            halted: None,
            checks: CheckLog::default(),
            roles,
            roles_changed: std::cell::Cell::new(false),
            last_write: w.last_write,
            batch_last_write: std::cell::Cell::new(None),
            token: WriteToken::default(),
            txid: w.txid,
            applied_term: 0,
        })
    }

    /// What the leader's write transactions share with this state machine
    /// (see [`super::write_token`]).
    pub fn write_token(&self) -> WriteToken {
        self.token.clone()
    }

    /// `last_write` as the entries applied so far in this batch left it.
    fn current_last_write(&self) -> u64 {
        self.batch_last_write.get().unwrap_or(self.last_write)
    }

    /// The roles clients log in as, kept current by this state machine.
    pub fn roles(&self) -> RoleCache {
        self.roles.clone()
    }

    /// Reloads the roles from the database (after a commit that changed
    /// them, or a restore).
    fn reload_roles(&self) -> rusqlite::Result<()> {
        self.internal.store(true, Ordering::Relaxed);
        let loaded = roles::load_all(&self.conn);
        self.internal.store(false, Ordering::Relaxed);
        self.roles.replace(loaded?);
        Ok(())
    }

    /// This node's consistency-check results, for its status.
    pub fn checks(&self) -> CheckLog {
        self.checks.clone()
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
        self.last_write = w.last_write;
        self.txid = w.txid;
        self.applied_term = 0;
        self.reload_roles()?;
        Ok(())
    }

    /// Tests: runs `sql` past every guard, as a database written by an
    /// older version may hold it.
    #[cfg(test)]
    pub(crate) fn unguarded_for_tests(&self, sql: &str) {
        self.internal.store(true, Ordering::Relaxed);
        let result = self.conn.execute_batch(sql);
        self.internal.store(false, Ordering::Relaxed);
        result.expect("unguarded statement");
    }

    /// Tests: the database file may not grow any more, as on a full disk.
    #[cfg(test)]
    pub(crate) fn limit_pages_for_tests(&self) {
        self.internal.store(true, Ordering::Relaxed);
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .expect("max_page_count");
        self.internal.store(false, Ordering::Relaxed);
    }

    /// Runs ReSQLite's own statement, past the authorizer.
    fn internal(&self, sql: &str) -> rusqlite::Result<()> {
        statement::internal(&self.conn, &self.internal, sql)
    }

    /// Applies one write statement inside its own savepoint. `Ok` holds
    /// what its client gets, the same on every node; `Err` is a node-local
    /// failure, after which the batch must not commit.
    fn apply_normal(
        &self,
        index: u64,
        term: u64,
        payload: &[u8],
        wanted: bool,
    ) -> Result<ApplyResult, BatchAbort> {
        let stmt = match log_command::decode(payload) {
            Ok(LogCommand::Write(stmt)) => stmt,
            Ok(LogCommand::Check(c)) => {
                return check::apply_entry(&self.checks, &self.conn, &self.internal, index, c)
                    .map(Ok)
                    .map_err(|e| halt("hashing the database for a consistency check", &e).into())
            }
            Ok(LogCommand::Role(change)) => {
                self.internal.store(true, Ordering::Relaxed);
                let result = roles::apply_change(&self.conn, &change);
                self.internal.store(false, Ordering::Relaxed);
                let outcome = result.map_err(|e| halt("changing a role", &e))?;
                if outcome.is_ok() {
                    self.roles_changed.set(true);
                }
                return Ok(outcome);
            }
            Ok(LogCommand::Transaction(t)) => return self.apply_transaction(index, term, t),
            // The same bytes fail the same way on every node.
            Err(e) => {
                return Ok(Err(SqlError::new(
                    sqlstate::INTERNAL_ERROR,
                    format!("undecodable log entry: {e}"),
                )))
            }
        };
        if let Some(reason) = semantics::unsupported(stmt.semantics) {
            return Err(Halt { reason }.into());
        }
        let _applying = semantics::Applying::enter(stmt.semantics);
        let params: Vec<_> = stmt.params.into_iter().map(from_proto).collect();
        match statement::run_in_savepoint(
            &self.conn,
            &self.internal,
            &stmt.sql,
            &params,
            &stmt.command,
            wanted,
            Deferred::CheckNow,
        ) {
            Ok(outcome) => {
                self.batch_last_write.set(Some(index));
                Ok(Ok(outcome))
            }
            Err(StatementFailure::Failed(e)) => Ok(Err(e)),
            Err(StatementFailure::TransactionLost(e)) => Err(BatchAbort::TransactionLost(e)),
            Err(StatementFailure::NodeLocal { doing, error }) => Err(halt(doing, &error).into()),
        }
    }

    /// Applies a client's transaction, all or nothing. It commits only if
    /// every node would give its client what the leader gave: no write was
    /// applied since the index the leader ran it at (`base_version`), and
    /// every statement returns what it returned there. Otherwise it is
    /// rolled back, the same way on every node, and its client gets 40001.
    fn apply_transaction(
        &self,
        index: u64,
        term: u64,
        t: TransactionEntry,
    ) -> Result<ApplyResult, BatchAbort> {
        if let Some(reason) = semantics::unsupported(t.semantics) {
            return Err(Halt { reason }.into());
        }
        let _applying = semantics::Applying::enter(t.semantics);
        if self.current_last_write() > t.base_version {
            return Ok(Err(SqlError::new(
                sqlstate::SERIALIZATION_FAILURE,
                "could not serialize access: another write committed while the transaction \
                 ran; it was rolled back, retry it",
            )));
        }
        self.internal("SAVEPOINT resqlite_txn")
            .map_err(|e| halt("opening the transaction's savepoint", &e))?;
        txid::set(&self.txid, Some(t.txid.clone()));
        let ran = self.run_steps(&t.steps).map(|differs| {
            differs.or_else(|| {
                statement::deferred_violations(&self.conn)
                    .then(|| "a deferred foreign key is not satisfied here".to_string())
            })
        });
        txid::set(&self.txid, None);
        if let Some(why) = ran? {
            self.internal("ROLLBACK TO resqlite_txn")
                .and_then(|()| self.internal("RELEASE resqlite_txn"))
                .map_err(|e| halt("rolling the transaction back", &e))?;
            return Ok(Err(SqlError::new(
                sqlstate::SERIALIZATION_FAILURE,
                format!(
                    "could not serialize access: {why}; the transaction was rolled back, retry it"
                ),
            )));
        }
        self.internal("RELEASE resqlite_txn")
            .map_err(|e| halt("closing the transaction's savepoint", &e))?;
        self.record_txid(index, term, &t.txid)
            .map_err(|e| halt("recording the transaction's id", &e))?;
        self.batch_last_write.set(Some(index));
        Ok(Ok(Outcome {
            tag: "COMMIT".into(),
            columns: Vec::new(),
            rows: Vec::new(),
        }))
    }

    /// Runs a transaction's steps; `Some(why)` if one did not do what it
    /// did on the leader.
    fn run_steps(&self, steps: &[TransactionStep]) -> Result<Option<String>, BatchAbort> {
        for (n, step) in steps.iter().enumerate() {
            let n = n + 1;
            let verb = match &step.step {
                Some(Step::Statement(stmt)) => {
                    let params: Vec<_> = stmt.params.iter().cloned().map(from_proto).collect();
                    let outcome = match statement::run_in_savepoint(
                        &self.conn,
                        &self.internal,
                        &stmt.sql,
                        &params,
                        &stmt.command,
                        true,
                        Deferred::AtCommit,
                    ) {
                        Ok(outcome) => outcome,
                        Err(StatementFailure::Failed(e)) => {
                            return Ok(Some(format!("statement {n} failed here: {}", e.message)))
                        }
                        Err(StatementFailure::TransactionLost(e)) => {
                            return Err(BatchAbort::TransactionLost(SqlError::new(
                                sqlstate::SERIALIZATION_FAILURE,
                                format!(
                                    "could not serialize access: statement {n} failed here: {}; \
                                     the transaction was rolled back, retry it",
                                    e.message
                                ),
                            )))
                        }
                        Err(StatementFailure::NodeLocal { doing, error }) => {
                            return Err(halt(doing, &error).into())
                        }
                    };
                    if statement::outcome_hash(&outcome)[..] != step.outcome_hash[..] {
                        return Ok(Some(format!("statement {n} returned something else here")));
                    }
                    continue;
                }
                Some(Step::Role(change)) => {
                    let outcome = roles::apply_in_savepoint(&self.conn, &self.internal, change)
                        .map_err(|e| halt("changing a role", &e))?;
                    let outcome = match outcome {
                        Ok(outcome) => outcome,
                        Err(e) => return Ok(Some(format!("step {n} failed here: {}", e.message))),
                    };
                    if statement::outcome_hash(&outcome)[..] != step.outcome_hash[..] {
                        return Ok(Some(format!("step {n} returned something else here")));
                    }
                    self.roles_changed.set(true);
                    continue;
                }
                Some(Step::Savepoint(name)) => format!("SAVEPOINT {}", quote_identifier(name)),
                Some(Step::Release(name)) => format!("RELEASE {}", quote_identifier(name)),
                Some(Step::RollbackTo(name)) => format!("ROLLBACK TO {}", quote_identifier(name)),
                None => return Ok(Some(format!("step {n} is empty"))),
            };
            if let Err(e) = self.internal(&verb) {
                if node_local_failure(&e) {
                    return Err(halt("running a transaction's savepoint", &e).into());
                }
                return Ok(Some(format!("step {n} ({verb}) failed here: {e}")));
            }
        }
        Ok(None)
    }

    /// Remembers that transaction `txid` committed at `index`, for
    /// `resqlite_txid_status`; forgets those older than
    /// [`TXID_RETENTION`] entries, on every node at the same entries.
    fn record_txid(&self, index: u64, term: u64, txid: &str) -> rusqlite::Result<()> {
        self.internal.store(true, Ordering::Relaxed);
        let result = (|| {
            self.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO _resqlite_txns (idx, txid, term) VALUES (?1, ?2, ?3)",
                )?
                .execute(rusqlite::params![index as i64, txid, term as i64])?;
            if index.is_multiple_of(1024) && index > TXID_RETENTION {
                let horizon = (index - TXID_RETENTION) as i64;
                // Ids of these terms may now be forgotten: their status is
                // unknown rather than "aborted".
                self.conn
                    .prepare_cached(
                        "UPDATE _resqlite_meta SET value = max(value, coalesce((SELECT max(term) \
                         FROM _resqlite_txns WHERE idx < ?1), 0)) WHERE key = 'txid_forgotten_term'",
                    )?
                    .execute([horizon])?;
                self.conn
                    .prepare_cached("DELETE FROM _resqlite_txns WHERE idx < ?1")?
                    .execute([horizon])?;
            }
            Ok(())
        })();
        self.internal.store(false, Ordering::Relaxed);
        result
    }

    fn apply_batch(
        &mut self,
        entries: &[Entry],
        wanted: &[bool],
    ) -> Result<Vec<ApplyResult>, Halt> {
        // Entries whose statement made SQLite roll back the whole batch;
        // each is known to fail and is not run again.
        let mut lost: BTreeMap<usize, SqlError> = BTreeMap::new();
        let token = self.token.clone();
        let _turn = token.enter_apply();
        loop {
            self.batch_last_write.set(None);
            self.internal("BEGIN IMMEDIATE")
                .map_err(|e| halt("starting the batch's transaction", &e))?;
            match self.apply_in_transaction(entries, wanted, &lost) {
                Ok(outputs) => {
                    self.applied = entries.last().map_or(self.applied, |e| e.index);
                    if let Some(index) = self.batch_last_write.take() {
                        self.last_write = index;
                    }
                    self.applied_term = entries.last().map_or(self.applied_term, |e| e.term);
                    if self.roles_changed.replace(false) {
                        self.reload_roles()
                            .map_err(|e| halt("reloading the roles", &e))?;
                    }
                    return Ok(outputs);
                }
                // The statement's own error, the same on every node, but
                // SQLite took the batch's earlier entries with it: apply
                // the batch again with that entry's outcome known. Ends:
                // every round adds one entry to `lost`.
                Err((at, BatchAbort::TransactionLost(e))) => {
                    lost.insert(at, e);
                    self.roles_changed.set(false);
                }
                Err((_, BatchAbort::Halt(h))) => {
                    self.roles_changed.set(false);
                    // Nothing of the batch may stay: the applied index must
                    // never move past effects this node does not hold.
                    // SQLite may already have rolled back by itself.
                    if !self.conn.is_autocommit() {
                        let _ = self.internal("ROLLBACK");
                    }
                    return Err(h);
                }
            }
        }
    }

    /// The body of [`Self::apply_batch`]: every entry, the applied index,
    /// COMMIT. The applied index moves only inside the transaction that
    /// holds the entries' effects. Entries in `lost` fail without running.
    fn apply_in_transaction(
        &mut self,
        entries: &[Entry],
        wanted: &[bool],
        lost: &BTreeMap<usize, SqlError>,
    ) -> Result<Vec<ApplyResult>, (usize, BatchAbort)> {
        let mut outputs = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(error) = lost.get(&i) {
                outputs.push(Err(error.clone()));
                continue;
            }
            let output = match e.kind {
                EntryKind::Normal => self
                    .apply_normal(e.index, e.term, &e.data, wanted.get(i) == Some(&true))
                    .map_err(|abort| (i, abort))?,
                EntryKind::Noop | EntryKind::Config => Ok(Outcome {
                    tag: String::new(),
                    columns: Vec::new(),
                    rows: Vec::new(),
                }),
            };
            outputs.push(output);
        }
        let last = entries.last().map_or(self.applied, |e| e.index);
        let at_end = entries.len();
        self.internal.store(true, Ordering::Relaxed);
        let updated = self
            .conn
            .prepare_cached("UPDATE _resqlite_meta SET value = ?1 WHERE key = 'applied'")
            .and_then(|mut s| s.execute([last as i64]));
        self.internal.store(false, Ordering::Relaxed);
        updated.map_err(|e| (at_end, halt("recording the applied index", &e).into()))?;
        let last_term = entries.last().map_or(self.applied_term, |e| e.term);
        if last_term != self.applied_term {
            self.internal.store(true, Ordering::Relaxed);
            let updated = self
                .conn
                .prepare_cached("UPDATE _resqlite_meta SET value = ?1 WHERE key = 'applied_term'")
                .and_then(|mut s| s.execute([last_term as i64]));
            self.internal.store(false, Ordering::Relaxed);
            updated.map_err(|e| (at_end, halt("recording the applied term", &e).into()))?;
        }
        if let Some(index) = self.batch_last_write.get() {
            self.internal.store(true, Ordering::Relaxed);
            let updated = self
                .conn
                .prepare_cached("UPDATE _resqlite_meta SET value = ?1 WHERE key = 'last_write'")
                .and_then(|mut s| s.execute([index as i64]));
            self.internal.store(false, Ordering::Relaxed);
            updated.map_err(|e| (at_end, halt("recording the last write's index", &e).into()))?;
        }
        self.internal("COMMIT")
            .map_err(|e| (at_end, halt("committing the batch", &e).into()))?;
        Ok(outputs)
    }
}

/// Why a batch's transaction could not go on.
enum BatchAbort {
    /// A node-local failure: the node halts.
    Halt(Halt),
    /// A statement's own error, the same on every node, after which SQLite
    /// rolled the whole transaction back by itself (`INSERT OR ROLLBACK`,
    /// `RAISE(ROLLBACK, …)`, a write interrupted by its budget).
    TransactionLost(SqlError),
}

impl From<Halt> for BatchAbort {
    fn from(h: Halt) -> Self {
        BatchAbort::Halt(h)
    }
}

/// A node-local failure while `doing`, as the driver's halt.
fn halt(doing: &str, e: &rusqlite::Error) -> Halt {
    Halt {
        reason: format!("{doing}: {e}"),
    }
}

impl StateMachine for SqliteStateMachine {
    type Output = ApplyResult;

    fn apply(&mut self, entries: &[Entry], wanted: &[bool]) -> Result<Vec<ApplyResult>, Halt> {
        if let Some(reason) = &self.halted {
            return Err(Halt {
                reason: reason.clone(),
            });
        }
        let result = self.apply_batch(entries, wanted);
        if let Err(h) = &result {
            self.halted = Some(h.reason.clone());
        }
        result
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
        let token = self.token.clone();
        let _turn = token.enter_apply();
        let generation = self.generation.clone();
        generation.replace(|| self.swap_in(&staged, index))
    }
}

/// Opens (or creates) the database at `path` for the writer, in WAL mode.
/// Because the Raft log is durable and the applied index commits with the
/// data, a SQLite commit need not fsync (synchronous=NORMAL): after a crash
/// the node replays the log from the index SQLite kept.
fn open_writer(path: &Path) -> rusqlite::Result<Writer> {
    let (conn, internal) = open_guarded(path)?;
    // A database from before `last_write` existed: no transaction read
    // before the index it holds now (see docs/sql.md, Transactions).
    statement::internal(
        &conn,
        &internal,
        "CREATE TABLE IF NOT EXISTS _resqlite_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    for sql in [
        "INSERT OR IGNORE INTO _resqlite_meta VALUES ('applied', 0)",
        "INSERT OR IGNORE INTO _resqlite_meta SELECT 'last_write', value FROM _resqlite_meta \
         WHERE key = 'applied'",
        "INSERT OR IGNORE INTO _resqlite_meta VALUES ('applied_term', 0)",
        "INSERT OR IGNORE INTO _resqlite_meta VALUES ('txid_forgotten_term', 0)",
        "CREATE TABLE IF NOT EXISTS _resqlite_txns \
         (idx INTEGER PRIMARY KEY, txid TEXT NOT NULL, term INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS _resqlite_txns_txid ON _resqlite_txns (txid)",
    ] {
        statement::internal(&conn, &internal, sql)?;
    }
    let (applied, last_write) = read_positions(&conn, &internal)?;
    let txid = TxidCell::default();
    txid::register_txid(&conn, txid.clone())?;
    Ok(Writer {
        conn,
        internal,
        applied,
        last_write,
        txid,
    })
}

/// Opens the database at `path` as the apply connection is: through the
/// clock VFS, with every write guard. The leader's speculation uses the
/// same (see [`super::speculation`]). The flag lets ReSQLite's own
/// statements past the authorizer.
pub(super) fn open_guarded(path: &Path) -> rusqlite::Result<(Connection, Arc<AtomicBool>)> {
    clock_vfs::register()?;
    let mut conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), APPLY_VFS)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(512);
    let internal = Arc::new(AtomicBool::new(false));
    guard_apply_connection(&mut conn, internal.clone())?;
    super::pg_functions::register(&conn)?;
    Ok((conn, internal))
}

/// The applied index and the index of the last write that changed user
/// data, as the connection's snapshot shows them.
pub(super) fn read_positions(
    conn: &Connection,
    internal: &AtomicBool,
) -> rusqlite::Result<(u64, u64)> {
    internal.store(true, Ordering::Relaxed);
    let read = |key: &str| {
        conn.prepare_cached("SELECT value FROM _resqlite_meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get::<_, i64>(0)))
    };
    let result = read("applied").and_then(|a| Ok((a as u64, read("last_write")? as u64)));
    internal.store(false, Ordering::Relaxed);
    result
}

/// Encodes a write statement as a Raft entry payload.
pub fn encode_write(sql: &str, params: &[resqlite_wire::Value], command: &str) -> bytes::Bytes {
    let stmt = WriteStatement {
        sql: sql.to_string(),
        params: params.iter().map(super::values::to_proto).collect(),
        command: command.to_string(),
        semantics: super::semantics::CURRENT,
    };
    stmt.encode_to_vec().into()
}
