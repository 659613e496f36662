//! Transaction ids a client can see and look up.
//!
//! Every transaction gets an id at its first statement, `term.node.serial`
//! (one leader per term, and a node numbers its own transactions), which
//! `resqlite_txid()` returns inside it. The id travels in the
//! transaction's log entry, so a write may store it: every node returns
//! the same value while it applies the entry. Once the entry commits,
//! every node records the id (`_resqlite_txns`), and
//! `resqlite_txid_status(id)` answers, like PostgreSQL's `txid_status`:
//! - `committed`: it committed;
//! - `aborted`: it cannot commit any more: the database holds an entry of
//!   a later term, and Raft never commits an entry of an older term after
//!   one of a newer term;
//! - `in progress`: it may still commit (ask again, on the leader);
//! - NULL: older than the ids kept (see `apply::TXID_RETENTION`).
//!
//! So a client whose COMMIT ended with 40003 (outcome unknown) can find out
//! what happened.

use std::sync::{Arc, Mutex};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::Connection;

/// The id of the transaction running on a connection, if any.
pub(crate) type TxidCell = Arc<Mutex<Option<String>>>;

/// Sets the id `cell` answers with.
pub(crate) fn set(cell: &TxidCell, txid: Option<String>) {
    *cell.lock().unwrap_or_else(|e| e.into_inner()) = txid;
}

/// Registers `resqlite_txid()` on `conn`, answering from `cell`.
pub(crate) fn register_txid(conn: &Connection, cell: TxidCell) -> rusqlite::Result<()> {
    conn.create_scalar_function("resqlite_txid", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(
            match cell.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                Some(id) => ToSqlOutput::Owned(SqlValue::Text(id)),
                None => ToSqlOutput::Owned(SqlValue::Null),
            },
        )
    })
}

/// Registers `resqlite_txid_status(id)` on a read connection.
pub(crate) fn register_status(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "resqlite_txid_status",
        1,
        FunctionFlags::SQLITE_UTF8,
        status,
    )
}

fn invalid(why: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(why.into())
}

fn status(ctx: &mut Context<'_>) -> rusqlite::Result<ToSqlOutput<'static>> {
    let Some(txid) = ctx.get::<Option<String>>(0)? else {
        return Ok(ToSqlOutput::Owned(SqlValue::Null));
    };
    let term: u64 = txid
        .split('.')
        .next()
        .and_then(|t| t.parse().ok())
        .filter(|_| txid.split('.').count() == 3)
        .ok_or_else(|| {
            invalid(format!(
                "\"{txid}\" is not a transaction id (term.node.serial)"
            ))
        })?;
    // SAFETY: the connection is only used for reads inside this call, on
    // the thread that runs the statement calling it.
    let conn = unsafe { ctx.get_connection()? };
    let committed: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM _resqlite_txns WHERE txid = ?1)")?
        .query_row([&txid], |r| r.get(0))?;
    if committed {
        return Ok(text("committed"));
    }
    let meta = |key: &str| -> rusqlite::Result<u64> {
        conn.prepare_cached(
            "SELECT coalesce((SELECT value FROM _resqlite_meta WHERE key = ?1), 0)",
        )?
        .query_row([key], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
    };
    if term <= meta("txid_forgotten_term")? {
        return Ok(ToSqlOutput::Owned(SqlValue::Null));
    }
    if meta("applied_term")? > term {
        return Ok(text("aborted"));
    }
    Ok(text("in progress"))
}

fn text(s: &str) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(SqlValue::Text(s.to_string()))
}
