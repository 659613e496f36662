//! PostgreSQL wire protocol front end for ReSQLite, on `pgwire`.
//!
//! It speaks the protocol and maps types; everything about running SQL is
//! behind the [`Executor`] trait, which the node implements. [`serve`]
//! accepts clients: simple and extended query, text and binary formats,
//! cancel requests, the session commands (`SET`, `SHOW`, `RESET`) that
//! drivers send, answered here, and transaction blocks with PostgreSQL's
//! rules (`BEGIN` … `COMMIT`, savepoints, the failed state, implicit
//! transactions around multi-statement queries).

mod admission;
mod auth;
mod block;
mod client;
mod codec;
mod connection;
mod errors;
mod executor;
mod extended;
// For the fuzz targets in `fuzz/` only: not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod interrupt;
mod large_statement;
mod options;
mod rows;
mod server;
mod session;
mod simple;
mod startup;
mod types;

pub use auth::{Roles, ScramVerifier, SCRAM_ITERATIONS};
pub use executor::{
    Column, Description, Executor, NodeRole, Outcome, PgType, Session, SqlError,
    TransactionOptions, Value,
};
pub use large_statement::{statement_bytes, LargeStatements, LARGE_STATEMENT_BYTES};
pub use options::{
    Auth, ClientTls, WireOptions, DEFAULT_MAX_CONNECTIONS, MAX_BOUND_BYTES, MAX_PORTALS,
    MAX_PREPARED_BYTES, MAX_PREPARED_STATEMENTS, MAX_STATEMENT_BYTES,
};
pub use rows::{
    row_channel, Chunk, Reply, RowBatch, RowSender, RowStream, Stopped, BATCH_BYTES,
    CONTENDED_STALL_LIMIT, QUEUED_BATCHES, STALLED_CLIENT_LIMIT,
};
pub use server::serve;
