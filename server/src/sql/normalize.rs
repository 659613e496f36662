//! The shape of a statement: its text with the literals that cannot change
//! how it is classified replaced by placeholders, so that
//! `SELECT v FROM t WHERE k = 1` and `… WHERE k = 2` share one entry of the
//! classification cache. Clients that inline their values (pgbench
//! `-M simple`, ORMs, psql) otherwise send new text every time.
//!
//! Classification depends on a literal's value in only these places, which
//! is why every other literal may be replaced:
//! - a string `'now'` (any case, padded) as a date/time function argument
//!   makes a write non-deterministic: strings that contain `now` (or
//!   `local`, `utc`, other clock words) stay as they are;
//! - PRAGMA arguments, `VACUUM INTO` and the other statements
//!   [`classify_special`] reads as plain text: those keep their whole text;
//! - a string SQLite reads as a name (`'t'.col`, `main.'random'()`,
//!   `'random'(1)`): the function's name decides RANDOM() and friends, so a
//!   literal next to `.` or `(` stays;
//! - sqlparser reads some integers as u32/u64/i64 (type sizes, LIMIT-like
//!   clauses): integers are grouped by how many digits they have (up to 9,
//!   up to 18, longer ones stay), and integers, decimals, exponents and
//!   strings get different placeholders.
//!
//! The lexer follows sqlparser's SQLite tokenizer (0.64): `'…'` strings
//! with `''` and no backslash escapes, `"…"`, `` `…` `` and `[…]` names with
//! a doubled closing quote, `--` and non-nested `/* */` comments, words of
//! `[A-Za-z0-9_$]` and non-ASCII. A literal is replaced only when it is
//! provably one sqlparser literal token: its neighbours must be plain
//! operators, punctuation, words or whitespace. Anything unusual (an
//! unterminated quote or comment, a backslash in `X'…'`, a placeholder byte
//! in the text) leaves the whole statement unnormalised: a cache miss,
//! never a wrong class.

use std::borrow::Cow;

use super::pragma::classify_special;

/// Integer of 1 to 9 digits: fits u32, u64 and i64.
const INT: char = '\u{1}';
/// Integer of 10 to 18 digits: fits u64 and i64, not always u32.
const LONG_INT: char = '\u{2}';
/// `123.45`: never an integer to sqlparser.
const DECIMAL: char = '\u{3}';
/// `1e5`, `1.5E-3`.
const EXPONENT: char = '\u{4}';
/// A plain `'…'` string.
const STRING: char = '\u{5}';

/// Texts with one of these bytes are never normalised, so a placeholder in
/// a shape always stands for a replaced literal.
fn is_placeholder_byte(b: u8) -> bool {
    b <= 5
}

/// Strings whose content holds one of these keep their text: `'now'` is
/// what classification looks for; the others are the clock-dependent
/// date/time modifiers, kept in case a rule for them is added.
const CLOCK_WORDS: &[&[u8]] = &[b"now", b"local", b"utc"];

/// What the tokens around a literal may be for it to be replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sig {
    Start,
    /// Unquoted identifier or keyword.
    Word,
    /// A one-byte operator or punctuation.
    Punct(u8),
    /// Anything else: quoted names, literals, prefixed strings.
    Other,
}

/// Operators and punctuation a replaceable literal may follow…
const PUNCT_BEFORE: &[u8] = b"(,=<>!+-*/%|&";
/// …and precede. Neither holds `.`, `(` after, `:` (casts, named
/// parameters), `?`, `@`, `$` or brackets.
const PUNCT_AFTER: &[u8] = b"),;=<>!+-*/%|&";

/// Bytes that may touch a number on either side without being part of it
/// in sqlparser's tokenizer (`1_000`, `1L`, `0x1F`, `1.`, `?1`, `$1`, `t.1`
/// are not replaced).
const NUMBER_BEFORE: &[u8] = b" \t\n\r(,=<>+-*/%|";
const NUMBER_AFTER: &[u8] = b" \t\n\r),;=<>+-*/%|";

fn safe_before(sig: Sig) -> bool {
    match sig {
        Sig::Start | Sig::Word => true,
        Sig::Punct(p) => PUNCT_BEFORE.contains(&p),
        Sig::Other => false,
    }
}

