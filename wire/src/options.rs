//! What the front end is configured with.

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
    /// The largest frontend message accepted, in bytes: a Query's or a
    /// Parse's SQL text, or a Bind with all its parameters. A larger one is
    /// refused with SQLSTATE 54000 and skipped without being buffered; the
    /// connection goes on.
    pub max_query_bytes: usize,
    /// How clients authenticate.
    pub auth: Auth,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            server_version: "16.0".to_string(),
            max_query_bytes: 64 << 20,
            auth: Auth::Trust,
        }
    }
}
