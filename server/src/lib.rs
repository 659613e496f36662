//! A ReSQLite node: the SQLite state machine, statement classification,
//! routing between the front ends and Raft, and the command line.

pub mod sql;
