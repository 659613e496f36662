//! `resqlite cluster --nodes N`: N local `resqlite serve` processes, each in
//! its own data directory, stopped together on Ctrl-C (the paper's helper
//! script, as a command).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::cli::ClusterArgs;

struct Member {
    id: u64,
    pg_port: u16,
    child: Child,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 1 && args.nodes <= 9,
        "--nodes must be between 1 and 9"
    );
    let exe = std::env::current_exe().context("cannot find the resqlite executable")?;
    let n = args.nodes as u16;
    let pg = |i: u16| args.base_port + i - 1;
    let raft = |i: u16| args.raft_base_port + i - 1;
    let peers: Vec<String> = (1..=n)
        .map(|i| format!("{i}={host}:{},{host}:{}", raft(i), pg(i), host = args.host))
        .collect();
    let certs_dir = args.data_dir.join("certs");
    if !args.no_tls {
        resqlite::certs::ensure_local_cluster(&certs_dir, args.nodes, &args.host)
            .context("cannot make the cluster's certificates")?;
    }
    let mut members = Vec::new();
    for i in 1..=n {
        let dir = args.data_dir.join(format!("node{i}"));
        let mut command = Command::new(&exe);
        if args.no_tls {
            for var in ["RESQLITE_CERTS_DIR", "RESQLITE_PG_CERT", "RESQLITE_PG_KEY"] {
                command.env_remove(var);
            }
        } else {
            let (pg_cert, pg_key) = resqlite::certs::pg_server_paths(&certs_dir);
            command
                .env("RESQLITE_CERTS_DIR", &certs_dir)
                .env("RESQLITE_PG_CERT", pg_cert)
                .env("RESQLITE_PG_KEY", pg_key);
        }
        let child = command
            .arg("serve")
            .args(["--id", &i.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("{}:{}", args.host, pg(i))])
            .args(["--raft-listen", &format!("{}:{}", args.host, raft(i))])
            .args(peers.iter().flat_map(|p| ["--peer".to_string(), p.clone()]))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        members.push(Member {
            id: i as u64,
            pg_port: pg(i),
            child,
        });
    }
    wait_until_listening(&args.host, &members).await;
    print_connection_strings(&args.host, &members);
    if !args.no_tls {
        println!(
            "TLS for psql: add sslmode=verify-full sslrootcert={}",
            resqlite::certs::ca_cert_path(&certs_dir).display()
        );
        println!(
            "Nodes talk mutual TLS; for `resqlite status`, `node` and `check` run first:\n  export RESQLITE_CERTS_DIR={}",
            certs_dir.display()
        );
    }
    tokio::select! {
        _ = crate::serve::shutdown_signal() => {}
        _ = first_exit(&mut members) => {}
    }
    eprintln!("stopping the cluster…");
    for m in &mut members {
        if let Some(pid) = m.child.id() {
            // SIGTERM lets each node stop cleanly.
            // SAFETY: kill(2) with a pid we spawned and a valid signal.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for m in &mut members {
        if tokio::time::timeout(Duration::from_secs(10), m.child.wait())
            .await
            .is_err()
        {
            let _ = m.child.kill().await;
        }
    }
    Ok(())
}

async fn first_exit(members: &mut [Member]) {
    loop {
        for m in members.iter_mut() {
            if let Ok(Some(status)) = m.child.try_wait() {
                eprintln!("node {} exited ({status}); stopping the others", m.id);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_until_listening(host: &str, members: &[Member]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in members {
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect((host, m.pg_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn print_connection_strings(host: &str, members: &[Member]) {
    println!(
        "ReSQLite cluster of {} nodes is up. Connect with psql:",
        members.len()
    );
    for m in members {
        println!(
            "  node {}: psql \"host={host} port={} user=resqlite\"",
            m.id, m.pg_port
        );
    }
    let hosts = vec![host; members.len()].join(",");
    let ports: Vec<String> = members.iter().map(|m| m.pg_port.to_string()).collect();
    println!(
        "  leader (any node that is up): psql \"host={hosts} port={} user=resqlite target_session_attrs=read-write\"",
        ports.join(",")
    );
    println!("Press Ctrl-C to stop all nodes.");
}
