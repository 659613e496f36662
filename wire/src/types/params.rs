//! Bound parameters: the bytes of a Bind decoded into SQLite values.

use std::fmt::Write as _;

use super::{oid, parse_bool, Format};
use crate::executor::{SqlError, Value};

/// Decodes parameter `$n` (1-based, for messages) of type `type_oid`,
/// sent in `format`, into the value SQLite binds: integers (int2/4/8, oid)
/// and bool (0/1) → INTEGER, float4/8 and numeric → REAL, bytea → BLOB,
/// anything else → TEXT.
pub(crate) fn decode_param(
    bytes: Option<&[u8]>,
    type_oid: u32,
    format: Format,
    n: usize,
) -> Result<Value, SqlError> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    match format {
        Format::Text => decode_text_param(bytes, type_oid, n),
        Format::Binary => decode_binary_param(bytes, type_oid, n),
    }
}

fn decode_text_param(bytes: &[u8], type_oid: u32, n: usize) -> Result<Value, SqlError> {
    let text = utf8_param(bytes, n)?;
    let invalid = |type_name: &str| {
        SqlError::new(
            "22P02",
            format!("invalid input syntax for type {type_name}: \"{text}\" (parameter ${n})"),
        )
    };
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            let (name, min, max) = match type_oid {
                oid::INT2 => ("smallint", i64::from(i16::MIN), i64::from(i16::MAX)),
                oid::INT4 => ("integer", i64::from(i32::MIN), i64::from(i32::MAX)),
                oid::OID => ("oid", 0, i64::from(u32::MAX)),
                _ => ("bigint", i64::MIN, i64::MAX),
            };
            let i: i64 = text.trim().parse().map_err(|_| invalid(name))?;
            if i < min || i > max {
                return Err(SqlError::new(
                    "22003",
                    format!("value \"{text}\" is out of range for type {name} (parameter ${n})"),
                ));
            }
            Ok(Value::Integer(i))
        }
        oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC => parse_float(text.trim())
            .map(Value::Real)
            .ok_or_else(|| invalid("double precision")),
        oid::BOOL => parse_bool(text)
            .map(|b| Value::Integer(i64::from(b)))
            .ok_or_else(|| invalid("boolean")),
        oid::BYTEA => decode_bytea_text(text)
            .map(Value::Blob)
            .ok_or_else(|| invalid("bytea")),
        _ => Ok(Value::Text(text.to_string())),
    }
}

/// float8 input: decimal or exponent notation, `NaN`, `Infinity`, `inf`.
fn parse_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other if other.contains("inf") || other.contains("nan") => None,
        other => other.parse().ok(),
    }
}

/// bytea input: hex (`\x0aff`) or the older escape format (`a\\b\001`).
fn decode_bytea_text(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let hi = (pair[0] as char).to_digit(16)?;
                let lo = (pair[1] as char).to_digit(16)?;
                u8::try_from(hi * 16 + lo).ok()
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) || octal[0] > b'3' {
                return None;
            }
            out.push((octal[0] - b'0') * 64 + (octal[1] - b'0') * 8 + (octal[2] - b'0'));
            i += 4;
        }
    }
    Some(out)
}

fn decode_binary_param(bytes: &[u8], type_oid: u32, n: usize) -> Result<Value, SqlError> {
    let bad = |type_name: &str| {
        SqlError::new(
            "22P03",
            format!(
                "incorrect binary data format in bind parameter {n}: {} bytes for type {type_name}",
                bytes.len()
            ),
        )
    };
    match type_oid {
        oid::INT2 => <[u8; 2]>::try_from(bytes)
            .map(|b| Value::Integer(i16::from_be_bytes(b).into()))
            .map_err(|_| bad("smallint")),
        oid::INT4 => <[u8; 4]>::try_from(bytes)
            .map(|b| Value::Integer(i32::from_be_bytes(b).into()))
            .map_err(|_| bad("integer")),
        oid::OID => <[u8; 4]>::try_from(bytes)
            .map(|b| Value::Integer(u32::from_be_bytes(b).into()))
            .map_err(|_| bad("oid")),
        oid::INT8 => <[u8; 8]>::try_from(bytes)
            .map(|b| Value::Integer(i64::from_be_bytes(b)))
            .map_err(|_| bad("bigint")),
        oid::FLOAT4 => <[u8; 4]>::try_from(bytes)
            .map(|b| Value::Real(f32::from_be_bytes(b).into()))
            .map_err(|_| bad("real")),
        oid::FLOAT8 => <[u8; 8]>::try_from(bytes)
            .map(|b| Value::Real(f64::from_be_bytes(b)))
            .map_err(|_| bad("double precision")),
        oid::NUMERIC => decode_binary_numeric(bytes)
            .map(Value::Real)
            .ok_or_else(|| bad("numeric")),
        oid::BOOL => match bytes {
            [0] => Ok(Value::Integer(0)),
            [1] => Ok(Value::Integer(1)),
            _ => Err(bad("boolean")),
        },
        oid::BYTEA => Ok(Value::Blob(bytes.to_vec())),
        // These types' binary form is their UTF-8 text.
        oid::UNSPECIFIED
        | oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::CHAR
        | oid::UNKNOWN
        | oid::JSON => Ok(Value::Text(utf8_param(bytes, n)?.to_string())),
        other => Err(SqlError::new(
            "0A000",
            format!(
                "binary format is not supported for parameter ${n} of type OID {other}; \
                 send it in text format"
            ),
        )),
    }
}

