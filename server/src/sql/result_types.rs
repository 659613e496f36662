//! Infers the PostgreSQL types of result columns that SQLite cannot name.
//!
//! SQLite knows a declared type only for a result column that is a plain
//! table column. For `count(*)`, `sum(x)`, `1 + 2` or `a = b` it has none, yet
//! a driver using the extended protocol decides how to decode a column from
//! the type announced at Describe, before any row exists. PostgreSQL
//! announces int8 for `count(*)`, float8 for `avg(x)`, bool for `a = b`; so
//! do we, from the statement's shape. Where the shape says nothing certain,
//! the column stays untyped and the caller falls back (text at Describe, the
//! values' own type in a simple query).
//!
//! Every type inferred here is one SQLite's result converts to without loss
//! (see `wire/src/types/results.rs`): an aggregate over an integer column
//! yields integers, a comparison yields 0 or 1, and so on.

use resqlite_wire::PgType;
use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Select, SelectItem, SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::store::values::pg_type_for_decltype;

/// Looks a column's declared type up: `(table, column)`, where `table` is
/// the real table name, or `None` to search every table of the FROM clause.
pub trait ColumnTypes {
    fn column_type(&self, tables: &[String], column: &str) -> Option<PgType>;
}

impl<F: Fn(&[String], &str) -> Option<PgType>> ColumnTypes for F {
    fn column_type(&self, tables: &[String], column: &str) -> Option<PgType> {
        self(tables, column)
    }
}

/// One entry per result column (`width` of them): the inferred type, or
/// `None` where the statement's shape does not settle it. A statement that
/// does not parse, or whose columns cannot be matched to its projection,
/// yields all `None`.
pub fn infer_result_types(
    sql: &str,
    width: usize,
    columns: &impl ColumnTypes,
) -> Vec<Option<PgType>> {
    infer_result_columns(sql, width, columns)
        .into_iter()
        .map(|c| c.pg_type)
        .collect()
}

/// What the statement's shape says about one result column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InferredColumn {
    /// The name PostgreSQL gives it (`count`, `?column?`, the alias folded
    /// to lower case unless quoted), where the projection says.
    pub name: Option<String>,
    /// Its type, as [`infer_result_types`].
    pub pg_type: Option<PgType>,
}

/// Names and types of the `width` result columns, from one parse of `sql`.
pub fn infer_result_columns(
    sql: &str,
    width: usize,
    columns: &impl ColumnTypes,
) -> Vec<InferredColumn> {
    let out = vec![InferredColumn::default(); width];
    let Ok(mut statements) = Parser::parse_sql(&SQLiteDialect {}, sql) else {
        return out;
    };
    if statements.len() != 1 {
        return out;
    }
    let Statement::Query(query) = statements.remove(0) else {
        return out;
    };
    let arms = select_arms(&query.body);
    let Some(first_arm) = arms.first() else {
        return out;
    };
    // A UNION's column has a type only where every arm agrees on it.
    let mut per_arm = arms.iter().map(|select| {
        let scope = Scope::of(select, columns);
        align(&select.projection, width, |item| item_type(item, &scope))
    });
    let first = per_arm.next().unwrap_or_default();
    let types = per_arm.fold(first, |acc, arm| {
        acc.into_iter()
            .zip(arm)
            .map(|(a, b)| if a == b { a } else { None })
            .collect()
    });
    // Its name comes from the first arm, as in PostgreSQL.
    let names = align(&first_arm.projection, width, super::result_names::item_name);
    names
        .into_iter()
        .zip(types)
        .map(|(name, pg_type)| InferredColumn { name, pg_type })
        .collect()
}

