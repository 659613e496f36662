//! The second line of defence, inside SQLite: whatever slips past the
//! classifier still cannot reach files, the process, or a value that
//! differs between nodes.
//!
//! The apply connection gets three guards, each of which sees names and
//! values after SQLite resolved them, so spelling cannot get past it:
//! - the authorizer, reading the deny table ([`crate::sql::deny`]) for
//!   every function call and table access (a `DEFAULT` expression's calls
//!   too, when an insert uses it);
//! - the clock VFS and time-zone hook ([`super::clock_vfs`]);
//! - an update hook that keeps the largest rowid free (SQLite picks
//!   random rowids once a table holds it);
//!
//! plus the deterministic budgets of [`super::budget`]. Each records what
//! it refused in [`super::write_watch`] for the client's error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use super::budget;
use super::semantics::{self, PG_FUNCTIONS_AND_RENAME};
use super::write_watch::{self, Violation};
use crate::sql::deny;
pub use crate::sql::deny::INTERNAL_TABLE_PREFIX;

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
        match write_refusal(&ctx) {
            Some(violation) => {
                write_watch::record(violation);
                Authorization::Deny
            }
            None => Authorization::Allow,
        }
    }))?;
    // Called after each row a write inserts or updates in a rowid table,
    // with the row's (new) rowid; the write is then rolled back.
    conn.update_hook(Some(
        |action: rusqlite::hooks::Action, _: &str, _: &str, rowid: i64| {
            if action != rusqlite::hooks::Action::SQLITE_DELETE && rowid == i64::MAX {
                write_watch::record(Violation::ReservedRowid);
            }
        },
    ))?;
    budget::bound_apply_connection(conn)
}

/// What a replicated write may not do at this authorizer call, if anything.
fn write_refusal(ctx: &AuthContext<'_>) -> Option<Violation> {
    use AuthAction as A;
    let schema = ctx.database_name;
    let table = |name: &str| {
        deny::denied_table_in_write(schema, name).map(|why| Violation::Table {
            name: name.to_string(),
            why,
        })
    };
    match &ctx.action {
        A::Attach { .. } => Some(Violation::Privilege("ATTACH")),
        A::Detach { .. } => Some(Violation::Privilege("DETACH")),
        A::Pragma { pragma_name, .. } if deny::pragma_allowed_in_writes(pragma_name) => None,
        A::Pragma { .. } => Some(Violation::Privilege("PRAGMA")),
        A::Transaction { .. } | A::Savepoint { .. } => {
            Some(Violation::Privilege("a transaction statement"))
        }
        A::CreateVtable { .. } | A::DropVtable { .. } => {
            Some(Violation::Privilege("a virtual table"))
        }
        A::CreateTempTable { .. } => Some(Violation::TempObject("TABLE")),
        A::CreateTempIndex { .. } => Some(Violation::TempObject("INDEX")),
        A::CreateTempTrigger { .. } => Some(Violation::TempObject("TRIGGER")),
        A::CreateTempView { .. } => Some(Violation::TempObject("VIEW")),
        // An entry written before our PostgreSQL functions existed found
        // no such function there: it finds none here either.
        A::Function { function_name }
            if !semantics::has(PG_FUNCTIONS_AND_RENAME)
                && super::pg_functions::is_ours(function_name) =>
        {
            Some(Violation::NoSuchFunction(function_name.to_string()))
        }
        A::Function { function_name } => {
            deny::denied_function(function_name, true).map(Violation::Function)
        }
        // Before semantics 1 the temp catalog was refused outright.
        A::Read { table_name, .. } | A::Update { table_name, .. }
            if !semantics::has(PG_FUNCTIONS_AND_RENAME)
                && schema.is_some_and(|s| s.eq_ignore_ascii_case("temp")) =>
        {
            Some(Violation::Table {
                name: table_name.to_string(),
                why: deny::TEMP,
            })
        }
        // Changing a table: denied outright, or readable but not changeable.
        A::Insert { table_name } => deny::denied_insert_in_write(schema, table_name)
            .or_else(|| deny::read_only_table_in_write(table_name))
            .map(|why| Violation::Table {
                name: table_name.to_string(),
                why,
            }),
        A::Update {
            table_name,
            column_name,
        } if deny::renames_a_counter(table_name, column_name)
            && semantics::has(PG_FUNCTIONS_AND_RENAME) =>
        {
            table(table_name)
        }
        A::Delete { table_name } | A::Update { table_name, .. } => {
            table(table_name).or_else(|| {
                deny::read_only_table_in_write(table_name).map(|why| Violation::Table {
                    name: table_name.to_string(),
                    why,
                })
            })
        }
        A::Read { table_name, .. }
        | A::DropTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::CreateIndex { table_name, .. } => table(table_name),
        _ => None,
    }
}

/// Guards a read-only connection: no files, no extensions, nothing the
/// deny table refuses everywhere, only the PRAGMAs the classifier lets
/// through as reads.
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
            if deny::denied_function(function_name, false).is_some() =>
        {
            Authorization::Deny
        }
        AuthAction::Read { table_name, .. } if deny::denied_table_in_read(table_name).is_some() => {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))
}