fn safe_after(sig: Sig) -> bool {
    match sig {
        Sig::Word => true,
        Sig::Punct(p) => PUNCT_AFTER.contains(&p),
        Sig::Start | Sig::Other => false,
    }
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    is_word_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The shape of `sql`, or `None` when it must be cached by its exact text.
/// Two statements with the same shape are classified the same.
pub fn shape(sql: &str) -> Option<Cow<'_, str>> {
    let b = sql.as_bytes();
    if b.iter().copied().any(is_placeholder_byte) || classify_special(sql).is_some() {
        return None;
    }
    let mut out = String::new();
    // Bytes of `sql` already copied to `out`.
    let mut copied = 0;
    let mut prev = Sig::Start;
    // A literal whose fate waits for the next significant token.
    let mut pending: Option<(usize, usize, char)> = None;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let mut literal = None;
        let sig = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let close = b[i + 2..].windows(2).position(|w| w == b"*/")?;
                i += 2 + close + 2;
                continue;
            }
            b'\'' => {
                i = skip_quoted(b, i, b'\'')?;
                let content = &b[start + 1..i - 1];
                if start > 0 && is_word_byte(b[start - 1]) {
                    // X'…' reads backslash escapes: its end could differ.
                    if content.contains(&b'\\') {
                        return None;
                    }
                } else if !CLOCK_WORDS.iter().any(|w| contains_ignore_case(content, w)) {
                    literal = Some(STRING);
                }
                Sig::Other
            }
            b'"' | b'`' => {
                i = skip_quoted(b, i, c)?;
                Sig::Other
            }
            b'[' => {
                i = skip_quoted(b, i, b']')?;
                Sig::Other
            }
            b'0'..=b'9' => {
                let (end, kind) = number(b, i);
                i = end;
                let touches_safe = (start == 0 || NUMBER_BEFORE.contains(&b[start - 1]))
                    && (end == b.len() || NUMBER_AFTER.contains(&b[end]));
                if touches_safe {
                    literal = kind;
                }
                Sig::Other
            }
            c if is_word_start(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                Sig::Word
            }
            c => {
                i += 1;
                Sig::Punct(c)
            }
        };
        if let Some((s, e, placeholder)) = pending.take() {
            if safe_after(sig) {
                replace(sql, &mut out, &mut copied, s, e, placeholder);
            }
        }
        if let Some(placeholder) = literal {
            if safe_before(prev) {
                pending = Some((start, i, placeholder));
            }
        }
        prev = sig;
    }
    if let Some((s, e, placeholder)) = pending {
        // The end of the text is a safe neighbour.
        replace(sql, &mut out, &mut copied, s, e, placeholder);
    }
    if copied == 0 {
        return Some(Cow::Borrowed(sql));
    }
    out.push_str(&sql[copied..]);
    Some(Cow::Owned(out))
}

fn replace(sql: &str, out: &mut String, copied: &mut usize, s: usize, e: usize, with: char) {
    if out.capacity() == 0 {
        out.reserve(sql.len());
    }
    out.push_str(&sql[*copied..s]);
    out.push(with);
    *copied = e;
}

