//! The leader's side of `resqlite check`: propose a check entry, wait until
//! this node applied it (which hashes its database at that index), gather
//! the voters' hashes there, and propose the hash a majority of them hold
//! as the verdict every member compares with its own.
//!
//! The verdict is the majority's hash, not simply the leader's: a node
//! restarted on a damaged file can win the next election, and its own hash
//! would then brand every healthy node diverged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use resqlite_raft::NodeId;
use resqlite_wire::SqlError;
use tonic::Status;

use super::{peer_status, Node};
use crate::store::check::{self, DbHash};
use crate::store::log_command;

/// How long the leader waits for the voters' hashes before it gives up on
/// a verdict.
const VERDICT_WAIT: Duration = Duration::from_secs(10);
/// Pause between two rounds of questions to the voters.
const POLL: Duration = Duration::from_millis(100);

/// What one check found on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckRun {
    /// Log index of the check entry.
    pub index: u64,
    /// The leader's own hash there.
    pub own: DbHash,
    /// The hash a majority of the voters hold there (the verdict
    /// proposed), if one does.
    pub majority: Option<DbHash>,
}

impl Node {
    /// Runs one consistency check from this node, which must lead.
    pub async fn run_check(&self) -> Result<CheckRun, Status> {
        let outcome = self
            .raft
            .propose(log_command::encode_check())
            .await
            .map_err(|e| check_failed("the check entry", self.propose_error(e)))?
            .map_err(|e| check_failed("the check entry", e))?;
        let (index, own) = check::from_outcome(&outcome).ok_or_else(|| {
            Status::internal("applying the check entry gave no hash (a mixed-version cluster?)")
        })?;
        let majority = self.majority_hash(index, own).await;
        match majority {
            Some(hash) => {
                self.raft
                    .propose(log_command::encode_verdict(index, &hash))
                    .await
                    .map_err(|e| check_failed("the verdict", self.propose_error(e)))?
                    .map_err(|e| check_failed("the verdict", e))?;
            }
            None => tracing::warn!(
                index,
                "consistency check: no hash is held by a majority of the voters; no verdict"
            ),
        }
        Ok(CheckRun {
            index,
            own,
            majority,
        })
    }

    /// Asks the voters for their hash at the check `index` (this node's is
    /// `own`) until one hash is held by a majority of them, every voter has
    /// answered, or [`VERDICT_WAIT`] passes.
    async fn majority_hash(&self, index: u64, own: DbHash) -> Option<DbHash> {
        let me = self.raft.id();
        let voters: BTreeMap<NodeId, String> = self
            .members()
            .into_iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, m)| (id, m.addrs.grpc))
            .collect();
        let quorum = voters.len() / 2 + 1;
        let mut hashes = BTreeMap::new();
        // Voters that applied the check without hashing it (restarted or
        // restored a snapshot since): asking again will not help.
        let mut without = BTreeSet::new();
        if voters.contains_key(&me) {
            hashes.insert(me, own);
        }
        let deadline = Instant::now() + VERDICT_WAIT;
        loop {
            if let Some(hash) = held_by_quorum(&hashes, quorum) {
                return Some(hash);
            }
            let mut asks = tokio::task::JoinSet::new();
            for (&id, grpc) in &voters {
                if hashes.contains_key(&id) || without.contains(&id) {
                    continue;
                }
                let grpc = grpc.clone();
                asks.spawn(async move { (id, peer_status(&grpc).await) });
            }
            if asks.is_empty() || Instant::now() >= deadline {
                return None;
            }
            while let Some(answer) = asks.join_next().await {
                let Ok((id, Ok(status))) = answer else {
                    continue;
                };
                if status.check_index == index {
                    match status.check_hash.parse() {
                        Ok(hash) => {
                            hashes.insert(id, hash);
                        }
                        Err(e) => {
                            tracing::warn!(node = id, error = %e, "consistency check: bad hash");
                            without.insert(id);
                        }
                    }
                } else if status.applied_index >= index {
                    without.insert(id);
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The hash at least `quorum` of `hashes` agree on, if any.
fn held_by_quorum(hashes: &BTreeMap<NodeId, DbHash>, quorum: usize) -> Option<DbHash> {
    let mut counts: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    for h in hashes.values() {
        *counts.entry(h.0).or_default() += 1;
    }
    counts
        .into_iter()
        .find(|&(_, n)| n >= quorum)
        .map(|(h, _)| DbHash(h))
}

/// A check that could not be run, as the Admin service reports it. The
/// message says what to do (retry, or go to the leader).
fn check_failed(what: &str, e: SqlError) -> Status {
    Status::unavailable(format!("{what} was not applied: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_hash_a_quorum_holds() {
        let (a, b) = (DbHash([1; 32]), DbHash([2; 32]));
        let hashes = |v: &[DbHash]| -> BTreeMap<NodeId, DbHash> {
            v.iter()
                .enumerate()
                .map(|(i, h)| (i as u64 + 1, *h))
                .collect()
        };
        assert_eq!(held_by_quorum(&hashes(&[b, a, a]), 2), Some(a));
        assert_eq!(held_by_quorum(&hashes(&[b, a]), 2), None);
        assert_eq!(held_by_quorum(&hashes(&[b, a, b, a]), 3), None);
        assert_eq!(held_by_quorum(&hashes(&[a]), 1), Some(a));
    }
}
