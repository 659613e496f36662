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
mod read_pool;
mod read_stream;
pub mod roles;
mod snapshot;
pub mod values;
mod write_run;
mod write_watch;

pub use apply::{encode_write, ApplyResult, SqliteStateMachine};
pub use db_file::DbGeneration;
pub use read_pool::ReadPool;

#[cfg(test)]
mod determinism_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
