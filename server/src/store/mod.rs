//! The node's SQLite: the replicated state machine (one writer connection
//! driven by the Raft log) and a pool of read-only connections for reads.

mod apply;
pub mod errors;
pub mod exec;
mod guard;
mod read_pool;
pub mod values;

pub use apply::{encode_write, ApplyResult, SqliteStateMachine};
pub use read_pool::ReadPool;

#[cfg(test)]
mod tests;
