//! PostgreSQL wire protocol front end for ReSQLite, on `pgwire`.
//!
//! It speaks the protocol and maps types; everything about running SQL is
//! behind the [`Executor`] trait, which the node implements.

mod executor;

pub use executor::{
    Column, Description, Executor, NodeRole, Outcome, PgType, Session, SqlError, Value,
};
