//! `resqlite serve`: one node — SQLite, Raft over gRPC, and the PostgreSQL
//! front end — until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use resqlite::node::{ClientCommandService, Node, NodeExecutor, PeerAddrs};
use resqlite::store::{ReadPool, SqliteStateMachine};
use resqlite_proto::client::client_server::ClientServer;
use resqlite_raft::driver::{NodeConfig, RaftNode};

use crate::cli::ServeArgs;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let db_path = args.data_dir.join("db.sqlite");
    let sm = SqliteStateMachine::open(&db_path)
        .with_context(|| format!("cannot open {}", db_path.display()))?;
    let reads = ReadPool::open(&db_path, args.read_connections)
        .with_context(|| format!("cannot open read connections to {}", db_path.display()))?;

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
    let mut cfg = NodeConfig::new(args.id, grpc_urls, args.data_dir.clone());
    cfg.tick = Duration::from_millis(args.tick_ms.max(1));
    let (raft, raft_service) = RaftNode::start(cfg, sm)
        .await
        .context("cannot start Raft")?;
    let node = Node::new(raft.clone(), reads, addrs);

    let grpc = tonic::transport::Server::builder()
        .add_service(raft_service)
        .add_service(ClientServer::new(ClientCommandService::new(node.clone())))
        .serve_with_shutdown(args.raft_listen, shutdown_signal());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(node = args.id, pg = %args.listen, grpc = %args.raft_listen, "node started");
    let options = resqlite_wire::WireOptions {
        server_version: resqlite::PG_VERSION.to_string(),
        ..Default::default()
    };
    let wire = resqlite_wire::serve(listener, Arc::new(NodeExecutor(node)), options);
    tokio::select! {
        r = grpc => r.context("gRPC server failed")?,
        r = wire => r.context("PostgreSQL front end failed")?,
    }
    tracing::info!(node = args.id, "stopping");
    raft.shutdown().await;
    Ok(())
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
