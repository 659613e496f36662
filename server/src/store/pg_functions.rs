//! PostgreSQL's string and math functions that SQLite lacks, registered on
//! every connection (reads, the apply connection and the leader's
//! speculation), so a statement that uses them means the same everywhere.
//!
//! They run inside replicated writes, so each is a pure function of its
//! arguments, marked deterministic, with PostgreSQL's semantics and error
//! texts (mapped to PostgreSQL's SQLSTATEs by `store::errors`). Changing
//! what one returns changes what a replayed log computes: treat them like
//! the SQLite version. Each bounds the text it builds by
//! [`MAX_VALUE_BYTES`] before building it, so no argument can make a node
//! allocate more than one value may hold.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Error, Result};

use super::budget::MAX_VALUE_BYTES;

/// Error texts, as PostgreSQL words them; `store::errors` maps each to
/// its SQLSTATE.
pub const DIVISION_BY_ZERO: &str = "division by zero";
pub const NEGATIVE_SQRT: &str = "cannot take square root of a negative number";
pub const ZERO_FIELD: &str = "field position must not be zero";
pub const TOO_LONG: &str = "requested length too large";
pub const NULL_CHARACTER: &str = "null character not permitted";
pub const BAD_CHARACTER: &str = "requested character too large for encoding";
pub const BAD_REGEX: &str = "invalid regular expression";
pub const COSTLY_REGEX: &str = "regular expression too costly for this text";

/// A match costs at most the text's length times the pattern's: past this
/// product it is refused (the same on every node) rather than let one call
/// run for minutes outside the write's step budget.
const MAX_REGEX_WORK: usize = 1 << 32;

/// Every function [`register`] makes (an apply of an entry older than
/// them refuses them: `store::semantics`).
const NAMES: &[&str] = &[
    "current_schema",
    "left",
    "right",
    "repeat",
    "lpad",
    "rpad",
    "reverse",
    "strpos",
    "char_length",
    "character_length",
    "md5",
    "ascii",
    "chr",
    "split_part",
    "initcap",
    "to_hex",
    "ceil",
    "ceiling",
    "floor",
    "sqrt",
    "power",
    "pow",
    "mod",
    "regexp",
    "match",
    "greatest",
    "least",
];

