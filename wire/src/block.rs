//! The transaction block a connection is in, with PostgreSQL's rules: a
//! block is open (`T`) or failed (`E`, after any error inside it, until
//! `ROLLBACK`, `COMMIT` — which then rolls back — or a successful `ROLLBACK
//! TO`), and the statements that open and end it are carried out here.
//!
//! The executor's transaction is begun lazily, at the block's first
//! statement that needs it (or at its first `SAVEPOINT`): `SET
//! TRANSACTION` may still change the block's options until then, and a
//! block with no statement commits without the executor. So the executor
//! sees `begin` right before the first `execute_in`/`savepoint`, and a
//! block whose transaction was begun always ends with exactly one of
//! `commit`, `rollback` or dropping it (the connection closed).
//!
//! A simple-query message with several statements outside a block runs as
//! one implicit block (begun with [`TransactionOptions::implicit`]): its
//! statements commit together at the end of the message, or, after an
//! error, none does. An explicit `BEGIN` inside the message turns it into
//! an ordinary block that stays open after the message, and `COMMIT` ends
//! it early, as in PostgreSQL.

use pgwire::messages::response::{NoticeResponse, TransactionStatus};
use pgwire::messages::PgWireBackendMessage;

use crate::connection::{Connection, Failure};
use crate::errors::warning_info;
use crate::executor::{Executor, Outcome, SqlError, TransactionOptions};
use crate::interrupt::Interrupts;
use crate::session::{Control, Modes};

/// An open transaction block.
pub(crate) struct Block<T> {
    /// What the executor's transaction is (or will be) begun with.
    options: TransactionOptions,
    /// The executor's transaction, once a statement needed it.
    txn: Option<Held<T>>,
    /// An error happened inside the block: only its end is accepted.
    failed: bool,
}

impl<T> Block<T> {
    fn new(options: TransactionOptions) -> Self {
        Block {
            options,
            txn: None,
            failed: false,
        }
    }

    /// The executor's transaction, once begun (see
    /// `Connection::begin_transaction`).
    pub(crate) fn transaction(&mut self) -> Option<&mut T> {
        self.txn.as_mut().map(Held::get)
    }
}

/// The executor's transaction as the connection holds it. The contract
/// asks a transaction to be `Send` only, but the connection is shared by
/// reference across awaits, which needs `Sync`: a `Mutex` gives that, and
/// since it is only ever reached through `&mut` (`get_mut`), it is never
/// locked.
struct Held<T>(std::sync::Mutex<T>);

impl<T> Held<T> {
    fn new(txn: T) -> Self {
        Held(std::sync::Mutex::new(txn))
    }

