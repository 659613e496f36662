//! The statements sqlparser's SQLite dialect does not read (PRAGMA with a
//! bare-word argument, DETACH, REINDEX, VACUUM), recognised by their first
//! words before parsing.

use super::classify::{Class, Classified};
use super::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, SYNTAX_ERROR};
use resqlite_wire::SqlError;

/// PRAGMAs that only read the database's state, beyond the schema ones of
/// the deny table ([`super::deny::PRAGMAS_ALLOWED_IN_WRITES`]), which reads
/// may use too. Anything else (setting a value, or a pragma that changes
/// durability or files) is refused.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "user_version",
    "application_id",
    "schema_version",
    "data_version",
    "encoding",
    "foreign_keys",
    "page_count",
    "page_size",
    "freelist_count",
];

/// Classifies the statement if it is one of the forms handled here;
/// `None` leaves it to the parser.
pub fn classify_special(sql: &str) -> Option<Result<Classified, SqlError>> {
    let mut words = sql.split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == '=');
    let first = words.next()?.to_ascii_uppercase();
    match first.as_str() {
        "PRAGMA" => Some(classify_pragma(sql)),
        "DETACH" => Some(Err(SqlError::new(
            INSUFFICIENT_PRIVILEGE,
            "DETACH is not allowed: ReSQLite never attaches other database files",
        ))),
        "REINDEX" => Some(Ok(Classified {
            class: Class::Write,
            command: "REINDEX",
        })),
        "VACUUM" => Some(Err(if sql.to_ascii_uppercase().contains("INTO") {
            SqlError::new(
                INSUFFICIENT_PRIVILEGE,
                "VACUUM INTO is not allowed: SQL may not write files on the server",
            )
        } else {
            SqlError::new(
                FEATURE_NOT_SUPPORTED,
                "VACUUM is not supported: it cannot run inside the replicated apply transaction",
            )
        })),
        _ => None,
    }
}

fn classify_pragma(sql: &str) -> Result<Classified, SqlError> {
    let body = sql.trim().trim_end_matches(';').trim();
    let rest = body.get("PRAGMA".len()..).unwrap_or("").trim_start();
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    let full_name = &rest[..name_end];
    let after = rest[name_end..].trim();
    if full_name.is_empty() {
        return Err(SqlError::new(SYNTAX_ERROR, "PRAGMA needs a name"));
    }
    // `schema.name`: only the main schema exists.
    let name = full_name
        .rsplit('.')
        .next()
        .unwrap_or(full_name)
        .to_ascii_lowercase();
    if after.starts_with('=') {
        return Err(SqlError::new(
            INSUFFICIENT_PRIVILEGE,
            format!("PRAGMA {name} = … is not allowed: settings are fixed by the server so replicas stay identical"),
        ));
    }
    let parenthesised = after.starts_with('(') && after.ends_with(')');
    if !after.is_empty() && !parenthesised {
        return Err(SqlError::new(
            SYNTAX_ERROR,
            format!("syntax error near \"{after}\""),
        ));
    }
    if pragma_allowed_in_reads(&name, !after.is_empty()) {
        Ok(Classified {
            class: Class::Read,
            command: "SELECT",
        })
    } else {
        Err(SqlError::new(
            INSUFFICIENT_PRIVILEGE,
            format!(
                "PRAGMA {name} is not allowed: only read-only PRAGMAs (such as table_info) may run"
            ),
        ))
    }
}

/// Whether PRAGMA `name` (with an argument or not) only reads. Used by the
/// classifier and by the read connections' authorizer.
pub fn pragma_allowed_in_reads(name: &str, with_arg: bool) -> bool {
    let name = name.to_ascii_lowercase();
    // These write when given an argument (user_version(5) sets it).
    let arg_is_a_setting = matches!(
        name.as_str(),
        "user_version"
            | "application_id"
            | "schema_version"
            | "foreign_keys"
            | "page_size"
            | "encoding"
    );
    let read_only =
        READ_ONLY_PRAGMAS.contains(&name.as_str()) || super::deny::pragma_allowed_in_writes(&name);
    read_only && !(with_arg && arg_is_a_setting)
}
