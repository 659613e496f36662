//! Columns that PostgreSQL numbers by itself — `SERIAL`, `BIGSERIAL`,
//! `SMALLSERIAL` and `GENERATED { ALWAYS | BY DEFAULT } AS IDENTITY` — as
//! the SQLite column that numbers itself: the rowid alias
//! `INTEGER PRIMARY KEY`.
//!
//! Left alone, SQLite would take `id SERIAL PRIMARY KEY` as an ordinary
//! column of an unknown type and store NULL ids: a silent data trap. So a
//! numbered column that is the table's primary key becomes
//! `INTEGER PRIMARY KEY AUTOINCREMENT` (ids are never reused, as with a
//! PostgreSQL sequence; `sqlite_sequence` keeps the high-water mark, in the
//! replicated database, so every node numbers the same way). A numbered
//! column that is not the primary key cannot be numbered by SQLite, and is
//! refused with `0A000` rather than left NULL.
//!
//! Only `CREATE TABLE … ( … )` and `ALTER TABLE` are looked at; the rewrite
//! happens on the node that receives the statement, so the Raft log holds
//! the SQLite text.

use std::borrow::Cow;

use resqlite_wire::SqlError;

use super::pg_syntax::{lex, Kind, Token};
use super::sqlstate::FEATURE_NOT_SUPPORTED;

/// SQLSTATE 22023 (invalid_parameter_value), what PostgreSQL answers for an
/// identity column of a non-integer type.
const INVALID_PARAMETER_VALUE: &str = "22023";

/// The serial pseudo-types.
const SERIALS: &[&str] = &[
    "serial",
    "serial4",
    "bigserial",
    "serial8",
    "smallserial",
    "serial2",
];

/// The types an identity column may have.
const INTEGERS: &[&str] = &[
    "smallint", "int2", "integer", "int", "int4", "bigint", "int8",
];

/// Whether `sql` may hold a numbered column: a cheap test that lets every
/// other statement skip the lexer.
pub fn may_number(sql: &str) -> bool {
    super::pg_syntax::any_word(sql, |w| {
        w.eq_ignore_ascii_case(b"identity")
            || SERIALS.iter().any(|s| w.eq_ignore_ascii_case(s.as_bytes()))
    })
}

