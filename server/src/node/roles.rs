//! CREATE / ALTER / DROP ROLE on a node: who may, and the log entry that
//! carries the change to every node.

use resqlite_proto::client::role_change::Op;
use resqlite_proto::client::RoleChange;
use resqlite_wire::{Outcome, ScramVerifier, Session, SqlError, SCRAM_ITERATIONS};

use super::Node;
use crate::sql::roles::{NewPassword, RoleStatement};
use crate::sql::sqlstate;
use crate::store::log_command::encode_role;

impl Node {
    /// Runs a role statement: on the leader only, by a superuser (or a role
    /// changing its own password), as one Raft entry.
    pub(super) async fn change_roles(
        &self,
        session: &Session,
        statement: RoleStatement,
    ) -> Result<Outcome, SqlError> {
        let change = self.role_change(session, statement).await?;
        let entry = encode_role(change);
        self.raft
            .propose(entry)
            .await
            .map_err(|e| self.propose_error(e))?
    }

    /// The change a role statement makes, once it is known the session may
    /// make it here (on the leader).
    pub(super) async fn role_change(
        &self,
        session: &Session,
        statement: RoleStatement,
    ) -> Result<RoleChange, SqlError> {
        if !session.superuser && !statement.only_changes_own_password(&session.user) {
            return Err(SqlError::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied to {}: only a superuser may (a role may change its own password)",
                    statement.tag().to_lowercase()
                ),
            ));
        }
        if statement.op == Op::Drop && statement.names.iter().any(|n| **n == *session.user) {
            return Err(SqlError::new("55006", "current user cannot be dropped"));
        }
        if !self.is_leader() {
            return Err(self.redirect(self.raft.leader()));
        }
        let mut change = to_change(statement).await?;
        if change.op == Op::Alter as i32 && self.roles.only_bootstrapped(&change.name) {
            // The bootstrap superuser lives in this node's configuration
            // only: its first ALTER makes it a replicated role, which from
            // then on decides on every node.
            change.op = Op::Create as i32;
            change.superuser = Some(change.superuser.unwrap_or(true));
            change.login = Some(change.login.unwrap_or(true));
        }
        Ok(change)
    }
}

/// The log entry of `statement`. A password becomes its verifier here, on
/// the leader, with a fresh random salt: the entry carries the result, so
/// every node stores the same bytes.
async fn to_change(statement: RoleStatement) -> Result<RoleChange, SqlError> {
    let mut names = statement.names.into_iter();
    let name = names.next().unwrap_or_default();
    let mut change = RoleChange {
        op: statement.op as i32,
        name,
        more_names: names.collect(),
        if_exists: statement.if_exists,
        superuser: statement.superuser,
        login: statement.login,
        new_name: statement.new_name,
        ..Default::default()
    };
    match statement.password {
        NewPassword::Keep => {}
        NewPassword::Clear => change.clear_password = true,
        NewPassword::Verifier(v) => change.verifier = Some(v.to_string()),
        NewPassword::Plain(password) => {
            // 4,096 rounds of PBKDF2: milliseconds of CPU, off the async
            // workers.
            let verifier = tokio::task::spawn_blocking(move || {
                let salt: [u8; 16] = rand::random();
                ScramVerifier::from_password(&password, &salt, SCRAM_ITERATIONS)
            })
            .await
            .map_err(|e| SqlError::new(sqlstate::INTERNAL_ERROR, e.to_string()))?;
            change.verifier = Some(verifier.to_string());
        }
    }
    Ok(change)
}
