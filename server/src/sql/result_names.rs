//! The names PostgreSQL gives result columns, where SQLite's differ.
//!
//! SQLite names an unaliased expression by its text (`count(*)`,
//! `CAST(x AS INTEGER)`, `1 + 2`) and keeps an alias's case; PostgreSQL
//! (`FigureColname` in its parser) names a column reference by the column,
//! a function call by the function (`count`), a cast by its operand or
//! else its type (`int4`), `CASE` by its `ELSE` branch or `case`, and
//! anything else (literals, `true` included, operators, `NOT EXISTS`)
//! `?column?`; unquoted names and aliases are folded to lower
//! case. Drivers that read rows by name (`row["count"]`) see PostgreSQL's.

use sqlparser::ast::{DataType, Expr, Ident, ObjectNamePart, SelectItem, SetExpr};

/// The name of a column PostgreSQL cannot name otherwise.
pub const UNNAMED: &str = "?column?";

/// Whether SQLite's name for a result column may differ from
/// PostgreSQL's: anything but a plain lower-case identifier, and the
/// literals that look like one. When no column needs it, the statement is
/// not parsed at all.
pub fn may_differ(sqlite_name: &str) -> bool {
    let plain = sqlite_name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && sqlite_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    !plain || matches!(sqlite_name, "true" | "false" | "null")
}

/// PostgreSQL's name for one projection item (`None` for a wildcard).
pub fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(e) => Some(figure(e).0.unwrap_or_else(|| UNNAMED.to_string())),
        SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
        _ => None,
    }
}

/// How sure a name is, as PostgreSQL ranks them: a cast's operand names
/// the column only if it is a real name, not a type's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    None,
    Type,
    Name,
}

fn figure(expr: &Expr) -> (Option<String>, Strength) {
    let named = |name: &str| (Some(name.to_string()), Strength::Name);
    match expr {
        Expr::Identifier(ident) => (Some(fold(ident)), Strength::Name),
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(last) => (Some(fold(last)), Strength::Name),
            None => (None, Strength::None),
        },
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => (Some(fold(ident)), Strength::Name),
            _ => (None, Strength::None),
        },
        Expr::Nested(inner) => figure(inner),
        Expr::Cast {
            expr, data_type, ..
        } => {
            let inner = figure(expr);
            if inner.1 >= Strength::Name {
                inner
            } else {
                (Some(type_name(data_type)), Strength::Type)
            }
        }
        Expr::Case { else_result, .. } => {
            let inner = else_result
                .as_deref()
                .map_or((None, Strength::None), figure);
            if inner.1 >= Strength::Name {
                inner
            } else {
                (Some("case".to_string()), Strength::Type)
            }
        }
        Expr::Exists { negated: false, .. } => named("exists"),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(select) => match select.projection.first().and_then(item_name) {
                Some(name) => (Some(name), Strength::Name),
                None => (None, Strength::None),
            },
            _ => (None, Strength::None),
        },
        Expr::Extract { .. } => named("extract"),
        Expr::Position { .. } => named("position"),
        Expr::Substring { shorthand, .. } => named(if *shorthand { "substr" } else { "substring" }),
        Expr::Overlay { .. } => named("overlay"),
        Expr::Ceil { .. } => named("ceil"),
        Expr::Floor { .. } => named("floor"),
        Expr::Trim { .. } => named("btrim"),
        Expr::Array(_) => named("array"),
        Expr::Interval(_) => (Some("interval".to_string()), Strength::Type),
        _ => (None, Strength::None),
    }
}

/// An identifier as PostgreSQL stores it: folded to lower case unless it
/// was quoted.
fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// PostgreSQL's name for the type of a cast, from the SQLite spelling the
/// rewrite gave it (`sql::pg_syntax` keeps the integer and float widths
/// apart for this; dates and times are TEXT there and named `text`).
fn type_name(data_type: &DataType) -> String {
    let spelled = data_type.to_string().to_ascii_uppercase();
    let base = spelled.split('(').next().unwrap_or("").trim();
    match base {
        "INT" | "INTEGER" | "INT4" => "int4",
        "BIGINT" | "INT8" => "int8",
        "SMALLINT" | "INT2" => "int2",
        "REAL" | "FLOAT4" => "float4",
        "DOUBLE PRECISION" | "DOUBLE" | "FLOAT" | "FLOAT8" => "float8",
        "NUMERIC" | "DECIMAL" => "numeric",
        "VARCHAR" | "CHARACTER VARYING" => "varchar",
        "CHAR" | "CHARACTER" | "BPCHAR" => "bpchar",
        "BLOB" | "BYTEA" => "bytea",
        "BOOL" | "BOOLEAN" => "bool",
        other => return other.to_ascii_lowercase(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::Statement;
    use sqlparser::dialect::SQLiteDialect;
    use sqlparser::parser::Parser;

    use super::*;

    fn names(sql: &str) -> Vec<Option<String>> {
        let statements = Parser::parse_sql(&SQLiteDialect {}, sql).unwrap();
        let Statement::Query(q) = &statements[0] else {
            panic!("not a query")
        };
        let SetExpr::Select(select) = q.body.as_ref() else {
            panic!("not a select")
        };
        select.projection.iter().map(item_name).collect()
    }

    fn all(names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|n| Some(n.to_string())).collect()
    }

    #[test]
    fn functions_columns_and_aliases_as_postgres_names_them() {
        assert_eq!(
            names(
                "SELECT count(*), Sum(x), t.Body, ID, \"MixedCase\", x AS Total, x AS \"Total\", \
                 main.lower(y) FROM t"
            ),
            all(&[
                "count",
                "sum",
                "body",
                "id",
                "MixedCase",
                "total",
                "Total",
                "lower"
            ])
        );
    }

    #[test]
    fn expressions_and_literals_are_unnamed() {
        assert_eq!(
            names("SELECT 1, 'a' || 'b', x + 1, NULL, x IS NULL, -x, (x) FROM t"),
            all(&["?column?", "?column?", "?column?", "?column?", "?column?", "?column?", "x"])
        );
    }

    #[test]
    fn casts_case_and_the_rest() {
        assert_eq!(
            names(
                "SELECT CAST(x AS TEXT), CAST(1 AS INTEGER), CAST(1 AS BIGINT), \
                 CAST(1.5 AS DOUBLE PRECISION), CAST('a' AS VARCHAR(3)), true, \
                 CASE WHEN x THEN 1 END, CASE WHEN x THEN 1 ELSE y END, \
                 EXISTS (SELECT 1), (SELECT max(x) FROM t), coalesce(x, 0), \
                 NOT EXISTS (SELECT 1), substr(x, 1) FROM t"
            ),
            all(&[
                "x", "int4", "int8", "float8", "varchar", "?column?", "case", "y", "exists", "max",
                "coalesce", "?column?", "substr"
            ])
        );
    }

    #[test]
    fn only_names_that_are_not_plain_identifiers_may_differ() {
        for name in [
            "count(*)",
            "1",
            "Total",
            "CAST(x AS INTEGER)",
            "true",
            "null",
            "'x'",
        ] {
            assert!(may_differ(name), "{name}");
        }
        for name in ["id", "created_at", "x1", "_hidden"] {
            assert!(!may_differ(name), "{name}");
        }
    }
}
