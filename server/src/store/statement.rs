//! One client statement on a guarded writer connection: the apply
//! connection (a replicated write, or a step of a replicated transaction)
//! and the leader's speculation connection (a transaction's statement, run
//! before it is replicated) run it with the same code, so both produce the
//! same outcome from the same database.

use std::sync::atomic::{AtomicBool, Ordering};

use resqlite_wire::{Outcome, SqlError, Value};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::errors::node_local_failure;
use super::exec::bind;
use super::write_run::{run_write, WriteError, WriteRows};
use super::write_watch::WriteScope;

/// Why a statement did not complete.
#[derive(Debug)]
pub(crate) enum StatementFailure {
    /// A node-local failure (disk full, I/O error …): the node's problem,
    /// not the statement's. `doing` says what was under way.
    NodeLocal {
        doing: &'static str,
        error: rusqlite::Error,
    },
    /// The statement's own error, the same on every node; its effects are
    /// undone and the enclosing transaction goes on.
    Failed(SqlError),
    /// The statement's own error, after which SQLite rolled back the whole
    /// enclosing transaction by itself (`INSERT OR ROLLBACK`,
    /// `RAISE(ROLLBACK, …)`, a write interrupted by its budget).
    TransactionLost(SqlError),
}

/// Runs ReSQLite's own statement on `conn`, past the authorizer.
pub(crate) fn internal(conn: &Connection, flag: &AtomicBool, sql: &str) -> rusqlite::Result<()> {
    flag.store(true, Ordering::Relaxed);
    let result = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.raw_execute().map(|_| ()));
    flag.store(false, Ordering::Relaxed);
    result
}

/// When a statement's deferred constraints are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deferred {
    /// At its end: it commits on its own.
    CheckNow,
    /// At the end of its transaction.
    AtCommit,
}

/// Runs one client statement inside a savepoint of its own, which an
/// error rolls back. `wanted`: build the rows it returns (every node steps
/// through them and counts them against the same budget either way).
pub(crate) fn run_in_savepoint(
    conn: &Connection,
    flag: &AtomicBool,
    sql: &str,
    params: &[Value],
    command: &str,
    wanted: bool,
    deferred: Deferred,
) -> Result<Outcome, StatementFailure> {
    let node_local = |doing, error| StatementFailure::NodeLocal { doing, error };
    internal(conn, flag, "SAVEPOINT resqlite_stmt")
        .map_err(|e| node_local("opening the statement's savepoint", e))?;
    let result = match run_guarded(conn, sql, params, wanted) {
        Err(WriteError::Sqlite(e)) if node_local_failure(&e) => {
            return Err(node_local("applying a write", e));
        }
        Err(e) => Err(e.into_sql_error()),
        Ok(_) if deferred == Deferred::CheckNow && deferred_violations(conn) => {
            Err(deferred_violation())
        }
        Ok(rows) => Ok(rows),
    };
    if let Err(e) = &result {
        if conn.is_autocommit() {
            return Err(StatementFailure::TransactionLost(e.clone()));
        }
    }
    let undo = if result.is_err() {
        "ROLLBACK TO resqlite_stmt"
    } else {
        "RELEASE resqlite_stmt"
    };
    internal(conn, flag, undo).map_err(|e| node_local("closing the statement's savepoint", e))?;
    if result.is_err() {
        internal(conn, flag, "RELEASE resqlite_stmt")
            .map_err(|e| node_local("closing the statement's savepoint", e))?;
    }
    let rows = result.map_err(StatementFailure::Failed)?;
    let count = if rows.width == 0 || is_dml(command) {
        conn.changes()
    } else {
        rows.count
    };
    Ok(Outcome {
        tag: crate::sql::Classified::tag_for(command, count),
        columns: rows.set.columns,
        rows: rows.set.rows,
    })
}

/// Runs a client's statement under the write guards: whatever a guard
/// recorded decides the error, whatever SQLite made of the refusal.
fn run_guarded(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    wanted: bool,
) -> Result<WriteRows, WriteError> {
    let scope = WriteScope::enter();
    let result = (|| {
        let mut stmt = conn.prepare_cached(sql).map_err(WriteError::Sqlite)?;
        bind(&mut stmt, params).map_err(WriteError::Sql)?;
        run_write(&mut stmt, wanted)
    })();
    match scope.finish() {
        Some(violation) => Err(WriteError::Sql(violation.to_sql_error())),
        None => result,
    }
}

/// Whether the connection's open transaction holds deferred foreign-key
/// violations, which would make its COMMIT fail. A write that commits on
/// its own must not leave any: the batch it is applied in would fail to
/// commit on every node, and the node would halt (a rolled-back savepoint
/// takes its violations with it).
pub(crate) fn deferred_violations(conn: &Connection) -> bool {
    let (mut current, mut highwater) = (0, 0);
    // SAFETY: the handle is the live connection's; SQLite only writes the
    // two integers.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut highwater,
            0,
        )
    };
    rc != rusqlite::ffi::SQLITE_OK || current > 0
}

/// The error of a statement or transaction that leaves a deferred foreign
/// key unsatisfied, as PostgreSQL reports it at commit.
pub(crate) fn deferred_violation() -> SqlError {
    SqlError::new(
        crate::sql::sqlstate::FOREIGN_KEY_VIOLATION,
        "FOREIGN KEY constraint failed: a deferred foreign key is not satisfied at commit",
    )
}

fn is_dml(command: &str) -> bool {
    matches!(command, "INSERT" | "UPDATE" | "DELETE")
}

/// A digest of what a statement gave its client: its tag and every value
/// of every row, each with its kind. The leader records it with each
/// statement of a transaction; every node compares it with its own.
pub(crate) fn outcome_hash(outcome: &Outcome) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((outcome.tag.len() as u64).to_le_bytes());
    h.update(outcome.tag.as_bytes());
    h.update((outcome.rows.len() as u64).to_le_bytes());
    for row in &outcome.rows {
        h.update((row.len() as u64).to_le_bytes());
        for value in row {
            match value {
                Value::Null => h.update([0u8]),
                Value::Integer(i) => {
                    h.update([1u8]);
                    h.update(i.to_le_bytes());
                }
                Value::Real(f) => {
                    h.update([2u8]);
                    h.update(f.to_bits().to_le_bytes());
                }
                Value::Text(s) => {
                    h.update([3u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                Value::Blob(b) => {
                    h.update([4u8]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
    }
    h.finalize().into()
}

/// `name` as a quoted SQLite identifier (a savepoint name from a client).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(tag: &str, rows: Vec<Vec<Value>>) -> Outcome {
        Outcome {
            tag: tag.into(),
            columns: Vec::new(),
            rows,
        }
    }

    #[test]
    fn the_hash_tells_kinds_and_boundaries_apart() {
        let a = outcome("INSERT 0 1", vec![vec![Value::Integer(1)]]);
        let b = outcome("INSERT 0 1", vec![vec![Value::Text("1".into())]]);
        let c = outcome(
            "INSERT 0 1",
            vec![vec![Value::Text("ab".into()), Value::Null]],
        );
        let d = outcome(
            "INSERT 0 1",
            vec![vec![Value::Text("a".into())], vec![Value::Text("b".into())]],
        );
        let hashes = [&a, &b, &c, &d].map(outcome_hash);
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                assert_ne!(hashes[i], hashes[j], "{i} and {j}");
            }
        }
        assert_eq!(outcome_hash(&a), outcome_hash(&a.clone()));
    }

    #[test]
    fn savepoint_names_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
