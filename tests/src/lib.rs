//! Harness for multi-process cluster tests.
