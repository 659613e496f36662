//! Conversions between the wire's values and types, SQLite's, and the
//! protobuf ones used in Raft entries and the ClientCommand RPC.

use resqlite_proto::client::{value::Kind, Value as ProtoValue};
use resqlite_wire::{PgType, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// The PostgreSQL type for a declared SQLite column type, following
/// SQLite's affinity rules (§3.1 of "Datatypes In SQLite"), with BOOL and
/// date/time names refined. `None` when nothing is declared.
pub fn pg_type_for_decltype(decl: Option<&str>) -> Option<PgType> {
    let decl = decl?.to_ascii_uppercase();
    if decl.is_empty() {
        return None;
    }
    Some(if decl.contains("BOOL") {
        PgType::Bool
    } else if decl.contains("INT") {
        PgType::Int8
    } else if decl.contains("CHAR") || decl.contains("CLOB") || decl.contains("TEXT") {
        PgType::Text
    } else if decl.contains("BLOB") || decl.contains("BYTEA") {
        PgType::Bytea
    } else if ["REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL"]
        .iter()
        .any(|t| decl.contains(t))
    {
        PgType::Float8
    } else {
        PgType::Text
    })
}

/// The type for a column with no declared type, from the values it holds:
/// integers → int8, numbers → float8, blobs → bytea, anything else → text.
pub fn pg_type_for_values<'a>(values: impl Iterator<Item = &'a Value>) -> PgType {
    let (mut ints, mut reals, mut blobs, mut other) = (0, 0, 0, 0);
    for v in values {
        match v {
            Value::Null => {}
            Value::Integer(_) => ints += 1,
            Value::Real(_) => reals += 1,
            Value::Blob(_) => blobs += 1,
            Value::Text(_) => other += 1,
        }
    }
    match (ints, reals, blobs, other) {
        (_, 0, 0, 0) if ints > 0 => PgType::Int8,
        (_, r, 0, 0) if r > 0 => PgType::Float8,
        (0, 0, b, 0) if b > 0 => PgType::Bytea,
        _ => PgType::Text,
    }
}

/// A SQLite value as a wire value.
pub fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// A wire value to bind to a SQLite statement.
pub fn to_sqlite(v: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::ValueRef as R;
    ToSqlOutput::Borrowed(match v {
        Value::Null => R::Null,
        Value::Integer(i) => R::Integer(*i),
        Value::Real(f) => R::Real(*f),
        Value::Text(s) => R::Text(s.as_bytes()),
        Value::Blob(b) => R::Blob(b),
    })
}

/// A wire value as protobuf.
pub fn to_proto(v: &Value) -> ProtoValue {
    let kind = match v {
        Value::Null => Kind::Null(true),
        Value::Integer(i) => Kind::Integer(*i),
        Value::Real(f) => Kind::Real(*f),
        Value::Text(s) => Kind::Text(s.clone()),
        Value::Blob(b) => Kind::Blob(b.clone().into()),
    };
    ProtoValue { kind: Some(kind) }
}

/// A protobuf value as a wire value (a missing value is NULL).
pub fn from_proto(v: ProtoValue) -> Value {
    match v.kind {
        None | Some(Kind::Null(_)) => Value::Null,
        Some(Kind::Integer(i)) => Value::Integer(i),
        Some(Kind::Real(f)) => Value::Real(f),
        Some(Kind::Text(s)) => Value::Text(s),
        Some(Kind::Blob(b)) => Value::Blob(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        let t = |d| pg_type_for_decltype(Some(d));
        assert_eq!(t("INTEGER"), Some(PgType::Int8));
        assert_eq!(t("bigint"), Some(PgType::Int8));
        assert_eq!(t("VARCHAR(20)"), Some(PgType::Text));
        assert_eq!(t("BLOB"), Some(PgType::Bytea));
        assert_eq!(t("DOUBLE PRECISION"), Some(PgType::Float8));
        assert_eq!(t("BOOLEAN"), Some(PgType::Bool));
        assert_eq!(t("DATETIME"), Some(PgType::Text));
        assert_eq!(pg_type_for_decltype(None), None);
    }

    #[test]
    fn undeclared_columns_take_the_type_of_their_values() {
        let ints = [Value::Integer(1), Value::Null];
        assert_eq!(pg_type_for_values(ints.iter()), PgType::Int8);
        let nums = [Value::Integer(1), Value::Real(0.5)];
        assert_eq!(pg_type_for_values(nums.iter()), PgType::Float8);
        let mixed = [Value::Integer(1), Value::Text("a".into())];
        assert_eq!(pg_type_for_values(mixed.iter()), PgType::Text);
        assert_eq!(pg_type_for_values([Value::Null].iter()), PgType::Text);
    }

    #[test]
    fn proto_round_trip() {
        for v in [
            Value::Null,
            Value::Integer(-7),
            Value::Real(1.5),
            Value::Text("é".into()),
            Value::Blob(vec![0, 255]),
        ] {
            assert_eq!(from_proto(to_proto(&v)), v);
        }
    }
}
