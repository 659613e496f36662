//! CREATE / ALTER / DROP ROLE (and USER): recognised before the SQLite
//! path, since roles are ReSQLite's own replicated state, not SQL that
//! SQLite runs.
//!
//! Supported, as in PostgreSQL: `CREATE ROLE|USER name [WITH] [LOGIN |
//! NOLOGIN] [SUPERUSER | NOSUPERUSER] [[ENCRYPTED] PASSWORD 'pw' | PASSWORD
//! NULL]` (USER implies LOGIN), `ALTER ROLE|USER name [WITH] options`,
//! `ALTER ROLE name RENAME TO new`, `DROP ROLE|USER [IF EXISTS] a, b`. A
//! password may be given as the password itself or as a SCRAM-SHA-256
//! verifier (what psql's `\password` and drivers send). Other role options
//! (CREATEDB, INHERIT, CONNECTION LIMIT …) are refused with 0A000: ReSQLite
//! has no privileges beyond superuser yet.

use resqlite_proto::client::role_change::Op;
use resqlite_wire::{ScramVerifier, SqlError};
use sqlparser::ast::{
    AlterRoleOperation, Expr, ObjectType, Password, RoleOption, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::sqlstate;

/// The password part of a role statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewPassword {
    /// Not mentioned: unchanged.
    Keep,
    /// `PASSWORD NULL`.
    Clear,
    /// The password itself: the leader turns it into a verifier.
    Plain(String),
    /// A verifier the client computed.
    Verifier(ScramVerifier),
}

/// One role statement, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleStatement {
    pub op: Op,
    /// The roles it names (DROP may name several; the others one).
    pub names: Vec<String>,
    /// CREATE … IF NOT EXISTS, DROP … IF EXISTS.
    pub if_exists: bool,
    pub password: NewPassword,
    pub superuser: Option<bool>,
    pub login: Option<bool>,
    /// RENAME TO.
    pub new_name: String,
}

impl RoleStatement {
    /// The CommandComplete tag.
    pub fn tag(&self) -> &'static str {
        match self.op {
            Op::Create => "CREATE ROLE",
            Op::Alter | Op::Rename => "ALTER ROLE",
            Op::Drop => "DROP ROLE",
        }
    }

    /// Whether this only changes the password of `user` (what a role may
    /// do to itself without being a superuser).
    pub fn only_changes_own_password(&self, user: &str) -> bool {
        self.op == Op::Alter
            && self.names.len() == 1
            && self.names[0] == user
            && self.superuser.is_none()
            && self.login.is_none()
    }
}

/// The role statement `sql` is, if it is one. Quick for everything else:
/// only a statement starting with CREATE, ALTER or DROP and naming ROLE,
/// USER or GROUP is parsed.
pub fn parse(sql: &str) -> Option<Result<RoleStatement, SqlError>> {
    let words = leading_words(sql, 2);
    let (verb, object) = (words.first()?.0.as_str(), words.get(1)?.0.as_str());
    if !matches!(verb, "create" | "alter" | "drop") || !matches!(object, "role" | "user" | "group")
    {
        return None;
    }
    // sqlparser reads PostgreSQL's CREATE/ALTER USER as another dialect's
    // statement; they are CREATE/ALTER ROLE with LOGIN implied.
    let (text, user_keyword) = if object == "user" && verb != "drop" {
        let at = words[1].1;
        (format!("{}ROLE{}", &sql[..at], &sql[at + 4..]), true)
    } else {
        (sql.to_string(), false)
    };
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &text);
    let statement = match parsed {
        Ok(mut s) if s.len() == 1 => s.remove(0),
        Ok(_) => return Some(Err(unsupported("several statements in one role command"))),
        Err(e) => return Some(Err(SqlError::new(sqlstate::SYNTAX_ERROR, e.to_string()))),
    };
    Some(from_statement(statement, verb == "create" && user_keyword))
}

