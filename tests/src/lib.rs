//! Harness for multi-process cluster tests.

pub mod cluster;
