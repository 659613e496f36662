//! Running one replicated write to completion on the apply connection.
//!
//! Every node steps the statement through all its rows (its effects must
//! be the same everywhere) and counts the bytes of the rows it returns
//! against the same bound; only the node whose client waits builds them.

use resqlite_wire::{Column, SqlError};
use rusqlite::types::ValueRef;
use rusqlite::Statement;

use super::budget::ResultBytes;
use super::errors::sql_error;
use super::exec::{declared_types, RowSet};
use super::values::{from_sqlite, pg_type_for_values};

/// Why a write did not complete.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// SQLite failed; the caller decides whether the failure is the
    /// statement's (the same on every node) or the node's own.
    Sqlite(rusqlite::Error),
    /// The statement's own error, the same on every node.
    Sql(SqlError),
}

impl WriteError {
    /// The client's error.
    pub(crate) fn into_sql_error(self) -> SqlError {
        match self {
            WriteError::Sqlite(e) => sql_error(&e),
            WriteError::Sql(e) => e,
        }
    }
}

/// What a write returned.
#[derive(Debug, Default)]
pub(crate) struct WriteRows {
    /// The rows, when a client waits for them (empty otherwise).
    pub(crate) set: RowSet,
    /// How many result columns the statement has.
    pub(crate) width: usize,
    /// How many rows it returned.
    pub(crate) count: u64,
}

/// Steps `stmt` to the end; builds the rows only if `wanted`.
pub(crate) fn run_write(stmt: &mut Statement<'_>, wanted: bool) -> Result<WriteRows, WriteError> {
    // The columns are read after the first step, never before: a cached
    // statement prepared before a schema change still has the old columns
    // until a step prepares it again (`RETURNING *` after `ALTER TABLE …
    // ADD COLUMN`). Nodes whose caches differ (one restarted) would then
    // count different bytes against the budget, and could diverge.
    let mut declared = None;
    let mut width = 0;
    let mut rows = Vec::new();
    let mut count = 0u64;
    let mut bytes = ResultBytes::default();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(WriteError::Sqlite)? {
        if declared.is_none() {
            let columns = declared_types(row.as_ref());
            width = columns.len();
            declared = Some(columns);
        }
        count += 1;
        let mut values = Vec::with_capacity(if wanted { width } else { 0 });
        for i in 0..width {
            let value = row.get_ref(i).map_err(WriteError::Sqlite)?;
            bytes
                .add(value_len(value))
                .map_err(|e| WriteError::Sql(e.to_sql_error()))?;
            if wanted {
                values.push(from_sqlite(value));
            }
        }
        if wanted {
            rows.push(values);
        }
    }
    drop(cursor);
    let declared = declared.unwrap_or_else(|| declared_types(stmt));
    width = declared.len();
    let columns = if wanted {
        declared
            .into_iter()
            .enumerate()
            .map(|(i, (name, pg_type))| Column {
                name,
                pg_type: pg_type.unwrap_or_else(|| pg_type_for_values(rows.iter().map(|r| &r[i]))),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(WriteRows {
        set: RowSet { columns, rows },
        width,
        count,
    })
}

fn value_len(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
    }
}
