//! Roles in replicated state: the table every node keeps, the change a
//! committed `RoleChange` entry makes to it, and the in-memory copy the
//! PostgreSQL front end authenticates against.
//!
//! The table is ReSQLite's own (`_resqlite_roles`): no client statement may
//! read or write it (it holds password verifiers; see `sql::deny`). It is
//! created by the first role change, so a database that never had one is
//! unchanged. It is part of snapshots and of `resqlite check`'s hash like
//! any replicated table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use resqlite_proto::client::{role_change::Op, RoleChange};
use resqlite_wire::{Outcome, Roles, ScramVerifier, SqlError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::sql::sqlstate;

/// The table of roles.
pub const ROLES_TABLE: &str = "_resqlite_roles";

/// One role as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// PostgreSQL's text form of the SCRAM verifier; None: no password.
    pub verifier: Option<String>,
    pub superuser: bool,
    pub login: bool,
}

/// Applies a committed role change on the apply connection (inside the
/// batch's transaction, past the authorizer). Errors are the same on every
/// node; `Err(rusqlite::Error)` is a node-local failure.
/// [`apply_change`] inside a savepoint that a refused change rolls back,
/// past the authorizer (`internal`): a transaction's role step.
pub(crate) fn apply_in_savepoint(
    conn: &Connection,
    internal: &std::sync::atomic::AtomicBool,
    change: &RoleChange,
) -> rusqlite::Result<Result<Outcome, SqlError>> {
    use std::sync::atomic::Ordering;
    internal.store(true, Ordering::Relaxed);
    let result = (|| {
        conn.execute_batch("SAVEPOINT resqlite_role")?;
        let outcome = apply_change(conn, change)?;
        if outcome.is_err() {
            conn.execute_batch("ROLLBACK TO resqlite_role")?;
        }
        conn.execute_batch("RELEASE resqlite_role")?;
        Ok(outcome)
    })();
    internal.store(false, Ordering::Relaxed);
    result
}

pub fn apply_change(
    conn: &Connection,
    change: &RoleChange,
) -> rusqlite::Result<Result<Outcome, SqlError>> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {ROLES_TABLE} (
             name TEXT PRIMARY KEY,
             verifier TEXT,
             superuser INTEGER NOT NULL,
             login INTEGER NOT NULL
         ) WITHOUT ROWID"
    ))?;
    let existing = find(conn, &change.name)?;
    let op = Op::try_from(change.op).unwrap_or(Op::Alter);
    let (tag, outcome) = match (op, existing) {
        (Op::Create, Some(_)) if change.if_exists => ("CREATE ROLE", Ok(())),
        (Op::Create, Some(_)) => ("CREATE ROLE", Err(already_exists(&change.name))),
        (Op::Create, None) => {
            let role = Role {
                verifier: change.verifier.clone(),
                superuser: change.superuser.unwrap_or(false),
                login: change.login.unwrap_or(false),
            };
            store(conn, &change.name, &role)?;
            ("CREATE ROLE", Ok(()))
        }
        (Op::Alter, None) | (Op::Rename, None) => ("ALTER ROLE", Err(does_not_exist(&change.name))),
        (Op::Alter, Some(mut role)) => {
            if change.clear_password {
                role.verifier = None;
            }
            if let Some(v) = &change.verifier {
                role.verifier = Some(v.clone());
            }
            if let Some(s) = change.superuser {
                role.superuser = s;
            }
            if let Some(l) = change.login {
                role.login = l;
            }
            store(conn, &change.name, &role)?;
            ("ALTER ROLE", Ok(()))
        }
        (Op::Rename, Some(role)) => {
            if find(conn, &change.new_name)?.is_some() {
                ("ALTER ROLE", Err(already_exists(&change.new_name)))
            } else {
                // A SCRAM verifier does not depend on the name (only MD5
                // ones did, which PostgreSQL clears on rename): it stays.
                conn.execute(
                    &format!("DELETE FROM {ROLES_TABLE} WHERE name = ?1"),
                    [&change.name],
                )?;
                store(conn, &change.new_name, &role)?;
                ("ALTER ROLE", Ok(()))
            }
        }
        (Op::Drop, _) => ("DROP ROLE", drop_all(conn, change)?),
    };
    Ok(outcome.map(|()| Outcome {
        tag: tag.to_string(),
        columns: Vec::new(),
        rows: Vec::new(),
    }))
}

