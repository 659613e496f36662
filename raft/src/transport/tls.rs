//! Mutual TLS between nodes: which certificate proves which node.
//!
//! Every certificate is issued by the cluster's own CA (`resqlite certs`),
//! and names what it may act as in its DNS subject alternative names, never
//! as an address (nodes move; identities do not):
//! - a node's certificate holds [`node_name`]`(id)` and [`CLUSTER_NAME`];
//! - an operator's holds [`ADMIN_NAME`].
//!
//! TLS itself (rustls, through tonic) proves that the peer holds the private
//! key of a certificate the cluster's CA signed. What the peer may do is
//! then decided by the names: a Raft message is accepted only when the
//! sender's certificate names the node the message claims to come from, so
//! an operator's or another node's certificate cannot forge it. A node
//! dialling a peer checks the peer's certificate for that peer's name, so a
//! node answering on a moved address cannot stand in for another.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::types::NodeId;

/// The name every node's certificate holds; what an admin client checks.
pub const CLUSTER_NAME: &str = "cluster.resqlite";

/// The name an operator's (admin) certificate holds.
pub const ADMIN_NAME: &str = "admin.resqlite";

/// How long a TLS handshake may take before the connection is dropped, so
/// half-open handshakes cannot pile up.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The name node `id`'s certificate holds.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.resqlite")
}

/// The CA, and this party's certificate and key, all PEM.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Client side: present our certificate and accept only a server whose
    /// certificate, issued by the CA, holds `server_name`.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Server side: present our certificate and require every client to
    /// present one issued by the CA (who it is is checked per request).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// Whether the leaf of `certs` (a TLS peer's chain, already verified
/// against the CA by the handshake) holds the DNS name `name`.
pub fn certificate_names(certs: Option<&Arc<Vec<CertificateDer<'static>>>>, name: &str) -> bool {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(dns) = DnsName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
        .is_ok()
}

/// Who sent a Raft request, as far as TLS can tell: checked against the
/// `from` of every message the request carries.
#[derive(Clone, Debug)]
pub(crate) enum SenderCheck {
    /// TLS is off (a loopback cluster, tests): messages are taken as sent.
    Off,
    /// The peer's verified certificate chain (None: it presented none).
    Certificates {
        certs: Option<Arc<Vec<CertificateDer<'static>>>>,
        /// The last `from` found valid, so a stream checks a name once.
        proven: Option<NodeId>,
    },
}

impl SenderCheck {
    /// Whether the peer's certificate names node `from`.
    pub(crate) fn allows(&mut self, from: NodeId) -> bool {
        match self {
            SenderCheck::Off => true,
            SenderCheck::Certificates { certs, proven } => {
                if *proven == Some(from) {
                    return true;
                }
                let ok = certificate_names(certs.as_ref(), &node_name(from));
                if ok {
                    *proven = Some(from);
                }
                ok
            }
        }
    }
}
