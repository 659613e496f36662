//! One read on a reader thread's connection, its rows handed over in
//! bounded batches as SQLite produces them.
//!
//! A result that fits in one batch is answered whole, as before streaming
//! existed; columns with no declared type then take the type of all their
//! values. A larger one is answered with a [`RowStream`] as soon as its
//! first batch is ready (such columns take the type of the first batch's
//! values; a later value of another kind is sent as its own text, see
//! `wire/src/types`), and the thread keeps stepping the statement, at most
//! [`resqlite_wire::QUEUED_BATCHES`] ahead of the client. It stops when the
//! last row is taken, when the stream is dropped (the read is interrupted
//! inside SQLite then, see `read_pool`), or when the client reads nothing
//! for [`STALLED_CLIENT_LIMIT`], or for [`CONTENDED_STALL_LIMIT`] while
//! other reads wait for a reader: clients that never read cannot hold the
//! reader threads from everyone else.

use resqlite_wire::{
    row_channel, Outcome, Reply, RowBatch, SqlError, Stopped, Value, CONTENDED_STALL_LIMIT,
    STALLED_CLIENT_LIMIT,
};
use rusqlite::Connection;

use super::errors::sql_error;
use super::exec::{bind, result_types, row_values, typed_columns};
use super::read_pool::Answer;
use crate::sql::{sqlstate, Classified};

/// Runs `sql` with `params` and answers with its rows; `command` is the
/// tag's command word, `others_wait` says whether reads wait for a reader.
pub(super) fn run(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    command: &'static str,
    others_wait: impl Fn() -> bool + Send + 'static,
    answer: Answer<Reply>,
) {
    let mut stmt = match conn.prepare_cached(sql) {
        Ok(stmt) => stmt,
        Err(e) => {
            answer.send(Err(sql_error(&e)));
            return;
        }
    };
    if !stmt.readonly() {
        answer.send(Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "statement is not read-only: it cannot run as a read",
        )));
        return;
    }
    if let Err(e) = bind(&mut stmt, params) {
        answer.send(Err(e));
        return;
    }
    // The columns are read after the first step, never before: a cached
    // statement prepared before a schema change still has the old columns
    // until a step prepares it again (`SELECT *` after `ALTER TABLE … ADD
    // COLUMN` lost the new column).
    let mut cursor = stmt.raw_query();
    let (declared, first_row) = match cursor.next() {
        Err(e) => {
            answer.send(Err(sql_error(&e)));
            return;
        }
        Ok(Some(row)) => {
            let declared = result_types(conn, sql, row.as_ref());
            match row_values(row, declared.len()) {
                Ok(values) => (declared, values),
                Err(e) => {
                    answer.send(Err(e));
                    return;
                }
            }
        }
        Ok(None) => {
            drop(cursor);
            answer.send(Ok(Reply::Done(Outcome {
                tag: Classified::tag_for(command, 0),
                columns: typed_columns(result_types(conn, sql, &stmt), &[]),
                rows: Vec::new(),
            })));
            return;
        }
    };
    let width = declared.len();
    let mut next = move || -> Result<Option<Vec<Value>>, SqlError> {
        match cursor.next().map_err(|e| sql_error(&e))? {
            Some(row) => row_values(row, width).map(Some),
            None => Ok(None),
        }
    };

    let mut first = RowBatch::default();
    first.push(first_row);
    while !first.is_full() {
        match next() {
            Err(e) => {
                answer.send(Err(e));
                return;
            }
            Ok(Some(row)) => first.push(row),
            Ok(None) => {
                let rows = first.into_rows();
                answer.send(Ok(Reply::Done(Outcome {
                    tag: Classified::tag_for(command, rows.len() as u64),
                    columns: typed_columns(declared, &rows),
                    rows,
                })));
                return;
            }
        }
    }

    let columns = typed_columns(declared, first.rows());
    let (rows, stream) = row_channel(columns, STALLED_CLIENT_LIMIT);
    let mut rows = rows.yield_to(others_wait, CONTENDED_STALL_LIMIT);
    if !answer.send(Ok(Reply::Rows(stream))) {
        return;
    }
    let mut count = 0u64;
    for row in first.into_rows() {
        count += 1;
        if let Err(stopped) = rows.push(row) {
            return stop(rows, stopped);
        }
    }
    loop {
        match next() {
            Err(e) => return rows.finish(Err(e)),
            Ok(None) => return rows.finish(Ok(Classified::tag_for(command, count))),
            Ok(Some(row)) => {
                count += 1;
                if let Err(stopped) = rows.push(row) {
                    return stop(rows, stopped);
                }
            }
        }
    }
}

fn stop(rows: resqlite_wire::RowSender, stopped: Stopped) {
    if stopped == Stopped::Stalled {
        tracing::info!(
            "a client stopped reading its rows; its read was stopped and its reader freed"
        );
    }
    rows.stop(stopped);
}
