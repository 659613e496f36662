//! A ReSQLite node: the SQLite state machine, statement classification,
//! routing between the front ends and Raft, and the command line.

pub mod certs;
pub mod grpc_tls;
pub mod node;
pub mod sql;
pub mod store;

/// The PostgreSQL version ReSQLite presents (`server_version`,
/// `SELECT version()`): 14 or later, so libpq trusts `in_hot_standby`.
pub const PG_VERSION: &str = "16.0";
