//! The operators' gRPC service: a node's own status, and leadership
//! transfer (`resqlite status`, `resqlite node transfer-leader`, and the
//! hand-over a leader does on SIGTERM).

use std::sync::Arc;
use std::time::Duration;

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::admin_server::Admin;
use resqlite_proto::client::{
    AddNodeRequest, CheckRequest, CheckResponse, MembershipResponse, NodeStatusRequest,
    NodeStatusResponse, PromoteNodeRequest, RemoveNodeRequest, TransferLeaderRequest,
    TransferLeaderResponse,
};
use resqlite_raft::{NodeId, Role};
use tonic::{Request, Response, Status};

use super::Node;

/// Metadata a node sets on a membership request it forwards to the
/// leader, so that a node that is not the leader either never forwards it
/// again (two nodes that each think the other leads would loop).
const FORWARDED: &str = "x-resqlite-forwarded";
/// How long a learner may take to catch up when the request names no limit.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(600);

/// How long a status question to another node may take.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `TransferLeader` waits for another node to lead: the target
/// must catch up, then win one election round.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(3);

/// The gRPC service; add it to the node's tonic server.
pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }
}

/// The name `resqlite status` shows for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    }
}

impl Node {
    /// This node's status as the Admin service reports it.
    pub fn node_status(&self) -> NodeStatusResponse {
        let s = self.raft.status();
        let membership = self.raft.membership();
        let me = self.addrs_of(s.id);
        let checks = self.checks.status();
        // A follower that does not vote says why.
        let role = match s.role {
            Role::Follower if !membership.contains(s.id) => {
                if membership.members.is_empty() {
                    "joining"
                } else {
                    "not a member"
                }
            }
            Role::Follower if !membership.is_voter(s.id) => "learner",
            role => role_name(role),
        };
        NodeStatusResponse {
            id: s.id,
            client_addr: me.as_ref().map(|a| a.client.clone()).unwrap_or_default(),
            grpc_addr: me.as_ref().map(|a| a.grpc.clone()).unwrap_or_default(),
            role: role.to_string(),
            term: s.term,
            leader: s.leader.unwrap_or(0),
            commit_index: s.commit,
            // What the state machine holds (the core counts what it handed
            // out, which runs ahead of a halted state machine).
            applied_index: self.raft.applied_index(),
            last_log_index: s.last_index,
            snapshot_index: s.snapshot,
            members: self.member_addresses(),
            halted: self.raft.halted().unwrap_or_default(),
            check_index: checks.last.map_or(0, |(index, _)| index),
            check_hash: checks.last.map(|(_, h)| h.to_string()).unwrap_or_default(),
            diverged: checks.diverged.unwrap_or_default(),
        }
    }

