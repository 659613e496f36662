//! Infers the types of `$n` parameters for Parse/Describe, since libpq,
//! pgbench and node-postgres send Parse with no types. SQLite itself has no
//! parameter types, so this reads the statement's shape: a parameter
//! compared with or assigned to a column takes the column's declared type,
//! one in `INSERT … (cols) VALUES (…)` takes its column's, LIMIT and OFFSET
//! take int8; anything else is text (which every client can send).

use resqlite_wire::PgType;
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Where a parameter appears.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Use {
    Column(String),
    Integer,
    /// `CAST($n AS type)`, also what `$n::type` is rewritten to.
    Declared(PgType),
}

/// Returns one type per parameter (`count` of them). `column_type(tables,
/// column)` looks a column's declared type up in the tables the statement
/// names.
pub fn infer_param_types(
    sql: &str,
    count: usize,
    column_type: impl Fn(&[String], &str) -> Option<PgType>,
) -> Vec<PgType> {
    let mut types = vec![PgType::Text; count];
    let Ok(tokens) = Tokenizer::new(&SQLiteDialect {}, sql).tokenize() else {
        return types;
    };
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let tables = named_tables(&tokens);
    let insert_columns = insert_columns(&tokens);
    let mut positional = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let Token::Placeholder(p) = tok else { continue };
        let index = match p.as_str() {
            "?" => {
                positional += 1;
                positional - 1
            }
            other => match other[1..].parse::<usize>() {
                Ok(n) if n >= 1 => n - 1,
                _ => continue,
            },
        };
        if index >= count {
            continue;
        }
        let found = use_of(&tokens, i).or_else(|| {
            let pos = insert_value_position(&tokens, i)?;
            Some(Use::Column(match &insert_columns {
                Some(cols) => cols.get(pos)?.clone(),
                None => format!("#{pos}"),
            }))
        });
        types[index] = match found {
            Some(Use::Integer) => PgType::Int8,
            Some(Use::Declared(t)) => t,
            Some(Use::Column(c)) => column_type(&tables, &c).unwrap_or(PgType::Text),
            None => continue,
        };
    }
    types
}

fn word(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) => Some(w.value.as_str()),
        _ => None,
    }
}

fn keyword(t: &Token) -> Option<Keyword> {
    match t {
        Token::Word(w) => Some(w.keyword),
        _ => None,
    }
}

fn is_comparison(t: &Token) -> bool {
    matches!(
        t,
        Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
    )
}

/// `col = $n`, `$n = col`, `LIMIT $n`, `OFFSET $n`, `CAST($n AS type)`.
fn use_of(tokens: &[Token], i: usize) -> Option<Use> {
    if i >= 2
        && tokens[i - 1] == Token::LParen
        && keyword(&tokens[i - 2]) == Some(Keyword::CAST)
        && tokens.get(i + 1).and_then(keyword) == Some(Keyword::AS)
    {
        let decl = tokens.get(i + 2).and_then(word)?;
        return crate::store::values::pg_type_for_decltype(Some(decl)).map(Use::Declared);
    }
    if i >= 1
        && matches!(
            keyword(&tokens[i - 1]),
            Some(Keyword::LIMIT | Keyword::OFFSET)
        )
    {
        return Some(Use::Integer);
    }
    if i >= 2 && is_comparison(&tokens[i - 1]) {
        if let Some(w) = word(&tokens[i - 2]) {
            return Some(Use::Column(w.to_string()));
        }
    }
    if i + 2 < tokens.len() && is_comparison(&tokens[i + 1]) {
        if let Some(w) = word(&tokens[i + 2]) {
            return Some(Use::Column(w.to_string()));
        }
    }
    between_bound(tokens, i).or_else(|| in_list_item(tokens, i))
}

/// The column before `at` (the token just left of an operator keyword),
/// skipping a `NOT` (`col NOT BETWEEN`, `col NOT IN`).
fn column_before(tokens: &[Token], at: usize) -> Option<Use> {
    let at = match tokens.get(at).and_then(keyword) {
        Some(Keyword::NOT) => at.checked_sub(1)?,
        _ => at,
    };
    word(tokens.get(at)?).map(|w| Use::Column(w.to_string()))
}

/// `col [NOT] BETWEEN $a AND $b`: both bounds take the column's type.
fn between_bound(tokens: &[Token], i: usize) -> Option<Use> {
    let before = i.checked_sub(1)?;
    match keyword(&tokens[before]) {
        Some(Keyword::BETWEEN) => column_before(tokens, before.checked_sub(1)?),
        Some(Keyword::AND)
            if before >= 3 && keyword(&tokens[before - 2]) == Some(Keyword::BETWEEN) =>
        {
            column_before(tokens, before - 3)
        }
        _ => None,
    }
}

/// `col [NOT] IN (…, $n, …)` with a list of parameters and literals: each
/// takes the column's type.
fn in_list_item(tokens: &[Token], i: usize) -> Option<Use> {
    let mut j = i;
    loop {
        j = j.checked_sub(1)?;
        match &tokens[j] {
            Token::LParen => break,
            Token::Comma
            | Token::Placeholder(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_) => {}
            _ => return None,
        }
    }
    let in_at = j.checked_sub(1)?;
    if keyword(&tokens[in_at]) != Some(Keyword::IN) {
        return None;
    }
    column_before(tokens, in_at.checked_sub(1)?)
}

