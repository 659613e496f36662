//! The second line of defence, inside SQLite: whatever slips past the
//! classifier still cannot reach files, the process, or a value that differs
//! between nodes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

/// Functions never allowed in a replicated write.
const DENIED_IN_WRITES: &[&str] = &[
    "random",
    "randomblob",
    "load_extension",
    "changes",
    "total_changes",
    "last_insert_rowid",
];

/// Tables ReSQLite keeps for itself (the applied index).
pub const INTERNAL_TABLE_PREFIX: &str = "_resqlite";

/// Date/time functions and the position of their first time value.
const DATE_TIME: &[(&str, usize)] = &[
    ("date", 0),
    ("time", 0),
    ("datetime", 0),
    ("julianday", 0),
    ("unixepoch", 0),
    ("strftime", 1),
    ("timediff", 0),
];

fn is_internal_table(name: &str) -> bool {
    name.len() >= INTERNAL_TABLE_PREFIX.len()
        && name[..INTERNAL_TABLE_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_TABLE_PREFIX)
}

/// Guards the apply connection. `internal` is set while ReSQLite runs its
/// own statements (BEGIN, SAVEPOINT, the applied-index update).
pub fn guard_apply_connection(
    conn: &mut Connection,
    internal: Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if internal.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        authorize_write(&ctx.action)
    }))?;
    replace_clock_functions(conn)
}

fn authorize_write(action: &AuthAction<'_>) -> Authorization {
    use AuthAction as A;
    match action {
        A::Attach { .. }
        | A::Detach { .. }
        | A::Pragma { .. }
        | A::Transaction { .. }
        | A::Savepoint { .. }
        | A::CreateVtable { .. }
        | A::DropVtable { .. } => Authorization::Deny,
        A::Function { function_name } => {
            if DENIED_IN_WRITES
                .iter()
                .any(|f| f.eq_ignore_ascii_case(function_name))
            {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::DropTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::CreateIndex { table_name, .. }
            if is_internal_table(table_name) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// Guards a read-only connection: no files, no extensions, only the
/// PRAGMAs the classifier lets through as reads.
pub fn guard_read_connection(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } if !crate::sql::pragma_allowed_in_reads(pragma_name, pragma_value.is_some()) => {
            Authorization::Deny
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))
}

/// Replaces SQLite's date/time functions on the apply connection with ones
/// that refuse to read the clock — also when 'now' arrives at run time
/// from a column or a parameter — and otherwise give SQLite's own answer.
/// The refusal is an error on every node alike, so replicas stay identical.
fn replace_clock_functions(conn: &Connection) -> rusqlite::Result<()> {
    for &(name, time_arg) in DATE_TIME {
        let evaluator = Connection::open_in_memory()?;
        let evaluator = std::sync::Mutex::new(evaluator);
        conn.create_scalar_function(
            name,
            -1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx: &mut Context<'_>| {
                if let Some(word) = host_dependent(ctx, time_arg) {
                    return Err(rusqlite::Error::UserFunctionError(
                        crate::sql::classify::clock_refusal(name, word).into(),
                    ));
                }
                let args: Vec<rusqlite::types::Value> =
                    (0..ctx.len()).map(|i| owned(ctx.get_raw(i))).collect();
                let placeholders = vec!["?"; args.len()].join(",");
                let sql = format!("SELECT {name}({placeholders})");
                let evaluator = evaluator.lock().map_err(|_| {
                    rusqlite::Error::UserFunctionError("clock guard poisoned".into())
                })?;
                let mut stmt = evaluator.prepare_cached(&sql)?;
                stmt.query_row(rusqlite::params_from_iter(args), |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
            },
        )?;
    }
    for name in ["current_timestamp", "current_date", "current_time"] {
        conn.create_scalar_function(name, 0, FunctionFlags::SQLITE_UTF8, move |_| {
            Err::<rusqlite::types::Value, _>(rusqlite::Error::UserFunctionError(
                format!(
                    "{} is not allowed in writes: replicas would diverge",
                    name.to_uppercase()
                )
                .into(),
            ))
        })?;
    }
    Ok(())
}

/// The argument that makes this call depend on the server (its clock or
/// its time zone), if any.
fn host_dependent(ctx: &Context<'_>, time_arg: usize) -> Option<&'static str> {
    if ctx.len() <= time_arg {
        return Some("now");
    }
    (0..ctx.len()).find_map(|i| match ctx.get_raw(i) {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(crate::sql::classify::host_dependent_word),
        _ => None,
    })
}

fn owned(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::Value {
    use rusqlite::types::{Value as V, ValueRef as R};
    match v {
        R::Null => V::Null,
        R::Integer(i) => V::Integer(i),
        R::Real(f) => V::Real(f),
        R::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
        R::Blob(b) => V::Blob(b.to_vec()),
    }
}
