//! Transactions: `BEGIN … COMMIT` as one atomic, replicated, serializable
//! unit.
//!
//! A transaction starts reading: at its first statement (after a ReadIndex
//! round, so it is linearizable at its start) it takes a snapshot on a
//! connection of its own ([`SnapshotReader`]) and reads there. At its first
//! write it becomes the node's one write transaction: it takes the write
//! gate (every other write waits, as under SQLite's single writer;
//! `lock_timeout` bounds the wait), and from then on runs on the leader's
//! speculation ([`Speculation`]), which records its writes. `COMMIT`
//! proposes them as one Raft entry; every node applies it all or nothing,
//! and only if no other write was applied after the transaction's first
//! read (otherwise 40001, on every node alike). So the transaction is
//! serializable by construction, whatever happens to leadership in the
//! meantime; the gate only keeps such conflicts rare.
//!
//! What a transaction may run is what a single statement may: the same
//! classifier, and on the speculation the apply connection's guards (no
//! clock, no randomness) from its first write on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use resqlite_proto::client::transaction_step::Step;
use resqlite_raft::driver::ProposeError;
use resqlite_wire::{Description, Reply, Session, SqlError, TransactionOptions, Value};

use super::Node;
use crate::sql::{self, sqlstate, Class};
use crate::store::log_command::encode_transaction;
use crate::store::{self, ReadAt, RecordedRead, SnapshotReader};

/// How long a new write transaction waits for the writes proposed before
/// it to be applied, so that it does not start on a database they are
/// about to change (it would then fail at COMMIT).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// Reads a transaction remembers before its first write, at most (more,
/// and a write applied meanwhile fails it with 40001).
const MAX_RECORDED_READS: usize = 1024;

/// One client's open transaction on this node.
pub struct NodeTransaction {
    node: Arc<Node>,
    serial: u64,
    options: TransactionOptions,
    phase: Phase,
    /// Savepoints set and not released, oldest first.
    savepoints: Vec<String>,
    /// The term the transaction started in: it must commit in the same.
    term: Option<u64>,
}

enum Phase {
    /// No statement has run yet.
    Fresh,
    /// Reading a snapshot taken at applied index `at`; `reads` are what
    /// it read, while every result was held whole (see [`ReadAt`]).
    Reading {
        reader: SnapshotReader,
        at: u64,
        reads: Option<Vec<RecordedRead>>,
    },
    /// The node's write transaction; the speculation holds the write gate
    /// for it (and gives it up if it rolls the transaction back).
    Writing,
}

impl Drop for NodeTransaction {
    fn drop(&mut self) {
        if matches!(self.phase, Phase::Writing) {
            // Rolled back on the speculation thread, which then opens the
            // gate for the next writer.
            self.node.speculation.abort(self.serial);
        }
    }
}

fn term_changed() -> SqlError {
    SqlError::new(
        sqlstate::SERIALIZATION_FAILURE,
        "leadership changed while the transaction was open: it was rolled back; retry it on the \
         leader",
    )
}

fn no_savepoint(name: &str) -> SqlError {
    SqlError::new("3B001", format!("savepoint \"{name}\" does not exist"))
}

impl Node {
    /// Opens a transaction block; nothing runs until its first statement.
    pub fn begin(self: &Arc<Self>, options: TransactionOptions) -> NodeTransaction {
        NodeTransaction {
            node: Arc::clone(self),
            serial: self.txn_serials.fetch_add(1, Ordering::Relaxed) + 1,
            options,
            phase: Phase::Fresh,
            savepoints: Vec::new(),
            term: None,
        }
    }

    /// Waits for the right to write: shared with other single writes,
    /// exclusive for a write transaction; at most `lock_timeout`.
    pub(super) async fn write_gate<G>(
        &self,
        session: &Session,
        acquire: impl std::future::Future<Output = G>,
    ) -> Result<G, SqlError> {
        match session.lock_timeout {
            None => Ok(acquire.await),
            Some(limit) => tokio::time::timeout(limit, acquire).await.map_err(|_| {
                SqlError::new(
                    sqlstate::LOCK_NOT_AVAILABLE,
                    "canceling statement due to lock timeout: another transaction holds the \
                     right to write",
                )
            }),
        }
    }
}

impl NodeTransaction {
    /// The id a client can see for this transaction.
    fn txid(&self) -> String {
        format!(
            "{}.{}.{}",
            self.term.unwrap_or(0),
            self.node.raft.id(),
            self.serial
        )
    }