/// Rewrites the numbered columns of a `CREATE TABLE`; see the module
/// documentation. Any other statement comes back untouched.
pub fn rewrite(sql: &str) -> Result<Cow<'_, str>, SqlError> {
    let tokens = lex(sql)?;
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&k| tokens[k].kind != Kind::Space)
        .collect();
    let word = |n: usize| -> Option<String> {
        let t = tokens[*words.get(n)?];
        (t.kind == Kind::Word).then(|| sql[t.start..t.end].to_ascii_lowercase())
    };
    match word(0).as_deref() {
        Some("create") => {}
        Some("alter") if word(1).as_deref() == Some("table") => {
            refuse_in_alter(sql, &tokens)?;
            return Ok(Cow::Borrowed(sql));
        }
        _ => return Ok(Cow::Borrowed(sql)),
    }
    // CREATE [TEMP | TEMPORARY | UNLOGGED] TABLE [IF NOT EXISTS] name (
    let mut n = 1;
    if matches!(word(n).as_deref(), Some("temp" | "temporary" | "unlogged")) {
        n += 1;
    }
    if word(n).as_deref() != Some("table") {
        return Ok(Cow::Borrowed(sql));
    }
    n += 1;
    if word(n).as_deref() == Some("if") {
        n += 3;
    }
    // The name, possibly qualified: parts separated by dots.
    n += 1;
    while words
        .get(n)
        .is_some_and(|&k| tokens[k].kind == Kind::Punct(b'.'))
    {
        n += 2;
    }
    let Some(&open) = words.get(n) else {
        return Ok(Cow::Borrowed(sql));
    };
    if tokens[open].kind != Kind::Punct(b'(') {
        // CREATE TABLE … AS SELECT: its columns are not numbered.
        return Ok(Cow::Borrowed(sql));
    }
    let elements = elements(&tokens, open);
    let mut table_key = None;
    let mut columns = Vec::new();
    for element in &elements {
        match Element::read(sql, &tokens, element.clone())? {
            Element::TableKey(column) => table_key = column,
            Element::Column(c) => columns.push(c),
            Element::Other => {}
        }
    }
    let numbered: Vec<&NumberedColumn> = columns.iter().flatten().collect();
    if numbered.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out: Vec<Cow<'_, str>> = tokens
        .iter()
        .map(|t| Cow::Borrowed(&sql[t.start..t.end]))
        .collect();
    for column in numbered {
        let keyed_by_table = table_key.as_deref() == Some(column.name.as_str());
        if column.key_end.is_none() && !keyed_by_table {
            return Err(SqlError::new(
                FEATURE_NOT_SUPPORTED,
                format!(
                    "column \"{}\": a SERIAL or IDENTITY column must be the table's PRIMARY KEY \
                     (SQLite numbers only its rowid); declare it \"{} SERIAL PRIMARY KEY\"",
                    column.name, column.name
                ),
            ));
        }
        out[column.type_token] = Cow::Borrowed("INTEGER");
        if let Some((from, to)) = column.identity {
            for piece in &mut out[from..to] {
                *piece = Cow::Borrowed("");
            }
        }
        // AUTOINCREMENT only exists as a column constraint; a key declared
        // by the table (`PRIMARY KEY (id)`) still makes the column the
        // rowid, which numbers from the largest id in the table.
        if let Some(end) = column.key_end {
            if !column.autoincrement {
                out[end - 1] = Cow::Owned(format!("{} AUTOINCREMENT", out[end - 1]));
            }
        }
    }
    Ok(Cow::Owned(out.concat()))
}

/// `ALTER TABLE … ADD [COLUMN] x SERIAL`: SQLite cannot add a primary key
/// to a table that exists.
fn refuse_in_alter(sql: &str, tokens: &[Token]) -> Result<(), SqlError> {
    let numbered = tokens.iter().any(|t| {
        t.kind == Kind::Word && {
            let w = sql[t.start..t.end].to_ascii_lowercase();
            SERIALS.contains(&w.as_str()) || w == "identity"
        }
    });
    if numbered {
        return Err(SqlError::new(
            FEATURE_NOT_SUPPORTED,
            "ALTER TABLE cannot add or change a SERIAL or IDENTITY column: only a new table's \
             PRIMARY KEY can be numbered (SQLite numbers only its rowid)",
        ));
    }
    Ok(())
}

/// The token ranges of the comma-separated elements inside the
/// parenthesis that opens at `open`.
fn elements(tokens: &[Token], open: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    out.push(start..k);
                    break;
                }
            }
            Kind::Punct(b',') if depth == 1 => {
                out.push(start..k);
                start = k + 1;
            }
            _ => {}
        }
    }
    out
}

/// A column PostgreSQL would number.
struct NumberedColumn {
    /// The column's name as SQLite compares it (lowercased unless quoted).
    name: String,
    /// The token of its type, which becomes `INTEGER`.
    type_token: usize,
    /// `GENERATED … AS IDENTITY [( … )]`, to remove: token range.
    identity: Option<(usize, usize)>,
    /// Just past `PRIMARY KEY [ASC | DESC]` when the column declares it.
    key_end: Option<usize>,
    /// Whether the client already wrote AUTOINCREMENT.
    autoincrement: bool,
}

enum Element {
    /// A table constraint `PRIMARY KEY (column)` on one column (`None`:
    /// on several columns).
    TableKey(Option<String>),
    /// A column definition, and what it numbers.
    Column(Option<NumberedColumn>),
    /// Any other table constraint.
    Other,
}

