//! `resqlite status` and `resqlite node …`: an operator's view of a running
//! cluster, over the Admin gRPC service. Each member is asked about itself,
//! so a node that is down or cut off shows as unreachable rather than as
//! another node believes it to be.

use anyhow::{bail, Context};
use resqlite::node::peer_status;
use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::{
    AddNodeRequest, MembershipResponse, NodeStatusResponse, PromoteNodeRequest, RemoveNodeRequest,
    TransferLeaderRequest,
};

use crate::cli::{AddNodeArgs, AdminArgs, MemberArgs, NodeArgs, NodeCommand, TransferLeaderArgs};

/// `resqlite status`: one line per member.
pub async fn status(args: AdminArgs) -> anyhow::Result<()> {
    let rows = survey(&args.node).await?;
    print!("{}", render(&rows));
    Ok(())
}

/// `resqlite node …`.
pub async fn node(args: NodeArgs) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::List(admin) => status(admin).await,
        NodeCommand::TransferLeader(t) => transfer_leader(t).await,
        NodeCommand::Add(a) => add(a).await,
        NodeCommand::Promote(m) => promote(m).await,
        NodeCommand::Remove(m) => remove(m).await,
    }
}

/// A client to the node named on the command line; it forwards
/// membership changes to the leader.
async fn admin_client(node: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    resqlite::grpc_tls::admin_client(node)
        .await
        .with_context(|| format!("cannot reach a node at {node}"))
}

/// Prints the members after a change.
fn print_members(what: &str, reply: &MembershipResponse) {
    println!("{what}; members now:");
    for m in &reply.members {
        let kind = if m.voter { "voter" } else { "learner" };
        let leads = if m.id == reply.leader { ", leader" } else { "" };
        println!(
            "  node {} ({kind}{leads}): postgres {}, grpc {}",
            m.id, m.client_addr, m.grpc_addr
        );
    }
}