    /// Still the leader, in the term the transaction started in.
    fn check_leader(&mut self) -> Result<(), SqlError> {
        let status = self.node.raft.status();
        if status.role != resqlite_raft::Role::Leader {
            return Err(match self.term {
                None => self.node.redirect(status.leader),
                Some(_) => term_changed(),
            });
        }
        match self.term {
            None => self.term = Some(status.term),
            Some(term) if term != status.term => return Err(term_changed()),
            Some(_) => {}
        }
        Ok(())
    }

    /// Runs one statement of the transaction.
    pub async fn execute(
        &mut self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        if let Some(statement) = sql::roles::parse(sql) {
            return self.change_roles(session, statement?).await;
        }
        let sql = &*sql::pg_syntax::to_sqlite(sql)?;
        let classified = self.node.classes.classify(sql)?;
        self.check_leader()?;
        match classified.class {
            Class::Read => match &self.phase {
                Phase::Fresh => {
                    self.start_reading(session).await?;
                    self.read(sql, params, classified.command).await
                }
                Phase::Reading { .. } => self.read(sql, params, classified.command).await,
                Phase::Writing => self
                    .node
                    .speculation
                    .execute(
                        self.serial,
                        sql.to_string(),
                        params,
                        classified.command,
                        false,
                    )
                    .await
                    .map(Reply::Done),
            },
            Class::Write => {
                self.may_write(classified.command)?;
                self.become_writer(session).await?;
                self.node
                    .speculation
                    .execute(
                        self.serial,
                        sql.to_string(),
                        params,
                        classified.command,
                        true,
                    )
                    .await
                    .map(Reply::Done)
            }
        }
    }

    /// CREATE, ALTER or DROP ROLE as a step of the transaction.
    async fn change_roles(
        &mut self,
        session: &Session,
        statement: sql::roles::RoleStatement,
    ) -> Result<Reply, SqlError> {
        self.may_write(statement.tag())?;
        self.check_leader()?;
        let change = self.node.role_change(session, statement).await?;
        self.become_writer(session).await?;
        self.node
            .speculation
            .change_role(self.serial, change)
            .await
            .map(Reply::Done)
    }

    /// A read before the first write, in the snapshot; remembered so that
    /// it can be checked again if the transaction starts writing after
    /// another write (see [`ReadAt`]).
    async fn read(
        &mut self,
        sql: &str,
        params: Vec<Value>,
        command: &'static str,
    ) -> Result<Reply, SqlError> {
        let Phase::Reading { reader, reads, .. } = &mut self.phase else {
            unreachable!("reads of a reading transaction");
        };
        let kept = reads.is_some().then(|| params.clone());
        let reply = reader.stream(sql.to_string(), params, command).await?;
        match (&reply, kept) {
            (Reply::Done(outcome), Some(params))
                if reads.as_ref().is_some_and(|r| r.len() < MAX_RECORDED_READS) =>
            {
                if let Some(reads) = reads {
                    reads.push(RecordedRead {
                        sql: sql.to_string(),
                        params,
                        command,
                        hash: store::outcome_hash(outcome),
                    });
                }
            }
            _ => *reads = None,
        }
        Ok(reply)
    }

    /// Refuses `command` in a read-only transaction.
    fn may_write(&self, command: &str) -> Result<(), SqlError> {
        if self.options.read_only {
            return Err(SqlError::new(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!("cannot execute {command} in a read-only transaction"),
            ));
        }
        Ok(())
    }

    /// Makes the transaction the node's write transaction, if it is not yet.
    async fn become_writer(&mut self, session: &Session) -> Result<(), SqlError> {
        if !matches!(self.phase, Phase::Writing) {
            self.start_writing(session).await?;
        }
        Ok(())
    }

    /// Takes the transaction's snapshot, linearizable at this moment.
    async fn start_reading(&mut self, session: &Session) -> Result<(), SqlError> {
        if !session.weak_reads {
            self.node
                .raft
                .read_barrier()
                .await
                .map_err(|e| self.node.propose_error(e))?;
            self.check_leader()?;
        }
        let (reader, at) = self.node.snapshots.open(self.txid()).await?;
        self.phase = Phase::Reading {
            reader,
            at,
            reads: Some(Vec::new()),
        };
        Ok(())
    }