impl Element {
    fn read(sql: &str, tokens: &[Token], range: std::ops::Range<usize>) -> Result<Self, SqlError> {
        let parts: Vec<usize> = range.filter(|&k| tokens[k].kind != Kind::Space).collect();
        let text = |k: usize| &sql[tokens[k].start..tokens[k].end];
        let word = |n: usize| -> Option<String> {
            let k = *parts.get(n)?;
            (tokens[k].kind == Kind::Word).then(|| text(k).to_ascii_lowercase())
        };
        let Some(&first) = parts.first() else {
            return Ok(Self::Other);
        };
        let mut n = 0;
        if word(0).as_deref() == Some("constraint") {
            n = 2;
        }
        match word(n).as_deref() {
            Some("primary") => {
                // PRIMARY KEY ( column [, …] )
                let names: Vec<String> = parts[n + 2..]
                    .iter()
                    .filter(|&&k| matches!(tokens[k].kind, Kind::Word | Kind::QuotedIdent))
                    .map(|&k| column_name(tokens[k], text(k)))
                    .collect();
                return Ok(Self::TableKey(match names.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                }));
            }
            Some("unique" | "check" | "foreign" | "exclude" | "like")
                if n > 0 || !is_column(&parts, tokens) =>
            {
                return Ok(Self::Other);
            }
            _ if n > 0 => return Ok(Self::Other),
            _ => {}
        }
        let name = column_name(tokens[first], text(first));
        let Some(&type_token) = parts.get(1) else {
            return Ok(Self::Column(None));
        };
        let type_name = word(1).unwrap_or_default();
        let serial = SERIALS.contains(&type_name.as_str());
        // GENERATED { ALWAYS | BY DEFAULT } AS IDENTITY [ ( options ) ]
        let mut identity = None;
        for m in 2..parts.len() {
            if word(m).as_deref() != Some("generated") {
                continue;
            }
            let mut j = m + 1;
            match word(j).as_deref() {
                Some("always") => j += 1,
                Some("by") if word(j + 1).as_deref() == Some("default") => j += 2,
                _ => continue,
            }
            if word(j).as_deref() != Some("as") || word(j + 1).as_deref() != Some("identity") {
                continue; // a generated column: GENERATED ALWAYS AS (expr)
            }
            j += 2;
            let mut end = parts[j - 1] + 1;
            if parts
                .get(j)
                .is_some_and(|&k| tokens[k].kind == Kind::Punct(b'('))
            {
                end = matching_close(tokens, parts[j]) + 1;
            }
            identity = Some((parts[m], end));
            break;
        }
        if !serial && identity.is_none() {
            return Ok(Self::Column(None));
        }
        if identity.is_some() && !INTEGERS.contains(&type_name.as_str()) {
            return Err(SqlError::new(
                INVALID_PARAMETER_VALUE,
                format!(
                    "identity column type must be smallint, integer, or bigint (column \"{name}\")"
                ),
            ));
        }
        let mut key_end = None;
        let mut autoincrement = false;
        for m in 2..parts.len() {
            if identity.is_some_and(|(from, to)| (from..to).contains(&parts[m])) {
                continue;
            }
            match word(m).as_deref() {
                Some("primary") if word(m + 1).as_deref() == Some("key") => {
                    let mut last = m + 1;
                    if matches!(word(m + 2).as_deref(), Some("asc" | "desc")) {
                        last += 1;
                    }
                    key_end = Some(parts[last] + 1);
                }
                Some("autoincrement") => autoincrement = true,
                _ => {}
            }
        }
        Ok(Self::Column(Some(NumberedColumn {
            name,
            type_token,
            identity,
            key_end,
            autoincrement,
        })))
    }
}

/// Whether an element starting with a constraint keyword is nevertheless
/// a column of that name (`unique TEXT`, quoted or not): a column's name is
/// followed by its type, a constraint's keyword by `(` or `KEY`.
fn is_column(parts: &[usize], tokens: &[Token]) -> bool {
    parts.get(1).is_some_and(|&k| tokens[k].kind == Kind::Word)
}