/// `of(item)` for each of the `width` result columns that `items` make.
/// Items before the first wildcard line up from the left, items after the
/// last one from the right; a wildcard's own width is unknown here, so its
/// columns (and all of them, when the widths cannot match) are `None`.
fn align<T: Clone>(
    items: &[SelectItem],
    width: usize,
    of: impl Fn(&SelectItem) -> Option<T>,
) -> Vec<Option<T>> {
    let mut out = vec![None; width];
    let is_wildcard = |i: &SelectItem| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    };
    let first_wild = items.iter().position(is_wildcard).unwrap_or(items.len());
    let last_wild = items.iter().rposition(is_wildcard);
    if last_wild.is_none() && items.len() != width {
        return out;
    }
    for (i, item) in items[..first_wild].iter().enumerate() {
        if let Some(slot) = out.get_mut(i) {
            *slot = of(item);
        }
    }
    if let Some(last) = last_wild {
        let tail = &items[last + 1..];
        if tail.len() + first_wild <= width {
            for (k, item) in tail.iter().enumerate() {
                out[width - tail.len() + k] = of(item);
            }
        }
    }
    out
}

/// Every SELECT of a query body (one, or each arm of a UNION); empty when
/// an arm is not a plain SELECT (VALUES, for instance).
fn select_arms(body: &SetExpr) -> Vec<&Select> {
    match body {
        SetExpr::Select(select) => vec![select],
        SetExpr::Query(q) => select_arms(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            let (l, r) = (select_arms(left), select_arms(right));
            if l.is_empty() || r.is_empty() {
                Vec::new()
            } else {
                l.into_iter().chain(r).collect()
            }
        }
        _ => Vec::new(),
    }
}

/// The tables a SELECT reads, by the name or alias it uses for them.
struct Scope<'a, C> {
    /// (name or alias as written, real table name).
    tables: Vec<(String, String)>,
    columns: &'a C,
}

impl<'a, C: ColumnTypes> Scope<'a, C> {
    fn of(select: &Select, columns: &'a C) -> Self {
        let mut tables = Vec::new();
        let factors = select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)));
        for factor in factors {
            if let TableFactor::Table { name, alias, .. } = factor {
                let Some(real) = last_part(name) else {
                    continue;
                };
                let written = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| real.clone());
                tables.push((written, real));
            }
        }
        Scope { tables, columns }
    }

    fn all_tables(&self) -> Vec<String> {
        self.tables.iter().map(|(_, real)| real.clone()).collect()
    }

    fn column(&self, qualifier: Option<&str>, column: &str) -> Option<PgType> {
        let tables = match qualifier {
            None => self.all_tables(),
            Some(q) => self
                .tables
                .iter()
                .filter(|(written, _)| written.eq_ignore_ascii_case(q))
                .map(|(_, real)| real.clone())
                .collect(),
        };
        if tables.is_empty() {
            return None;
        }
        self.columns.column_type(&tables, column)
    }
}

fn last_part(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(ident.value.clone()),
        _ => None,
    }
}

fn item_type<C: ColumnTypes>(item: &SelectItem, scope: &Scope<'_, C>) -> Option<PgType> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            expr_type(e, scope)
        }
        _ => None,
    }
}

fn expr_type<C: ColumnTypes>(expr: &Expr, scope: &Scope<'_, C>) -> Option<PgType> {
    use BinaryOperator as B;
    match expr {
        Expr::Identifier(ident) => scope.column(None, &ident.value),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, column] => scope.column(Some(&table.value), &column.value),
            [.., table, column] => scope.column(Some(&table.value), &column.value),
            _ => None,
        },
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(number_type(n)),
            Value::SingleQuotedString(_) | Value::DoubleQuotedString(_) => Some(PgType::Text),
            Value::HexStringLiteral(_) => Some(PgType::Bytea),
            Value::Boolean(_) => Some(PgType::Bool),
            _ => None,
        },
        Expr::Nested(inner) => expr_type(inner, scope),
        Expr::Cast {
            kind: CastKind::Cast,
            data_type,
            ..
        } => pg_type_for_decltype(Some(&data_type.to_string())),
        Expr::BinaryOp { left, op, right } => match op {
            B::Eq
            | B::NotEq
            | B::Lt
            | B::LtEq
            | B::Gt
            | B::GtEq
            | B::And
            | B::Or
            | B::Xor
            | B::Regexp
            | B::Match => Some(PgType::Bool),
            B::StringConcat => Some(PgType::Text),
            B::BitwiseAnd | B::BitwiseOr | B::PGBitwiseShiftLeft | B::PGBitwiseShiftRight => {
                Some(PgType::Int8)
            }
            B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                arithmetic(expr_type(left, scope)?, expr_type(right, scope)?)
            }
            _ => None,
        },
        Expr::UnaryOp { op, expr } => match op {
            UnaryOperator::Not => Some(PgType::Bool),
            UnaryOperator::BitwiseNot => {
                expr_type(expr, scope).filter(|t| matches!(t, PgType::Int8))
            }
            UnaryOperator::Minus | UnaryOperator::Plus => {
                expr_type(expr, scope).filter(|t| matches!(t, PgType::Int8 | PgType::Float8))
            }
            _ => None,
        },
        Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::In { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::RLike { .. }
        | Expr::Exists { .. } => Some(PgType::Bool),
        Expr::Case {
            conditions,
            else_result,
            ..
        } => {
            // Every branch must agree, or SQLite may hand back mixed values.
            let mut branches = conditions
                .iter()
                .map(|c| &c.result)
                .chain(else_result.as_deref());
            let first = expr_type(branches.next()?, scope)?;
            branches
                .all(|b| is_null(b) || expr_type(b, scope) == Some(first))
                .then_some(first)
        }
        Expr::Function(f) => function_type(f, scope),
        // `ceil(3)` stays an integer, `ceil(1.5)` a real (`store::pg_functions`).
        Expr::Ceil { expr, .. } | Expr::Floor { expr, .. } => {
            expr_type(expr, scope).filter(|t| matches!(t, PgType::Int8 | PgType::Float8))
        }
        _ => None,
    }
}

