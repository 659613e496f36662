//! `resqlite check` from a test, through the Admin RPC: one check entry
//! through the Raft log, then every member's own hash at that entry,
//! compared with the hash a majority of the voters hold. The Jepsen schedules and the compat suite
//! end with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::{CheckRequest, CheckResponse, NodeStatusRequest, NodeStatusResponse};

use crate::cluster::NodeId;
use crate::sql_cluster::SqlCluster;

/// How long one Admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two rounds of questions.
const POLL: Duration = Duration::from_millis(100);

/// What a check found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Log index of the check entry.
    pub index: u64,
    /// The leader that ran it.
    pub leader: NodeId,
    /// The leader's own hash there (hex).
    pub leader_hash: String,
    /// The hash a majority of the voters hold there (hex; empty: none).
    pub majority_hash: String,
    /// Each member's own hash at the check, or why there is none.
    pub members: BTreeMap<NodeId, Result<String, String>>,
    /// Members that report themselves diverged, with their reason.
    pub diverged: BTreeMap<NodeId, String>,
}

impl CheckReport {
    /// Whether every member answered with the majority's hash.
    pub fn identical(&self) -> bool {
        !self.majority_hash.is_empty()
            && self
                .members
                .values()
                .all(|h| h.as_ref().is_ok_and(|h| *h == self.majority_hash))
    }

    /// One line per member, as `resqlite check` prints them.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "check at index {} by leader node {} (own hash {}), majority hash {}",
            self.index,
            self.leader,
            self.leader_hash,
            if self.majority_hash.is_empty() {
                "NONE"
            } else {
                &self.majority_hash
            }
        );
        for (id, h) in &self.members {
            let line = match h {
                Ok(h) if *h == self.majority_hash => format!("node {id} ok"),
                Ok(h) => format!("node {id} MISMATCH {h}"),
                Err(why) => format!("node {id} {why}"),
            };
            out.push_str("; ");
            out.push_str(&line);
        }
        for (id, why) in &self.diverged {
            out.push_str(&format!("; node {id} diverged: {why}"));
        }
        out
    }
}

async fn admin(grpc: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let connect = crate::grpc::channel(grpc);
    let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("{grpc}: no connection within {CALL_TIMEOUT:?}"))??;
    Ok(AdminClient::new(channel))
}

/// `call` on `grpc`'s Admin service, within [`CALL_TIMEOUT`].
async fn call<T, F>(grpc: &str, what: &str, call: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    Ok(tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{grpc}: no {what} within {CALL_TIMEOUT:?}"))??
        .into_inner())
}

async fn status(grpc: &str) -> anyhow::Result<NodeStatusResponse> {
    let mut c = admin(grpc).await?;
    call(grpc, "status", c.node_status(NodeStatusRequest {})).await
}

async fn run_at(grpc: &str) -> anyhow::Result<CheckResponse> {
    let mut c = admin(grpc).await?;
    call(grpc, "check answer", c.check(CheckRequest {})).await
}

/// Runs a check through any of `members` (id → gRPC address; retried
/// through elections), then waits until each member has applied it, all
/// within `timeout`. A member that has not by then is reported as such.
pub async fn run_check(
    members: &BTreeMap<NodeId, String>,
    timeout: Duration,
) -> anyhow::Result<CheckReport> {
    let deadline = Instant::now() + timeout;
    let mut last_error = anyhow!("no member to ask");
    let reply = 'ran: loop {
        for grpc in members.values() {
            match run_at(grpc).await {
                Ok(r) => break 'ran r,
                Err(e) => last_error = e,
            }
        }
        if Instant::now() >= deadline {
            bail!("the check could not run within {timeout:?}: {last_error:#}");
        }
        tokio::time::sleep(POLL).await;
    };
    let mut found: BTreeMap<NodeId, Result<String, String>> = BTreeMap::new();
    let mut diverged = BTreeMap::new();
    loop {
        for (&id, grpc) in members {
            if found.get(&id).is_some_and(Result::is_ok) {
                continue;
            }
            let answer = match status(grpc).await {
                Ok(s) => {
                    if !s.diverged.is_empty() {
                        diverged.insert(id, s.diverged.clone());
                    }
                    if s.check_index == reply.index {
                        Ok(s.check_hash)
                    } else if s.applied_index >= reply.index {
                        Err(format!(
                            "applied index {} without hashing check {} (its newest check: {})",
                            s.applied_index, reply.index, s.check_index
                        ))
                    } else {
                        Err(format!(
                            "behind: applied {} < check {}",
                            s.applied_index, reply.index
                        ))
                    }
                }
                Err(e) => Err(format!("unreachable: {e:#}")),
            };
            found.insert(id, answer);
        }
        if found.values().all(Result::is_ok) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(CheckReport {
        index: reply.index,
        leader: reply.leader,
        leader_hash: reply.hash,
        majority_hash: reply.majority_hash,
        members: found,
        diverged,
    })
}

/// [`run_check`] over every running node of `cluster`, at their own gRPC
/// addresses.
pub async fn check_cluster(cluster: &SqlCluster, timeout: Duration) -> anyhow::Result<CheckReport> {
    let members = cluster
        .running()
        .into_iter()
        .map(|id| (id, cluster.grpc_addr(id)))
        .collect();
    run_check(&members, timeout).await
}
