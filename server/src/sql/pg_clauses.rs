//! PostgreSQL operators and clauses SQLite spells differently, rewritten
//! token by token:
//!
//! | PostgreSQL | SQLite |
//! |---|---|
//! | `a ILIKE b`, `a NOT ILIKE b` | `a LIKE b` (SQLite's `LIKE` already ignores ASCII case) |
//! | `a ~ b`, `a !~ b` | `a REGEXP b`, `a NOT REGEXP b` |
//! | `a ~* b`, `a !~* b` | `a MATCH b`, `a MATCH b = 0` (a pattern that is one token or a parenthesised group) |
//! | `LIMIT ALL` | `LIMIT -1` |
//! | `FETCH { FIRST \| NEXT } [n] { ROW \| ROWS } ONLY` | `LIMIT n` |
//! | `OFFSET n { ROW \| ROWS }` | `OFFSET n` (before a `LIMIT` that FETCH became, moved after it; with no LIMIT at all, `LIMIT -1 OFFSET n`) |
//! | `position(a IN b)` | `instr(b, a)` |
//! | `pg_catalog.name` | `name` (the catalog's relations and functions live in SQLite's one namespace) |
//! | `TRUNCATE [TABLE] t` | `DELETE FROM t` (one table; no `RESTART IDENTITY`, no `CASCADE`) |
//!
//! `regexp` and `match` are our functions (`store::pg_functions`): a
//! regular expression, case-sensitive or not. A unary `~` (bitwise not)
//! is left alone.

use std::borrow::Cow;

use resqlite_wire::SqlError;

use super::pg_syntax::{lex, Kind, Token};
use super::sqlstate::FEATURE_NOT_SUPPORTED;

