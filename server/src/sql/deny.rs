//! The one table of what SQL may not call or read, and where.
//!
//! Two enforcers read it: the classifier, for an early and readable
//! refusal before anything is proposed, and the SQLite connections
//! themselves, through the authorizer, which sees every function call and
//! table access by name whatever the spelling (also the calls of a
//! `DEFAULT` expression, a trigger or a view). Adding a row here changes
//! both.

use resqlite_wire::SqlError;

use super::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE};

/// Where a denied name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In replicated writes: it would give each node a different answer.
    Writes,
    /// Everywhere, reads included: it reaches outside the database.
    Everywhere,
}

/// One denied function.
#[derive(Debug, PartialEq, Eq)]
pub struct DeniedFunction {
    /// Lower-case SQLite name.
    pub name: &'static str,
    /// Where it is refused.
    pub scope: Scope,
    /// Completes "NAME() is not allowed …: ".
    pub why: &'static str,
}

const DIFFERS: &str = "it gives a different answer on each node, so replicas would diverge; \
                       compute the value in the client and pass it as a parameter";
const HISTORY: &str = "it depends on each node's connection history, which differs between \
                       nodes, so replicas would diverge";
const VERSION: &str = "it differs between server versions, so replicas would diverge during \
                       an upgrade";

/// Functions SQL may not call.
pub const DENIED_FUNCTIONS: &[DeniedFunction] = &[
    DeniedFunction {
        name: "random",
        scope: Scope::Writes,
        why: DIFFERS,
    },
    DeniedFunction {
        name: "randomblob",
        scope: Scope::Writes,
        why: DIFFERS,
    },
    DeniedFunction {
        name: "changes",
        scope: Scope::Writes,
        why: HISTORY,
    },
    DeniedFunction {
        name: "total_changes",
        scope: Scope::Writes,
        why: HISTORY,
    },
    DeniedFunction {
        name: "last_insert_rowid",
        scope: Scope::Writes,
        why: HISTORY,
    },
    DeniedFunction {
        name: "sqlite_offset",
        scope: Scope::Writes,
        why: "it reports where a row lies in each node's file, which differs between nodes",
    },
    DeniedFunction {
        name: "sqlite_version",
        scope: Scope::Writes,
        why: VERSION,
    },
    DeniedFunction {
        name: "sqlite_source_id",
        scope: Scope::Writes,
        why: VERSION,
    },
    DeniedFunction {
        name: "fts3_tokenizer",
        scope: Scope::Everywhere,
        why: "it reads and registers process memory addresses",
    },
    DeniedFunction {
        name: "load_extension",
        scope: Scope::Everywhere,
        why: "SQL may not load code into the server",
    },
];

/// One denied table (or table-valued function).
#[derive(Debug)]
pub struct DeniedTable {
    /// Lower-case name, or prefix when `prefix` is set.
    pub name: &'static str,
    /// Matches every name that starts with `name`.
    pub prefix: bool,
    /// Completes "TABLE is not allowed in writes: ".
    pub why: &'static str,
}

/// Tables ReSQLite keeps for itself (the applied index): their names
/// start with this.
pub const INTERNAL_TABLE_PREFIX: &str = "_resqlite";

const LAYOUT: &str = "it reflects each node's page layout, which differs between nodes";

/// Tables no statement may read (writes may not touch any `_resqlite`
/// table, see [`DENIED_TABLES_IN_WRITES`]).
pub const DENIED_TABLES_IN_READS: &[DeniedTable] = &[DeniedTable {
    name: "_resqlite_roles",
    prefix: false,
    why: "it holds the roles' password verifiers",
}];

/// Why no statement may read table `name`, if so.
pub fn denied_table_in_read(name: &str) -> Option<&'static str> {
    DENIED_TABLES_IN_READS
        .iter()
        .find(|t| {
            if t.prefix {
                name.len() >= t.name.len()
                    && name.as_bytes()[..t.name.len()].eq_ignore_ascii_case(t.name.as_bytes())
            } else {
                name.eq_ignore_ascii_case(t.name)
            }
        })
        .map(|t| t.why)
}

/// Tables a write may neither read nor change. (Reads may look at them:
/// they are the node's own business.)
pub const DENIED_TABLES_IN_WRITES: &[DeniedTable] = &[
    DeniedTable {
        name: INTERNAL_TABLE_PREFIX,
        prefix: true,
        why: "it is ReSQLite's own bookkeeping, which differs between nodes",
    },
    DeniedTable {
        name: "dbstat",
        prefix: false,
        why: LAYOUT,
    },
    DeniedTable {
        name: "sqlite_dbpage",
        prefix: false,
        why: LAYOUT,
    },
];

pub const TEMP: &str = "TEMP objects live in one node's connection only, so replicas would diverge";

/// Tables a write may read but not change.
pub const READ_ONLY_TABLES_IN_WRITES: &[DeniedTable] = &[DeniedTable {
    name: "sqlite_sequence",
    prefix: false,
    why: "AUTOINCREMENT counters are SQLite's to keep: a counter set to the largest rowid \
          makes every later insert fail on every node",
}];

