//! Decides, before anything is proposed, whether a statement is a read, a
//! write, or refused — and why. Anything that cannot be classified with
//! certainty is refused, never guessed. SQLite checks again at prepare time
//! (read-only connections, the authorizer and `Statement::readonly()`).

use std::ops::ControlFlow;

use resqlite_wire::SqlError;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value as AstValue,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use super::deny;
use super::pragma::classify_special;
use super::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, SYNTAX_ERROR};

/// Where a statement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Runs on the leader's SQLite, on a read-only connection.
    Read,
    /// Goes through Raft and is applied on every node.
    Write,
}

/// A statement's class and the command word of its PostgreSQL tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// Read or write.
    pub class: Class,
    /// `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `CREATE TABLE` …
    pub command: &'static str,
}

impl Classified {
    /// The CommandComplete tag for `count` rows returned or changed.
    pub fn tag(&self, count: u64) -> String {
        Self::tag_for(self.command, count)
    }

    /// The tag for a command word, as [`Classified::tag`].
    pub fn tag_for(command: &str, count: u64) -> String {
        match command {
            "INSERT" => format!("INSERT 0 {count}"),
            "SELECT" | "UPDATE" | "DELETE" => format!("{command} {count}"),
            other => other.to_string(),
        }
    }
}

/// SQL spellings of the clock that parse as function calls.
const CLOCK_FUNCTIONS: &[&str] = &["current_timestamp", "current_date", "current_time"];

/// Date and time functions: deterministic unless asked about 'now' (which is
/// also their default when called with no time value).
const DATE_TIME: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "strftime",
    "unixepoch",
    "timediff",
];

/// Classifies one statement (already split from a multi-statement string).
pub fn classify(sql: &str) -> Result<Classified, SqlError> {
    if let Some(special) = classify_special(sql) {
        return special;
    }
    // Before any tree is built: walking or dropping a deep one recurses.
    super::complexity::check_expression_depth(sql)?;
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql)
        .map_err(|e| SqlError::new(SYNTAX_ERROR, e.to_string()))?;
    let [statement] = statements.as_slice() else {
        return Err(SqlError::new(
            SYNTAX_ERROR,
            format!("expected one statement, found {}", statements.len()),
        ));
    };
    let classified = class_of(statement)?;
    let in_write = classified.class == Class::Write;
    refuse_denied_functions(statement, in_write)?;
    if in_write {
        refuse_denied_tables(statement)?;
    }
    Ok(classified)
}

fn read(command: &'static str) -> Result<Classified, SqlError> {
    Ok(Classified {
        class: Class::Read,
        command,
    })
}

fn write(command: &'static str) -> Result<Classified, SqlError> {
    Ok(Classified {
        class: Class::Write,
        command,
    })
}