/// Whether `sql` may hold something to rewrite: a cheap test that lets
/// every other statement skip the lexer.
pub fn may_rewrite(sql: &str) -> bool {
    const WORDS: &[&[u8]] = &[
        b"truncate",
        b"pg_catalog",
        b"ilike",
        b"fetch",
        b"all",
        b"position",
        b"offset",
    ];
    sql.contains('~')
        || super::pg_syntax::any_word(sql, |w| WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
}

/// Rewrites `sql`; see the module documentation.
pub fn rewrite(sql: &str) -> Result<Cow<'_, str>, SqlError> {
    let tokens = lex(sql)?;
    if let Some(delete) = truncate(sql, &tokens)? {
        return Ok(Cow::Owned(delete));
    }
    let mut out: Vec<Cow<'_, str>> = tokens
        .iter()
        .map(|t| Cow::Borrowed(&sql[t.start..t.end]))
        .collect();
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&k| tokens[k].kind != Kind::Space)
        .collect();
    let word = |n: usize| -> Option<String> {
        let t = tokens[*solid.get(n)?];
        (t.kind == Kind::Word).then(|| sql[t.start..t.end].to_ascii_lowercase())
    };
    let punct = |n: usize, c: u8| {
        solid
            .get(n)
            .is_some_and(|&k| tokens[k].kind == Kind::Punct(c))
    };
    let mut changed = false;
    let mut n = 0;
    while n < solid.len() {
        let k = solid[n];
        match (tokens[k].kind, word(n).as_deref()) {
            // `pg_catalog.version()`, `pg_catalog.pg_type`: everything of
            // the catalog lives in the one namespace SQLite has.
            (Kind::Word, Some("pg_catalog"))
                if punct(n + 1, b'.')
                    && solid.get(n + 2).is_some_and(|&t| {
                        matches!(tokens[t].kind, Kind::Word | Kind::QuotedIdent)
                    }) =>
            {
                for piece in &mut out[k..=solid[n + 1]] {
                    *piece = Cow::Borrowed("");
                }
                changed = true;
            }
            (Kind::Word, Some("ilike")) => {
                out[k] = Cow::Borrowed("LIKE");
                changed = true;
            }
            (Kind::Punct(b'~'), _)
                if ends_operand(&out, &solid, n) || punct(n.wrapping_sub(1), b'!') =>
            {
                let negated = punct(n.wrapping_sub(1), b'!');
                let insensitive = punct(n + 1, b'*');
                // `NOT MATCH` is SQLite but not sqlparser: `a MATCH b = 0`
                // says the same (the operators bind alike, left to right).
                let operator = match (negated, insensitive) {
                    (false, false) => " REGEXP ",
                    (true, false) => " NOT REGEXP ",
                    (false, true) => " MATCH ",
                    (true, true) => " MATCH ",
                };
                if negated && insensitive {
                    if let Some(end) = operand_end(&tokens, &solid, n + 2) {
                        out[end] =
                            Cow::Owned(format!("{} = 0", &sql[tokens[end].start..tokens[end].end]));
                    }
                }
                if negated {
                    out[solid[n - 1]] = Cow::Borrowed("");
                }
                if insensitive {
                    out[solid[n + 1]] = Cow::Borrowed("");
                }
                out[k] = Cow::Borrowed(operator);
                changed = true;
            }
            (Kind::Word, Some("limit")) if word(n + 1).as_deref() == Some("all") => {
                out[solid[n + 1]] = Cow::Borrowed("-1");
                changed = true;
            }
            (Kind::Word, Some("fetch"))
                if matches!(word(n + 1).as_deref(), Some("first" | "next")) =>
            {
                // FETCH FIRST [count] ROW[S] ONLY
                let mut m = n + 2;
                let count = match word(m).as_deref() {
                    Some("row" | "rows") => "1".to_string(),
                    _ => {
                        let c = solid.get(m).map(|&t| &sql[tokens[t].start..tokens[t].end]);
                        m += 1;
                        c.unwrap_or("1").to_string()
                    }
                };
                if matches!(word(m).as_deref(), Some("row" | "rows"))
                    && word(m + 1).as_deref() == Some("only")
                {
                    for piece in &mut out[k..=solid[m + 1]] {
                        *piece = Cow::Borrowed("");
                    }
                    out[k] = Cow::Owned(format!("LIMIT {count}"));
                    // SQLite wants LIMIT before OFFSET: move an OFFSET that
                    // came before the FETCH after it.
                    // `OFFSET n ROWS FETCH …` or `OFFSET n FETCH …`.
                    let offset_at = if n >= 3
                        && word(n - 3).as_deref() == Some("offset")
                        && matches!(word(n - 1).as_deref(), Some("row" | "rows"))
                    {
                        Some(n - 3)
                    } else if n >= 2 && word(n - 2).as_deref() == Some("offset") {
                        Some(n - 2)
                    } else {
                        None
                    };
                    if let Some(o) = offset_at {
                        let count_token = tokens[solid[o + 1]];
                        let offset = sql[count_token.start..count_token.end].to_string();
                        for piece in &mut out[solid[o]..k] {
                            *piece = Cow::Borrowed("");
                        }
                        out[k] = Cow::Owned(format!("LIMIT {count} OFFSET {offset}"));
                    }
                    changed = true;
                    n = m + 2;
                    continue;
                }
            }
            // An OFFSET that a FETCH follows is the FETCH's to move.
            (Kind::Word, Some("offset"))
                if word(n + 2).as_deref() != Some("fetch")
                    && word(n + 3).as_deref() != Some("fetch") =>
            {
                if matches!(word(n + 2).as_deref(), Some("row" | "rows")) {
                    out[solid[n + 2]] = Cow::Borrowed("");
                    changed = true;
                }
                // PostgreSQL takes OFFSET alone; SQLite only after a LIMIT.
                if !(0..n).any(|m| word(m).as_deref() == Some("limit")) {
                    out[k] =
                        Cow::Owned(format!("LIMIT -1 {}", &sql[tokens[k].start..tokens[k].end]));
                    changed = true;
                }
            }
            _ => {}
        }
        n += 1;
    }
    // position(a IN b), innermost first (from the end), so that an outer
    // one takes the inner one already rewritten.
    for n in (0..solid.len()).rev() {
        if word(n).as_deref() != Some("position") || !punct(n + 1, b'(') {
            continue;
        }
        let Some((needle, haystack, close)) = position_args(&tokens, &solid, n + 1, sql) else {
            continue;
        };
        let a = out[needle].concat().trim().to_string();
        let b = out[haystack].concat().trim().to_string();
        for piece in &mut out[solid[n]..=close] {
            *piece = Cow::Borrowed("");
        }
        out[solid[n]] = Cow::Owned(format!("instr({b}, {a})"));
        changed = true;
    }
    Ok(if changed {
        Cow::Owned(out.concat())
    } else {
        Cow::Borrowed(sql)
    })
}