/// Whether `name` is one of the functions registered here.
pub fn is_ours(name: &str) -> bool {
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn flags() -> FunctionFlags {
    FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC
}

fn fail(why: &str) -> Error {
    Error::UserFunctionError(why.into())
}

/// Registers every function on `conn`.
pub fn register(conn: &Connection) -> Result<()> {
    // One schema, PostgreSQL's default (what SQLAlchemy asks at connect).
    conn.create_scalar_function("current_schema", 0, flags(), |_| Ok("public"))?;
    text2(conn, "left", |s, n| Ok(Some(take_chars(s, n, true))))?;
    text2(conn, "right", |s, n| Ok(Some(take_chars(s, n, false))))?;
    text2(conn, "repeat", |s, n| {
        let n = usize::try_from(n).unwrap_or(0);
        bounded(s.len().saturating_mul(n))?;
        Ok(Some(s.repeat(n)))
    })?;
    for (name, left) in [("lpad", true), ("rpad", false)] {
        for args in [2, 3] {
            conn.create_scalar_function(name, args, flags(), move |ctx| {
                let (Some(s), Some(len)) = (text(ctx, 0)?, int(ctx, 1)?) else {
                    return Ok(None);
                };
                let fill = if args == 3 {
                    text(ctx, 2)?
                } else {
                    Some(" ".into())
                };
                let Some(fill) = fill else { return Ok(None) };
                pad(&s, len, &fill, left).map(Some)
            })?;
        }
    }
    conn.create_scalar_function("reverse", 1, flags(), |ctx| {
        Ok(text(ctx, 0)?.map(|s| s.chars().rev().collect::<String>()))
    })?;
    conn.create_scalar_function("strpos", 2, flags(), |ctx| {
        let (Some(s), Some(sub)) = (text(ctx, 0)?, text(ctx, 1)?) else {
            return Ok(None);
        };
        Ok(Some(match s.find(&sub) {
            Some(byte) => s[..byte].chars().count() as i64 + 1,
            None => 0,
        }))
    })?;
    for name in ["char_length", "character_length"] {
        conn.create_scalar_function(name, 1, flags(), |ctx| {
            Ok(text(ctx, 0)?.map(|s| s.chars().count() as i64))
        })?;
    }
    conn.create_scalar_function("md5", 1, flags(), |ctx| {
        Ok(bytes(ctx, 0)?.map(|b| format!("{:x}", md5::compute(b))))
    })?;
    conn.create_scalar_function("ascii", 1, flags(), |ctx| {
        Ok(text(ctx, 0)?.map(|s| s.chars().next().map_or(0, |c| c as i64)))
    })?;
    conn.create_scalar_function("chr", 1, flags(), |ctx| {
        let Some(code) = int(ctx, 0)? else {
            return Ok(None);
        };
        match code {
            0 => Err(fail(NULL_CHARACTER)),
            _ => u32::try_from(code)
                .ok()
                .and_then(char::from_u32)
                .map(|c| Some(c.to_string()))
                .ok_or_else(|| fail(BAD_CHARACTER)),
        }
    })?;
    conn.create_scalar_function("split_part", 3, flags(), |ctx| {
        let (Some(s), Some(delim), Some(n)) = (text(ctx, 0)?, text(ctx, 1)?, int(ctx, 2)?) else {
            return Ok(None);
        };
        split_part(&s, &delim, n).map(Some)
    })?;
    conn.create_scalar_function("initcap", 1, flags(), |ctx| {
        Ok(text(ctx, 0)?.map(|s| initcap(&s)))
    })?;
    conn.create_scalar_function("to_hex", 1, flags(), |ctx| {
        Ok(int(ctx, 0)?.map(|n| format!("{n:x}")))
    })?;
    for name in ["ceil", "ceiling"] {
        math1(conn, name, f64::ceil)?;
    }
    math1(conn, "floor", f64::floor)?;
    conn.create_scalar_function("sqrt", 1, flags(), |ctx| {
        let Some(x) = real(ctx, 0)? else {
            return Ok(None);
        };
        if x < 0.0 {
            return Err(fail(NEGATIVE_SQRT));
        }
        Ok(Some(x.sqrt()))
    })?;
    for name in ["power", "pow"] {
        conn.create_scalar_function(name, 2, flags(), |ctx| {
            let (Some(a), Some(b)) = (real(ctx, 0)?, real(ctx, 1)?) else {
                return Ok(None);
            };
            Ok(Some(a.powf(b)))
        })?;
    }
    conn.create_scalar_function("mod", 2, flags(), |ctx| {
        match (ctx.get_raw(0), ctx.get_raw(1)) {
            (ValueRef::Null, _) | (_, ValueRef::Null) => Ok(Value::Null),
            (ValueRef::Integer(a), ValueRef::Integer(b)) => match b {
                0 => Err(fail(DIVISION_BY_ZERO)),
                // i64::MIN % -1 overflows in Rust; PostgreSQL answers 0.
                _ => Ok(Value::Integer(a.checked_rem(b).unwrap_or(0))),
            },
            _ => {
                let (a, b) = (real(ctx, 0)?.unwrap_or(0.0), real(ctx, 1)?.unwrap_or(0.0));
                if b == 0.0 {
                    return Err(fail(DIVISION_BY_ZERO));
                }
                Ok(Value::Real(a % b))
            }
        }
    })?;
    // `text ~ pattern` is rewritten to `text REGEXP pattern`, and `~*` to
    // `MATCH` (`sql::pg_clauses`); SQLite calls these with the pattern
    // first.
    for (name, insensitive) in [("regexp", false), ("match", true)] {
        conn.create_scalar_function(name, 2, flags(), move |ctx| {
            if ctx.get_raw(0) == ValueRef::Null || ctx.get_raw(1) == ValueRef::Null {
                return Ok(None);
            }
            let pattern_len = bytes_len(ctx.get_raw(0));
            let regex = ctx.get_or_create_aux(0, |pattern| -> Result<_> {
                let pattern = pattern.as_str().map_err(|_| fail(BAD_REGEX))?;
                regex_lite::RegexBuilder::new(pattern)
                    .case_insensitive(insensitive)
                    .size_limit(1 << 20)
                    .nest_limit(100)
                    .build()
                    .map_err(|e| fail(&format!("{BAD_REGEX}: {e}")))
            })?;
            let Some(text) = text(ctx, 1)? else {
                return Ok(None);
            };
            if text.len().saturating_mul(pattern_len.max(1)) > MAX_REGEX_WORK {
                return Err(fail(COSTLY_REGEX));
            }
            Ok(Some(regex.is_match(&text)))
        })?;
    }
    for (name, greatest) in [("greatest", true), ("least", false)] {
        conn.create_scalar_function(name, -1, flags(), move |ctx| extreme(ctx, greatest))?;
    }
    Ok(())
}

/// A function of (text, integer) returning text.
fn text2(
    conn: &Connection,
    name: &str,
    f: impl Fn(&str, i64) -> Result<Option<String>> + Send + 'static,
) -> Result<()> {
    conn.create_scalar_function(name, 2, flags(), move |ctx| {
        let (Some(s), Some(n)) = (text(ctx, 0)?, int(ctx, 1)?) else {
            return Ok(None);
        };
        f(&s, n)
    })
}

/// A function of one number that keeps integers integers (`ceil(3)` is 3).
fn math1(conn: &Connection, name: &str, f: fn(f64) -> f64) -> Result<()> {
    conn.create_scalar_function(name, 1, flags(), move |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            _ => Value::Real(f(real(ctx, 0)?.unwrap_or(0.0))),
        })
    })
}