fn class_of(statement: &Statement) -> Result<Classified, SqlError> {
    use sqlparser::ast::ObjectType;
    use Statement as S;
    match statement {
        // `WITH … INSERT/UPDATE/DELETE` parses as a query whose body is the
        // write: it is a write, not a read SQLite would then refuse.
        S::Query(q) => match q.body.as_ref() {
            sqlparser::ast::SetExpr::Insert(_) => write("INSERT"),
            sqlparser::ast::SetExpr::Update(_) => write("UPDATE"),
            sqlparser::ast::SetExpr::Delete(_) => write("DELETE"),
            _ => read("SELECT"),
        },
        S::Explain { .. } | S::ExplainTable { .. } => read("EXPLAIN"),
        S::Insert(_) => write("INSERT"),
        S::Update(_) => write("UPDATE"),
        S::Delete(_) => write("DELETE"),
        S::CreateTable(t) if t.temporary => Err(deny::temp_object_error("TABLE")),
        S::CreateView(v) if v.temporary => Err(deny::temp_object_error("VIEW")),
        S::CreateTrigger(t) if t.temporary => Err(deny::temp_object_error("TRIGGER")),
        S::CreateTable(_) => write("CREATE TABLE"),
        S::CreateIndex(_) => write("CREATE INDEX"),
        S::CreateView(_) => write("CREATE VIEW"),
        S::CreateTrigger(_) => write("CREATE TRIGGER"),
        S::CreateVirtualTable { .. } => write("CREATE TABLE"),
        S::AlterTable(_) => write("ALTER TABLE"),
        S::Drop { object_type, .. } => write(match object_type {
            ObjectType::Table => "DROP TABLE",
            ObjectType::View => "DROP VIEW",
            ObjectType::Index => "DROP INDEX",
            _ => "DROP",
        }),
        S::DropTrigger(_) => write("DROP TRIGGER"),
        S::Analyze(_) => write("ANALYZE"),
        S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. } => Err(SqlError::new(
            FEATURE_NOT_SUPPORTED,
            "transactions are not supported: each statement commits on its own through Raft",
        )),
        S::AttachDatabase { .. }
        | S::AttachDuckDBDatabase { .. }
        | S::DetachDuckDBDatabase { .. } => Err(SqlError::new(
            INSUFFICIENT_PRIVILEGE,
            "ATTACH is not allowed: SQL may not open other files on the server",
        )),
        other => Err(SqlError::new(
            FEATURE_NOT_SUPPORTED,
            format!(
                "statement not supported by ReSQLite: {}",
                first_words(&other.to_string())
            ),
        )),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Refuses a call the deny table refuses here ([`deny`]); in a write also
/// one that reads the clock or the time zone — now or later (defaults,
/// generated columns, triggers, views, CTAS). The early, readable refusal:
/// the apply connection's guards hold whatever gets past it.
fn refuse_denied_functions(statement: &Statement, in_write: bool) -> Result<(), SqlError> {
    let found = sqlparser::ast::visit_expressions(statement, |expr| match expr {
        Expr::Function(f) => {
            let name = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default();
            if let Some(denied) = deny::denied_function(&name, in_write) {
                return ControlFlow::Break(deny::function_error(denied));
            }
            if !in_write {
                return ControlFlow::Continue(());
            }
            if CLOCK_FUNCTIONS.contains(&name.as_str()) {
                return ControlFlow::Break(SqlError::new(
                    FEATURE_NOT_SUPPORTED,
                    format!(
                        "{} is not allowed in writes: it reads each server's clock, so replicas \
                         would diverge; compute the time in the client and pass it as a parameter",
                        name.to_ascii_uppercase()
                    ),
                ));
            }
            if DATE_TIME.contains(&name.as_str()) {
                if let Some(word) = host_dependent_time(&name, &f.args) {
                    return ControlFlow::Break(SqlError::new(
                        FEATURE_NOT_SUPPORTED,
                        clock_refusal(&name, word),
                    ));
                }
            }
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(err) => Err(err),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Refuses a write that names a table the deny table keeps out of writes
/// (ReSQLite's own, page-layout views, the TEMP schema, node PRAGMAs).
fn refuse_denied_tables(statement: &Statement) -> Result<(), SqlError> {
    let found = sqlparser::ast::visit_relations(statement, |name| {
        let parts: Vec<&str> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| i.value.as_str())
            .collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (None, *table),
            [.., schema, table] => (Some(*schema), *table),
            [] => return ControlFlow::Continue(()),
        };
        match deny::denied_table_in_write(schema, table) {
            Some(why) => ControlFlow::Break(deny::table_error(table, why)),
            None => ControlFlow::Continue(()),
        }
    });
    match found {
        ControlFlow::Break(err) => Err(err),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Whether a date/time call gives a different answer on each server: it
/// reads the clock (no time value at all, whose default is 'now', or the
/// literal 'now'), or converts with the server's time zone ('localtime',
/// 'utc'). Returns the word that does. Any other way of reaching the clock
/// or the zone (a column, a parameter, a BLOB, 'subsec', a DEFAULT) is
/// caught by the apply connection's clock VFS and time-zone hook.
fn host_dependent_time(name: &str, args: &FunctionArguments) -> Option<&'static str> {
    let list = match args {
        FunctionArguments::None => return Some("now"),
        FunctionArguments::Subquery(_) => return None,
        FunctionArguments::List(list) => list,
    };
    // strftime's first argument is the format; the time value comes next.
    let time_arg_position = if name == "strftime" { 1 } else { 0 };
    if list.args.len() <= time_arg_position {
        return Some("now");
    }
    list.args.iter().find_map(|arg| {
        let expr = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
            FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => e,
            _ => return None,
        };
        match expr {
            Expr::Value(v) => match &v.value {
                AstValue::SingleQuotedString(s) | AstValue::DoubleQuotedString(s) => {
                    host_dependent_word(s)
                }
                _ => None,
            },
            _ => None,
        }
    })
}

/// The date/time arguments whose meaning depends on the server: the clock
/// and its time zone.
fn host_dependent_word(arg: &str) -> Option<&'static str> {
    let arg = arg.trim();
    ["now", "localtime", "utc"]
        .into_iter()
        .find(|w| arg.eq_ignore_ascii_case(w))
}

/// Why a date/time call that depends on the server is refused in a write.
fn clock_refusal(name: &str, word: &str) -> String {
    let why = if word == "now" {
        "reads each server's clock"
    } else {
        "depends on each server's time zone"
    };
    format!(
        "{name}() with '{word}' is not allowed in writes: it {why}, so replicas would diverge; \
         compute the time in the client and pass it as a parameter"
    )
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
