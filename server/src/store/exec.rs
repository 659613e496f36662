//! Running one prepared statement: binding `$n` / `?` parameters and
//! collecting result columns and rows.

use resqlite_wire::{Column, PgType, SqlError, Value};
use rusqlite::Statement;

use super::errors::sql_error;
use super::values::{from_sqlite, pg_type_for_decltype, pg_type_for_values, to_sqlite};

/// Rows a statement returned, with their columns typed.
#[derive(Debug, Default)]
pub struct RowSet {
    /// Result columns.
    pub columns: Vec<Column>,
    /// Result rows.
    pub rows: Vec<Vec<Value>>,
}

/// The most parameters a statement may have: the wire protocol counts them
/// in 16 bits, as PostgreSQL does. A larger `$n` is refused before anything
/// is sized by it.
pub const MAX_PARAMETERS: usize = 65_535;

/// For each SQLite parameter slot (1-based, in slot order), the 0-based
/// index of the client parameter it takes. SQLite numbers `$n` parameters
/// in order of first appearance (`SELECT $2, $1` puts `$2` in slot 1), so
/// they are mapped by name; `?` and `?NNN` are positional.
pub fn parameter_slots(stmt: &Statement<'_>) -> Result<Vec<usize>, SqlError> {
    let count = stmt.parameter_count();
    let mut slots = Vec::with_capacity(count);
    for slot in 1..=count {
        let index = match stmt.parameter_name(slot) {
            None => slot - 1,
            Some(name) => {
                let digits = name.strip_prefix('$').or_else(|| name.strip_prefix('?'));
                match digits.and_then(|d| d.parse::<usize>().ok()) {
                    Some(n) if n > MAX_PARAMETERS => {
                        return Err(SqlError::new(
                            crate::sql::sqlstate::UNDEFINED_PARAMETER,
                            format!(
                                "parameter {name} is out of range: a statement has at most \
                                 {MAX_PARAMETERS} parameters"
                            ),
                        ))
                    }
                    Some(n) if n >= 1 => n - 1,
                    _ => {
                        return Err(SqlError::new(
                            crate::sql::sqlstate::SYNTAX_ERROR,
                            format!("parameter {name} is not supported: use $1, $2 … or ?"),
                        ))
                    }
                }
            }
        };
        slots.push(index);
    }
    Ok(slots)
}

/// How many client parameters the statement needs.
pub fn parameter_count(stmt: &Statement<'_>) -> Result<usize, SqlError> {
    Ok(parameter_slots(stmt)?
        .into_iter()
        .map(|i| i + 1)
        .max()
        .unwrap_or(0))
}

/// Binds `params` to `stmt`; the count must match exactly.
pub fn bind(stmt: &mut Statement<'_>, params: &[Value]) -> Result<(), SqlError> {
    let slots = parameter_slots(stmt)?;
    let needed = slots.iter().map(|i| i + 1).max().unwrap_or(0);
    if needed != params.len() {
        return Err(SqlError::new(
            "08P01",
            format!(
                "bind message supplies {} parameters, but the statement requires {needed}",
                params.len()
            ),
        ));
    }
    for (slot, index) in slots.into_iter().enumerate() {
        stmt.raw_bind_parameter(slot + 1, to_sqlite(&params[index]))
            .map_err(|e| sql_error(&e))?;
    }
    Ok(())
}

/// The declared type of each result column (None where undeclared).
pub fn declared_types(stmt: &Statement<'_>) -> Vec<(String, Option<PgType>)> {
    stmt.columns()
        .map(|c| (c.name().to_string(), pg_type_for_decltype(c.decl_type())))
        .collect()
}

/// Result column names and types for `stmt`, prepared from `sql` on
/// `conn`. The type is a plain table column's declared type, else the type
/// the statement's shape gives it (`count(*)` is int8, `a = b` bool; see
/// `sql::result_types`), else `None`. The name is the one PostgreSQL gives
/// (`count`, `?column?`; see `sql::result_names`). The statement is parsed
/// only when SQLite leaves a type unknown or a name that may differ.
pub fn result_types(
    conn: &rusqlite::Connection,
    sql: &str,
    stmt: &Statement<'_>,
) -> Vec<(String, Option<PgType>)> {
    let mut columns = declared_types(stmt);
    let unsure = |(name, t): &(String, Option<PgType>)| {
        t.is_none() || crate::sql::result_names::may_differ(name)
    };
    if columns.iter().any(unsure) {
        let lookup = |tables: &[String], column: &str| declared_column_type(conn, tables, column);
        let inferred = crate::sql::result_types::infer_result_columns(sql, columns.len(), &lookup);
        for ((name, t), guess) in columns.iter_mut().zip(inferred) {
            if t.is_none() {
                *t = guess.pg_type;
            }
            if let Some(pg_name) = guess.name {
                *name = pg_name;
            }
        }
    }
    columns
}

/// Runs a bound statement to completion and collects its rows. Columns
/// with no declared type take the type of the values they hold.
pub fn run(stmt: &mut Statement<'_>) -> Result<RowSet, SqlError> {
    let declared = declared_types(stmt);
    run_typed(stmt, declared)
}

/// [`run`] with the column types already known (`None`: from the values).
pub fn run_typed(
    stmt: &mut Statement<'_>,
    declared: Vec<(String, Option<PgType>)>,
) -> Result<RowSet, SqlError> {
    let width = declared.len();
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(|e| sql_error(&e))? {
        rows.push(row_values(row, width)?);
    }
    let columns = typed_columns(declared, &rows);
    Ok(RowSet { columns, rows })
}

/// The first `width` values of a result row.
pub fn row_values(row: &rusqlite::Row<'_>, width: usize) -> Result<Vec<Value>, SqlError> {
    let mut values = Vec::with_capacity(width);
    for i in 0..width {
        values.push(from_sqlite(row.get_ref(i).map_err(|e| sql_error(&e))?));
    }
    Ok(values)
}

/// The result columns: each with its known type, or else the type of the
/// values `rows` hold in it.
pub fn typed_columns(declared: Vec<(String, Option<PgType>)>, rows: &[Vec<Value>]) -> Vec<Column> {
    declared
        .into_iter()
        .enumerate()
        .map(|(i, (name, pg_type))| Column {
            name,
            pg_type: pg_type.unwrap_or_else(|| pg_type_for_values(rows.iter().map(|r| &r[i]))),
        })
        .collect()
}

/// The declared type of `column` in the first of `tables` that has it;
/// `#n` names the n-th column (0-based). For parameter inference.
pub fn declared_column_type(
    conn: &rusqlite::Connection,
    tables: &[String],
    column: &str,
) -> Option<PgType> {
    let by_position: Option<i64> = column.strip_prefix('#').and_then(|n| n.parse().ok());
    for table in tables {
        let Ok(mut stmt) = conn.prepare_cached("SELECT cid, name, type FROM pragma_table_info(?1)")
        else {
            continue;
        };
        let Ok(rows) = stmt.query_map([table], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        }) else {
            continue;
        };
        for (cid, name, decl) in rows.flatten() {
            let hit = match by_position {
                Some(p) => cid == p,
                None => name.eq_ignore_ascii_case(column),
            };
            if hit {
                return pg_type_for_decltype(Some(&decl));
            }
        }
    }
    None
}