    /// Hands leadership to `to`, or with `None` to the reachable follower
    /// that has applied the most, and waits (up to `wait`) until another
    /// node leads. Returns the leader afterwards.
    pub async fn hand_over_leadership(
        &self,
        to: Option<NodeId>,
        wait: Duration,
    ) -> Result<Option<NodeId>, Status> {
        let me = self.raft.id();
        if self.raft.status().role != Role::Leader {
            return Err(Status::failed_precondition(format!(
                "node {me} is not the leader (leader: {})",
                self.raft
                    .leader()
                    .map_or_else(|| "unknown".to_string(), |l| l.to_string())
            )));
        }
        let target = match to {
            Some(t) if t == me => return Ok(Some(me)),
            Some(t) if !self.raft.membership().is_voter(t) => {
                return Err(Status::invalid_argument(format!(
                    "node {t} is not a voter of this cluster"
                )))
            }
            Some(t) => t,
            None => self.most_caught_up_follower().await.ok_or_else(|| {
                Status::unavailable("no follower answers: leadership cannot be handed over")
            })?,
        };
        self.raft
            .transfer_leader(target)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let mut status = self.raft.watch_status();
        let moved = tokio::time::timeout(wait, async {
            loop {
                if status.borrow().leader.is_some_and(|l| l != me) {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if moved.is_err() {
            return Err(Status::deadline_exceeded(format!(
                "node {target} did not take over within {wait:?}"
            )));
        }
        Ok(self.raft.leader())
    }

    /// The follower with the highest applied index among those that answer.
    async fn most_caught_up_follower(&self) -> Option<NodeId> {
        let me = self.raft.id();
        let mut asks = tokio::task::JoinSet::new();
        let voters = self.members().into_iter().filter(|(_, m)| m.voter);
        for (id, m) in voters.filter(|(id, _)| *id != me) {
            let grpc = m.addrs.grpc;
            asks.spawn(async move { Some((peer_status(&grpc).await.ok()?.applied_index, id)) });
        }
        let mut best: Option<(u64, NodeId)> = None;
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(candidate)) = answer {
                best = best.max(Some(candidate));
            }
        }
        best.map(|(_, id)| id)
    }
}

/// Asks the node at gRPC address `grpc` (`host:port`) for its status.
pub async fn peer_status(grpc: &str) -> anyhow::Result<NodeStatusResponse> {
    let ask = async {
        let mut client = crate::grpc_tls::admin_client(grpc).await?;
        anyhow::Ok(client.node_status(NodeStatusRequest {}).await?.into_inner())
    };
    tokio::time::timeout(PEER_STATUS_TIMEOUT, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {PEER_STATUS_TIMEOUT:?}"))?
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        Ok(Response::new(self.node.node_status()))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let to = Some(request.into_inner().to).filter(|&t| t != 0);
        let leader = self.node.hand_over_leadership(to, TRANSFER_WAIT).await?;
        let leader_client_addr = leader
            .and_then(|l| self.node.addrs_of(l))
            .map(|a| a.client)
            .unwrap_or_default();
        Ok(Response::new(TransferLeaderResponse {
            leader: leader.unwrap_or(0),
            leader_client_addr,
        }))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(client) = self.leader_client(&request).await? {
            return forward(
                request,
                |mut c, r| async move { c.add_node(r).await },
                client,
            )
            .await;
        }
        let r = request.into_inner();
        self.node
            .add_node(super::AddNode {
                id: r.id,
                grpc: r.grpc_addr,
                client: r.client_addr,
                voter: r.voter,
                empty: r.empty,
                catch_up: catch_up_timeout(r.catch_up_timeout_ms),
            })
            .await?;
        Ok(Response::new(
            self.node.membership_answer(self.node.raft().leader()),
        ))
    }

    async fn promote_node(
        &self,
        request: Request<PromoteNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(client) = self.leader_client(&request).await? {
            let call = |mut c: AdminClient<tonic::transport::Channel>, r| async move {
                c.promote_node(r).await
            };
            return forward(request, call, client).await;
        }
        let r = request.into_inner();
        self.node
            .promote_node(r.id, catch_up_timeout(r.catch_up_timeout_ms))
            .await?;
        Ok(Response::new(
            self.node.membership_answer(self.node.raft().leader()),
        ))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        if let Some(client) = self.leader_client(&request).await? {
            let call = |mut c: AdminClient<tonic::transport::Channel>, r| async move {
                c.remove_node(r).await
            };
            return forward(request, call, client).await;
        }
        let leader = self.node.remove_node(request.into_inner().id).await?;
        Ok(Response::new(self.node.membership_answer(leader)))
    }

    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        if let Some(client) = self.leader_client(&request).await? {
            let call =
                |mut c: AdminClient<tonic::transport::Channel>, r| async move { c.check(r).await };
            return forward(request, call, client).await;
        }
        let run = self.node.run_check().await?;
        Ok(Response::new(CheckResponse {
            index: run.index,
            hash: run.own.to_string(),
            leader: self.node.raft().id(),
            majority_hash: run.majority.map(|h| h.to_string()).unwrap_or_default(),
        }))
    }
}

impl AdminService {
    /// `None` when this node leads and serves the request itself; else a
    /// client to the leader to forward it to. A request that was already
    /// forwarded once is refused instead.
    async fn leader_client<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<AdminClient<tonic::transport::Channel>>, Status> {
        if self.node.leads() {
            return Ok(None);
        }
        if request.metadata().contains_key(FORWARDED) {
            return Err(self.node.not_leader());
        }
        let Some(grpc) = self.node.leader_grpc() else {
            return Err(Status::unavailable(
                "no leader is known right now; retry in a moment",
            ));
        };
        let client = crate::grpc_tls::admin_client(&grpc)
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the leader at {grpc}: {e}")))?;
        Ok(Some(client))
    }
}

/// Sends `request` on to the leader through `client` and returns its answer.
async fn forward<T, R, F, Fut>(
    request: Request<T>,
    call: F,
    client: AdminClient<tonic::transport::Channel>,
) -> Result<Response<R>, Status>
where
    F: FnOnce(AdminClient<tonic::transport::Channel>, Request<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, Status>>,
{
    let mut onward = Request::new(request.into_inner());
    onward
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    call(client, onward).await
}

fn catch_up_timeout(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_CATCH_UP
    } else {
        Duration::from_millis(ms)
    }
}