/// The index just past the quoted token opening at `i`; a doubled `close`
/// inside stands for itself. `None` if it never closes.
fn skip_quoted(b: &[u8], i: usize, close: u8) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == close {
            if b.get(j + 1) == Some(&close) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// The end of the number starting at `i` (as sqlparser reads
/// `12`, `1.5`, `1e5`, `1.5E-3`) and its placeholder, `None` for an
/// integer too long to group.
fn number(b: &[u8], i: usize) -> (usize, Option<char>) {
    let digits = |from: usize| {
        b[from..]
            .iter()
            .position(|x| !x.is_ascii_digit())
            .map_or(b.len(), |n| from + n)
    };
    let mut end = digits(i);
    let int_len = end - i;
    let mut kind = match int_len {
        1..=9 => Some(INT),
        10..=18 => Some(LONG_INT),
        _ => None,
    };
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits(end + 1);
        kind = Some(DECIMAL);
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
        if b.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
            end = digits(end + 1 + sign);
            kind = Some(EXPONENT);
        }
    }
    (end, kind)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(sql: &str) -> String {
        shape(sql)
            .unwrap_or_else(|| panic!("{sql}: not normalised"))
            .into_owned()
    }

    /// The shape with its placeholders made visible.
    fn shown(sql: &str) -> String {
        shaped(sql)
            .chars()
            .map(|c| match c {
                INT => 'I',
                LONG_INT => 'L',
                DECIMAL => 'D',
                EXPONENT => 'E',
                STRING => 'S',
                c => c,
            })
            .collect()
    }

    #[test]
    fn numbers_and_strings_become_placeholders_by_kind() {
        assert_eq!(
            shown("SELECT v FROM kv WHERE k = 48213;"),
            "SELECT v FROM kv WHERE k = I;"
        );
        assert_eq!(
            shown("INSERT INTO t VALUES (1,'a', 1234567890, 1.5, 2e10, 1.5E-3, 3e+2)"),
            "INSERT INTO t VALUES (I,S, L, D, E, E, E)"
        );
        assert_eq!(shown("SELECT 1-2, 3+-4, -5"), "SELECT I-I, I+-I, -I");
        assert_eq!(
            shown("SELECT * FROM t WHERE a<>'x'"),
            "SELECT * FROM t WHERE a<>S"
        );
        // Without a literal the shape is the text itself, not a copy.
        assert!(matches!(
            shape("SELECT a FROM t WHERE k = $1"),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn doubled_quotes_stay_inside_the_string() {
        assert_eq!(shown("SELECT 'it''s', 'a''' , ''''"), "SELECT S, S , S");
        assert_eq!(shown("SELECT '', 1"), "SELECT S, I");
        // A backslash is an ordinary character in a SQLite string.
        assert_eq!(shown(r"SELECT 'a\', 2"), "SELECT S, I");
    }

    #[test]
    fn comments_and_quoted_names_are_kept() {
        assert_eq!(
            shown("SELECT 1 -- 'x' 2\n, 3 /* 4 'y */ + 5"),
            "SELECT I -- 'x' 2\n, I /* 4 'y */ + I"
        );
        assert_eq!(
            shown(r#"SELECT "a'1", [b 'x'], `c``'2`, "d""'3" FROM t WHERE k = 9"#),
            r#"SELECT "a'1", [b 'x'], `c``'2`, "d""'3" FROM t WHERE k = I"#
        );
        assert_eq!(shown("SELECT [a]]'] + 1"), "SELECT [a]]'] + I");
    }

    #[test]
    fn numbers_that_are_not_plain_tokens_are_kept() {
        for sql in [
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1L",
            "SELECT 1.",
            "SELECT .5",
            "SELECT t.1 FROM t",
            "SELECT ?1",
            "SELECT $1",
            "SELECT :1",
            "SELECT 1abc",
            "SELECT 1e",
            "SELECT 12345678901234567890",
            "SELECT a1, t2.b3 FROM t4",
        ] {
            assert_eq!(shaped(sql), sql, "{sql}");
        }
    }

    #[test]
    fn literals_that_can_matter_are_kept() {
        for (sql, kept) in [
            ("INSERT INTO t VALUES (date('now'))", "'now'"),
            ("INSERT INTO t VALUES (date(' NoW\t'))", "' NoW\t'"),
            (
                "INSERT INTO t VALUES (datetime(1, 'localtime'))",
                "'localtime'",
            ),
            ("INSERT INTO t VALUES (datetime(1, 'UTC'))", "'UTC'"),
            ("INSERT INTO t VALUES (X'0102', 1)", "X'0102'"),
            ("INSERT INTO t VALUES (N'a', 1)", "N'a'"),
            ("INSERT INTO t VALUES (1'b')", "1'b'"),
            ("INSERT INTO t VALUES (main.'random'())", "'random'"),
            ("INSERT INTO t VALUES ('random'(2))", "'random'"),
            ("INSERT INTO t VALUES ('random' /* */ (2))", "'random'"),
            ("SELECT 't'.a FROM t", "'t'"),
            ("SELECT t . 'a' FROM t", "'a'"),
            ("SELECT '1'::int", "'1'"),
            ("SELECT 2::int", "2"),
            ("SELECT a FROM t WHERE b = ? 'x'", "'x'"),
            ("SELECT 1 'x'", "'x'"),
        ] {
            let shaped = shaped(sql);
            assert!(shaped.contains(kept), "{sql}: {shaped:?}");
        }
    }

    #[test]
    fn unusual_text_is_not_normalised() {
        for sql in [
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT [unterminated",
            "SELECT 1 /* unterminated",
            r"SELECT X'a\'' , 1",
            "SELECT '\u{1}', 1",
            "PRAGMA table_info('t')",
            "PRAGMA user_version = 5",
            "VACUUM INTO 'x'",
        ] {
            assert!(shape(sql).is_none(), "{sql}");
        }
    }
}