/// DROP ROLE a, b …: every role or none (unless IF EXISTS, which skips
/// the missing ones).
fn drop_all(conn: &Connection, change: &RoleChange) -> rusqlite::Result<Result<(), SqlError>> {
    let names = std::iter::once(&change.name).chain(&change.more_names);
    let mut present = Vec::new();
    for name in names {
        match find(conn, name)? {
            Some(_) => present.push(name),
            None if change.if_exists => {}
            None => return Ok(Err(does_not_exist(name))),
        }
    }
    for name in present {
        conn.execute(
            &format!("DELETE FROM {ROLES_TABLE} WHERE name = ?1"),
            [name],
        )?;
    }
    Ok(Ok(()))
}

fn already_exists(name: &str) -> SqlError {
    SqlError::new(
        sqlstate::DUPLICATE_ROLE,
        format!("role \"{name}\" already exists"),
    )
}

fn does_not_exist(name: &str) -> SqlError {
    SqlError::new(
        sqlstate::UNDEFINED_OBJECT,
        format!("role \"{name}\" does not exist"),
    )
}

fn find(conn: &Connection, name: &str) -> rusqlite::Result<Option<Role>> {
    conn.query_row(
        &format!("SELECT verifier, superuser, login FROM {ROLES_TABLE} WHERE name = ?1"),
        [name],
        |r| {
            Ok(Role {
                verifier: r.get(0)?,
                superuser: r.get(1)?,
                login: r.get(2)?,
            })
        },
    )
    .optional()
}

fn store(conn: &Connection, name: &str, role: &Role) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO {ROLES_TABLE} (name, verifier, superuser, login)
             VALUES (?1, ?2, ?3, ?4)"
        ),
        params![name, role.verifier, role.superuser, role.login],
    )?;
    Ok(())
}

