//! Command-line flags; each can also come from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// ReSQLite: SQLite replicated with Raft, spoken to with the PostgreSQL protocol.
#[derive(Parser, Debug)]
#[command(name = "resqlite", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node. With no peers it is a one-node cluster.
    Serve(Box<ServeArgs>),
    /// Start a local cluster of several nodes in one command (Ctrl-C stops it).
    Cluster(ClusterArgs),
    /// Show every node of a cluster: role, term, commit and applied index,
    /// lag behind the leader, last snapshot, addresses.
    Status(AdminArgs),
    /// Operate on the cluster's members.
    Node(NodeArgs),
    /// Prove the replicas are identical: a check entry goes through the
    /// Raft log, every member hashes its database when it applies it, and
    /// each member's hash is compared with the leader's. Exits non-zero on
    /// a mismatch or a member that does not answer.
    Check(CheckArgs),
    /// Make the certificates of mutual TLS: the cluster's CA, one per node,
    /// one for operators (docs/security.md).
    Certs(CertsArgs),
}

impl Command {
    /// How an admin command reaches the cluster (None for the others).
    pub fn admin_args(&self) -> Option<&AdminArgs> {
        match self {
            Command::Status(a) => Some(a),
            Command::Check(c) => Some(&c.admin),
            Command::Node(n) => Some(match &n.command {
                NodeCommand::List(a) => a,
                NodeCommand::TransferLeader(t) => &t.admin,
                NodeCommand::Add(a) => &a.admin,
                NodeCommand::Promote(m) | NodeCommand::Remove(m) => &m.admin,
            }),
            Command::Serve(_) | Command::Cluster(_) | Command::Certs(_) => None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CertsCommand {
    /// Create the cluster's CA (ca.pem, ca.key) in --dir.
    Ca(CertsDir),
    /// Issue node ID's certificate (node-ID.pem, node-ID.key), signed by
    /// the CA in --dir.
    Node(NodeCertArgs),
    /// Issue an operator's certificate (admin.pem, admin.key), signed by
    /// the CA in --dir.
    Admin(CertsDir),
    /// Issue the PostgreSQL port's certificate (pg-server.pem,
    /// pg-server.key) for the host names and addresses clients use; give
    /// them to `serve --pg-cert --pg-key`.
    Pg(PgCertArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PgCertArgs {
    #[command(flatten)]
    pub dir: CertsDir,
    /// A host name or IP address clients connect to; repeat for each.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CertsDir {
    /// The certificates directory.
    #[arg(long, env = "RESQLITE_CERTS_DIR")]
    pub dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct NodeCertArgs {
    #[command(flatten)]
    pub dir: CertsDir,
    /// The node's id.
    #[arg(long)]
    pub id: u64,
}

/// How to reach a cluster for an admin command.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// gRPC address (HOST:PORT) of any node of the cluster.
    #[arg(long, env = "RESQLITE_NODE", default_value = "127.0.0.1:7432")]
    pub node: String,
    /// Directory with ca.pem, admin.pem and admin.key, for a cluster that
    /// runs with mutual TLS (`resqlite cluster` makes one in its data
    /// directory: ./resqlite-cluster/certs).
    #[arg(long, env = "RESQLITE_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// How long to wait for every member to apply the check.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum NodeCommand {
    /// List the members and their state (the same table as `resqlite status`).
    List(AdminArgs),
    /// Hand leadership to another node without an election timeout
    /// (Raft's TimeoutNow). Run it against any node: it finds the leader.
    TransferLeader(TransferLeaderArgs),
    /// Add a running, empty node (started with `serve --join` or with no
    /// peers of its own): first as a learner that receives the log, then,
    /// unless --learner, promoted to voter once it has caught up.
    Add(AddNodeArgs),
    /// Make a learner a voter once it has caught up with the leader.
    Promote(MemberArgs),
    /// Remove a member (a voter, a learner, or the leader itself, which
    /// then hands leadership over). Stop its process afterwards.
    Remove(MemberArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AddNodeArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The new node's id (unique, never used before in this cluster).
    #[arg(long)]
    pub id: u64,
    /// The new node's gRPC address (HOST:PORT), as the others will reach it.
    #[arg(long)]
    pub grpc: String,
    /// The new node's PostgreSQL address (HOST:PORT), named in redirects.
    #[arg(long)]
    pub pg: String,
    /// Leave it a learner (do not promote it to voter).
    #[arg(long)]
    pub learner: bool,
    /// How long it may take to catch up before the promotion gives up.
    #[arg(long, default_value_t = 600)]
    pub catch_up_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The member's id.
    #[arg(long)]
    pub id: u64,
    /// For promote: how long it may take to catch up.
    #[arg(long, default_value_t = 600)]
    pub catch_up_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct TransferLeaderArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The node to lead next (default: the follower that has applied the most).
    #[arg(long)]
    pub to: Option<u64>,
}

/// Another node: `ID=RAFT_HOST:PORT,PG_HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub raft: String,
    pub client: String,
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("peer {s:?}: expected ID=RAFT_HOST:PORT,PG_HOST:PORT");
        let (id, addrs) = s.split_once('=').ok_or_else(usage)?;
        let (raft, client) = addrs.split_once(',').ok_or_else(usage)?;
        let id: u64 = id.trim().parse().map_err(|_| usage())?;
        if id == 0 || raft.trim().is_empty() || client.trim().is_empty() {
            return Err(usage());
        }
        Ok(Peer {
            id,
            raft: raft.trim().to_string(),
            client: client.trim().to_string(),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "RESQLITE_ID", default_value_t = 1)]
    pub id: u64,
    /// Where the node keeps its Raft log and SQLite database.
    #[arg(long, env = "RESQLITE_DATA_DIR", default_value = "./resqlite-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL protocol listen address.
    #[arg(long, env = "RESQLITE_LISTEN", default_value = "127.0.0.1:5432")]
    pub listen: SocketAddr,
    /// gRPC listen address (Raft between nodes, and ClientCommand).
    #[arg(long, env = "RESQLITE_RAFT_LISTEN", default_value = "127.0.0.1:7432")]
    pub raft_listen: SocketAddr,
    /// The PostgreSQL address other nodes name in redirects (default: --listen).
    #[arg(long, env = "RESQLITE_ADVERTISE")]
    pub advertise: Option<String>,
    /// The gRPC address other nodes use (default: --raft-listen).
    #[arg(long, env = "RESQLITE_RAFT_ADVERTISE")]
    pub raft_advertise: Option<String>,
    /// Another node, as ID=RAFT_HOST:PORT,PG_HOST:PORT; repeat for each.
    /// From the environment: space-separated.
    #[arg(long = "peer", env = "RESQLITE_PEERS", value_delimiter = ' ')]
    pub peers: Vec<Peer>,
    /// Join a running cluster through any of its members (its gRPC
    /// HOST:PORT): the node starts empty, asks to be added, receives the
    /// data, and becomes a voter once caught up. With no address it only
    /// waits to be added by `resqlite node add`. Not with --peer. Harmless
    /// on a restart: a member does not ask again.
    #[arg(long, env = "RESQLITE_JOIN", conflicts_with = "peers",
          num_args = 0..=1, default_missing_value = "", value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// Directory with ca.pem, node-ID.pem and node-ID.key (`resqlite
    /// certs`): the gRPC port then speaks mutual TLS only, peers must prove
    /// their node id and admin clients hold an admin certificate.
    #[arg(long, env = "RESQLITE_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// A file holding the password of the bootstrap superuser (see
    /// --superuser). With a password, clients must log in with SCRAM-SHA-256
    /// (roles are made with CREATE ROLE … PASSWORD); without one, any user
    /// gets in (trust), on loopback only. Give every node the same one.
    #[arg(long, env = "RESQLITE_PASSWORD_FILE", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// The bootstrap superuser's password itself (prefer --password-file:
    /// the environment of a process can be read by its user).
    #[arg(long, env = "RESQLITE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The bootstrap superuser's name. It logs in with the password above
    /// until a replicated role of that name exists (ALTER ROLE … PASSWORD
    /// makes one), which then decides.
    #[arg(long, env = "RESQLITE_SUPERUSER", default_value = "resqlite")]
    pub superuser: String,
    /// PEM certificate (chain) the PostgreSQL port presents for TLS
    /// (sslmode=require, verify-full). With --pg-key.
    #[arg(long, env = "RESQLITE_PG_CERT", requires = "pg_key")]
    pub pg_cert: Option<PathBuf>,
    /// PEM private key of --pg-cert.
    #[arg(long, env = "RESQLITE_PG_KEY", requires = "pg_cert")]
    pub pg_key: Option<PathBuf>,
    /// Refuse PostgreSQL clients that do not use TLS (FATAL 28000).
    #[arg(long, env = "RESQLITE_PG_TLS_REQUIRED", requires = "pg_cert")]
    pub pg_tls_required: bool,
    /// Allow listening on a non-loopback address without TLS on the gRPC
    /// port (anyone who reaches it then owns the cluster) or with the
    /// PostgreSQL port open to the network without passwords
    /// (--password-file).
    #[arg(long, env = "RESQLITE_INSECURE")]
    pub insecure: bool,
    /// Raft tick in milliseconds (the election timeout is 10–20 ticks).
    #[arg(long, env = "RESQLITE_TICK_MS", default_value_t = 50)]
    pub tick_ms: u64,
    /// Read-only SQLite connections for reads.
    #[arg(long, env = "RESQLITE_READ_CONNECTIONS", default_value_t = 8)]
    pub read_connections: usize,
    /// PostgreSQL client connections served at once; the next is refused
    /// with 53300 "sorry, too many clients already", and sockets beyond
    /// twice as many (at least 16 more) are closed unread.
    #[arg(long, env = "RESQLITE_MAX_CONNECTIONS",
          default_value_t = resqlite_wire::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Snapshot the database and compact the Raft log after this many
    /// entries applied since the last snapshot.
    #[arg(long, env = "RESQLITE_SNAPSHOT_ENTRIES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_entries: u64,
    /// … or after this many bytes of entries applied since the last one.
    #[arg(long, env = "RESQLITE_SNAPSHOT_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_bytes: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// How many nodes.
    #[arg(long, env = "RESQLITE_NODES", default_value_t = 3)]
    pub nodes: u64,
    /// Parent folder of the nodes' data directories (node1, node2 …).
    #[arg(
        long,
        env = "RESQLITE_CLUSTER_DIR",
        default_value = "./resqlite-cluster"
    )]
    pub data_dir: PathBuf,
    /// PostgreSQL port of node 1; node i listens on this + i - 1.
    #[arg(long, env = "RESQLITE_BASE_PORT", default_value_t = 5432)]
    pub base_port: u16,
    /// gRPC port of node 1; node i listens on this + i - 1.
    #[arg(long, env = "RESQLITE_RAFT_BASE_PORT", default_value_t = 7432)]
    pub raft_base_port: u16,
    /// Host to listen on.
    #[arg(long, env = "RESQLITE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Run the gRPC port without TLS. By default the cluster makes a
    /// throwaway CA and certificates in DATA_DIR/certs and runs with
    /// mutual TLS between nodes.
    #[arg(long)]
    pub no_tls: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_say_why() {
        let p: Peer = "2=127.0.0.1:7433,127.0.0.1:5433".parse().unwrap();
        assert_eq!(
            p,
            Peer {
                id: 2,
                raft: "127.0.0.1:7433".into(),
                client: "127.0.0.1:5433".into()
            }
        );
        for bad in ["2", "x=a,b", "0=a,b", "2=a", "2=,b"] {
            assert!(
                bad.parse::<Peer>().unwrap_err().contains("expected ID="),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_subcommand_has_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
