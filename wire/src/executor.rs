//! The contract between the PostgreSQL front end and the node that runs SQL.
//! The wire crate knows nothing of Raft or SQLite: the server implements
//! [`Executor`], and one execution path serves every front end.

use std::future::Future;

/// A value as SQLite stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// The PostgreSQL type a column or parameter is announced with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgType {
    /// int8 (OID 20)
    Int8,
    /// float8 (OID 701)
    Float8,
    /// text (OID 25)
    Text,
    /// bytea (OID 17)
    Bytea,
    /// bool (OID 16)
    Bool,
}

/// One result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// The type announced in RowDescription; every value of this column is
    /// encoded as this type.
    pub pg_type: PgType,
}

/// What Parse/Describe learn about a statement without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// One type per `$n` parameter, in order.
    pub params: Vec<PgType>,
    /// The result columns (empty for a statement that returns no rows).
    pub columns: Vec<Column>,
}

/// The outcome of one statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The command tag PostgreSQL would send: `INSERT 0 1`, `SELECT 3`, `CREATE TABLE` …
    pub tag: String,
    /// Result columns, when the statement returns rows.
    pub columns: Vec<Column>,
    /// Result rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// An error with its SQLSTATE, sent to the client as an ErrorResponse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{sqlstate}: {message}")]
pub struct SqlError {
    /// Five-character SQLSTATE (`42601`, `25006` …).
    pub sqlstate: String,
    /// What happened and what to do.
    pub message: String,
    /// Extra detail (for 25006: the leader's bare `host:port`).
    pub detail: Option<String>,
}

impl SqlError {
    /// An error with no detail.
    pub fn new(sqlstate: &str, message: impl Into<String>) -> Self {
        SqlError {
            sqlstate: sqlstate.to_string(),
            message: message.into(),
            detail: None,
        }
    }
}

/// Per-connection settings the front end keeps and passes to every call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// `SET resqlite.read_consistency = 'weak'` turns off the quorum check on reads.
    pub weak_reads: bool,
    /// The role the session logged in as (the startup `user`).
    pub user: std::sync::Arc<str>,
    /// Whether that role is a superuser (always, with trust
    /// authentication).
    pub superuser: bool,
    /// `lock_timeout`: how long a statement may wait for the right to
    /// write (another session's write transaction) before it fails with
    /// 55P03. `None`: no limit (PostgreSQL's `0`).
    pub lock_timeout: Option<std::time::Duration>,
}

/// The clauses of `BEGIN`/`START TRANSACTION` (and `SET TRANSACTION`).
/// Every transaction is serializable; a weaker isolation level asked for
/// is accepted and delivered as serializable, as PostgreSQL allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionOptions {
    /// `READ ONLY`: writes inside it fail with 25006.
    pub read_only: bool,
    /// The block was opened by the front end around a multi-statement
    /// simple query, not by the client's BEGIN.
    pub implicit: bool,
}

/// What the front end announces at startup (ParameterStatus) and answers to
/// `SHOW transaction_read_only`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRole {
    /// This node is the leader: clients may write here.
    pub is_leader: bool,
}

/// The node side of the front end.
pub trait Executor: Send + Sync + 'static {
    /// Splits a simple-query string into statements, in order, without
    /// running any (a trigger body's `;` does not split).
    fn split(&self, sql: &str) -> Result<Vec<String>, SqlError>;

    /// Describes one statement for Parse/Describe: parameter count and
    /// types, result columns and their types. Runs nothing.
    fn describe(&self, sql: &str) -> impl Future<Output = Result<Description, SqlError>> + Send;

    /// Runs one statement with its bound parameters, after classification,
    /// routing and (for writes) commit through Raft. A result of more
    /// than a batch comes as a [`crate::RowStream`] (see
    /// [`crate::row_channel`]), never collected whole.
    ///
    /// The front end drops the future, or the stream it returned, when the
    /// client cancels, its `statement_timeout` expires or it hangs up: the
    /// executor stops the statement's work then (a read is interrupted
    /// inside SQLite).
    fn execute(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<crate::Reply, SqlError>> + Send;

    /// This node's current role.
    fn role(&self) -> NodeRole;

    /// An open transaction block. Dropping it (or [`Executor::rollback`])
    /// rolls it back and releases whatever it holds.
    type Transaction: Send + 'static;

    /// Opens a transaction block (`BEGIN`). Runs nothing yet: the
    /// transaction takes its snapshot at its first statement, as in
    /// PostgreSQL.
    ///
    /// The front end calls it lazily, right before the block's first
    /// `execute_in` or `savepoint` (so `SET TRANSACTION` can still set the
    /// options), and for a multi-statement simple query outside a block
    /// with `implicit: true`. An implicit transaction may become the
    /// client's own block when the query's text holds `BEGIN`, and then
    /// stays open after the query. Every transaction begun ends with
    /// exactly one of `commit`, `rollback`, or being dropped (the
    /// connection died). A block that ran no statement never calls it.
    fn begin(
        &self,
        session: &Session,
        options: TransactionOptions,
    ) -> Result<Self::Transaction, SqlError>;

    /// Runs one statement inside `txn`: sees the transaction's own
    /// writes, returns real row counts and `RETURNING` rows at once.
    /// Dropping the future interrupts the statement, as for
    /// [`Executor::execute`] (a cancel, `statement_timeout`, a hang-up).
    /// An error, or the drop, must leave the transaction as it was
    /// before the statement: the front end then puts the block in the
    /// failed state, and a later `rollback_to` or `rollback` must still
    /// work on it. It is awaited on the connection's task whatever the
    /// statement's size: heavy work belongs off the async workers.
    fn execute_in<'a>(
        &'a self,
        txn: &'a mut Self::Transaction,
        session: &'a Session,
        sql: &'a str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<crate::Reply, SqlError>> + Send + 'a;

    /// Describes a statement as seen inside `txn` (a table it created is
    /// known).
    fn describe_in<'a>(
        &'a self,
        txn: &'a mut Self::Transaction,
        sql: &'a str,
    ) -> impl Future<Output = Result<Description, SqlError>> + Send + 'a;

    /// `SAVEPOINT name`.
    fn savepoint<'a>(
        &'a self,
        txn: &'a mut Self::Transaction,
        name: &'a str,
    ) -> impl Future<Output = Result<(), SqlError>> + Send + 'a;

    /// `RELEASE [SAVEPOINT] name`: forgets `name` and every savepoint
    /// set after it, keeping their effects.
    fn release<'a>(
        &'a self,
        txn: &'a mut Self::Transaction,
        name: &'a str,
    ) -> impl Future<Output = Result<(), SqlError>> + Send + 'a;

    /// `ROLLBACK TO [SAVEPOINT] name`: undoes everything since `name`
    /// was set; `name` stays.
    fn rollback_to<'a>(
        &'a self,
        txn: &'a mut Self::Transaction,
        name: &'a str,
    ) -> impl Future<Output = Result<(), SqlError>> + Send + 'a;

    /// `COMMIT`: replicates the transaction's writes as one unit and
    /// returns once they are applied, or fails (40001: rolled back, safe
    /// to retry; 40003: outcome unknown). The front end never drops this
    /// future early (a cancel or `statement_timeout` does not stop a
    /// commit), so it must end on its own. Whatever the result, the block
    /// is over.
    fn commit(&self, txn: Self::Transaction) -> impl Future<Output = Result<(), SqlError>> + Send;

    /// `ROLLBACK`: discards the transaction.
    fn rollback(&self, txn: Self::Transaction) {
        drop(txn);
    }
}