    fn get(&mut self) -> &mut T {
        // Never locked, so never poisoned; the value is fine either way.
        self.0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn into_inner(self) -> T {
        self.0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 25P02: a statement sent to a failed block.
pub(crate) fn in_failed_block() -> SqlError {
    SqlError::new(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// 25P01: a statement that needs a block, outside one.
fn outside_block(what: &str) -> SqlError {
    SqlError::new(
        "25P01",
        format!("{what} can only be used in transaction blocks"),
    )
}

fn no_transaction() -> SqlError {
    SqlError::new("25P01", "there is no transaction in progress")
}

fn savepoint_missing(name: &str) -> SqlError {
    SqlError::new("3B001", format!("savepoint \"{name}\" does not exist"))
}

fn outcome(tag: &str) -> Outcome {
    Outcome {
        tag: tag.to_string(),
        columns: Vec::new(),
        rows: Vec::new(),
    }
}

impl<E: Executor> Connection<E> {
    /// The status ReadyForQuery reports.
    pub(crate) fn transaction_status(&self) -> TransactionStatus {
        match &self.block {
            None => TransactionStatus::Idle,
            Some(block) if block.failed => TransactionStatus::Error,
            Some(_) => TransactionStatus::Transaction,
        }
    }

    /// Whether the connection is in a failed block.
    pub(crate) fn in_failed_block(&self) -> bool {
        self.block.as_ref().is_some_and(|b| b.failed)
    }

    /// Whether the connection is in a block, and that block is read-only.
    pub(crate) fn block_read_only(&self) -> Option<bool> {
        self.block.as_ref().map(|b| b.options.read_only)
    }

    /// Opens the implicit block around the statements of a simple-query
    /// message, unless a block is open already.
    pub(crate) fn open_implicit_block(&mut self) {
        if self.block.is_none() {
            self.block = Some(Block::new(TransactionOptions {
                read_only: self.settings.default_read_only(),
                implicit: true,
            }));
        }
    }

    /// Commits the implicit block at the end of its message, if it is
    /// still open. An error means it was rolled back.
    pub(crate) async fn close_implicit_block(&mut self) -> Result<(), SqlError> {
        if !self.block.as_ref().is_some_and(|b| b.options.implicit) {
            return Ok(());
        }
        self.commit_block().await
    }

    /// Begins the block's executor transaction if it is not yet. Outside a
    /// block, does nothing.
    pub(crate) fn begin_transaction(&mut self) -> Result<(), SqlError> {
        let Some(block) = &mut self.block else {
            return Ok(());
        };
        if block.txn.is_none() {
            let session = self.settings.session();
            let options = block.options.clone();
            let executor = &self.executor;
            let txn = crate::guard::call_sync(|| executor.begin(&session, options))?;
            block.txn = Some(Held::new(txn));
        }
        Ok(())
    }

    /// What an error inside a block does to it: an explicit block fails, an
    /// implicit one is rolled back (none of its message's statements
    /// stays).
    pub(crate) fn abort_statement(&mut self) {
        match &mut self.block {
            Some(block) if block.options.implicit => self.end_block(),
            Some(block) => block.failed = true,
            None => {}
        }
    }

    /// Ends the block, rolling its transaction back. Portals die with it,
    /// as in PostgreSQL (their rows may come from its transaction).
    pub(crate) fn end_block(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        self.portals.clear();
        if let Some(txn) = block.txn {
            let executor = &self.executor;
            let rolled_back = crate::guard::call_sync(|| {
                executor.rollback(txn.into_inner());
                Ok(())
            });
            if let Err(e) = rolled_back {
                tracing::warn!(message = %e.message, "rolling a transaction back failed");
            }
        }
    }

    /// Commits the block (trivially when it ran no statement). The block
    /// is over whatever the outcome.
    async fn commit_block(&mut self) -> Result<(), SqlError> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        self.portals.clear();
        match block.txn {
            // A commit is not interrupted by a cancel or statement_timeout:
            // once the writes are on their way, the outcome must be known.
            Some(txn) => crate::guard::catch(self.executor.commit(txn.into_inner())).await,
            None => Ok(()),
        }
    }

    /// Sends a WARNING; the statement goes on.
    async fn warn(&mut self, warning: SqlError) -> Result<(), Failure> {
        self.feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
            warning_info(&warning),
        )))
        .await?;
        Ok(())
    }

    /// Applies `SET TRANSACTION` (or `BEGIN`'s) modes to the open block.
    fn set_modes(&mut self, modes: Modes) -> Result<(), SqlError> {
        let (Some(block), Some(read_only)) = (&mut self.block, modes.read_only) else {
            return Ok(());
        };
        if block.txn.is_some() && block.options.read_only != read_only {
            // PostgreSQL lets a transaction turn read-only late; the
            // executor's transaction cannot change once begun.
            let mode = if read_only { "read-only" } else { "read-write" };
            return Err(SqlError::new(
                "25001",
                format!("transaction {mode} mode must be set before any query"),
            ));
        }
        block.options.read_only = read_only;
        Ok(())
    }

    /// Carries out a transaction-control statement.
    pub(crate) async fn run_control(
        &mut self,
        control: &Control,
        interrupts: &mut Interrupts,
    ) -> Result<Outcome, Failure> {
        if self.in_failed_block() && !control.ends_failed_block() {
            return Err(in_failed_block().into());
        }
        let implicit = self.block.as_ref().map(|b| b.options.implicit);
        match control {
            Control::Begin { modes, start } => {
                match implicit {
                    None => {
                        self.block = Some(Block::new(TransactionOptions {
                            read_only: self.settings.default_read_only(),
                            implicit: false,
                        }));
                    }
                    Some(true) => {}
                    Some(false) => {
                        self.warn(SqlError::new(
                            "25001",
                            "there is already a transaction in progress",
                        ))
                        .await?
                    }
                }
                // Before the implicit block turns explicit: if the modes
                // are refused, it is still rolled back whole.
                self.set_modes(*modes)?;
                if let Some(block) = &mut self.block {
                    // The statements before BEGIN in its message join the
                    // block, which outlives the message.
                    block.options.implicit = false;
                }
                Ok(outcome(if *start { "START TRANSACTION" } else { "BEGIN" }))
            }
            Control::Commit { chain } | Control::Rollback { chain } => {
                let commit = matches!(control, Control::Commit { .. });
                let what = if commit { "COMMIT" } else { "ROLLBACK" };
                if *chain && implicit != Some(false) {
                    return Err(outside_block(&format!("{what} AND CHAIN")).into());
                }
                if implicit != Some(false) {
                    self.warn(no_transaction()).await?;
                }
                let options = self.block.as_ref().map(|b| b.options.clone());
                let tag = if commit && !self.in_failed_block() {
                    self.commit_block().await?;
                    "COMMIT"
                } else {
                    self.end_block();
                    "ROLLBACK"
                };
                if let (true, Some(options)) = (*chain, options) {
                    self.block = Some(Block::new(options));
                }
                Ok(outcome(tag))
            }
            Control::Savepoint(name) => {
                if implicit != Some(false) {
                    return Err(outside_block("SAVEPOINT").into());
                }
                self.begin_transaction()?;
                let Some(block) = &mut self.block else {
                    return Err(outside_block("SAVEPOINT").into());
                };
                let txn = block
                    .transaction()
                    .ok_or_else(|| outside_block("SAVEPOINT"))?;
                let socket = self.conn.tcp();
                interrupts
                    .race(socket, self.executor.savepoint(txn, name))
                    .await?;
                Ok(outcome("SAVEPOINT"))
            }
            Control::Release(name) | Control::RollbackTo(name) => {
                let release = matches!(control, Control::Release(_));
                if implicit != Some(false) {
                    let what = if release {
                        "RELEASE SAVEPOINT"
                    } else {
                        "ROLLBACK TO SAVEPOINT"
                    };
                    return Err(outside_block(what).into());
                }
                let socket = self.conn.tcp();
                let Some(block) = &mut self.block else {
                    return Err(savepoint_missing(name).into());
                };
                // SAVEPOINT begins the transaction: without one, none was set.
                let txn = block.transaction().ok_or_else(|| savepoint_missing(name))?;
                if release {
                    interrupts
                        .race(socket, self.executor.release(txn, name))
                        .await?;
                    Ok(outcome("RELEASE"))
                } else {
                    interrupts
                        .race(socket, self.executor.rollback_to(txn, name))
                        .await?;
                    block.failed = false;
                    Ok(outcome("ROLLBACK"))
                }
            }
            Control::SetTransaction(modes) => {
                if self.block.is_none() {
                    self.warn(outside_block("SET TRANSACTION")).await?;
                } else {
                    self.set_modes(*modes)?;
                }
                Ok(outcome("SET"))
            }
            Control::SetDefaults(modes) => {
                if let Some(read_only) = modes.read_only {
                    self.settings.set_default_read_only(read_only);
                }
                Ok(outcome("SET"))
            }
        }
    }
}