/// Every role in the database (none when the table does not exist yet).
pub fn load_all(conn: &Connection) -> rusqlite::Result<HashMap<String, Role>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [ROLES_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT name, verifier, superuser, login FROM {ROLES_TABLE}"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Role {
                verifier: r.get(1)?,
                superuser: r.get(2)?,
                login: r.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

/// The superuser a node starts with, from its own configuration (a
/// password file or environment variable): it logs in while the
/// replicated roles hold no role of that name. Once one exists (`ALTER
/// ROLE … PASSWORD` on it, for instance) the replicated role decides.
#[derive(Clone, Debug)]
pub struct BootstrapSuperuser {
    pub name: String,
    pub verifier: ScramVerifier,
}

/// The roles as of the last applied entry, shared by the state machine
/// (which refreshes it) and the front end (which reads it at every login).
#[derive(Clone, Debug, Default)]
pub struct RoleCache {
    roles: Arc<RwLock<HashMap<String, Role>>>,
    bootstrap: Option<Arc<BootstrapSuperuser>>,
}

impl RoleCache {
    /// Replaces the roles (after a committed change or a restore).
    pub fn replace(&self, roles: HashMap<String, Role>) {
        *self.roles.write().unwrap_or_else(|p| p.into_inner()) = roles;
    }

    /// With the node's bootstrap superuser.
    pub fn with_bootstrap(mut self, bootstrap: Option<BootstrapSuperuser>) -> Self {
        self.bootstrap = bootstrap.map(Arc::new);
        self
    }

    /// Whether `name` is the bootstrap superuser with no replicated role of
    /// that name yet.
    pub fn only_bootstrapped(&self, name: &str) -> bool {
        self.bootstrap.as_ref().is_some_and(|b| b.name == name)
            && !self
                .roles
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(name)
    }

    /// The role named `name`, the bootstrap superuser included.
    pub fn get(&self, name: &str) -> Option<Role> {
        let stored = self
            .roles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        stored.or_else(|| {
            let b = self.bootstrap.as_ref().filter(|b| b.name == name)?;
            Some(Role {
                verifier: Some(b.verifier.to_string()),
                superuser: true,
                login: true,
            })
        })
    }
}

impl Roles for RoleCache {
    fn login_verifier(&self, user: &str) -> Option<ScramVerifier> {
        let role = self.get(user).filter(|r| r.login)?;
        ScramVerifier::parse(role.verifier.as_deref()?)
    }

    fn is_superuser(&self, user: &str) -> bool {
        self.get(user).is_some_and(|r| r.superuser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: Op, name: &str) -> RoleChange {
        RoleChange {
            op: op as i32,
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn tag(r: rusqlite::Result<Result<Outcome, SqlError>>) -> Result<String, String> {
        r.unwrap().map(|o| o.tag).map_err(|e| e.sqlstate)
    }

    #[test]
    fn create_alter_rename_drop_with_postgresql_errors() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(load_all(&conn).unwrap().is_empty());
        let v = ScramVerifier::from_password("pw", b"0123456789abcdef", 4096).to_string();
        let mut create = change(Op::Create, "alice");
        create.verifier = Some(v.clone());
        create.login = Some(true);
        assert_eq!(tag(apply_change(&conn, &create)), Ok("CREATE ROLE".into()));
        assert_eq!(tag(apply_change(&conn, &create)), Err("42710".into()));
        create.if_exists = true;
        assert_eq!(tag(apply_change(&conn, &create)), Ok("CREATE ROLE".into()));

        let mut promote = change(Op::Alter, "alice");
        promote.superuser = Some(true);
        assert_eq!(tag(apply_change(&conn, &promote)), Ok("ALTER ROLE".into()));
        let roles = load_all(&conn).unwrap();
        assert_eq!(
            roles["alice"],
            Role {
                verifier: Some(v),
                superuser: true,
                login: true
            }
        );
        assert_eq!(
            tag(apply_change(&conn, &change(Op::Alter, "nobody"))),
            Err("42704".into())
        );
        let mut rename = change(Op::Rename, "alice");
        rename.new_name = "alicia".into();
        assert_eq!(tag(apply_change(&conn, &rename)), Ok("ALTER ROLE".into()));
        assert!(load_all(&conn).unwrap().contains_key("alicia"));

        assert_eq!(
            tag(apply_change(&conn, &change(Op::Drop, "alice"))),
            Err("42704".into())
        );
        let mut drop = change(Op::Drop, "alicia");
        drop.more_names = vec!["nobody".into()];
        assert_eq!(tag(apply_change(&conn, &drop)), Err("42704".into()));
        assert!(
            load_all(&conn).unwrap().contains_key("alicia"),
            "all or none"
        );
        drop.more_names.clear();
        assert_eq!(tag(apply_change(&conn, &drop)), Ok("DROP ROLE".into()));
        drop.if_exists = true;
        assert_eq!(tag(apply_change(&conn, &drop)), Ok("DROP ROLE".into()));
        assert!(load_all(&conn).unwrap().is_empty());
    }

    #[test]
    fn the_bootstrap_superuser_logs_in_until_a_stored_role_takes_its_name() {
        let boot = ScramVerifier::from_password("boot", b"0123456789abcdef", 4096);
        let cache = RoleCache::default().with_bootstrap(Some(BootstrapSuperuser {
            name: "resqlite".into(),
            verifier: boot.clone(),
        }));
        assert_eq!(cache.login_verifier("resqlite"), Some(boot));
        assert!(cache.is_superuser("resqlite"));
        assert_eq!(cache.login_verifier("other"), None);
        let stored = ScramVerifier::from_password("new", b"fedcba9876543210", 4096);
        cache.replace(HashMap::from([(
            "resqlite".to_string(),
            Role {
                verifier: Some(stored.to_string()),
                superuser: false,
                login: true,
            },
        )]));
        assert_eq!(cache.login_verifier("resqlite"), Some(stored));
        assert!(!cache.is_superuser("resqlite"));
        cache.replace(HashMap::from([(
            "resqlite".to_string(),
            Role {
                verifier: None,
                superuser: true,
                login: false,
            },
        )]));
        assert_eq!(cache.login_verifier("resqlite"), None, "NOLOGIN");
    }
}
