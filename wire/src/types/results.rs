//! Result values: RowDescription and DataRow, in text or binary format,
//! with the conversion rules in the parent module's documentation.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};

use super::{parse_bool, type_len, type_name, type_oid, Format};
use crate::executor::{Column, PgType, SqlError, Value};

/// The RowDescription announcing `columns`, each in its format.
pub(crate) fn row_description(columns: &[Column], formats: &[Format]) -> RowDescription {
    let fields = columns
        .iter()
        .zip(formats)
        .map(|(c, f)| {
            FieldDescription::new(
                c.name.clone(),
                0,
                0,
                type_oid(c.pg_type),
                type_len(c.pg_type),
                -1,
                f.code(),
            )
        })
        .collect();
    RowDescription::new(fields)
}

/// Encodes one result row: each value as its column's announced type, in
/// that column's format (see the module documentation for mismatches).
pub(crate) fn data_row(
    columns: &[Column],
    formats: &[Format],
    row: &[Value],
) -> Result<DataRow, SqlError> {
    if row.len() != columns.len() {
        return Err(SqlError::new(
            "0A000",
            format!(
                "the statement returned {} columns but {} were announced; \
                 the schema changed since it was prepared: prepare it again",
                row.len(),
                columns.len()
            ),
        ));
    }
    let mut buf = BytesMut::with_capacity(16 * row.len());
    for ((value, column), format) in row.iter().zip(columns).zip(formats) {
        encode_field(value, column, *format, &mut buf)?;
    }
    // A row has at most as many values as RowDescription has fields, which
    // the protocol caps at i16::MAX.
    let count = i16::try_from(row.len()).map_err(|_| {
        SqlError::new(
            "54011",
            format!("too many result columns ({}); at most 32767", row.len()),
        )
    })?;
    Ok(DataRow::new(buf, count))
}

