//! What the front end is configured with.

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

/// How clients prove who they are at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// Any user, no password (PostgreSQL's `trust`).
    #[default]
    Trust,
}

/// Settings of the PostgreSQL front end. Build it with
/// `WireOptions { field: …, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}
