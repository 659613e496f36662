//! `resqlite serve`: one node — SQLite, Raft over gRPC, and the PostgreSQL
//! front end — until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use resqlite::node::{
    AdminService, ClientCommandService, Node, NodeExecutor, PeerAddrs, TRANSFER_WAIT,
};
use resqlite::store::roles::{BootstrapSuperuser, RoleCache};
use resqlite::store::{ReadPool, SqliteStateMachine};
use resqlite_proto::client::admin_server::AdminServer;
use resqlite_proto::client::client_server::ClientServer;
use resqlite_raft::driver::{NodeConfig, RaftNode, SnapshotPolicy};
use resqlite_raft::Role;

use crate::cli::ServeArgs;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    refuse_open_ports_without_protection(&args)?;
    let tls = match &args.certs_dir {
        Some(dir) => Some(resqlite::certs::node_files(dir, args.id)?),
        None => None,
    };
    // Forwarded admin requests and `--join` dial other nodes as this node.
    resqlite::grpc_tls::dial_as(tls.clone());
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let db_path = args.data_dir.join("db.sqlite");
    let sm = SqliteStateMachine::open(&db_path)
        .with_context(|| format!("cannot open {}", db_path.display()))?;
    let (auth, roles) = client_auth(&args, &sm)?;
    let client_tls = client_tls(&args)?;
    let checks = sm.checks();
    let reads = ReadPool::open(&db_path, args.read_connections, sm.generation())
        .with_context(|| format!("cannot open read connections to {}", db_path.display()))?;
    let transactions = resqlite::store::TransactionStores::open(&db_path, &sm)
        .context("cannot start the transaction threads")?;

    let mut addrs = BTreeMap::new();
    addrs.insert(
        args.id,
        PeerAddrs {
            client: args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.to_string()),
            grpc: args
                .raft_advertise
                .clone()
                .unwrap_or_else(|| args.raft_listen.to_string()),
        },
    );
    let mut grpc_urls = BTreeMap::new();
    for p in &args.peers {
        if p.id == args.id {
            continue;
        }
        grpc_urls.insert(p.id, format!("http://{}", p.raft));
        addrs.insert(
            p.id,
            PeerAddrs {
                client: p.client.clone(),
                grpc: p.raft.clone(),
            },
        );
    }
    let mut cfg = if args.join.is_some() {
        NodeConfig::joining(args.id, args.data_dir.clone())
    } else {
        NodeConfig::new(args.id, grpc_urls, args.data_dir.clone())
    };
    cfg.tick = Duration::from_millis(args.tick_ms.max(1));
    cfg.transport.tls = tls.clone();
    cfg.snapshot = SnapshotPolicy {
        entries: args.snapshot_entries.max(1),
        bytes: args.snapshot_bytes.max(1),
    };
    let (raft, raft_service) = RaftNode::start(cfg, sm)
        .await
        .context("cannot start Raft")?;
    let me = addrs.get(&args.id).cloned().expect("inserted above");
    let node = Node::new(raft.clone(), reads, transactions, addrs, checks, roles);

    // The gRPC server keeps running during a SIGTERM hand-over (the new
    // leader must still reach this node), then stops with the rest.
    let (stop_grpc, grpc_stopped) = tokio::sync::watch::channel(false);
    let mut grpc = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        grpc = grpc
            .tls_config(tls.server_config())
            .context("the node's TLS certificate or key is not valid")?;
    }
    let operators_only = resqlite::grpc_tls::operators_and_nodes(tls.is_some());
    let grpc = grpc
        // Heartbeats and votes that time out under load are reset by the
        // caller; h2's rapid-reset guard (20 such streams) would then close
        // the whole connection, Raft's append stream with it, and cost an
        // election. Peers are cluster members: allow far more.
        .http2_max_pending_accept_reset_streams(Some(1024))
        .add_service(raft_service)
        .add_service(ClientServer::with_interceptor(
            ClientCommandService::new(node.clone()),
            operators_only.clone(),
        ))
        .add_service(AdminServer::with_interceptor(
            AdminService::new(node.clone()),
            operators_only,
        ))
        .serve_with_shutdown(args.raft_listen, async move {
            let mut stopped = grpc_stopped;
            let _ = stopped.wait_for(|&s| s).await;
        });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(node = args.id, pg = %args.listen, grpc = %args.raft_listen, "node started");
    let options = resqlite_wire::WireOptions {
        server_version: resqlite::PG_VERSION.to_string(),
        auth,
        tls: client_tls,
        max_connections: args.max_connections,
        ..Default::default()
    };
    let wire = resqlite_wire::serve(listener, Arc::new(NodeExecutor(node.clone())), options);
    // Both servers run as tasks of their own: they must keep serving while
    // the shutdown branch below hands leadership over.
    let mut grpc = tokio::spawn(grpc);
    let mut wire = tokio::spawn(wire);
    if let Some(via) = args.join.as_ref().filter(|v| !v.is_empty()) {
        if !raft.membership().is_voter(args.id) {
            tokio::spawn(join_cluster(raft.clone(), via.clone(), me));
        }
    }
    tokio::select! {
        r = &mut grpc => r.context("gRPC server panicked")?.context("gRPC server failed")?,
        r = &mut wire => r.context("PostgreSQL front end panicked")?.context("PostgreSQL front end failed")?,
        _ = shutdown_signal() => hand_over_if_leader(&node).await,
    }
    tracing::info!(node = args.id, "stopping");
    wire.abort();
    let _ = stop_grpc.send(true);
    // Open streams from peers would hold a graceful gRPC shutdown forever.
    if tokio::time::timeout(Duration::from_secs(2), &mut grpc)
        .await
        .is_err()
    {
        grpc.abort();
    }
    raft.shutdown().await;
    Ok(())
}

