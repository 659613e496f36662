//! Harness for multi-process cluster tests.

pub mod check;
pub mod cli;
pub mod cluster;
pub mod grpc;
pub mod jepsen;
pub mod postgres;
pub mod sql_cluster;
pub mod writer;
