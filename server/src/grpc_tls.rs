//! TLS on the gRPC port, for the Admin and ClientCommand services: how
//! this process dials a node, and who may call them.
//!
//! Raft traffic is authenticated inside the raft crate (every message's
//! sender must be named by its certificate). The Admin and ClientCommand
//! services run any SQL and change the membership, so with TLS on they
//! answer only an operator's certificate (`admin.resqlite`) or a node's
//! (`cluster.resqlite`: nodes forward admin requests to the leader and ask
//! each other for status). Which certificate a party holds was proven by
//! the TLS handshake against the cluster's CA.

use std::sync::OnceLock;

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_raft::transport::tls::{certificate_names, TlsFiles, ADMIN_NAME, CLUSTER_NAME};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// What this process presents when it calls a node's Admin service: the
/// node's own certificate in `resqlite serve`, the operator's in the CLI;
/// None when the cluster runs without TLS.
static DIAL_AS: OnceLock<Option<TlsFiles>> = OnceLock::new();

/// Sets, once per process, the credentials [`admin_client`] dials with.
pub fn dial_as(files: Option<TlsFiles>) {
    let _ = DIAL_AS.set(files);
}

fn credentials() -> Option<&'static TlsFiles> {
    DIAL_AS.get().and_then(|f| f.as_ref())
}

/// A channel to the node at `addr` (`host:port`): TLS, checking that the
/// server is a node of the cluster, when this process has credentials.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    match credentials() {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.client_config(CLUSTER_NAME)),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// An Admin client connected to the node at `addr`.
pub async fn admin_client(addr: &str) -> Result<AdminClient<Channel>, tonic::transport::Error> {
    let channel = endpoint(addr)?.connect().await?;
    Ok(AdminClient::new(channel))
}

/// The interceptor of the Admin and ClientCommand services: with TLS on
/// (`required`), only an operator's or a node's certificate may call.
pub fn operators_and_nodes(
    required: bool,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |request: Request<()>| {
        if !required {
            return Ok(request);
        }
        let certs = request.peer_certs();
        if certificate_names(certs.as_ref(), ADMIN_NAME)
            || certificate_names(certs.as_ref(), CLUSTER_NAME)
        {
            Ok(request)
        } else {
            Err(Status::permission_denied(
                "this service needs an admin or node certificate of the cluster's CA",
            ))
        }
    }
}
