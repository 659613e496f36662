//! The senders to the other members, following the configuration in force:
//! one sender per member other than this node, started when a member is
//! added and dropped (its task ends) when it is removed.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use crate::driver::snapshot_dir::Current;
use crate::transport::peer::{spawn_peer, PeerHandle, PeerLinks};
use crate::transport::{Inbound, TransportOptions};
use crate::types::{Membership, NodeId};

/// A running sender and the URL it talks to.
struct Sender {
    url: String,
    handle: PeerHandle,
}

/// What a sender is built from, and the senders.
pub(crate) struct Peers {
    senders: BTreeMap<NodeId, Sender>,
    /// URLs from the node's own configuration, for members whose address
    /// the log does not carry (those the cluster was started with).
    configured: BTreeMap<NodeId, String>,
    inbound: mpsc::Sender<Inbound>,
    snapshots: Current,
    snapshot_failures: mpsc::Sender<NodeId>,
    options: TransportOptions,
}

/// A member no sender could be started for.
#[derive(Debug)]
pub(crate) struct Unreachable {
    pub(crate) peer: NodeId,
    pub(crate) url: String,
    pub(crate) source: Option<tonic::transport::Error>,
}

impl Peers {
    pub(crate) fn new(
        configured: BTreeMap<NodeId, String>,
        inbound: mpsc::Sender<Inbound>,
        snapshots: Current,
        snapshot_failures: mpsc::Sender<NodeId>,
        options: TransportOptions,
    ) -> Self {
        Peers {
            senders: BTreeMap::new(),
            configured,
            inbound,
            snapshots,
            snapshot_failures,
            options,
        }
    }

    /// The sender to `peer`, if it is a member.
    pub(crate) fn get(&self, peer: NodeId) -> Option<&PeerHandle> {
        self.senders.get(&peer).map(|s| &s.handle)
    }

    /// Starts senders for the members of `membership` that have none (or
    /// whose address changed) and drops those of non-members. Returns the
    /// members that could not be given one.
    pub(crate) fn sync(&mut self, me: NodeId, membership: &Membership) -> Vec<Unreachable> {
        self.senders
            .retain(|id, _| *id != me && membership.contains(*id));
        let mut failed = Vec::new();
        for (&id, member) in membership.members.iter().filter(|(&id, _)| id != me) {
            let url = if member.raft_addr.is_empty() {
                self.configured.get(&id).cloned().unwrap_or_default()
            } else {
                to_url(&member.raft_addr)
            };
            if url.is_empty() {
                failed.push(Unreachable {
                    peer: id,
                    url,
                    source: None,
                });
                continue;
            }
            if self.senders.get(&id).is_some_and(|s| s.url == url) {
                continue;
            }
            let links = PeerLinks {
                inbound: self.inbound.clone(),
                snapshots: self.snapshots.clone(),
                snapshot_failures: self.snapshot_failures.clone(),
            };
            match spawn_peer(me, id, &url, links, &self.options) {
                Ok(handle) => {
                    tracing::info!(node = me, peer = id, url = %url, "sending to member");
                    self.senders.insert(id, Sender { url, handle });
                }
                Err(source) => failed.push(Unreachable {
                    peer: id,
                    url,
                    source: Some(source),
                }),
            }
        }
        for u in &failed {
            tracing::error!(
                node = me,
                peer = u.peer,
                url = %u.url,
                error = ?u.source,
                "no usable address for this member; it gets no messages from this node"
            );
        }
        failed
    }
}

/// `host:port` as the URL tonic connects to; a full URL is kept.
fn to_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}
