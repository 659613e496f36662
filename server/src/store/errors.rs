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
    use super::pg_functions as f;
    // The errors of our PostgreSQL functions, worded as PostgreSQL's.
    match msg {
        f::DIVISION_BY_ZERO => return "22012",
        f::NEGATIVE_SQRT => return "2201F",
        f::ZERO_FIELD => return "22023",
        f::TOO_LONG | f::NULL_CHARACTER | f::BAD_CHARACTER => return code::PROGRAM_LIMIT_EXCEEDED,
        f::COSTLY_REGEX => return code::PROGRAM_LIMIT_EXCEEDED,
        _ if msg.starts_with(f::BAD_REGEX) => return "2201B",
        _ => {}
    }
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
    } else if msg.starts_with("non-deterministic use of") {
        // SQLite's own refusal of the clock in a CHECK, index or generated
        // column: the same class as the clock refused in a write.
        code::FEATURE_NOT_SUPPORTED
    } else if msg.starts_with("no such function") || msg.starts_with("wrong number of arguments") {
        "42883"
    } else {
        // syntax_error_or_access_rule_violation: SQLite's generic SQL error.
        "42000"
    }
}

/// Whether `err` is this node's own failure (its disk, memory or file),
/// not the statement's: another node applying the same entry would not
/// fail. Such a failure must halt the node, never fail the statement.
pub fn node_local_failure(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match err {
        rusqlite::Error::SqliteFailure(e, _) => matches!(
            e.code,
            C::DiskFull
                | C::OutOfMemory
                | C::SystemIoFailure
                | C::DatabaseCorrupt
                | C::CannotOpen
                | C::NotADatabase
                | C::DatabaseBusy
                | C::ReadOnly
                | C::FileLockingProtocolFailed
                | C::InternalMalfunction
                | C::PermissionDenied
                | C::ApiMisuse
                // Only the budget interrupts a write, and it records why
                // first; an interrupt nobody recorded is not the statement's.
                | C::OperationInterrupted
        ),
        rusqlite::Error::SqlInputError { .. } => false,
        // Rusqlite's own errors on the apply path (a value it cannot
        // convert, a panic in a callback) are not SQLite's verdict on the
        // statement: halt rather than guess.
        rusqlite::Error::UserFunctionError(_) => false,
        _ => true,
    }
}
