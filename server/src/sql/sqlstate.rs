//! The SQLSTATE codes ReSQLite sends, in one place.

/// Syntax error or statement that cannot be parsed.
pub const SYNTAX_ERROR: &str = "42601";
/// Refused: would reach the file system or the process.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// Refused: not supported (transactions, non-deterministic writes …).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// This node is a follower; the message names the leader.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// No leader is known right now: retry.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// A write's outcome is unknown because leadership changed.
pub const STATEMENT_COMPLETION_UNKNOWN: &str = "40003";
/// Unique constraint.
pub const UNIQUE_VIOLATION: &str = "23505";
/// NOT NULL constraint.
pub const NOT_NULL_VIOLATION: &str = "23502";
/// Foreign key constraint.
pub const FOREIGN_KEY_VIOLATION: &str = "23503";
/// CHECK constraint.
pub const CHECK_VIOLATION: &str = "23514";
/// Any other constraint.
pub const INTEGRITY_CONSTRAINT_VIOLATION: &str = "23000";
/// Missing table or view.
pub const UNDEFINED_TABLE: &str = "42P01";
/// Missing column.
pub const UNDEFINED_COLUMN: &str = "42703";
/// Object already exists.
pub const DUPLICATE_OBJECT: &str = "42P07";
/// Datatype mismatch.
pub const DATATYPE_MISMATCH: &str = "42804";
/// The statement was interrupted (cancel).
pub const QUERY_CANCELED: &str = "57014";
/// Too big (statement, row, blob).
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// An internal error.
pub const INTERNAL_ERROR: &str = "XX000";
/// A value outside its type's range (and the reserved rowid).
pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// A parameter number no statement can have.
pub const UNDEFINED_PARAMETER: &str = "42P02";
/// An expression nests too deeply to be handled safely.
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
/// A role (or other non-table object) that already exists.
pub const DUPLICATE_ROLE: &str = "42710";
/// A role (or other object) that does not exist.
pub const UNDEFINED_OBJECT: &str = "42704";
/// The password given is not one ReSQLite can store (e.g. MD5).
pub const INVALID_PASSWORD: &str = "28P01";
/// A transaction rolled back because it could not be serialized (retry it).
pub const SERIALIZATION_FAILURE: &str = "40001";
/// A statement inside a transaction that an earlier error ended.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// A write waited longer than `lock_timeout` for another transaction.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// A name ReSQLite keeps for itself.
pub const RESERVED_NAME: &str = "42939";