/// numeric's binary form: ndigits, weight, sign, dscale (each i16), then
/// ndigits base-10000 digits, the first at 10000^weight.
fn decode_binary_numeric(bytes: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes(
            bytes.get(2 * i..2 * i + 2)?.try_into().ok()?,
        ))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    if bytes.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some(f64::NAN),
        0xD000 => return Some(f64::INFINITY),
        0xF000 => return Some(f64::NEG_INFINITY),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    // Build the decimal text and let the float parser round it correctly.
    let mut text = String::with_capacity(4 * ndigits + 8);
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        if !(0..10_000).contains(&digit) {
            return None;
        }
        let _ = write!(text, "{digit:04}");
    }
    if text.is_empty() {
        return Some(0.0);
    }
    let exponent = 4 * (weight - (ndigits as i32 - 1));
    let value: f64 = format!("{text}e{exponent}").parse().ok()?;
    Some(if sign == 0x4000 { -value } else { value })
}

fn utf8_param(bytes: &[u8], n: usize) -> Result<&str, SqlError> {
    std::str::from_utf8(bytes).map_err(|_| {
        SqlError::new(
            "22021",
            format!("invalid byte sequence for encoding \"UTF8\" in parameter ${n}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_params_follow_their_type() {
        let d = |s: &str, t| decode_param(Some(s.as_bytes()), t, Format::Text, 1);
        assert_eq!(d(" 42 ", oid::INT4).unwrap(), Value::Integer(42));
        assert_eq!(d("-9", oid::INT8).unwrap(), Value::Integer(-9));
        assert_eq!(d("1.5", oid::NUMERIC).unwrap(), Value::Real(1.5));
        assert_eq!(d("1e3", oid::FLOAT8).unwrap(), Value::Real(1000.0));
        assert_eq!(
            d("-Infinity", oid::FLOAT8).unwrap(),
            Value::Real(f64::NEG_INFINITY)
        );
        assert_eq!(d("yes", oid::BOOL).unwrap(), Value::Integer(1));
        assert_eq!(d("f", oid::BOOL).unwrap(), Value::Integer(0));
        assert_eq!(d("\\x00ff", oid::BYTEA).unwrap(), Value::Blob(vec![0, 255]));
        assert_eq!(
            d("a\\\\b\\001", oid::BYTEA).unwrap(),
            Value::Blob(b"a\\b\x01".to_vec())
        );
        assert_eq!(d("42", oid::TEXT).unwrap(), Value::Text("42".into()));
        assert_eq!(d("x", oid::UNSPECIFIED).unwrap(), Value::Text("x".into()));
        assert_eq!(d("x", oid::INT8).unwrap_err().sqlstate, "22P02");
        assert_eq!(d("70000", oid::INT2).unwrap_err().sqlstate, "22003");
        assert_eq!(d("maybe", oid::BOOL).unwrap_err().sqlstate, "22P02");
        assert_eq!(d("\\x0", oid::BYTEA).unwrap_err().sqlstate, "22P02");
        assert_eq!(d("nanx", oid::FLOAT8).unwrap_err().sqlstate, "22P02");
        assert_eq!(
            decode_param(Some(b"\xff"), oid::TEXT, Format::Text, 2)
                .unwrap_err()
                .sqlstate,
            "22021"
        );
        assert_eq!(
            decode_param(None, oid::INT8, Format::Text, 1).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn binary_params_follow_their_type() {
        let d = |b: &[u8], t| decode_param(Some(b), t, Format::Binary, 1);
        assert_eq!(
            d(&7i16.to_be_bytes(), oid::INT2).unwrap(),
            Value::Integer(7)
        );
        assert_eq!(
            d(&(-7i32).to_be_bytes(), oid::INT4).unwrap(),
            Value::Integer(-7)
        );
        assert_eq!(
            d(&i64::MAX.to_be_bytes(), oid::INT8).unwrap(),
            Value::Integer(i64::MAX)
        );
        assert_eq!(
            d(&1.5f32.to_be_bytes(), oid::FLOAT4).unwrap(),
            Value::Real(1.5)
        );
        assert_eq!(
            d(&2.5f64.to_be_bytes(), oid::FLOAT8).unwrap(),
            Value::Real(2.5)
        );
        assert_eq!(d(&[1], oid::BOOL).unwrap(), Value::Integer(1));
        assert_eq!(d(&[0, 9], oid::BYTEA).unwrap(), Value::Blob(vec![0, 9]));
        assert_eq!(
            d("hé".as_bytes(), oid::VARCHAR).unwrap(),
            Value::Text("hé".into())
        );
        assert_eq!(d(&[0; 3], oid::INT8).unwrap_err().sqlstate, "22P03");
        assert_eq!(d(&[2], oid::BOOL).unwrap_err().sqlstate, "22P03");
        assert_eq!(d(&[0; 16], 2950 /* uuid */).unwrap_err().sqlstate, "0A000");
    }

    #[test]
    fn binary_numeric_params() {
        // 12345.678: digits 1, 2345, 6780; weight 1; dscale 3.
        let mut b = Vec::new();
        for w in [3i16, 1, 0, 3, 1, 2345, 6780] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(
            decode_param(Some(&b), oid::NUMERIC, Format::Binary, 1).unwrap(),
            Value::Real(12345.678)
        );
        // -0.05: one digit 500 at weight -1, negative.
        let mut b = Vec::new();
        for w in [1i16, -1, 0x4000, 2, 500] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(
            decode_param(Some(&b), oid::NUMERIC, Format::Binary, 1).unwrap(),
            Value::Real(-0.05)
        );
        assert_eq!(
            decode_param(Some(&[0, 1]), oid::NUMERIC, Format::Binary, 1)
                .unwrap_err()
                .sqlstate,
            "22P03"
        );
    }
}