/// The index of the `)` that closes the `(` at `open`.
fn matching_close(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    tokens.len() - 1
}

/// A column name as SQLite compares names: case-insensitively, so
/// lowercased, quotes removed.
fn column_name(token: Token, text: &str) -> String {
    match token.kind {
        Kind::QuotedIdent => text[1..text.len() - 1].to_ascii_lowercase(),
        _ => text.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(sql: &str) -> String {
        rewrite(sql).unwrap().into_owned()
    }

    fn refused(sql: &str) -> SqlError {
        rewrite(sql).unwrap_err()
    }

    #[test]
    fn serial_primary_keys_become_numbered_rowids() {
        assert_eq!(
            sqlite("CREATE TABLE t (id SERIAL PRIMARY KEY, body text)"),
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, body text)"
        );
        assert_eq!(
            sqlite("create table if not exists s.t (ID bigserial not null primary key desc)"),
            "create table if not exists s.t (ID INTEGER not null primary key desc AUTOINCREMENT)"
        );
        assert_eq!(
            sqlite("CREATE TEMP TABLE t (id smallserial CONSTRAINT pk PRIMARY KEY, x int)"),
            "CREATE TEMP TABLE t (id INTEGER CONSTRAINT pk PRIMARY KEY AUTOINCREMENT, x int)"
        );
    }

    #[test]
    fn identity_columns_lose_the_clause_and_become_numbered_rowids() {
        assert_eq!(
            sqlite("CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x int)"),
            "CREATE TABLE t (id INTEGER  PRIMARY KEY AUTOINCREMENT, x int)"
        );
        assert_eq!(
            sqlite(
                "CREATE TABLE t (id int PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY \
                 (START WITH 10 INCREMENT BY 1), x int)"
            ),
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT , x int)"
        );
    }

    #[test]
    fn a_key_declared_by_the_table_makes_the_column_the_rowid() {
        assert_eq!(
            sqlite("CREATE TABLE t (id serial, x int, PRIMARY KEY (id))"),
            "CREATE TABLE t (id INTEGER, x int, PRIMARY KEY (id))"
        );
        assert_eq!(
            sqlite("CREATE TABLE t (\"Id\" serial, CONSTRAINT k PRIMARY KEY (\"Id\"))"),
            "CREATE TABLE t (\"Id\" INTEGER, CONSTRAINT k PRIMARY KEY (\"Id\"))"
        );
    }

    #[test]
    fn a_numbered_column_that_is_not_the_key_is_refused() {
        for sql in [
            "CREATE TABLE t (id serial, x int)",
            "CREATE TABLE t (id serial, x int, PRIMARY KEY (id, x))",
            "CREATE TABLE t (k int PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY)",
            "ALTER TABLE t ADD COLUMN n serial",
            "ALTER TABLE t ALTER COLUMN n ADD GENERATED ALWAYS AS IDENTITY",
        ] {
            let e = refused(sql);
            assert_eq!(e.sqlstate, FEATURE_NOT_SUPPORTED, "{sql}");
        }
        let e = refused("CREATE TABLE t (id text GENERATED ALWAYS AS IDENTITY PRIMARY KEY)");
        assert_eq!(e.sqlstate, INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn everything_else_is_untouched() {
        for sql in [
            "SELECT serial FROM t",
            "CREATE TABLE t (serial text, identity int)",
            "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED)",
            "CREATE TABLE t AS SELECT 1 AS serial",
            "INSERT INTO t (serial) VALUES (1)",
            "CREATE INDEX serial ON t (x)",
            "ALTER TABLE t RENAME TO u",
        ] {
            assert!(matches!(rewrite(sql).unwrap(), Cow::Borrowed(_)), "{sql}");
        }
    }

    #[test]
    fn only_statements_naming_serial_or_identity_are_lexed() {
        assert!(may_number("create table t (id SERIAL primary key)"));
        assert!(may_number("x GENERATED ALWAYS AS IDENTITY"));
        assert!(!may_number("SELECT 1"));
    }
}