/// Whether a write changing `column` of `table` only renames an
/// AUTOINCREMENT counter: what SQLite's own `ALTER TABLE … RENAME` does to
/// `sqlite_sequence` (`name`), which may change although the counters
/// (`seq`) may not.
pub fn renames_a_counter(table: &str, column: &str) -> bool {
    table.eq_ignore_ascii_case("sqlite_sequence") && column.eq_ignore_ascii_case("name")
}

/// Why a write may not change table `name`, if it may read it but not
/// change it.
pub fn read_only_table_in_write(name: &str) -> Option<&'static str> {
    READ_ONLY_TABLES_IN_WRITES
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
        .map(|t| t.why)
}

/// PRAGMAs a write may read as table-valued functions (`pragma_table_info(…)`):
/// they describe the schema, which is replicated. Every other PRAGMA
/// reflects the node (page counts, file names, settings) and is refused in
/// writes.
pub const PRAGMAS_ALLOWED_IN_WRITES: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "collation_list",
];

/// Whether a write may read PRAGMA `name` (see [`PRAGMAS_ALLOWED_IN_WRITES`]).
pub fn pragma_allowed_in_writes(name: &str) -> bool {
    PRAGMAS_ALLOWED_IN_WRITES
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// The denied function `name`, if it is denied in `scope` (a function
/// denied everywhere is denied in writes too).
pub fn denied_function(name: &str, in_write: bool) -> Option<&'static DeniedFunction> {
    DENIED_FUNCTIONS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name) && (in_write || f.scope == Scope::Everywhere))
}

/// Why a write may not read or change table `name` of schema `schema`
/// (`main`, `temp`, …), if it may not.
pub fn denied_table_in_write(schema: Option<&str>, name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if schema.is_some_and(|s| s.eq_ignore_ascii_case("temp")) && !is_temp_catalog(&lower) {
        return Some(TEMP);
    }
    if let Some(t) = DENIED_TABLES_IN_WRITES.iter().find(|t| {
        if t.prefix {
            lower.starts_with(t.name)
        } else {
            lower == t.name
        }
    }) {
        return Some(t.why);
    }
    if let Some(pragma) = lower.strip_prefix("pragma_") {
        if !pragma_allowed_in_writes(pragma) {
            return Some("it reflects the node's own settings and files, not replicated data");
        }
    }
    None
}

/// Why a write may not insert into table `name` of schema `schema`: as
/// [`denied_table_in_write`], and nothing at all into the temp schema, its
/// catalog included (creating a TEMP object, however spelled, inserts its
/// row there).
pub fn denied_insert_in_write(schema: Option<&str>, name: &str) -> Option<&'static str> {
    if schema.is_some_and(|s| s.eq_ignore_ascii_case("temp")) {
        return Some(TEMP);
    }
    denied_table_in_write(schema, name)
}

/// The catalog of the temp schema. A write may read it and update its
/// rows: on a connection that applies writes it is always empty, since no
/// write may insert into the temp schema ([`denied_insert_in_write`]) and
/// the node creates no TEMP object, so every node reads the same nothing.
/// SQLite's own `ALTER TABLE … RENAME` reads and rewrites it, and was
/// refused before.
fn is_temp_catalog(lower_name: &str) -> bool {
    matches!(
        lower_name,
        "sqlite_temp_master" | "sqlite_temp_schema" | "sqlite_master" | "sqlite_schema"
    )
}

/// The error a client gets for calling a denied function.
pub fn function_error(f: &DeniedFunction) -> SqlError {
    let (sqlstate, place) = match f.scope {
        Scope::Writes => (FEATURE_NOT_SUPPORTED, " in writes"),
        Scope::Everywhere => (INSUFFICIENT_PRIVILEGE, ""),
    };
    SqlError::new(
        sqlstate,
        format!(
            "{}() is not allowed{place}: {}",
            f.name.to_ascii_uppercase(),
            f.why
        ),
    )
}

/// The error a client gets for a write that reads or changes a denied
/// table.
pub fn table_error(name: &str, why: &str) -> SqlError {
    SqlError::new(
        FEATURE_NOT_SUPPORTED,
        format!("{name} is not allowed in writes: {why}"),
    )
}

/// The error for creating a TEMP object in a write.
pub fn temp_object_error(kind: &str) -> SqlError {
    SqlError::new(
        FEATURE_NOT_SUPPORTED,
        format!("CREATE TEMP {kind} is not allowed: {TEMP}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_denied_in_writes_are_allowed_in_reads_unless_denied_everywhere() {
        assert!(denied_function("RANDOM", true).is_some());
        assert!(denied_function("random", false).is_none());
        assert!(denied_function("fts3_tokenizer", false).is_some());
        assert!(denied_function("Load_Extension", false).is_some());
        assert!(denied_function("abs", true).is_none());
    }

    #[test]
    fn tables_denied_in_writes() {
        assert!(denied_table_in_write(Some("main"), "_resqlite_meta").is_some());
        assert!(denied_table_in_write(Some("main"), "_RESQLITE_x").is_some());
        assert!(denied_table_in_write(None, "DBSTAT").is_some());
        assert!(denied_table_in_write(Some("temp"), "t").is_some());
        assert!(denied_table_in_write(Some("main"), "pragma_page_count").is_some());
        assert!(denied_table_in_write(Some("main"), "pragma_table_info").is_none());
        assert!(denied_table_in_write(Some("main"), "notes").is_none());
    }
}