/// Refuses to start a node that anyone on the network could take over: the
/// gRPC port off loopback without mutual TLS, or the PostgreSQL port off
/// loopback (it has no passwords yet), unless `--insecure`.
fn refuse_open_ports_without_protection(args: &ServeArgs) -> anyhow::Result<()> {
    if args.insecure {
        return Ok(());
    }
    if args.certs_dir.is_none() && !args.raft_listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without TLS: anyone who reaches the gRPC port could \
             join, remove nodes or forge Raft messages. Pass --certs-dir (see \
             docs/security.md), or --insecure on a network you trust",
            args.raft_listen
        );
    }
    let passwords = args.password_file.is_some() || args.password.is_some();
    if !passwords && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} for PostgreSQL clients without passwords: anyone who \
             reaches the port could read and write. Give the superuser's password with \
             --password-file (see docs/security.md), or pass --insecure on a network you trust",
            args.listen
        );
    }
    Ok(())
}

/// How PostgreSQL clients log in: SCRAM against the replicated roles (and
/// the bootstrap superuser) when a password is configured, else trust.
fn client_auth(
    args: &ServeArgs,
    sm: &SqliteStateMachine,
) -> anyhow::Result<(resqlite_wire::Auth, RoleCache)> {
    let password = match (&args.password_file, &args.password) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the password file {}", file.display()))?;
            Some(text.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let Some(password) = password else {
        return Ok((resqlite_wire::Auth::Trust, sm.roles()));
    };
    anyhow::ensure!(!password.is_empty(), "the superuser's password is empty");
    let salt: [u8; 16] = rand::random();
    let verifier = resqlite_wire::ScramVerifier::from_password(
        &password,
        &salt,
        resqlite_wire::SCRAM_ITERATIONS,
    );
    let roles = sm.roles().with_bootstrap(Some(BootstrapSuperuser {
        name: args.superuser.clone(),
        verifier,
    }));
    Ok((resqlite_wire::Auth::Scram(Arc::new(roles.clone())), roles))
}

/// TLS for PostgreSQL clients, from --pg-cert and --pg-key.
fn client_tls(args: &ServeArgs) -> anyhow::Result<Option<resqlite_wire::ClientTls>> {
    let (Some(cert), Some(key)) = (&args.pg_cert, &args.pg_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let tls = resqlite_wire::ClientTls::from_pem(&read(cert)?, &read(key)?, args.pg_tls_required)
        .map_err(|e| anyhow::anyhow!("--pg-cert/--pg-key: {e}"))?;
    Ok(Some(tls))
}

/// Asks the cluster, through the member at `via`, to add this node and
/// promote it once caught up; retries until it is done or refused for
/// good. The answer comes only once this node is a voter: meanwhile it
/// receives the data (a snapshot, then the log) like any follower.
async fn join_cluster(raft: RaftNode<SqliteStateMachine>, via: String, me: PeerAddrs) {
    use resqlite_proto::client::AddNodeRequest;
    let id = raft.id();
    let mut delay = Duration::from_millis(200);
    loop {
        let status = raft.status();
        let request = AddNodeRequest {
            id,
            grpc_addr: me.grpc.clone(),
            client_addr: me.client.clone(),
            voter: true,
            catch_up_timeout_ms: 0,
            empty: status.last_index == 0 && status.snapshot == 0 && status.term == 0,
        };
        let attempt = async {
            let mut client = resqlite::grpc_tls::admin_client(&via)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client.add_node(request).await
        };
        match attempt.await {
            Ok(_) => {
                tracing::info!(node = id, via = %via, "joined the cluster as a voter");
                return;
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::AlreadyExists | tonic::Code::InvalidArgument
                ) =>
            {
                tracing::error!(node = id, via = %via, error = %s.message(),
                    "the cluster refused to add this node; fix the flags and restart it");
                return;
            }
            Err(s) => {
                tracing::warn!(node = id, via = %via, error = %s.message(),
                    "joining the cluster failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A leader that is asked to stop first hands leadership to the most
/// caught-up follower, so a rolling restart costs no election timeout.
async fn hand_over_if_leader(node: &Node) {
    if node.raft().status().role != Role::Leader || node.voter_count() < 2 {
        return;
    }
    tracing::info!("leader stopping: handing leadership over first");
    match node.hand_over_leadership(None, TRANSFER_WAIT).await {
        Ok(leader) => tracing::info!(?leader, "leadership handed over"),
        Err(e) => {
            tracing::warn!(error = %e.message(), "could not hand leadership over; stopping anyway")
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