fn text(ctx: &Context<'_>, i: usize) -> Result<Option<String>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(r) => Some(r.to_string()),
    })
}

fn bytes(ctx: &Context<'_>, i: usize) -> Result<Option<Vec<u8>>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
        ValueRef::Integer(n) => Some(n.to_string().into_bytes()),
        ValueRef::Real(r) => Some(r.to_string().into_bytes()),
    })
}

fn int(ctx: &Context<'_>, i: usize) -> Result<Option<i64>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n),
        // As SQLite converts: a real is truncated (saturating), text read
        // as far as it is a number.
        ValueRef::Real(r) => Some(r as i64),
        ValueRef::Text(t) => Some(
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        ),
        ValueRef::Blob(_) => Some(0),
    })
}

fn real(ctx: &Context<'_>, i: usize) -> Result<Option<f64>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n as f64),
        ValueRef::Real(r) => Some(r),
        ValueRef::Text(t) => Some(
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0.0),
        ),
        ValueRef::Blob(_) => Some(0.0),
    })
}

fn bytes_len(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
        _ => 8,
    }
}

/// Refuses a result longer than a value may be, before it is built.
fn bounded(len: usize) -> Result<()> {
    if len > MAX_VALUE_BYTES as usize {
        return Err(fail(TOO_LONG));
    }
    Ok(())
}

/// PostgreSQL's `left` (`from_start`) and `right`: the first or last `n`
/// characters; a negative `n` drops that many from the other end.
fn take_chars(s: &str, n: i64, from_start: bool) -> String {
    let count = s.chars().count() as i64;
    let keep = if n >= 0 {
        n.min(count)
    } else {
        (count + n).max(0)
    } as usize;
    if from_start {
        s.chars().take(keep).collect()
    } else {
        s.chars().skip(count as usize - keep).collect()
    }
}

/// PostgreSQL's `lpad`/`rpad`: fills to `len` characters, or truncates.
fn pad(s: &str, len: i64, fill: &str, left: bool) -> Result<String> {
    let len = usize::try_from(len).unwrap_or(0);
    let widest = s
        .chars()
        .chain(fill.chars())
        .map(char::len_utf8)
        .max()
        .unwrap_or(1);
    bounded(len.saturating_mul(widest))?;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= len || fill.is_empty() {
        return Ok(chars[..len.min(chars.len())].iter().collect());
    }
    let padding: String = fill.chars().cycle().take(len - chars.len()).collect();
    Ok(if left {
        padding + s
    } else {
        s.to_string() + &padding
    })
}

/// PostgreSQL's `split_part`: field `n` (from 1), or from the end when
/// negative; empty when there is no such field.
fn split_part(s: &str, delim: &str, n: i64) -> Result<String> {
    if n == 0 {
        return Err(fail(ZERO_FIELD));
    }
    let fields: Vec<&str> = if delim.is_empty() {
        vec![s]
    } else {
        s.split(delim).collect()
    };
    let index = if n > 0 {
        usize::try_from(n - 1).ok()
    } else {
        usize::try_from(-(n + 1))
            .ok()
            .and_then(|back| fields.len().checked_sub(back + 1))
    };
    Ok(index
        .and_then(|i| fields.get(i))
        .map_or(String::new(), |f| f.to_string()))
}

