//! Session commands the front end answers itself, never sending them to the
//! executor: `SET`, `RESET` and `SHOW`, and the per-connection settings they
//! read and write.
//!
//! Drivers send `SET extra_float_digits = 3`, `SET application_name = …`
//! and the like at connect time; SQLite knows none of them, so every
//! setting is accepted and remembered. Two are checked:
//! `resqlite.read_consistency` (`weak` or `linearizable`, which sets
//! [`crate::Session::weak_reads`]), `client_encoding` (only UTF8 is spoken)
//! and `statement_timeout` (which the connection enforces).
//! `SET LOCAL` is treated as `SET`: there is no transaction scope here.

mod command;
mod settings;
mod timeout;

pub(crate) use command::{parse, Command};
pub(crate) use settings::Settings;
