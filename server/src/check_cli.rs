//! `resqlite check`: runs a consistency check through the Raft log, then
//! asks every member, each about itself, for its hash at that check, and
//! prints one line per member. Exits non-zero unless every member answered
//! with the hash a majority of the voters hold (the check's verdict).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use resqlite::node::peer_status;
use resqlite_proto::client::{CheckRequest, NodeStatusResponse};

use crate::cli::CheckArgs;

/// How often the members are asked again while some have not applied the
/// check yet.
const POLL: Duration = Duration::from_millis(200);

/// What one member says about the check.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Finding {
    /// Its hash at the check.
    Hash(String),
    /// It had not applied the check by the deadline.
    Behind { applied: u64 },
    /// It applied the check's index without hashing it in this process
    /// (restarted, or restored a snapshot past it), or a newer check
    /// replaced it.
    NotChecked { its_check: u64 },
    /// It did not answer.
    Unreachable(String),
}

impl Finding {
    /// Whether asking again may change the answer.
    fn settled(&self) -> bool {
        matches!(self, Finding::Hash(_) | Finding::NotChecked { .. })
    }
}

/// A member's line in the report.
struct Line<'a> {
    id: u64,
    index: u64,
    /// The verdict: the hash a majority of the voters hold (none: no
    /// hash is).
    majority: Option<&'a str>,
    finding: &'a Finding,
}

impl Line<'_> {
    fn ok(&self) -> bool {
        matches!(self.finding, Finding::Hash(h) if Some(h.as_str()) == self.majority)
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (index, hash, verdict) = match self.finding {
            Finding::Hash(h) if Some(h.as_str()) == self.majority => {
                (self.index.to_string(), h.as_str(), "ok".to_string())
            }
            Finding::Hash(h) if self.majority.is_none() => {
                (self.index.to_string(), h.as_str(), "undecided".to_string())
            }
            Finding::Hash(h) => (self.index.to_string(), h.as_str(), "MISMATCH".to_string()),
            Finding::Behind { applied } => (
                "-".to_string(),
                "-",
                format!("behind (applied {applied} at the deadline)"),
            ),
            Finding::NotChecked { its_check } => (
                "-".to_string(),
                "-",
                format!(
                    "not checked (its newest check is at index {its_check}: restarted, \
                     restored a snapshot or ran a newer check; run the check again)"
                ),
            ),
            Finding::Unreachable(why) => ("-".to_string(), "-", format!("unreachable ({why})")),
        };
        write!(f, "node {}  index {index}  hash {hash}  {verdict}", self.id)
    }
}

/// `resqlite check`.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let node = &args.admin.node;
    let mut client = resqlite::grpc_tls::admin_client(node)
        .await
        .with_context(|| format!("cannot reach a node at {node}"))?;
    let reply = client
        .check(CheckRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("the check could not run: {}", s.message()))?
        .into_inner();
    let majority = Some(reply.majority_hash.as_str()).filter(|h| !h.is_empty());
    match majority {
        Some(h) => println!(
            "check entry at index {}, run by leader node {}; a majority of the voters hold {h}",
            reply.index, reply.leader
        ),
        None => println!(
            "check entry at index {}, run by leader node {}; NO hash is held by a majority of \
             the voters",
            reply.index, reply.leader
        ),
    }
    let members = peer_status(node)
        .await
        .with_context(|| format!("cannot ask {node} for the members"))?
        .members;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let findings = collect(
        members.into_iter().map(|m| (m.id, m.grpc_addr)).collect(),
        reply.index,
        deadline,
    )
    .await;
    let mut failed = 0;
    let mut diverged = Vec::new();
    for (id, (finding, status)) in &findings {
        let line = Line {
            id: *id,
            index: reply.index,
            majority,
            finding,
        };
        println!("{line}");
        if !line.ok() {
            failed += 1;
        }
        if let Some(s) = status.as_ref().filter(|s| !s.diverged.is_empty()) {
            diverged.push(format!("node {id} reports itself diverged: {}", s.diverged));
        }
    }
    for d in &diverged {
        println!("{d}");
    }
    if majority.is_none() {
        bail!(
            "no database is held by a majority of the voters at index {}: compare the \
             members' data before rebuilding any of them",
            reply.index
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {} members do not hold the majority's database at index {}",
            findings.len(),
            reply.index
        );
    }
    println!(
        "all {} members hold identical databases at index {}",
        findings.len(),
        reply.index
    );
    Ok(())
}

/// Asks each member (id → gRPC address) until it has applied the check at
/// `index` or `deadline` passes; returns its finding and its last status.
async fn collect(
    members: BTreeMap<u64, String>,
    index: u64,
    deadline: Instant,
) -> BTreeMap<u64, (Finding, Option<NodeStatusResponse>)> {
    let mut found: BTreeMap<u64, (Finding, Option<NodeStatusResponse>)> = members
        .keys()
        .map(|&id| (id, (Finding::Unreachable("not asked yet".into()), None)))
        .collect();
    loop {
        let mut asks = tokio::task::JoinSet::new();
        for (&id, grpc) in &members {
            if found.get(&id).is_some_and(|(f, _)| f.settled()) {
                continue;
            }
            let grpc = grpc.clone();
            asks.spawn(async move { (id, peer_status(&grpc).await) });
        }
        if asks.is_empty() {
            return found;
        }
        while let Some(answer) = asks.join_next().await {
            let Ok((id, answer)) = answer else { continue };
            let entry = match answer {
                Ok(s) => (finding(&s, index), Some(s)),
                Err(e) => (Finding::Unreachable(format!("{e:#}")), None),
            };
            found.insert(id, entry);
        }
        if Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a member's status says about the check at `index`.
fn finding(s: &NodeStatusResponse, index: u64) -> Finding {
    if s.check_index == index {
        Finding::Hash(s.check_hash.clone())
    } else if s.applied_index >= index {
        Finding::NotChecked {
            its_check: s.check_index,
        }
    } else {
        Finding::Behind {
            applied: s.applied_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(applied: u64, check_index: u64, hash: &str) -> NodeStatusResponse {
        NodeStatusResponse {
            applied_index: applied,
            check_index,
            check_hash: hash.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_member_is_ok_only_with_the_leaders_hash_at_that_check() {
        let line = |f: &Finding| {
            let l = Line {
                id: 2,
                index: 9,
                majority: Some("aa"),
                finding: f,
            };
            (l.ok(), l.to_string())
        };
        let same = finding(&status(12, 9, "aa"), 9);
        assert_eq!(line(&same), (true, "node 2  index 9  hash aa  ok".into()));
        let other = finding(&status(12, 9, "bb"), 9);
        assert_eq!(
            line(&other),
            (false, "node 2  index 9  hash bb  MISMATCH".into())
        );
        let behind = finding(&status(5, 0, ""), 9);
        assert!(!behind.settled());
        assert!(!line(&behind).0 && line(&behind).1.contains("behind (applied 5"));
        let restarted = finding(&status(12, 0, ""), 9);
        assert!(restarted.settled());
        assert!(!line(&restarted).0 && line(&restarted).1.contains("not checked"));
        let down = Finding::Unreachable("connection refused".into());
        assert!(!line(&down).0 && line(&down).1.contains("unreachable (connection refused)"));
        let undecided = Line {
            id: 2,
            index: 9,
            majority: None,
            finding: &same,
        };
        assert!(!undecided.ok());
        assert_eq!(undecided.to_string(), "node 2  index 9  hash aa  undecided");
    }
}
