//! gRPC channels to test nodes: plaintext, or mutual TLS with the operator
//! certificate of a cluster started with [`crate::sql_cluster::SqlCluster::secure`].
//!
//! Which addresses speak TLS is kept in a process-wide map (ports are
//! unique within a test process), so helpers that only know an address
//! (`check`, `local_rows`) dial it the right way.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use resqlite_raft::transport::tls::{TlsFiles, CLUSTER_NAME};
use tonic::transport::{Channel, Endpoint};

fn registry() -> &'static Mutex<HashMap<String, TlsFiles>> {
    static TLS: OnceLock<Mutex<HashMap<String, TlsFiles>>> = OnceLock::new();
    TLS.get_or_init(Default::default)
}

/// From now on, `addr` (`host:port`) is dialled with mutual TLS as `files`.
pub fn register_tls(addr: &str, files: TlsFiles) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(addr.to_string(), files);
}

/// An endpoint for `addr`, TLS if it was registered.
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let tls = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(addr)
        .cloned();
    let endpoint = match tls {
        Some(files) => Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(files.client_config(CLUSTER_NAME))?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint.connect_timeout(Duration::from_secs(2)))
}

/// A connected channel to `addr`.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?.connect().await?)
}
