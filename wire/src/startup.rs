//! The startup phase: protocol version, authentication, then
//! ParameterStatus and BackendKeyData. Authentication is a pgwire
//! `AuthMechanism` chosen from [`Auth`], so SCRAM can be added as another
//! variant without touching the rest.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthMechanismFactory, AuthState};
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome,
    ServerParameterProvider,
};
use pgwire::api::{ClientInfo, ConnectionManager, METADATA_APPLICATION_NAME, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::PgWireFrontendMessage;

use crate::auth::{Roles, ScramMechanisms};
use crate::client::Conn;
use crate::executor::{Executor, SqlError};
use crate::options::{Auth, WireOptions};

/// Runs the startup phase of every connection of one server.
pub(crate) struct Startup<E> {
    driver: AuthDriver<ServerParameters<E>>,
    auth: Mechanisms,
    /// None with trust authentication.
    roles: Option<Arc<dyn Roles>>,
    /// Plaintext clients are refused (FATAL 28000).
    tls_required: bool,
}

/// The authentication mechanisms a server offers.
enum Mechanisms {
    Trust(Arc<TrustFactory>),
    Scram(ScramMechanisms),
}

impl<E: Executor> Startup<E> {
    /// `manager` learns each connection's cancel key once it is in.
    pub(crate) fn new(
        executor: Arc<E>,
        opts: &WireOptions,
        manager: Arc<ConnectionManager>,
    ) -> Result<Self, String> {
        let roles = match &opts.auth {
            Auth::Trust => None,
            Auth::Scram(roles) => Some(Arc::clone(roles)),
        };
        let params = ServerParameters {
            executor,
            server_version: opts.server_version.clone(),
            roles: roles.clone(),
        };
        let auth = match roles.clone() {
            None => Mechanisms::Trust(Arc::new(TrustFactory)),
            Some(roles) => Mechanisms::Scram(
                ScramMechanisms::new(roles, opts.tls.as_ref().map(|t| t.cert_pem.as_slice()))
                    .map_err(|e| format!("SCRAM channel binding: {e}"))?,
            ),
        };
        Ok(Startup {
            driver: AuthDriver::new(params).with_connection_manager(manager),
            auth,
            roles,
            tls_required: opts.tls.as_ref().is_some_and(|t| t.required),
        })
    }

    /// Whether `user` is a superuser: every session is with trust.
    pub(crate) fn is_superuser(&self, user: &str) -> bool {
        self.roles.as_ref().is_none_or(|r| r.is_superuser(user))
    }

    /// The mechanism for `conn`: SCRAM with channel binding on TLS.
    fn mechanism(&self, conn: &Conn) -> Box<dyn AuthMechanism> {
        match &self.auth {
            Mechanisms::Trust(t) => t.create(),
            Mechanisms::Scram(s) if conn.is_secure() => s.tls.create(),
            Mechanisms::Scram(s) => s.plain.create(),
        }
    }

    /// Handles one message of the startup phase. Once authentication
    /// succeeds the client has had AuthenticationOk, the ParameterStatus
    /// messages, BackendKeyData and ReadyForQuery. An error is FATAL.
    pub(crate) async fn on_message(
        &self,
        conn: &mut Conn,
        message: PgWireFrontendMessage,
    ) -> Result<(), SqlError> {
        let outcome = match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(conn, &startup)
                    .await
                    .map_err(from_pgwire)?;
                save_startup_parameters_to_metadata(conn, &startup);
                if self.tls_required && !conn.is_secure() {
                    return Err(SqlError::new(
                        "28000",
                        "this server accepts only TLS connections: connect with \
                         sslmode=require (or verify-ca, verify-full)",
                    ));
                }
                let mechanism = self.mechanism(conn);
                self.driver.begin_authentication(conn, mechanism).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                self.driver.advance_authentication(conn, password).await
            }
            _ => {
                return Err(crate::errors::protocol_violation(
                    "expected a startup or password message",
                ))
            }
        };
        let user = || {
            conn.metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default()
        };
        match outcome {
            // PostgreSQL's words, with the user of the startup message
            // (SCRAM's own user name is empty with libpq).
            Err(PgWireError::InvalidPassword(_)) => Err(SqlError::new(
                "28P01",
                format!("password authentication failed for user \"{}\"", user()),
            )),
            Err(e) => Err(from_pgwire(e)),
            Ok(AuthOutcome::InProgress) => Ok(()),
            Ok(AuthOutcome::Authenticated { final_message, .. }) => {
                tracing::debug!(user = %user(), peer = %conn.socket_addr(), "client authenticated");
                self.driver
                    .complete_authentication(conn, final_message)
                    .await
                    .map_err(from_pgwire)
            }
        }
    }
}

/// A pgwire error as the SQL error the client is sent.
pub(crate) fn from_pgwire(error: PgWireError) -> SqlError {
    match error {
        PgWireError::UserError(info) => {
            let mut e = SqlError::new(&info.code, info.message);
            e.detail = info.detail;
            e
        }
        other => SqlError::new(other.code(), other.to_string()),
    }
}

/// The ParameterStatus messages sent at startup.
struct ServerParameters<E> {
    executor: Arc<E>,
    server_version: String,
    /// None with trust authentication: every session is a superuser.
    roles: Option<Arc<dyn Roles>>,
}

impl<E> ServerParameters<E> {
    fn is_superuser(&self, user: &str) -> bool {
        self.roles.as_ref().is_none_or(|r| r.is_superuser(user))
    }
}

impl<E: Executor> ServerParameterProvider for ServerParameters<E> {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        // libpq's `target_session_attrs=read-write` picks the server that
        // says `off` to both of these: the leader.
        let read_only = if self.executor.role().is_leader {
            "off"
        } else {
            "on"
        };
        let mut params: HashMap<String, String> = [
            ("server_version", self.server_version.as_str()),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("in_hot_standby", read_only),
            ("default_transaction_read_only", read_only),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let metadata = client.metadata();
        params.insert(
            METADATA_APPLICATION_NAME.to_string(),
            metadata
                .get(METADATA_APPLICATION_NAME)
                .cloned()
                .unwrap_or_default(),
        );
        let user = metadata
            .get(METADATA_USER)
            .map(String::as_str)
            .unwrap_or("");
        let superuser = self.is_superuser(user);
        params.insert(
            "is_superuser".to_string(),
            if superuser { "on" } else { "off" }.to_string(),
        );
        params.insert("session_authorization".to_string(), user.to_string());
        Some(params)
    }
}

/// `trust`: every client is in, whoever it says it is.
struct TrustFactory;

impl AuthMechanismFactory for TrustFactory {
    fn create(&self) -> Box<dyn AuthMechanism> {
        Box::new(Trust)
    }
}

struct Trust;

#[async_trait]
impl AuthMechanism for Trust {
    async fn begin(&mut self, _client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        Ok(AuthState::Ok {
            final_message: None,
            identity: None,
        })
    }

    async fn next(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
        _message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        Err(PgWireError::NoAuthenticationInProgress)
    }
}