/// PostgreSQL's `initcap`: the first letter of each run of letters and
/// digits upper case, the rest lower case.
fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_word = false;
    for c in s.chars() {
        if in_word {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        in_word = c.is_alphanumeric();
    }
    out
}

/// PostgreSQL's `greatest`/`least`: NULL arguments are ignored; NULL only
/// when all are. Values compare as SQLite orders them (numbers by value,
/// before text, before blobs).
fn extreme(ctx: &Context<'_>, greatest: bool) -> Result<Value> {
    let mut best: Option<ValueRef<'_>> = None;
    for i in 0..ctx.len() {
        let v = ctx.get_raw(i);
        if v == ValueRef::Null {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                let order = compare(v, b);
                if greatest {
                    order.is_gt()
                } else {
                    order.is_lt()
                }
            }
        };
        if better {
            best = Some(v);
        }
    }
    Ok(match best {
        None | Some(ValueRef::Null) => Value::Null,
        Some(ValueRef::Integer(i)) => Value::Integer(i),
        Some(ValueRef::Real(r)) => Value::Real(r),
        Some(ValueRef::Text(t)) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        Some(ValueRef::Blob(b)) => Value::Blob(b.to_vec()),
    })
}

fn compare(a: ValueRef<'_>, b: ValueRef<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |v: ValueRef<'_>| match v {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 1,
        ValueRef::Text(_) => 2,
        ValueRef::Blob(_) => 3,
    };
    match (a, b) {
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x.cmp(&y),
        (ValueRef::Integer(x), ValueRef::Real(y)) => {
            (x as f64).partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (ValueRef::Real(x), ValueRef::Integer(y)) => {
            x.partial_cmp(&(y as f64)).unwrap_or(Ordering::Equal)
        }
        (ValueRef::Real(x), ValueRef::Real(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (ValueRef::Text(x), ValueRef::Text(y)) | (ValueRef::Blob(x), ValueRef::Blob(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn
    }

    fn one(conn: &Connection, sql: &str) -> Value {
        conn.query_row(sql, [], |r| r.get::<_, Value>(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn text_of(conn: &Connection, sql: &str) -> String {
        match one(conn, sql) {
            Value::Text(s) => s,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn error_of(conn: &Connection, sql: &str) -> String {
        conn.query_row(sql, [], |r| r.get::<_, Value>(0))
            .unwrap_err()
            .to_string()
    }

    /// NAMES is what gates old entries: it must name every function
    /// registered here.
    #[test]
    fn names_lists_every_registered_function() {
        let names = |conn: &Connection| -> std::collections::BTreeSet<String> {
            conn.prepare("SELECT name FROM pragma_function_list")
                .unwrap()
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|n| n.unwrap())
                .collect()
        };
        let plain = Connection::open_in_memory().unwrap();
        let ours = db();
        let added: Vec<String> = names(&ours).difference(&names(&plain)).cloned().collect();
        for name in &added {
            assert!(is_ours(name), "{name} is registered but not in NAMES");
        }
        // `match` is also SQLite's own (for full-text search), replaced here.
        let registered = names(&ours);
        for name in NAMES {
            assert!(
                registered.contains(*name),
                "NAMES lists {name}, never registered"
            );
        }
    }

    #[test]
    fn string_functions_answer_as_postgresql_does() {
        let db = db();
        for (sql, want) in [
            ("SELECT left('abcdef', 2)", "ab"),
            ("SELECT left('abcdef', -2)", "abcd"),
            ("SELECT right('abcdef', 2)", "ef"),
            ("SELECT right('abcdef', -2)", "cdef"),
            ("SELECT left('héllo', 2)", "hé"),
            ("SELECT repeat('ab', 3)", "ababab"),
            ("SELECT repeat('ab', -1)", ""),
            ("SELECT reverse('abc')", "cba"),
            ("SELECT lpad('7', 3, '0')", "007"),
            ("SELECT rpad('7', 3, '0')", "700"),
            ("SELECT lpad('hello', 2)", "he"),
            ("SELECT lpad('x', 4)", "   x"),
            ("SELECT md5('abc')", "900150983cd24fb0d6963f7d28e17f72"),
            ("SELECT chr(66)", "B"),
            ("SELECT split_part('a,b,c', ',', 2)", "b"),
            ("SELECT split_part('a,b,c', ',', -1)", "c"),
            ("SELECT split_part('a,b,c', ',', 9)", ""),
            ("SELECT initcap('hello wORLD-x1y')", "Hello World-X1y"),
            ("SELECT to_hex(255)", "ff"),
        ] {
            assert_eq!(text_of(&db, sql), want, "{sql}");
        }
        assert_eq!(one(&db, "SELECT strpos('hello', 'l')"), Value::Integer(3));
        assert_eq!(one(&db, "SELECT strpos('héllo', 'l')"), Value::Integer(3));
        assert_eq!(one(&db, "SELECT strpos('hello', 'z')"), Value::Integer(0));
        assert_eq!(one(&db, "SELECT char_length('héllo')"), Value::Integer(5));
        assert_eq!(one(&db, "SELECT ascii('A')"), Value::Integer(65));
        assert_eq!(one(&db, "SELECT left(NULL, 2)"), Value::Null);
    }

    #[test]
    fn math_functions_keep_integers_and_refuse_what_postgresql_refuses() {
        let db = db();
        assert_eq!(one(&db, "SELECT ceil(1.2)"), Value::Real(2.0));
        assert_eq!(one(&db, "SELECT floor(-1.2)"), Value::Real(-2.0));
        assert_eq!(one(&db, "SELECT ceil(3)"), Value::Integer(3));
        assert_eq!(one(&db, "SELECT sqrt(16)"), Value::Real(4.0));
        assert_eq!(one(&db, "SELECT power(2, 10)"), Value::Real(1024.0));
        assert_eq!(one(&db, "SELECT mod(10, 3)"), Value::Integer(1));
        assert_eq!(
            one(&db, "SELECT mod(-9223372036854775808, -1)"),
            Value::Integer(0)
        );
        assert_eq!(
            one(&db, "SELECT greatest(1, 5, NULL, 3)"),
            Value::Integer(5)
        );
        assert_eq!(one(&db, "SELECT least(2.5, 1, 3)"), Value::Integer(1));
        assert_eq!(one(&db, "SELECT greatest(NULL, NULL)"), Value::Null);
        assert_eq!(
            one(&db, "SELECT greatest('a', 'b')"),
            Value::Text("b".into())
        );
        assert!(error_of(&db, "SELECT mod(1, 0)").contains(DIVISION_BY_ZERO));
        assert!(error_of(&db, "SELECT sqrt(-1)").contains(NEGATIVE_SQRT));
        assert!(error_of(&db, "SELECT split_part('a', ',', 0)").contains(ZERO_FIELD));
        assert!(error_of(&db, "SELECT chr(0)").contains(NULL_CHARACTER));
    }

    #[test]
    fn regular_expressions_match_as_tilde_does() {
        let db = db();
        assert_eq!(one(&db, "SELECT 'abc' REGEXP 'b'"), Value::Integer(1));
        assert_eq!(one(&db, "SELECT 'abc' REGEXP '^b'"), Value::Integer(0));
        assert_eq!(one(&db, "SELECT 'ABC' REGEXP 'b'"), Value::Integer(0));
        assert_eq!(one(&db, "SELECT 'ABC' MATCH 'b'"), Value::Integer(1));
        assert_eq!(one(&db, "SELECT 'abc' NOT REGEXP 'z'"), Value::Integer(1));
        assert_eq!(one(&db, "SELECT NULL REGEXP 'z'"), Value::Null);
        assert!(error_of(&db, "SELECT 'a' REGEXP '('").starts_with(BAD_REGEX));
        let long = "SELECT repeat('a', 10000000) REGEXP repeat('a?', 1000)";
        assert!(error_of(&db, long).contains(COSTLY_REGEX));
    }

    #[test]
    fn no_argument_makes_a_value_larger_than_a_value_may_be() {
        let db = db();
        for sql in [
            "SELECT repeat('abcdefgh', 9000000000)",
            "SELECT repeat('x', 16777217)",
            "SELECT lpad('x', 9223372036854775807)",
            "SELECT rpad('x', 100000000, 'y')",
        ] {
            assert!(error_of(&db, sql).contains(TOO_LONG), "{sql}");
        }
        assert_eq!(
            one(&db, "SELECT length(repeat('x', 1000))"),
            Value::Integer(1000)
        );
    }
}