/// A value converted, without loss, to its column's type.
enum Typed<'a> {
    Int(i64),
    Float(f64),
    Text(std::borrow::Cow<'a, str>),
    Bytes(std::borrow::Cow<'a, [u8]>),
    Bool(bool),
}

fn encode_field(
    value: &Value,
    column: &Column,
    format: Format,
    buf: &mut BytesMut,
) -> Result<(), SqlError> {
    if let Value::Null = value {
        buf.put_i32(-1);
        return Ok(());
    }
    let len_at = buf.len();
    buf.put_i32(0);
    match (convert(value, column.pg_type), format) {
        (Some(typed), Format::Text) => put_text(&typed, buf),
        (Some(typed), Format::Binary) => put_binary(&typed, buf),
        (None, Format::Text) => put_own_text(value, buf),
        (None, Format::Binary) => {
            return Err(SqlError::new(
                "22P02",
                format!(
                    "column \"{}\" is announced as {} but holds the {} {}; cast it in the \
                     query, e.g. CAST({} AS TEXT), or fetch it in text format",
                    column.name,
                    type_name(column.pg_type),
                    storage_class(value),
                    preview(value),
                    column.name,
                ),
            ))
        }
    }
    // DataRow values are at most 1 GB in PostgreSQL; anything that large
    // could not have come out of SQLite (its limit is 1e9 bytes).
    let len = i32::try_from(buf.len() - len_at - 4)
        .map_err(|_| SqlError::new("54000", "a result value is larger than 2 GB"))?;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Converts `value` to `pg_type` when nothing is lost; `None` otherwise.
fn convert(value: &Value, pg_type: PgType) -> Option<Typed<'_>> {
    use std::borrow::Cow;
    match (pg_type, value) {
        (_, Value::Null) => None,
        (PgType::Int8, Value::Integer(i)) => Some(Typed::Int(*i)),
        (PgType::Int8, Value::Real(f)) => integral(*f).map(Typed::Int),
        (PgType::Int8, Value::Text(s)) => s.parse().ok().map(Typed::Int),
        (PgType::Int8, Value::Blob(_)) => None,
        (PgType::Float8, Value::Real(f)) => Some(Typed::Float(*f)),
        // Above 2^53 not every integer has a float8 twin.
        (PgType::Float8, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => {
            Some(Typed::Float(*i as f64))
        }
        (PgType::Float8, Value::Text(s)) => s.parse().ok().map(Typed::Float),
        (PgType::Float8, _) => None,
        (PgType::Text, Value::Text(s)) => Some(Typed::Text(Cow::Borrowed(s))),
        (PgType::Text, Value::Integer(i)) => Some(Typed::Text(Cow::Owned(i.to_string()))),
        (PgType::Text, Value::Real(f)) => Some(Typed::Text(Cow::Owned(float8_text(*f)))),
        (PgType::Text, Value::Blob(b)) => std::str::from_utf8(b)
            .ok()
            .map(|s| Typed::Text(Cow::Borrowed(s))),
        (PgType::Bytea, Value::Blob(b)) => Some(Typed::Bytes(Cow::Borrowed(b))),
        (PgType::Bytea, Value::Text(s)) => Some(Typed::Bytes(Cow::Borrowed(s.as_bytes()))),
        (PgType::Bytea, Value::Integer(i)) => {
            Some(Typed::Bytes(Cow::Owned(i.to_string().into_bytes())))
        }
        (PgType::Bytea, Value::Real(f)) => {
            Some(Typed::Bytes(Cow::Owned(float8_text(*f).into_bytes())))
        }
        (PgType::Bool, Value::Integer(0)) => Some(Typed::Bool(false)),
        (PgType::Bool, Value::Integer(1)) => Some(Typed::Bool(true)),
        (PgType::Bool, Value::Real(f)) if *f == 0.0 || *f == 1.0 => Some(Typed::Bool(*f == 1.0)),
        (PgType::Bool, Value::Text(s)) => parse_bool(s).map(Typed::Bool),
        (PgType::Bool, _) => None,
    }
}

/// `f` as an i64 when it is a whole number in range.
fn integral(f: f64) -> Option<i64> {
    // -2^63 is exact in f64; 2^63 is the first value out of range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

fn put_text(typed: &Typed<'_>, buf: &mut BytesMut) {
    match typed {
        Typed::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Typed::Float(f) => buf.put_slice(float8_text(*f).as_bytes()),
        Typed::Text(s) => buf.put_slice(s.as_bytes()),
        Typed::Bytes(b) => put_hex_bytea(b, buf),
        Typed::Bool(b) => buf.put_u8(if *b { b't' } else { b'f' }),
    }
}

fn put_binary(typed: &Typed<'_>, buf: &mut BytesMut) {
    match typed {
        Typed::Int(i) => buf.put_i64(*i),
        Typed::Float(f) => buf.put_f64(*f),
        Typed::Text(s) => buf.put_slice(s.as_bytes()),
        Typed::Bytes(b) => buf.put_slice(b),
        Typed::Bool(b) => buf.put_u8(u8::from(*b)),
    }
}

/// A value's own text, whatever its column says.
fn put_own_text(value: &Value, buf: &mut BytesMut) {
    match value {
        Value::Null => {}
        Value::Integer(i) => {
            let _ = write!(buf, "{i}");
        }
        Value::Real(f) => buf.put_slice(float8_text(*f).as_bytes()),
        Value::Text(s) => buf.put_slice(s.as_bytes()),
        Value::Blob(b) => put_hex_bytea(b, buf),
    }
}

/// bytea in `bytea_output = hex`: `\x` then two lower-case digits a byte.
fn put_hex_bytea(bytes: &[u8], buf: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.reserve(2 + 2 * bytes.len());
    buf.put_slice(b"\\x");
    for b in bytes {
        buf.put_u8(HEX[usize::from(b >> 4)]);
        buf.put_u8(HEX[usize::from(b & 0xf)]);
    }
}

fn storage_class(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

/// A short quote of a value for an error message.
fn preview(value: &Value) -> String {
    let text = match value {
        Value::Null => "NULL".to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => float8_text(*f),
        Value::Text(s) => format!("'{s}'"),
        Value::Blob(b) => {
            let mut buf = BytesMut::new();
            put_hex_bytea(b, &mut buf);
            format!("'{}'", String::from_utf8_lossy(&buf))
        }
    };
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// float8 as PostgreSQL ≥ 12 prints it (`extra_float_digits` 1): the
/// shortest text that reads back to the same double, in fixed notation for
/// decimal exponents -4 to 14 and as `1.5e+20` outside them.
pub(crate) fn float8_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` is the shortest round-trip form: `-1.2345e-7`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("invariant: `{:e}` of a finite f64 always has an exponent");
    let exp: i32 = exp
        .parse()
        .expect("invariant: `{:e}` writes a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    if (-4..15).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: PgType) -> Column {
        Column {
            name: "c".into(),
            pg_type: t,
        }
    }

    /// The bytes of one encoded field, or None for NULL.
    fn field(value: Value, t: PgType, format: Format) -> Result<Option<Vec<u8>>, SqlError> {
        let row = data_row(&[col(t)], &[format], &[value])?;
        let len = i32::from_be_bytes(row.data[..4].try_into().unwrap());
        Ok((len >= 0).then(|| row.data[4..].to_vec()))
    }

    fn text(value: Value, t: PgType) -> String {
        String::from_utf8(field(value, t, Format::Text).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn float8_text_matches_postgres() {
        for (f, want) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e14, "100000000000000"),
            (1e15, "1e+15"),
            (1.5e20, "1.5e+20"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (123456.789, "123456.789"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float8_text(f), want, "{f:e}");
        }
    }

    #[test]
    fn text_format_of_each_type() {
        assert_eq!(text(Value::Integer(-42), PgType::Int8), "-42");
        assert_eq!(text(Value::Real(2.5), PgType::Float8), "2.5");
        assert_eq!(text(Value::Text("hé".into()), PgType::Text), "hé");
        assert_eq!(text(Value::Blob(vec![0, 0xab]), PgType::Bytea), "\\x00ab");
        assert_eq!(text(Value::Integer(1), PgType::Bool), "t");
        assert_eq!(text(Value::Integer(0), PgType::Bool), "f");
        assert_eq!(
            field(Value::Null, PgType::Int8, Format::Text).unwrap(),
            None
        );
    }

    #[test]
    fn binary_format_of_each_type() {
        let bin = |v, t| field(v, t, Format::Binary).unwrap().unwrap();
        assert_eq!(bin(Value::Integer(7), PgType::Int8), 7i64.to_be_bytes());
        assert_eq!(bin(Value::Real(2.5), PgType::Float8), 2.5f64.to_be_bytes());
        assert_eq!(bin(Value::Text("hé".into()), PgType::Text), "hé".as_bytes());
        assert_eq!(bin(Value::Blob(vec![1, 2]), PgType::Bytea), [1, 2]);
        assert_eq!(bin(Value::Integer(1), PgType::Bool), [1]);
        assert_eq!(bin(Value::Integer(0), PgType::Bool), [0]);
    }

    #[test]
    fn lossless_conversions_apply_in_both_formats() {
        assert_eq!(text(Value::Integer(3), PgType::Float8), "3");
        assert_eq!(text(Value::Real(4.0), PgType::Int8), "4");
        assert_eq!(text(Value::Text("12".into()), PgType::Int8), "12");
        assert_eq!(text(Value::Integer(7), PgType::Text), "7");
        assert_eq!(text(Value::Text("ab".into()), PgType::Bytea), "\\x6162");
        assert_eq!(text(Value::Text("true".into()), PgType::Bool), "t");
        let bin = |v, t| field(v, t, Format::Binary).unwrap().unwrap();
        assert_eq!(bin(Value::Integer(3), PgType::Float8), 3f64.to_be_bytes());
        assert_eq!(bin(Value::Real(-4.0), PgType::Int8), (-4i64).to_be_bytes());
    }

    #[test]
    fn mismatch_is_own_text_in_text_format_and_an_error_in_binary() {
        assert_eq!(text(Value::Text("abc".into()), PgType::Int8), "abc");
        assert_eq!(text(Value::Integer(2), PgType::Bool), "2");
        assert_eq!(text(Value::Real(1.5), PgType::Int8), "1.5");
        assert_eq!(text(Value::Blob(vec![0xff]), PgType::Text), "\\xff");
        let err = field(Value::Text("abc".into()), PgType::Int8, Format::Binary).unwrap_err();
        assert_eq!(err.sqlstate, "22P02");
        assert!(
            err.message.contains("column \"c\" is announced as bigint"),
            "{}",
            err.message
        );
        assert!(err.message.contains("'abc'"), "{}", err.message);
        // 2^53 + 1 has no exact float8.
        let big = Value::Integer((1 << 53) + 1);
        assert_eq!(
            field(big, PgType::Float8, Format::Binary)
                .unwrap_err()
                .sqlstate,
            "22P02"
        );
    }

    #[test]
    fn row_width_must_match_the_announcement() {
        let err = data_row(&[col(PgType::Int8)], &[Format::Text], &[]).unwrap_err();
        assert_eq!(err.sqlstate, "0A000");
    }
}
