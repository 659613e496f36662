//! Who the cluster's members are and how to reach them, and the operators'
//! membership changes (add a learner, promote it once caught up, remove a
//! member), one server at a time through the Raft log.

use std::collections::BTreeMap;
use std::time::Duration;

use resqlite_proto::client::MemberAddress;
use resqlite_raft::driver::ProposeError;
use resqlite_raft::{Member, Membership, MembershipChange, NodeId, Role};
use tonic::Status;

use super::{Node, PeerAddrs};

/// A learner is caught up once it holds the leader's snapshot and its log
/// is at most this many entries behind the leader's: close enough that, as
/// a voter, it will not hold back commits while it fetches the rest.
pub const CATCH_UP_MAX_LAG: u64 = 256;
/// How long a change waits for a leader that has not committed an entry
/// of its term yet, or for the previous change to commit.
const CHANGE_RETRY_FOR: Duration = Duration::from_secs(5);
/// How often a waiting change looks again.
const POLL: Duration = Duration::from_millis(50);

/// A request to add a node (see [`Node::add_node`]).
#[derive(Clone, Debug)]
pub struct AddNode {
    /// The new node's id.
    pub id: NodeId,
    /// Its gRPC address.
    pub grpc: String,
    /// Its PostgreSQL address.
    pub client: String,
    /// Promote it once caught up.
    pub voter: bool,
    /// It holds no Raft state (a node that just started to join).
    pub empty: bool,
    /// How long it may take to catch up.
    pub catch_up: Duration,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// How to reach it.
    pub addrs: PeerAddrs,
    /// Whether it votes (false: a learner).
    pub voter: bool,
}

impl Node {
    /// Every member of the configuration in force, with its addresses: those
    /// the log carries, else those from this node's flags. A node that is
    /// joining (no configuration yet) knows only itself.
    pub fn members(&self) -> BTreeMap<NodeId, MemberView> {
        let membership = self.raft.membership();
        if membership.members.is_empty() {
            let me = self.raft.id();
            return self
                .configured
                .get(&me)
                .map(|a| {
                    let view = MemberView {
                        addrs: a.clone(),
                        voter: false,
                    };
                    BTreeMap::from([(me, view)])
                })
                .unwrap_or_default();
        }
        membership
            .members
            .iter()
            .map(|(&id, m)| (id, self.view(id, m)))
            .collect()
    }

    /// Member `id` as this node sees it: the addresses the log carries,
    /// else those from this node's flags.
    fn view(&self, id: NodeId, m: &Member) -> MemberView {
        let known = self.configured.get(&id);
        let pick = |logged: &String, flag: Option<&String>| {
            if logged.is_empty() {
                flag.cloned().unwrap_or_default()
            } else {
                logged.clone()
            }
        };
        MemberView {
            addrs: PeerAddrs {
                client: pick(&m.client_addr, known.map(|k| &k.client)),
                grpc: pick(&m.raft_addr, known.map(|k| &k.grpc)),
            },
            voter: m.voter,
        }
    }

    /// How to reach member `id` (this node's own flags for itself). On the
    /// path of every redirect: looks up the one member, copies nothing else.
    pub fn addrs_of(&self, id: NodeId) -> Option<PeerAddrs> {
        if id == self.raft.id() {
            if let Some(me) = self.configured.get(&id) {
                return Some(me.clone());
            }
        }
        let membership = self.raft.watch_membership();
        let member = membership.borrow().members.get(&id).cloned()?;
        Some(self.view(id, &member).addrs)
    }

    /// The members for the Admin service's answers.
    pub fn member_addresses(&self) -> Vec<MemberAddress> {
        self.members()
            .into_iter()
            .map(|(id, m)| MemberAddress {
                id,
                client_addr: m.addrs.client,
                grpc_addr: m.addrs.grpc,
                voter: m.voter,
            })
            .collect()
    }

