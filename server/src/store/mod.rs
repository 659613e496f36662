//! The node's SQLite: the replicated state machine (one writer connection
//! driven by the Raft log) and a pool of read-only connections for reads.

mod apply;
mod budget;
pub mod check;
mod clock_vfs;
mod db_file;
pub mod errors;
pub mod exec;
mod guard;
pub mod log_command;
mod pg_functions;
mod pg_types;
mod pinned;
mod read_pool;
mod read_stream;
pub mod roles;
pub(crate) mod semantics;
mod snapshot;
mod snapshot_reader;
pub mod speculation;
mod statement;
mod txid;
pub mod values;
mod write_run;
mod write_token;
mod write_watch;

pub use apply::{encode_write, ApplyResult, SqliteStateMachine};
pub use db_file::DbGeneration;
pub use read_pool::ReadPool;
pub use snapshot_reader::{SnapshotReader, SnapshotReaders};
pub use speculation::{ReadAt, RecordedRead, Speculation};
pub(crate) use statement::outcome_hash;
pub use write_token::WriteToken;

#[cfg(test)]
mod determinism_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

/// What a node's transactions run on (see `node::txn`).
pub struct TransactionStores {
    /// The leader's write transaction.
    pub speculation: Speculation,
    /// Snapshots of reading transactions.
    pub snapshots: SnapshotReaders,
}

impl TransactionStores {
    /// For the database at `path`, which `sm` applies to.
    pub fn open(path: &std::path::Path, sm: &SqliteStateMachine) -> std::io::Result<Self> {
        Ok(TransactionStores {
            speculation: Speculation::start(path, sm.generation(), sm.write_token())?,
            snapshots: SnapshotReaders::new(path, sm.generation()),
        })
    }
}