/// `TRUNCATE [TABLE] [ONLY] name [*] [CONTINUE IDENTITY] [RESTRICT]` as
/// `DELETE FROM name` (`None`: not a TRUNCATE). Several tables, `RESTART
/// IDENTITY` (AUTOINCREMENT counters may not be set by a write) and
/// `CASCADE` are refused.
fn truncate(sql: &str, tokens: &[Token]) -> Result<Option<String>, SqlError> {
    let solid: Vec<&Token> = tokens.iter().filter(|t| t.kind != Kind::Space).collect();
    let text = |t: &Token| &sql[t.start..t.end];
    let is = |n: usize, w: &str| {
        solid
            .get(n)
            .is_some_and(|t| t.kind == Kind::Word && text(t).eq_ignore_ascii_case(w))
    };
    if !is(0, "truncate") {
        return Ok(None);
    }
    let refuse = |why: &str| Err(SqlError::new(FEATURE_NOT_SUPPORTED, why.to_string()));
    let mut n = 1;
    for optional in ["table", "only"] {
        if is(n, optional) {
            n += 1;
        }
    }
    // The name, possibly qualified.
    let start = n;
    n += 1;
    while solid.get(n).is_some_and(|t| t.kind == Kind::Punct(b'.')) {
        n += 2;
    }
    let Some(end) = solid.get(n.saturating_sub(1)) else {
        return Ok(None);
    };
    let name = &sql[solid[start].start..end.end];
    let rest: Vec<String> = solid[n.min(solid.len())..]
        .iter()
        .map(|t| text(t).to_ascii_lowercase())
        .filter(|w| w != "*" && w != ";")
        .collect();
    match rest
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["continue", "identity"] | ["restrict"] | ["continue", "identity", "restrict"] => {
            Ok(Some(format!("DELETE FROM {name}")))
        }
        [",", ..] => refuse(
            "TRUNCATE of several tables is not supported: truncate them one at a time \
             (in one transaction, if they must go together)",
        ),
        rest if rest.contains(&"restart") => refuse(
            "TRUNCATE … RESTART IDENTITY is not supported: SQLite keeps the AUTOINCREMENT \
             counters, and a write may not reset them",
        ),
        rest if rest.contains(&"cascade") => {
            refuse("TRUNCATE … CASCADE is not supported: truncate the referencing tables first")
        }
        _ => Ok(None),
    }
}

/// Whether what stands before the solid token `n` — as rewritten so far,
/// so that a second pass over the output decides the same — ends an
/// operand, making a `~` there the binary regular-expression operator, not
/// a bitwise not.
fn ends_operand(out: &[Cow<'_, str>], solid: &[usize], n: usize) -> bool {
    let Some(before) = solid[..n]
        .iter()
        .rev()
        .map(|&k| out[k].trim_end())
        .find(|piece| !piece.is_empty())
    else {
        return false;
    };
    let is_word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    match before.as_bytes().last() {
        Some(b')' | b'\'' | b'"' | b'`' | b']') => true,
        Some(&b) if is_word_byte(b) => {
            let start = before
                .bytes()
                .rposition(|b| !is_word_byte(b))
                .map_or(0, |p| p + 1);
            !OPERATOR_WORDS
                .iter()
                .any(|w| before[start..].eq_ignore_ascii_case(w))
        }
        _ => false,
    }
}

/// Words after which an operand starts (so a `~` after them is unary).
const OPERATOR_WORDS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "not",
    "on",
    "when",
    "then",
    "else",
    "case",
    "by",
    "having",
    "returning",
    "set",
    "values",
    "in",
    "is",
    "like",
    "between",
    "distinct",
    "all",
    "limit",
    "offset",
    "as",
    "from",
    "escape",
    "return",
    "regexp",
    "match",
    "glob",
    "ilike",
];