fn from_statement(statement: Statement, login_by_default: bool) -> Result<RoleStatement, SqlError> {
    let mut out = RoleStatement {
        op: Op::Alter,
        names: Vec::new(),
        if_exists: false,
        password: NewPassword::Keep,
        superuser: None,
        login: None,
        new_name: String::new(),
    };
    match statement {
        Statement::CreateRole(c) => {
            out.op = Op::Create;
            out.names = c.names.iter().map(|n| ident(&n.to_string())).collect();
            out.if_exists = c.if_not_exists;
            out.superuser = c.superuser;
            out.login = c.login.or(login_by_default.then_some(true));
            if let Some(p) = c.password {
                out.password = password(p)?;
            }
            let unsupported_option = [
                ("INHERIT", c.inherit.is_some()),
                ("BYPASSRLS", c.bypassrls.is_some()),
                ("CREATEDB", c.create_db.is_some()),
                ("CREATEROLE", c.create_role.is_some()),
                ("REPLICATION", c.replication.is_some()),
                ("CONNECTION LIMIT", c.connection_limit.is_some()),
                ("VALID UNTIL", c.valid_until.is_some()),
                ("IN ROLE", !c.in_role.is_empty() || !c.in_group.is_empty()),
                ("ROLE", !c.role.is_empty() || !c.user.is_empty()),
                ("ADMIN", !c.admin.is_empty()),
            ]
            .into_iter()
            .find(|(_, given)| *given);
            if let Some((name, _)) = unsupported_option {
                return Err(option_unsupported(name));
            }
            if out.names.len() != 1 {
                return Err(unsupported("CREATE ROLE with several names"));
            }
        }
        Statement::AlterRole { name, operation } => {
            out.names = vec![ident(&name.to_string())];
            match operation {
                AlterRoleOperation::RenameRole { role_name } => {
                    out.op = Op::Rename;
                    out.new_name = ident(&role_name.to_string());
                }
                AlterRoleOperation::WithOptions { options } => {
                    for option in options {
                        match option {
                            RoleOption::Login(b) => out.login = Some(b),
                            RoleOption::SuperUser(b) => out.superuser = Some(b),
                            RoleOption::Password(p) => out.password = password(p)?,
                            other => return Err(option_unsupported(&other.to_string())),
                        }
                    }
                }
                other => {
                    return Err(unsupported(&format!("ALTER ROLE … {other}")));
                }
            }
        }
        Statement::Drop {
            object_type: ObjectType::Role | ObjectType::User,
            if_exists,
            names,
            cascade,
            ..
        } => {
            if cascade {
                return Err(unsupported("DROP ROLE … CASCADE"));
            }
            out.op = Op::Drop;
            out.if_exists = if_exists;
            out.names = names.iter().map(|n| ident(&n.to_string())).collect();
        }
        other => {
            let words: Vec<String> = other
                .to_string()
                .split_whitespace()
                .take(3)
                .map(str::to_string)
                .collect();
            return Err(unsupported(&words.join(" ")));
        }
    }
    if out.names.iter().any(|n| n.is_empty()) || (out.op == Op::Rename && out.new_name.is_empty()) {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "a role name cannot be empty",
        ));
    }
    Ok(out)
}

/// A role name as PostgreSQL folds it: unquoted names in lower case.
fn ident(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    }
}

fn password(p: Password) -> Result<NewPassword, SqlError> {
    let text = match p {
        Password::NullPassword => return Ok(NewPassword::Clear),
        Password::Password(Expr::Value(v)) => match v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s,
            Value::Null => return Ok(NewPassword::Clear),
            other => {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    format!("a password must be a string literal, not {other}"),
                ))
            }
        },
        Password::Password(other) => {
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                format!("a password must be a string literal, not {other}"),
            ))
        }
    };
    if text.starts_with("SCRAM-SHA-256$") {
        return ScramVerifier::parse(&text)
            .map(NewPassword::Verifier)
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::INVALID_PASSWORD,
                    "the SCRAM-SHA-256 verifier is malformed",
                )
            });
    }
    if text.len() == 35
        && text.starts_with("md5")
        && text[3..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "MD5 passwords are not supported: give the password itself or a SCRAM-SHA-256 verifier",
        ));
    }
    if text.is_empty() {
        // PostgreSQL: an empty password is the same as NULL.
        return Ok(NewPassword::Clear);
    }
    Ok(NewPassword::Plain(text))
}

