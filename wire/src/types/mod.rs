//! PostgreSQL types on the wire: OIDs and formats here, result values in
//! [`results`], bound parameters in [`params`].
//!
//! SQLite is dynamically typed, so a column announced as `int8` may hold a
//! TEXT value. The rule, identical for Describe and Execute:
//!
//! 1. A value is converted to the announced type when that loses nothing:
//!    an integer in a `float8` column (up to 2^53), an integral REAL or a
//!    numeric TEXT in an `int8` column, 0/1 in a `bool` column, any number in
//!    a `text` column, UTF-8 BLOB in a `text` column, anything in a `bytea`
//!    column (its bytes, as SQLite's `CAST(x AS BLOB)`).
//! 2. Otherwise, in text format the value is sent as its own text (`abc`
//!    in an `int8` column): psql and other text clients show the data as it
//!    is stored.
//! 3. Otherwise, in binary format there is no honest encoding, so the
//!    statement fails with 22P02 naming the column and the way out (a CAST).

mod params;
mod results;

pub(crate) use params::decode_param;
pub(crate) use results::{data_row, row_description};

use crate::executor::{PgType, SqlError};

/// Type OIDs, from PostgreSQL's `pg_type.dat`.
pub(crate) mod oid {
    pub const UNSPECIFIED: u32 = 0;
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const NUMERIC: u32 = 1700;
}

/// The OID a [`PgType`] is announced with.
pub(crate) fn type_oid(t: PgType) -> u32 {
    match t {
        PgType::Int8 => oid::INT8,
        PgType::Float8 => oid::FLOAT8,
        PgType::Text => oid::TEXT,
        PgType::Bytea => oid::BYTEA,
        PgType::Bool => oid::BOOL,
    }
}

/// `pg_type.typlen`: the fixed width, or -1 for variable-length types.
pub(crate) fn type_len(t: PgType) -> i16 {
    match t {
        PgType::Int8 | PgType::Float8 => 8,
        PgType::Bool => 1,
        PgType::Text | PgType::Bytea => -1,
    }
}

/// PostgreSQL's name of a type, for messages.
pub(crate) fn type_name(t: PgType) -> &'static str {
    match t {
        PgType::Int8 => "bigint",
        PgType::Float8 => "double precision",
        PgType::Text => "text",
        PgType::Bytea => "bytea",
        PgType::Bool => "boolean",
    }
}

/// How one value travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Binary,
}

impl Format {
    fn from_code(code: i16) -> Result<Format, SqlError> {
        match code {
            0 => Ok(Format::Text),
            1 => Ok(Format::Binary),
            other => Err(crate::errors::protocol_violation(format!(
                "unsupported format code: {other}"
            ))),
        }
    }

    pub(crate) fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// Expands Bind's format codes for `count` items: none means all text, one
/// applies to all, otherwise there must be one per item.
pub(crate) fn formats(codes: &[i16], count: usize, what: &str) -> Result<Vec<Format>, SqlError> {
    match codes {
        [] => Ok(vec![Format::Text; count]),
        [one] => Ok(vec![Format::from_code(*one)?; count]),
        many if many.len() == count => many.iter().map(|c| Format::from_code(*c)).collect(),
        many => Err(crate::errors::protocol_violation(format!(
            "bind message has {} {what} formats but {count} {what}s",
            many.len()
        ))),
    }
}

/// PostgreSQL's boolean input: `t`, `true`, `yes`, `on`, `1` and their
/// opposites, any case, surrounding spaces ignored.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_codes_expand_or_are_refused() {
        assert_eq!(formats(&[], 2, "result").unwrap(), vec![Format::Text; 2]);
        assert_eq!(formats(&[1], 3, "result").unwrap(), vec![Format::Binary; 3]);
        assert_eq!(
            formats(&[0, 1], 2, "result").unwrap(),
            vec![Format::Text, Format::Binary]
        );
        assert_eq!(formats(&[0, 1], 3, "result").unwrap_err().sqlstate, "08P01");
        assert_eq!(formats(&[2], 1, "result").unwrap_err().sqlstate, "08P01");
    }
}