async fn add(args: AddNodeArgs) -> anyhow::Result<()> {
    let mut client = admin_client(&args.admin.node).await?;
    if !args.learner {
        println!(
            "adding node {} as a learner, then promoting it once caught up …",
            args.id
        );
    }
    let reply = client
        .add_node(AddNodeRequest {
            id: args.id,
            grpc_addr: args.grpc,
            client_addr: args.pg,
            voter: !args.learner,
            catch_up_timeout_ms: args.catch_up_secs.saturating_mul(1000),
            // Unknown here; the node itself says so when it asks to join.
            empty: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("adding node {} failed: {}", args.id, s.message()))?
        .into_inner();
    print_members(&format!("node {} added", args.id), &reply);
    Ok(())
}

async fn promote(args: MemberArgs) -> anyhow::Result<()> {
    let mut client = admin_client(&args.admin.node).await?;
    let reply = client
        .promote_node(PromoteNodeRequest {
            id: args.id,
            catch_up_timeout_ms: args.catch_up_secs.saturating_mul(1000),
        })
        .await
        .map_err(|s| anyhow::anyhow!("promoting node {} failed: {}", args.id, s.message()))?
        .into_inner();
    print_members(&format!("node {} is a voter", args.id), &reply);
    Ok(())
}

async fn remove(args: MemberArgs) -> anyhow::Result<()> {
    let mut client = admin_client(&args.admin.node).await?;
    let reply = client
        .remove_node(RemoveNodeRequest { id: args.id })
        .await
        .map_err(|s| anyhow::anyhow!("removing node {} failed: {}", args.id, s.message()))?
        .into_inner();
    print_members(
        &format!("node {} removed (stop its process now)", args.id),
        &reply,
    );
    Ok(())
}

/// What one member said about itself, or why it did not answer.
struct Member {
    id: u64,
    grpc: String,
    client: String,
    answer: Result<NodeStatusResponse, String>,
}

/// Asks `first` for the member list, then every member for its status.
async fn survey(first: &str) -> anyhow::Result<Vec<Member>> {
    let seed = peer_status(first)
        .await
        .with_context(|| format!("cannot reach a node at {first}"))?;
    let mut asks = tokio::task::JoinSet::new();
    for m in seed.members {
        asks.spawn(async move {
            let answer = peer_status(&m.grpc_addr)
                .await
                .map_err(|e| format!("{e:#}"));
            Member {
                id: m.id,
                grpc: m.grpc_addr,
                client: m.client_addr,
                answer,
            }
        });
    }
    let mut members = Vec::new();
    while let Some(m) = asks.join_next().await {
        members.push(m?);
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

/// The table `resqlite status` prints. Lag is how many committed entries
/// a node has yet to apply, counted against the leader of the newest term.
fn render(members: &[Member]) -> String {
    let leader_commit = members
        .iter()
        .filter_map(|m| m.answer.as_ref().ok())
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term)
        .map(|s| s.commit_index);
    let mut lines = vec![[
        "id", "role", "term", "commit", "applied", "lag", "snapshot", "postgres", "grpc",
    ]
    .map(String::from)
    .to_vec()];
    for m in members {
        let cells = match &m.answer {
            Ok(s) => vec![
                s.id.to_string(),
                role_cell(s),
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                leader_commit.map_or("-".to_string(), |c| {
                    c.saturating_sub(s.applied_index).to_string()
                }),
                s.snapshot_index.to_string(),
                s.client_addr.clone(),
                s.grpc_addr.clone(),
            ],
            Err(why) => {
                let mut v = vec![m.id.to_string(), "unreachable".to_string()];
                v.extend(["-", "-", "-", "-", "-"].map(String::from));
                v.push(m.client.clone());
                v.push(format!("{} ({why})", m.grpc));
                v
            }
        };
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    // A halted node's applied index stays behind: say why, under the table.
    for s in members.iter().filter_map(|m| m.answer.as_ref().ok()) {
        if !s.halted.is_empty() {
            out.push_str(&format!(
                "node {} halted (applies nothing until restarted): {}\n",
                s.id, s.halted
            ));
        }
        if !s.diverged.is_empty() {
            out.push_str(&format!(
                "node {} diverged (its database differs from the majority's; rebuild it, see \
                 `resqlite check` in docs/operations.md): {}\n",
                s.id, s.diverged
            ));
        }
    }
    out
}

/// The role cell: the role, then what is wrong with the node, if anything
/// (explained under the table).
fn role_cell(s: &NodeStatusResponse) -> String {
    let mut cell = s.role.clone();
    if !s.halted.is_empty() {
        cell.push_str(" HALTED");
    }
    if !s.diverged.is_empty() {
        cell.push_str(" DIVERGED");
    }
    cell
}

/// `resqlite node transfer-leader`: finds the leader from any node, asks it
/// to hand over, and prints who leads afterwards.
async fn transfer_leader(args: TransferLeaderArgs) -> anyhow::Result<()> {
    let members = survey(&args.admin.node).await?;
    let leader = members
        .iter()
        .filter_map(|m| m.answer.as_ref().ok().map(|s| (m, s)))
        .filter(|(_, s)| s.role == "leader")
        .max_by_key(|(_, s)| s.term)
        .map(|(m, _)| m);
    let Some(leader) = leader else {
        bail!("no node reports itself leader right now; retry in a moment");
    };
    if args.to == Some(leader.id) {
        println!("node {} already leads", leader.id);
        return Ok(());
    }
    let mut client = resqlite::grpc_tls::admin_client(&leader.grpc)
        .await
        .with_context(|| {
            format!(
                "cannot reach the leader (node {}) at {}",
                leader.id, leader.grpc
            )
        })?;
    let reply = client
        .transfer_leader(TransferLeaderRequest {
            to: args.to.unwrap_or(0),
        })
        .await
        .map_err(|s| anyhow::anyhow!("transfer refused by node {}: {}", leader.id, s.message()))?
        .into_inner();
    println!(
        "leadership moved from node {} to node {} (postgres {})",
        leader.id, reply.leader, reply.leader_client_addr
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64, role: &str, term: u64, commit: u64, applied: u64) -> Member {
        Member {
            id,
            grpc: format!("127.0.0.1:{}", 7431 + id),
            client: format!("127.0.0.1:{}", 5431 + id),
            answer: Ok(NodeStatusResponse {
                id,
                client_addr: format!("127.0.0.1:{}", 5431 + id),
                grpc_addr: format!("127.0.0.1:{}", 7431 + id),
                role: role.into(),
                term,
                leader: 1,
                commit_index: commit,
                applied_index: applied,
                last_log_index: commit,
                snapshot_index: 0,
                members: vec![],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn lag_counts_against_the_newest_leader_and_unreachable_nodes_say_why() {
        let mut down = answer(3, "follower", 0, 0, 0);
        down.answer = Err("connection refused".into());
        let table = render(&[
            answer(1, "leader", 4, 120, 120),
            answer(2, "follower", 4, 118, 110),
            down,
            answer(4, "leader", 2, 50, 50), // a deposed leader, cut off
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("id  role"), "{table}");
        let lag = |line: &str| line.split_whitespace().nth(5).unwrap().to_string();
        assert_eq!(lag(lines[1]), "0");
        assert_eq!(lag(lines[2]), "10");
        assert!(lines[3].contains("unreachable") && lines[3].contains("connection refused"));
        assert_eq!(lag(lines[4]), "70");
    }
}
