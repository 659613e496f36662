//! Statements the front end answers itself, never sending them to the
//! executor: `SET`, `RESET` and `SHOW`, and the per-connection settings
//! they read and write; and the transaction-control statements (`BEGIN`,
//! `COMMIT`, savepoints, `SET TRANSACTION` …), parsed here and carried out
//! by the connection (see `crate::block`).
//!
//! Drivers send `SET extra_float_digits = 3`, `SET application_name = …`
//! and the like at connect time; SQLite knows none of them, so every
//! setting is accepted and remembered. A few are checked:
//! `resqlite.read_consistency` (`weak` or `linearizable`, which sets
//! [`crate::Session::weak_reads`]), `client_encoding` (only UTF8 is
//! spoken), `statement_timeout` and `idle_in_transaction_session_timeout`
//! (which the connection enforces), `lock_timeout` (passed on in
//! [`crate::Session::lock_timeout`]) and `default_transaction_read_only`.
//! Settings are not transactional: a `ROLLBACK` does not undo a `SET`, and
//! `SET LOCAL` is treated as `SET`.

mod command;
mod settings;
mod timeout;
mod tokens;
mod transaction;

pub(crate) use command::{parse, Command};
pub(crate) use settings::Settings;
pub(crate) use transaction::{Control, Modes};