fn is_null(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if v.value == Value::Null)
}

fn number_type(n: &str) -> PgType {
    if n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<i64>().is_ok() {
        PgType::Int8
    } else {
        PgType::Float8
    }
}

/// SQLite's arithmetic: integers stay integers (`/` truncates, overflow of
/// `+ - *` turns into a real, which the wire then refuses to call int8 only
/// if it is not whole), anything with a real is real. Text operands are
/// converted at run time, so their result is not known here.
fn arithmetic(left: PgType, right: PgType) -> Option<PgType> {
    match (left, right) {
        (PgType::Int8, PgType::Int8) => Some(PgType::Int8),
        (PgType::Int8 | PgType::Float8, PgType::Int8 | PgType::Float8) => Some(PgType::Float8),
        _ => None,
    }
}

fn function_type<C: ColumnTypes>(
    f: &sqlparser::ast::Function,
    scope: &Scope<'_, C>,
) -> Option<PgType> {
    let name = last_part(&f.name)?.to_ascii_lowercase();
    let args: Vec<&Expr> = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let arg = |i: usize| args.get(i).and_then(|e| expr_type(e, scope));
    match name.as_str() {
        "count" | "length" | "octet_length" | "instr" | "unicode" | "changes" | "total_changes"
        | "last_insert_rowid" | "sign" | "row_number" | "rank" | "dense_rank" | "ntile"
        | "strpos" | "char_length" | "character_length" | "ascii" => Some(PgType::Int8),
        "avg" | "total" | "round" | "percent_rank" | "cume_dist" | "sqrt" | "power" | "pow" => {
            Some(PgType::Float8)
        }
        "lower" | "upper" | "trim" | "ltrim" | "rtrim" | "substr" | "substring" | "replace"
        | "typeof" | "hex" | "quote" | "printf" | "format" | "group_concat" | "string_agg"
        | "char" | "concat" | "concat_ws" | "sqlite_version" | "version" | "left" | "right"
        | "repeat" | "reverse" | "lpad" | "rpad" | "md5" | "chr" | "split_part" | "initcap"
        | "to_hex" => Some(PgType::Text),
        "mod" => match (arg(0), arg(1)) {
            (Some(PgType::Int8), Some(PgType::Int8)) => Some(PgType::Int8),
            _ => None,
        },
        "randomblob" | "zeroblob" | "unhex" => Some(PgType::Bytea),
        // Same type as the argument: an aggregate or function over an
        // integer column yields integers, over a real column reals.
        "sum" | "abs" => arg(0).filter(|t| matches!(t, PgType::Int8 | PgType::Float8)),
        "min" | "max" if args.len() == 1 => arg(0),
        "coalesce" | "ifnull" | "nullif" | "greatest" | "least" => {
            let mut types = args
                .iter()
                .filter(|e| !is_null(e))
                .map(|e| expr_type(e, scope));
            let first = types.next()??;
            types.all(|t| t == Some(first)).then_some(first)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables `t(i INTEGER, r REAL, s TEXT, b BLOB)` and `u(i INTEGER, f BOOLEAN)`.
    fn lookup(tables: &[String], column: &str) -> Option<PgType> {
        tables.iter().find_map(|t| match (t.as_str(), column) {
            ("t" | "u", "i") => Some(PgType::Int8),
            ("t", "r") => Some(PgType::Float8),
            ("t", "s") => Some(PgType::Text),
            ("t", "b") => Some(PgType::Bytea),
            ("u", "f") => Some(PgType::Bool),
            _ => None,
        })
    }

    fn infer(sql: &str, width: usize) -> Vec<Option<PgType>> {
        infer_result_types(sql, width, &lookup)
    }

    use PgType::*;

    #[test]
    fn aggregates_take_postgres_types() {
        assert_eq!(
            infer(
                "SELECT count(*), sum(i), sum(r), avg(i), total(i), min(s), max(r) FROM t",
                7
            ),
            vec![
                Some(Int8),
                Some(Int8),
                Some(Float8),
                Some(Float8),
                Some(Float8),
                Some(Text),
                Some(Float8)
            ]
        );
        assert_eq!(infer("SELECT sum(s) FROM t", 1), vec![None]);
    }

    #[test]
    fn literals_comparisons_and_arithmetic() {
        assert_eq!(
            infer("SELECT 1, 2.5, 'x', $1 = 5, i + 1, i * r, i / 2, s || 'x', NOT i, i IS NULL FROM t", 10),
            vec![
                Some(Int8),
                Some(Float8),
                Some(Text),
                Some(Bool),
                Some(Int8),
                Some(Float8),
                Some(Int8),
                Some(Text),
                Some(Bool),
                Some(Bool)
            ]
        );
        assert_eq!(infer("SELECT 99999999999999999999", 1), vec![Some(Float8)]);
        assert_eq!(infer("SELECT $1 + 1", 1), vec![None]);
    }

    #[test]
    fn qualified_columns_follow_aliases() {
        assert_eq!(
            infer(
                "SELECT x.i + 1, y.f, max(y.i) FROM t AS x JOIN u y ON x.i = y.i",
                3
            ),
            vec![Some(Int8), Some(Bool), Some(Int8)]
        );
        assert_eq!(infer("SELECT z.i + 1 FROM t AS x", 1), vec![None]);
    }

    #[test]
    fn casts_case_and_coalesce() {
        assert_eq!(
            infer(
                "SELECT CAST(s AS INTEGER), CASE WHEN i > 0 THEN 1 ELSE 0 END, \
                 CASE WHEN i > 0 THEN 1 ELSE 'no' END, coalesce(r, 0.0), ifnull(s, NULL) FROM t",
                5
            ),
            vec![Some(Int8), Some(Int8), None, Some(Float8), Some(Text)]
        );
    }

    #[test]
    fn wildcards_align_the_items_around_them() {
        // t.* is 4 columns wide; the items around it still line up.
        assert_eq!(
            infer("SELECT count(*) OVER (), t.*, i = 1 FROM t", 6),
            vec![Some(Int8), None, None, None, None, Some(Bool)]
        );
        // Without a wildcard a width mismatch means the guess is wrong.
        assert_eq!(infer("SELECT 1, 2", 3), vec![None, None, None]);
    }

    #[test]
    fn unions_take_the_first_arm_and_non_queries_nothing() {
        assert_eq!(
            infer("SELECT count(*) FROM t UNION SELECT 1", 1),
            vec![Some(Int8)]
        );
        assert_eq!(
            infer("SELECT count(*) FROM t UNION SELECT 'x'", 1),
            vec![None]
        );
        assert_eq!(
            infer("INSERT INTO t VALUES (1) RETURNING i + 1", 1),
            vec![None]
        );
        assert_eq!(infer("not sql at all", 1), vec![None]);
    }
}