    /// Leader: adds `id` as a learner at the given addresses; with `voter`,
    /// then promotes it once it has caught up (within `catch_up`). Adding
    /// a member again with the same addresses is not an error, so a node
    /// that retries its join goes on where it stopped; but a node that
    /// holds no state (`empty`) cannot take over the id of a voter.
    pub async fn add_node(&self, request: AddNode) -> Result<(), Status> {
        let AddNode {
            id,
            grpc,
            client,
            voter,
            empty,
            catch_up,
        } = request;
        if grpc.trim().is_empty() || client.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a new node needs its gRPC and PostgreSQL addresses",
            ));
        }
        match self.members().get(&id) {
            Some(m) if m.addrs.grpc != grpc || m.addrs.client != client => {
                return Err(Status::already_exists(format!(
                    "node {id} is already a member at {} (postgres {}); remove it first",
                    m.addrs.grpc, m.addrs.client
                )))
            }
            Some(m) if m.voter && empty => {
                return Err(Status::already_exists(format!(
                    "node {id} is a voter of this cluster, and this node with that id holds no \
                     data: a voter that lost its disk must not come back under its old id \
                     (remove it, then add this node with a new id)"
                )))
            }
            Some(m) if m.voter || !voter => return Ok(()),
            Some(_) => {}
            None => {
                let change = MembershipChange::AddLearner {
                    id,
                    raft_addr: grpc,
                    client_addr: client,
                };
                self.change(change).await?;
                tracing::info!(node = id, "learner added");
            }
        }
        if voter {
            self.promote_node(id, catch_up).await?;
        }
        Ok(())
    }

    /// Leader: makes learner `id` a voter once its log is within
    /// [`CATCH_UP_MAX_LAG`] entries of the leader's (waiting up to
    /// `catch_up`). A voter already is one: nothing to do.
    pub async fn promote_node(&self, id: NodeId, catch_up: Duration) -> Result<(), Status> {
        match self.members().get(&id) {
            None => {
                return Err(Status::not_found(format!(
                    "node {id} is not a member; add it first"
                )))
            }
            Some(m) if m.voter => return Ok(()),
            Some(_) => {}
        }
        self.wait_caught_up(id, catch_up).await?;
        self.change(MembershipChange::Promote { id }).await?;
        tracing::info!(node = id, "learner promoted to voter");
        Ok(())
    }

    /// Leader: removes member `id`. When it is this node, the change
    /// commits, this node hands leadership to the most caught-up voter and
    /// steps down. Returns the leader afterwards, when known.
    pub async fn remove_node(&self, id: NodeId) -> Result<Option<NodeId>, Status> {
        if !self.raft.membership().contains(id) {
            return Ok(self.raft.leader());
        }
        self.change(MembershipChange::Remove { id }).await?;
        tracing::info!(node = id, "member removed");
        if id != self.raft.id() {
            return Ok(self.raft.leader());
        }
        // No longer a member, this node hears from no leader: ask the
        // others who leads now (the cluster elects one without us if the
        // hand-over message is lost).
        let deadline = tokio::time::Instant::now() + super::TRANSFER_WAIT * 2;
        while tokio::time::Instant::now() < deadline {
            for m in self.members().into_values() {
                if let Ok(s) = super::peer_status(&m.addrs.grpc).await {
                    if s.role == "leader" {
                        return Ok(Some(s.id));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(None)
    }

    /// The answer to a membership change: the members, and the leader.
    pub fn membership_answer(
        &self,
        leader: Option<NodeId>,
    ) -> resqlite_proto::client::MembershipResponse {
        resqlite_proto::client::MembershipResponse {
            members: self.member_addresses(),
            leader: leader.unwrap_or(0),
        }
    }

    /// Proposes one change to the configuration in force, with every
    /// member's addresses written out (so a node that joins later learns
    /// them from the log). Retries while a previous change or the leader's
    /// first commit is pending.
    async fn change(&self, change: MembershipChange) -> Result<(), Status> {
        let give_up = tokio::time::Instant::now() + CHANGE_RETRY_FOR;
        loop {
            let next = change
                .apply_to(&self.membership_with_addresses())
                .map_err(Status::failed_precondition)?;
            match self.raft.change_membership(next).await {
                Ok(()) => return Ok(()),
                Err(ProposeError::ChangeInProgress(why)) => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(Status::unavailable(why));
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(change_error(e)),
            }
        }
    }

    /// The configuration in force with the addresses of the members the
    /// cluster was started with filled in from this node's flags.
    fn membership_with_addresses(&self) -> Membership {
        let mut membership = self.raft.membership();
        let views = self.members();
        for (id, m) in membership.members.iter_mut() {
            if let Some(view) = views.get(id) {
                m.raft_addr = view.addrs.grpc.clone();
                m.client_addr = view.addrs.client.clone();
            }
        }
        membership
    }

    /// Waits until learner `id`'s log is within [`CATCH_UP_MAX_LAG`]
    /// entries of this leader's.
    async fn wait_caught_up(&self, id: NodeId, timeout: Duration) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_report = tokio::time::Instant::now();
        loop {
            let progress = self
                .raft
                .member_progress()
                .await
                .map_err(change_error)?
                .ok_or_else(|| self.not_leader())?;
            let matched = progress.get(&id).copied().unwrap_or(0);
            let status = self.raft.status();
            let last = status.last_index;
            // Below the leader's snapshot it still needs the whole snapshot,
            // however few entries the log holds after it.
            if matched > 0 && matched >= status.snapshot && matched + CATCH_UP_MAX_LAG >= last {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} has not caught up within {timeout:?} (its log matches up to \
                     {matched} of {last}); it stays a learner — promote it later"
                )));
            }
            if now - last_report >= Duration::from_secs(5) {
                last_report = now;
                tracing::info!(
                    node = id,
                    matched,
                    last,
                    "waiting for the learner to catch up"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The error for a request only the leader can serve.
    pub fn not_leader(&self) -> Status {
        let leader = self.raft.leader().filter(|&l| l != self.raft.id());
        Status::failed_precondition(format!(
            "node {} is not the leader (leader: {})",
            self.raft.id(),
            leader.map_or_else(|| "unknown".to_string(), |l| l.to_string())
        ))
    }

    /// Whether this node leads now.
    pub fn leads(&self) -> bool {
        self.raft.status().role == Role::Leader
    }
}

/// A refused or failed change as the Admin service reports it.
fn change_error(e: ProposeError) -> Status {
    match e {
        ProposeError::InvalidChange(why) => Status::failed_precondition(why),
        ProposeError::ChangeInProgress(why) => Status::unavailable(why),
        ProposeError::NotLeader { leader } => Status::failed_precondition(format!(
            "not the leader (leader: {})",
            leader.map_or_else(|| "unknown".to_string(), |l| l.to_string())
        )),
        ProposeError::OutcomeUnknown => Status::unknown(
            "leadership changed before the change was confirmed; check `resqlite node list`",
        ),
        other => Status::unavailable(other.to_string()),
    }
}