/// The last token of the operand that starts at solid token `n`: one
/// token, or a parenthesised group.
fn operand_end(tokens: &[Token], solid: &[usize], n: usize) -> Option<usize> {
    let start = *solid.get(n)?;
    if tokens[start].kind != Kind::Punct(b'(') {
        return Some(start);
    }
    let mut depth = 0usize;
    for (k, t) in tokens.iter().enumerate().skip(start) {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The token ranges of `a` and `b` in `position(a IN b)` whose `(` is the
/// solid token `open`, and the index of its `)`.
fn position_args(
    tokens: &[Token],
    solid: &[usize],
    open: usize,
    sql: &str,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>, usize)> {
    let start = solid[open];
    let mut depth = 0usize;
    let mut in_word = None;
    for k in start..tokens.len() {
        match tokens[k].kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    let at = in_word?;
                    return Some((start + 1..at, at + 1..k, k));
                }
            }
            Kind::Word
                if depth == 1
                    && in_word.is_none()
                    && sql[tokens[k].start..tokens[k].end].eq_ignore_ascii_case("in") =>
            {
                in_word = Some(k);
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(sql: &str) -> String {
        rewrite(sql).unwrap().into_owned()
    }

    #[test]
    fn ilike_and_regular_expressions() {
        assert_eq!(sqlite("SELECT 'abc' ILIKE 'A%'"), "SELECT 'abc' LIKE 'A%'");
        assert_eq!(
            sqlite("SELECT x FROM t WHERE x NOT ilike '%a'"),
            "SELECT x FROM t WHERE x NOT LIKE '%a'"
        );
        assert_eq!(sqlite("SELECT 'abc' ~ 'b'"), "SELECT 'abc'  REGEXP  'b'");
        assert_eq!(
            sqlite("SELECT x !~ 'b' FROM t"),
            "SELECT x  NOT REGEXP  'b' FROM t"
        );
        assert_eq!(
            sqlite("SELECT x ~* 'B' FROM t"),
            "SELECT x  MATCH  'B' FROM t"
        );
        assert_eq!(
            sqlite("SELECT x !~* 'B' FROM t"),
            "SELECT x  MATCH  'B' = 0 FROM t"
        );
        // Bitwise not stays.
        for sql in [
            "SELECT ~5",
            "SELECT 1 + ~x FROM t",
            "SELECT x FROM t WHERE ~x = 1",
        ] {
            assert_eq!(sqlite(sql), sql);
        }
    }

    #[test]
    fn fetch_first_and_limit_all() {
        assert_eq!(
            sqlite("SELECT x FROM t ORDER BY x FETCH FIRST 2 ROWS ONLY"),
            "SELECT x FROM t ORDER BY x LIMIT 2"
        );
        assert_eq!(
            sqlite("SELECT x FROM t FETCH NEXT ROW ONLY"),
            "SELECT x FROM t LIMIT 1"
        );
        assert_eq!(
            sqlite("SELECT x FROM t OFFSET 3 ROWS FETCH FIRST $1 ROWS ONLY"),
            "SELECT x FROM t LIMIT $1 OFFSET 3"
        );
        assert_eq!(
            sqlite("SELECT x FROM t LIMIT 5 OFFSET 1 ROW"),
            "SELECT x FROM t LIMIT 5 OFFSET 1 "
        );
        assert_eq!(
            sqlite("SELECT x FROM t LIMIT ALL"),
            "SELECT x FROM t LIMIT -1"
        );
        assert_eq!(
            sqlite("SELECT x FROM t OFFSET 2 FETCH FIRST 3 ROWS ONLY"),
            "SELECT x FROM t LIMIT 3 OFFSET 2"
        );
        let untouched = "SELECT all_rows, fetched FROM t UNION ALL SELECT 1, 2";
        assert_eq!(sqlite(untouched), untouched);
    }

    #[test]
    fn only_statements_that_may_hold_these_are_lexed() {
        for sql in [
            "SELECT x FROM t OFFSET 5",
            "SELECT 1 ~ 2",
            "SELECT x FROM t LIMIT ALL",
        ] {
            assert!(may_rewrite(sql), "{sql}");
        }
        assert!(!may_rewrite("SELECT a, b FROM t WHERE a = $1 LIMIT 10"));
    }

    #[test]
    fn the_pg_catalog_qualifier_goes() {
        assert_eq!(sqlite("select pg_catalog.version()"), "select version()");
        assert_eq!(
            sqlite("SELECT typname FROM PG_CATALOG.pg_type WHERE oid = 25"),
            "SELECT typname FROM pg_type WHERE oid = 25"
        );
        let untouched = "SELECT pg_catalog FROM t";
        assert_eq!(sqlite(untouched), untouched);
    }

    #[test]
    fn truncate_becomes_delete() {
        for sql in [
            "TRUNCATE t",
            "truncate table t",
            "TRUNCATE TABLE ONLY t * CONTINUE IDENTITY RESTRICT;",
        ] {
            assert_eq!(sqlite(sql), "DELETE FROM t", "{sql}");
        }
        assert_eq!(sqlite("TRUNCATE main.\"T\""), "DELETE FROM main.\"T\"");
        for sql in [
            "TRUNCATE a, b",
            "TRUNCATE t RESTART IDENTITY",
            "TRUNCATE t CASCADE",
        ] {
            assert_eq!(
                rewrite(sql).unwrap_err().sqlstate,
                FEATURE_NOT_SUPPORTED,
                "{sql}"
            );
        }
    }

    #[test]
    fn position_becomes_instr() {
        assert_eq!(
            sqlite("SELECT position('b' in 'abc')"),
            "SELECT instr('abc', 'b')"
        );
        assert_eq!(
            sqlite("SELECT POSITION(lower(x) IN (SELECT y FROM u)) FROM t"),
            "SELECT instr((SELECT y FROM u), lower(x)) FROM t"
        );
        assert_eq!(
            sqlite("SELECT position(position('a' IN x) IN position('b' IN y)::text) FROM t"),
            "SELECT instr(instr(y, 'b')::text, instr(x, 'a')) FROM t"
        );
        let untouched = "SELECT position FROM t";
        assert_eq!(sqlite(untouched), untouched);
    }
}