fn option_unsupported(name: &str) -> SqlError {
    SqlError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "role option {name} is not supported: ReSQLite roles have LOGIN, SUPERUSER and PASSWORD only"
        ),
    )
}

fn unsupported(what: &str) -> SqlError {
    SqlError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported"),
    )
}

/// The first `n` words of `sql` in lower case, with their byte offsets,
/// past whitespace and comments.
fn leading_words(sql: &str, n: usize) -> Vec<(String, usize)> {
    let mut words = Vec::new();
    let mut rest = sql;
    while words.len() < n {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
            continue;
        }
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        words.push((rest[..end].to_ascii_lowercase(), sql.len() - rest.len()));
        rest = &rest[end..];
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> RoleStatement {
        parse(sql).expect("a role statement").expect("valid")
    }

    fn err(sql: &str) -> String {
        parse(sql).expect("a role statement").unwrap_err().sqlstate
    }

    #[test]
    fn other_statements_are_not_role_statements() {
        for sql in [
            "SELECT 1",
            "CREATE TABLE role (a int)",
            "DROP TABLE users",
            "INSERT INTO role VALUES (1)",
            "",
        ] {
            assert!(parse(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn role_statements_parse_as_postgresql_means_them() {
        let s = ok("CREATE ROLE Alice WITH LOGIN SUPERUSER PASSWORD 'pw'");
        assert_eq!(s.op, Op::Create);
        assert_eq!(s.names, vec!["alice".to_string()]);
        assert_eq!((s.login, s.superuser), (Some(true), Some(true)));
        assert_eq!(s.password, NewPassword::Plain("pw".into()));
        let s = ok("/* user */ create user \"Bob\" password 'x'");
        assert_eq!((s.names[0].as_str(), s.login), ("Bob", Some(true)));
        let s = ok("CREATE ROLE r");
        assert_eq!((s.login, s.password), (None, NewPassword::Keep));
        let s = ok("ALTER ROLE bob WITH NOSUPERUSER PASSWORD NULL");
        assert_eq!(
            (s.op, s.superuser, s.password),
            (Op::Alter, Some(false), NewPassword::Clear)
        );
        assert!(ok("ALTER USER bob PASSWORD 'y'").only_changes_own_password("bob"));
        assert!(!ok("ALTER USER bob SUPERUSER").only_changes_own_password("bob"));
        let s = ok("ALTER ROLE bob RENAME TO robert");
        assert_eq!((s.op, s.new_name.as_str()), (Op::Rename, "robert"));
        let s = ok("DROP ROLE IF EXISTS a, b");
        assert_eq!((s.op, s.if_exists, s.names.len()), (Op::Drop, true, 2));
        assert_eq!(ok("DROP USER a").op, Op::Drop);
        let v = ScramVerifier::from_password("pw", b"0123456789abcdef", 4096);
        let s = ok(&format!("ALTER ROLE a PASSWORD '{v}'"));
        assert_eq!(s.password, NewPassword::Verifier(v));
    }

    #[test]
    fn what_cannot_be_kept_is_refused_clearly() {
        assert_eq!(err("CREATE ROLE a CREATEDB"), "0A000");
        assert_eq!(err("CREATE ROLE a CONNECTION LIMIT 3"), "0A000");
        assert_eq!(
            err("ALTER ROLE a PASSWORD 'md5d41d8cd98f00b204e9800998ecf8427e'"),
            "0A000"
        );
        assert_eq!(err("ALTER ROLE a PASSWORD 'SCRAM-SHA-256$broken'"), "28P01");
        assert_eq!(err("DROP ROLE a CASCADE"), "42601", "as PostgreSQL");
        assert_eq!(err("CREATE ROLE"), "42601");
    }
}