/// Tables after FROM, JOIN, INTO, UPDATE and TABLE (the last part of a
/// qualified name).
fn named_tables(tokens: &[Token]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !matches!(
            keyword(t),
            Some(Keyword::FROM | Keyword::JOIN | Keyword::INTO | Keyword::UPDATE | Keyword::TABLE)
        ) {
            continue;
        }
        let mut j = i + 1;
        let mut name = None;
        while let Some(w) = tokens.get(j).and_then(word) {
            name = Some(w.to_string());
            if tokens.get(j + 1) == Some(&Token::Period) {
                j += 2;
            } else {
                break;
            }
        }
        out.extend(name);
    }
    out
}

/// The target columns of an INSERT's column list; `None` when it has none
/// (then a value's column is its position, passed to the lookup as the
/// pseudo-name `#0`, `#1` …).
fn insert_columns(tokens: &[Token]) -> Option<Vec<String>> {
    let into = tokens
        .iter()
        .position(|t| keyword(t) == Some(Keyword::INTO))?;
    // INTO name [.name] ( col, col, … )
    let mut j = into + 1;
    while tokens.get(j).and_then(word).is_some() && tokens.get(j + 1) == Some(&Token::Period) {
        j += 2;
    }
    j += 1;
    if tokens.get(j) != Some(&Token::LParen) {
        // No column list: the table's own order, resolved by the caller
        // through pseudo-columns "#0", "#1" …
        return None;
    }
    let mut cols = Vec::new();
    j += 1;
    while let Some(t) = tokens.get(j) {
        match t {
            Token::RParen => break,
            Token::Word(w) => cols.push(w.value.clone()),
            _ => {}
        }
        j += 1;
    }
    Some(cols)
}

/// For a parameter inside `VALUES ( … )`, its position in the tuple.
fn insert_value_position(tokens: &[Token], i: usize) -> Option<usize> {
    let values = tokens
        .iter()
        .position(|t| keyword(t) == Some(Keyword::VALUES))?;
    if i < values {
        return None;
    }
    let mut depth = 0;
    let mut position = 0;
    for t in &tokens[values + 1..i] {
        match t {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    position = 0;
                }
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 1 => position += 1,
            _ => {}
        }
    }
    (depth == 1).then_some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(_tables: &[String], col: &str) -> Option<PgType> {
        match col {
            "k" | "#0" => Some(PgType::Int8),
            "v" | "#1" => Some(PgType::Text),
            "f" | "#2" => Some(PgType::Float8),
            "b" => Some(PgType::Bytea),
            _ => None,
        }
    }

    #[test]
    fn comparisons_assignments_and_limits() {
        let t = infer_param_types(
            "SELECT v FROM t WHERE t.k = $1 AND $2 < f LIMIT $3 OFFSET $4",
            4,
            schema,
        );
        assert_eq!(
            t,
            vec![PgType::Int8, PgType::Float8, PgType::Int8, PgType::Int8]
        );
        let t = infer_param_types("UPDATE t SET v = $2, b = $3 WHERE k = $1", 3, schema);
        assert_eq!(t, vec![PgType::Int8, PgType::Text, PgType::Bytea]);
    }

    #[test]
    fn between_bounds_and_in_lists_take_the_column_type() {
        let t = infer_param_types(
            "SELECT v FROM t WHERE k BETWEEN $1 AND $2 AND f NOT BETWEEN $3 AND 9",
            3,
            schema,
        );
        assert_eq!(t, vec![PgType::Int8, PgType::Int8, PgType::Float8]);
        let t = infer_param_types(
            "SELECT v FROM t WHERE k IN ($1, 2, $2) OR f NOT IN ($3)",
            3,
            schema,
        );
        assert_eq!(t, vec![PgType::Int8, PgType::Int8, PgType::Float8]);
        // A function's arguments are not an IN list.
        let t = infer_param_types("SELECT v FROM t WHERE k IN (abs($1))", 1, schema);
        assert_eq!(t, vec![PgType::Text]);
    }

    #[test]
    fn insert_values_follow_the_column_list_or_the_table() {
        let t = infer_param_types("INSERT INTO t (f, k) VALUES ($1, $2), ($3, $4)", 4, schema);
        assert_eq!(
            t,
            vec![PgType::Float8, PgType::Int8, PgType::Float8, PgType::Int8]
        );
        let t = infer_param_types(
            "INSERT INTO t VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET v = $2",
            3,
            schema,
        );
        assert_eq!(t, vec![PgType::Int8, PgType::Text, PgType::Float8]);
        let t = infer_param_types("INSERT INTO t VALUES (?, ?)", 2, schema);
        assert_eq!(t, vec![PgType::Int8, PgType::Text]);
    }

    #[test]
    fn casts_declare_their_parameter() {
        let t = infer_param_types(
            "SELECT CAST($1 AS INTEGER), CAST($2 AS REAL), CAST($3 AS TEXT) + k",
            3,
            schema,
        );
        assert_eq!(t, vec![PgType::Int8, PgType::Float8, PgType::Text]);
    }

    #[test]
    fn unknown_uses_are_text() {
        let t = infer_param_types("SELECT $1 || 'x', upper($2)", 2, schema);
        assert_eq!(t, vec![PgType::Text, PgType::Text]);
        assert_eq!(
            infer_param_types("SELEC $1 FROM", 1, schema),
            vec![PgType::Text]
        );
    }
}
