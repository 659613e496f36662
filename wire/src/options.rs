//! What the front end is configured with.

use std::fmt;
use std::sync::Arc;

use pgwire::tokio::tokio_rustls::rustls;
use pgwire::tokio::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::Roles;

/// The largest statement a client may send, in bytes: a Query's text, a
/// Parse's text, or a Bind with all its parameters, and also the SQL text of
/// a bound statement plus its parameters together.
///
/// Every write is replicated as one Raft entry and applied on every node,
/// whose SQLite accepts no longer SQL text (`SQLITE_LIMIT_SQL_LENGTH`) and
/// no longer string or BLOB (`SQLITE_LIMIT_LENGTH`) than this. A larger
/// statement is refused with SQLSTATE 54000 before anything runs or is
/// proposed. Statements up to this size commit without a leadership change
/// (see `server/tests/big_statements.rs`).
pub const MAX_STATEMENT_BYTES: usize = 8 << 20;

/// Connections served at once by default, as PostgreSQL's
/// `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

/// Bytes of large messages (64 KiB and more) one server receives at once,
/// over all its connections; see `codec::ReceiveBudget`.
pub const MAX_RECEIVING_BYTES: usize = 256 << 20;

/// Prepared statements one connection may hold at once (pgjdbc caches up
/// to 256, psycopg 100). Parse beyond it is refused with 54000 until the
/// client closes some: a connection's statements cannot grow without end.
pub const MAX_PREPARED_STATEMENTS: usize = 10_000;

/// Bytes of SQL text one connection's prepared statements may hold
/// together.
pub const MAX_PREPARED_BYTES: usize = 64 << 20;

/// Portals one connection may hold at once (they live until the end of
/// their transaction; a running one holds up to one batch of rows).
pub const MAX_PORTALS: usize = 256;

/// Bytes of bound, not yet executed parameters one connection's portals
/// may hold together.
pub const MAX_BOUND_BYTES: usize = 64 << 20;

/// How clients prove who they are at startup.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Any user, no password (PostgreSQL's `trust`); every session is a
    /// superuser.
    #[default]
    Trust,
    /// SCRAM-SHA-256 against the roles' verifiers (with channel binding
    /// on TLS connections when the server has a certificate).
    Scram(Arc<dyn Roles>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Trust => f.write_str("Trust"),
            Auth::Scram(_) => f.write_str("Scram"),
        }
    }
}

/// TLS for clients (`sslmode=require` and stronger).
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) acceptor: TlsAcceptor,
    /// The server's certificate chain, PEM: SCRAM's channel binding
    /// hashes it.
    pub(crate) cert_pem: Vec<u8>,
    /// Refuse clients that do not ask for TLS (FATAL 28000).
    pub(crate) required: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From a PEM certificate chain and its PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], required: bool) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the certificate file holds no certificate".to_string());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("the key is not a valid PEM private key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
        Ok(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_pem: cert_pem.to_vec(),
            required,
        })
    }
}

/// Settings of the PostgreSQL front end. Build it with
/// `WireOptions { field: …, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct WireOptions {
    /// The `server_version` announced at startup and answered to `SHOW
    /// server_version`. libpq trusts `in_hot_standby` and
    /// `default_transaction_read_only` only from servers ≥ 14.
    pub server_version: String,
    /// The largest statement accepted, in bytes ([`MAX_STATEMENT_BYTES`]
    /// by default; tests lower it). A frontend message over it (a Query's
    /// or a Parse's SQL text, or a Bind with all its parameters) is refused
    /// with SQLSTATE 54000 and skipped without being buffered; so is an
    /// Execute whose statement text and parameters together exceed it. The
    /// connection goes on.
    pub max_query_bytes: usize,
    /// How clients authenticate.
    pub auth: Auth,
    /// TLS for clients; None answers `N` to SSLRequest.
    pub tls: Option<ClientTls>,
    /// Client connections served at once ([`DEFAULT_MAX_CONNECTIONS`] by
    /// default). The next one is refused with FATAL 53300 ("sorry, too
    /// many clients already"); beyond twice as many sockets (see
    /// `crate::admission`) they are closed at once without a word, so the
    /// process never runs out of file descriptors.
    pub max_connections: usize,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            server_version: "16.0".to_string(),
            max_query_bytes: MAX_STATEMENT_BYTES,
            auth: Auth::Trust,
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}
