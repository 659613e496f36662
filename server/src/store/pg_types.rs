//! `pg_type` and `to_regtype()` for the clients that look types up at
//! connect: psycopg's `TypeInfo.fetch` (which SQLAlchemy calls for
//! `hstore` on its first connect) asks
//! `SELECT … FROM pg_type t WHERE t.oid = to_regtype($1)`.
//!
//! PostgreSQL's built-in types are fixed (SQLite has no user-defined
//! types), so `pg_type` is a view over one static table, made as a TEMP
//! view on each read connection: reads see it (`pg_type` and, with the
//! qualifier the rewrite drops, `pg_catalog.pg_type`); writes do not, and
//! need not. The OIDs are PostgreSQL's own.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, Result};

/// One built-in type: (oid, name, length, category, element oid, array oid).
type TypeRow = (u32, &'static str, i16, char, u32, u32);

/// PostgreSQL 15's built-in types that ReSQLite clients meet, and their
/// arrays.
const TYPES: &[TypeRow] = &[
    (16, "bool", 1, 'B', 0, 1000),
    (17, "bytea", -1, 'U', 0, 1001),
    (18, "char", 1, 'Z', 0, 1002),
    (19, "name", 64, 'S', 18, 1003),
    (20, "int8", 8, 'N', 0, 1016),
    (21, "int2", 2, 'N', 0, 1005),
    (23, "int4", 4, 'N', 0, 1007),
    (25, "text", -1, 'S', 0, 1009),
    (26, "oid", 4, 'N', 0, 1028),
    (114, "json", -1, 'U', 0, 199),
    (700, "float4", 4, 'N', 0, 1021),
    (701, "float8", 8, 'N', 0, 1022),
    (705, "unknown", -2, 'X', 0, 0),
    (1042, "bpchar", -1, 'S', 0, 1014),
    (1043, "varchar", -1, 'S', 0, 1015),
    (1082, "date", 4, 'D', 0, 1182),
    (1083, "time", 8, 'D', 0, 1183),
    (1114, "timestamp", 8, 'D', 0, 1115),
    (1184, "timestamptz", 8, 'D', 0, 1185),
    (1186, "interval", 16, 'T', 0, 1187),
    (1700, "numeric", -1, 'N', 0, 1231),
    (2950, "uuid", 16, 'U', 0, 2951),
    (3802, "jsonb", -1, 'U', 0, 3807),
    (199, "_json", -1, 'A', 114, 0),
    (1000, "_bool", -1, 'A', 16, 0),
    (1001, "_bytea", -1, 'A', 17, 0),
    (1002, "_char", -1, 'A', 18, 0),
    (1003, "_name", -1, 'A', 19, 0),
    (1005, "_int2", -1, 'A', 21, 0),
    (1007, "_int4", -1, 'A', 23, 0),
    (1009, "_text", -1, 'A', 25, 0),
    (1014, "_bpchar", -1, 'A', 1042, 0),
    (1015, "_varchar", -1, 'A', 1043, 0),
    (1016, "_int8", -1, 'A', 20, 0),
    (1021, "_float4", -1, 'A', 700, 0),
    (1022, "_float8", -1, 'A', 701, 0),
    (1028, "_oid", -1, 'A', 26, 0),
    (1115, "_timestamp", -1, 'A', 1114, 0),
    (1182, "_date", -1, 'A', 1082, 0),
    (1183, "_time", -1, 'A', 1083, 0),
    (1185, "_timestamptz", -1, 'A', 1184, 0),
    (1187, "_interval", -1, 'A', 1186, 0),
    (1231, "_numeric", -1, 'A', 1700, 0),
    (2951, "_uuid", -1, 'A', 2950, 0),
    (3807, "_jsonb", -1, 'A', 3802, 0),
];

/// The SQL names PostgreSQL also accepts for a type (`to_regtype('int')`).
const ALIASES: &[(&str, &str)] = &[
    ("boolean", "bool"),
    ("smallint", "int2"),
    ("integer", "int4"),
    ("int", "int4"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("double precision", "float8"),
    ("float", "float8"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("decimal", "numeric"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
];

/// The OID of the type PostgreSQL would find for `name`, if built in.
pub fn oid_of(name: &str) -> Option<u32> {
    let name = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .to_ascii_lowercase();
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name.as_str(), |(_, real)| real);
    let (name, array) = match name.strip_suffix("[]") {
        Some(element) => (element, true),
        None => (name, false),
    };
    let row = TYPES.iter().find(|t| t.1 == name)?;
    Some(if array { row.5 } else { row.0 }).filter(|&oid| oid != 0)
}

/// Creates the `pg_type` view and `to_regtype()` on a read connection
/// (before it is made query-only).
pub fn register(conn: &Connection) -> Result<()> {
    let rows: Vec<String> = TYPES
        .iter()
        .map(|(oid, name, len, category, elem, array)| {
            let by_value = matches!(len, 1 | 2 | 4 | 8);
            format!(
                "({oid}, '{name}', 11, 10, {len}, {}, '{}', '{category}', 0, 1, ',', 0, \
                 {elem}, {array}, 0, 0, -1, 0)",
                i32::from(by_value),
                if *category == 'X' { 'p' } else { 'b' },
            )
        })
        .collect();
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW pg_type (oid, typname, typnamespace, typowner, typlen, typbyval, \
         typtype, typcategory, typispreferred, typisdefined, typdelim, typrelid, typelem, \
         typarray, typnotnull, typbasetype, typtypmod, typndims) AS VALUES {}",
        rows.join(", ")
    ))?;
    conn.create_scalar_function(
        "to_regtype",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let name: Option<String> = ctx.get(0)?;
            Ok(name.as_deref().and_then(oid_of).map(i64::from))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_arrays_find_their_oids() {
        assert_eq!(oid_of("text"), Some(25));
        assert_eq!(oid_of("Integer"), Some(23));
        assert_eq!(oid_of("pg_catalog.int8"), Some(20));
        assert_eq!(oid_of("double precision"), Some(701));
        assert_eq!(oid_of("int4[]"), Some(1007));
        assert_eq!(oid_of("hstore"), None);
        assert_eq!(oid_of("unknown[]"), None);
    }

    #[test]
    fn psycopg_finds_types_as_it_does_in_postgresql() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let query = "SELECT typname AS name, oid, typarray AS array_oid, \
                     CAST(CAST(oid AS regtype) AS TEXT) AS regtype, typdelim AS delimiter \
                     FROM pg_type t WHERE t.oid = to_regtype(?1) ORDER BY t.oid";
        let found: Vec<(String, i64, i64)> = conn
            .prepare(query)
            .unwrap()
            .query_map(["uuid"], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(found, vec![("uuid".to_string(), 2950, 2951)]);
        let none: i64 = conn
            .query_row(
                "SELECT count(*) FROM pg_type WHERE oid = to_regtype('hstore')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(none, 0);
    }
}