    /// Becomes the node's write transaction.
    async fn start_writing(&mut self, session: &Session) -> Result<(), SqlError> {
        let gate = Arc::clone(&self.node.gate);
        let gate = self.node.write_gate(session, gate.write_owned()).await?;
        self.check_leader()?;
        // Writes proposed before this transaction got the gate: let them
        // be applied first, or its reads would not hold at COMMIT.
        let last = self.node.raft.status().last_index;
        let mut applied = self.node.raft.watch_applied();
        let _ = tokio::time::timeout(IN_FLIGHT_WAIT, applied.wait_for(|&a| a >= last)).await;
        let read_at = match &mut self.phase {
            Phase::Reading { at, reads, .. } => Some(ReadAt {
                index: *at,
                reads: reads.take(),
            }),
            _ => None,
        };
        self.node
            .speculation
            .begin(
                self.serial,
                self.txid(),
                read_at,
                self.savepoints.clone(),
                Some(gate),
            )
            .await?;
        self.phase = Phase::Writing;
        Ok(())
    }

    /// Describes a statement as the transaction sees the database.
    pub async fn describe(&mut self, sql: &str) -> Result<Description, SqlError> {
        match &self.phase {
            Phase::Fresh => self.node.describe_statement(sql).await,
            Phase::Reading { reader, .. } => {
                let sql = sql::pg_syntax::to_sqlite(sql)?;
                self.node.classes.classify(&sql)?;
                reader.describe(sql.to_string()).await
            }
            Phase::Writing => {
                let sql = sql::pg_syntax::to_sqlite(sql)?;
                self.node.classes.classify(&sql)?;
                self.node
                    .speculation
                    .describe(self.serial, sql.to_string())
                    .await
            }
        }
    }

    /// `SAVEPOINT name`.
    pub async fn savepoint(&mut self, name: &str) -> Result<(), SqlError> {
        if name
            .get(..sql::deny::INTERNAL_TABLE_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(sql::deny::INTERNAL_TABLE_PREFIX))
        {
            return Err(SqlError::new(
                sqlstate::RESERVED_NAME,
                format!("savepoint name \"{name}\" is reserved: names starting with _resqlite are ReSQLite's own"),
            ));
        }
        self.savepoint_step(Step::Savepoint(name.to_string()))
            .await?;
        self.savepoints.push(name.to_string());
        Ok(())
    }

    /// `RELEASE name`.
    pub async fn release(&mut self, name: &str) -> Result<(), SqlError> {
        let at = self.find_savepoint(name)?;
        self.savepoint_step(Step::Release(name.to_string())).await?;
        self.savepoints.truncate(at);
        Ok(())
    }

    /// `ROLLBACK TO name`.
    pub async fn rollback_to(&mut self, name: &str) -> Result<(), SqlError> {
        let at = self.find_savepoint(name)?;
        self.savepoint_step(Step::RollbackTo(name.to_string()))
            .await?;
        self.savepoints.truncate(at + 1);
        Ok(())
    }

    fn find_savepoint(&self, name: &str) -> Result<usize, SqlError> {
        self.savepoints
            .iter()
            .rposition(|s| s == name)
            .ok_or_else(|| no_savepoint(name))
    }

    /// A savepoint verb: recorded by the speculation once writing (reads
    /// change nothing a savepoint could undo).
    async fn savepoint_step(&mut self, step: Step) -> Result<(), SqlError> {
        match &self.phase {
            Phase::Writing => {
                self.node
                    .speculation
                    .savepoint_step(self.serial, step)
                    .await
            }
            Phase::Fresh | Phase::Reading { .. } => Ok(()),
        }
    }

    /// `COMMIT`: replicates the transaction's writes as one entry.
    pub async fn commit(mut self) -> Result<(), SqlError> {
        if !matches!(self.phase, Phase::Writing) {
            return Ok(());
        }
        // The speculation is over; nothing is left to roll back.
        self.phase = Phase::Fresh;
        let (entry, gate) = self.node.speculation.finish(self.serial).await?;
        let Some(entry) = entry else {
            return Ok(());
        };
        self.check_leader()?;
        let result = self.node.raft.propose(encode_transaction(entry)).await;
        // Held until the entry is applied here: no writer starts before it.
        drop(gate);
        match result {
            Ok(applied) => applied.map(|_| ()),
            Err(ProposeError::OutcomeUnknown) => Err(SqlError::new(
                sqlstate::STATEMENT_COMPLETION_UNKNOWN,
                "leadership changed before the commit was confirmed: the transaction may or may \
                 not have committed; check before retrying",
            )),
            Err(ProposeError::NotLeader { .. }) | Err(ProposeError::Dropped) => Err(term_changed()),
            Err(e) => Err(self.node.propose_error(e)),
        }
    }
}
