//! SQLite errors as SQLSTATEs. The mapping is deterministic: a statement
//! that fails on one node fails the same way, with the same code, on all.

use resqlite_wire::SqlError;
use rusqlite::ffi;

use crate::sql::sqlstate as code;

/// Maps a SQLite error to the SQLSTATE a PostgreSQL client expects.
pub fn sql_error(err: &rusqlite::Error) -> SqlError {
    let sqlstate = match err {
        rusqlite::Error::SqliteFailure(e, msg) => from_code(e, msg.as_deref().unwrap_or("")),
        rusqlite::Error::SqlInputError { error, msg, .. } => from_code(error, msg),
        rusqlite::Error::InvalidParameterCount(..) => "08P01",
        _ => code::INTERNAL_ERROR,
    };
    let message = match err {
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    };
    SqlError::new(sqlstate, message)
}

fn from_code(e: &ffi::Error, msg: &str) -> &'static str {
    match e.extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => code::UNIQUE_VIOLATION,
        ffi::SQLITE_CONSTRAINT_NOTNULL => code::NOT_NULL_VIOLATION,
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => code::FOREIGN_KEY_VIOLATION,
        ffi::SQLITE_CONSTRAINT_CHECK => code::CHECK_VIOLATION,
        _ => match e.code {
            rusqlite::ErrorCode::ConstraintViolation => code::INTEGRITY_CONSTRAINT_VIOLATION,
            rusqlite::ErrorCode::AuthorizationForStatementDenied => code::INSUFFICIENT_PRIVILEGE,
            rusqlite::ErrorCode::OperationInterrupted => code::QUERY_CANCELED,
            rusqlite::ErrorCode::TooBig => code::PROGRAM_LIMIT_EXCEEDED,
            rusqlite::ErrorCode::TypeMismatch => code::DATATYPE_MISMATCH,
            _ if msg.starts_with("not authorized") => code::INSUFFICIENT_PRIVILEGE,
            _ => from_message(msg),
        },
    }
}

fn from_message(msg: &str) -> &'static str {
    if msg.starts_with("no such table") || msg.starts_with("no such view") {
        code::UNDEFINED_TABLE
    } else if msg.starts_with("no such column") {
        code::UNDEFINED_COLUMN
    } else if msg.contains("already exists") {
        code::DUPLICATE_OBJECT
    } else if msg.contains("syntax error")
        || msg.starts_with("near ")
        || msg.contains("incomplete input")
    {
        code::SYNTAX_ERROR
    } else if msg.starts_with("no such function") || msg.starts_with("wrong number of arguments") {
        "42883"
    } else {
        // syntax_error_or_access_rule_violation: SQLite's generic SQL error.
        "42000"
    }
}
