//! Runs a cluster of real `resqlite serve` processes on loopback for a test,
//! with PostgreSQL clients (tokio-postgres) and a per-node admin read
//! (ClientCommand with `read_consistency = "local"`) to compare what every
//! node holds without trusting any one of them.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context};
use resqlite_proto::client::client_client::ClientClient;
use resqlite_proto::client::client_command_request::Statement;
use resqlite_proto::client::{value, ClientCommandRequest};
use resqlite_raft::transport::tls::TlsFiles;
use tokio_postgres::{Client, NoTls};

use crate::cluster::{pick_port, wait_until, NodeId};

struct SqlNode {
    pg_port: u16,
    grpc_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Raft address this node is told for a peer, where it is not the
    /// peer's own (a fault-injecting proxy in between).
    raft_routes: BTreeMap<NodeId, String>,
    /// How the node enters the cluster.
    join: Join,
}

/// How a node enters the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// One of the members the cluster is started with (`--peer` flags).
    Original,
    /// Starts empty and asks this member to add it (`--join ADDR`).
    Via(NodeId),
    /// Starts empty and waits for `resqlite node add` (bare `--join`).
    Wait,
}

/// A running cluster of `resqlite serve` processes. Dropping it kills every
/// process, pass or fail (and prints each node's log tail on failure).
pub struct SqlCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, SqlNode>,
    /// Flags given to every node after the ones the cluster sets.
    extra_args: Vec<String>,
    /// Appended to the conninfo of [`SqlCluster::connect`] (a password).
    conninfo_extra: String,
    /// Flags of [`SqlCluster::secure`], given before `extra_args`.
    security_args: Vec<String>,
}

impl SqlCluster {
    /// Starts `n` nodes (ids 1..=n) of the `resqlite` binary `bin`.
    pub fn start(bin: impl Into<PathBuf>, n: u64) -> anyhow::Result<SqlCluster> {
        let mut cluster = SqlCluster::prepare(bin, n)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Picks ports and directories for `n` nodes (ids 1..=n) without
    /// starting them, so routes can be set first ([`SqlCluster::route`]).
    pub fn prepare(bin: impl Into<PathBuf>, n: u64) -> anyhow::Result<SqlCluster> {
        let dir = tempfile::Builder::new().prefix("resqlite-sql-").tempdir()?;
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(
                id,
                SqlNode {
                    pg_port: pick_port()?,
                    grpc_port: pick_port()?,
                    data_dir: dir.path().join(format!("node{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    raft_routes: BTreeMap::new(),
                    join: Join::Original,
                },
            );
        }
        Ok(SqlCluster {
            bin: bin.into(),
            dir,
            nodes,
            extra_args: Vec::new(),
            conninfo_extra: String::new(),
            security_args: Vec::new(),
        })
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.nodes[&id].child.is_none() {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// From its next start on, node `from` reaches peer `to`'s Raft port at
    /// `addr` (`host:port`) instead of the peer's own.
    pub fn route(&mut self, from: NodeId, to: NodeId, addr: String) {
        if let Some(n) = self.nodes.get_mut(&from) {
            n.raft_routes.insert(to, addr);
        }
    }

    /// From their next start on, every node also gets `args` (e.g.
    /// `--snapshot-entries 50`) after the flags the cluster sets.
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.extra_args = args;
    }

    /// Before the first start: run the nodes as a deployment should, with
    /// mutual TLS between them (`--certs-dir`, certificates made with
    /// `resqlite certs`), TLS offered to clients and, with `passwords`,
    /// SCRAM passwords (`--password-file`). [`SqlCluster::connect`] then
    /// logs in with the password (plaintext is still allowed, for
    /// tokio-postgres), and every gRPC helper of this crate dials with the
    /// operator certificate.
    pub fn secure(&mut self, passwords: bool) -> anyhow::Result<()> {
        let certs = self.dir.path().join("certs");
        let certs_arg = certs.display().to_string();
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new(&self.bin)
                .arg("certs")
                .args(args)
                .args(["--dir", &certs_arg])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "resqlite certs {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        run(&["ca"])?;
        run(&["admin"])?;
        run(&["pg", "--host", "127.0.0.1", "--host", "localhost"])?;
        for id in self.nodes.keys() {
            run(&["node", "--id", &id.to_string()])?;
        }
        let password = "test-superuser-secret";
        let password_file = self.dir.path().join("superuser-password");
        fs::write(&password_file, password)?;
        let read = |name: &str| fs::read(certs.join(name));
        let admin = TlsFiles {
            ca_pem: read("ca.pem")?,
            cert_pem: read("admin.pem")?,
            key_pem: read("admin.key")?,
        };
        for id in self.nodes.keys() {
            crate::grpc::register_tls(&self.grpc_addr(*id), admin.clone());
        }
        self.security_args = vec![
            "--certs-dir".into(),
            certs_arg.clone(),
            "--pg-cert".into(),
            certs.join("pg-server.pem").display().to_string(),
            "--pg-key".into(),
            certs.join("pg-server.key").display().to_string(),
        ];
        if passwords {
            self.security_args.extend([
                "--password-file".into(),
                password_file.display().to_string(),
            ]);
            self.conninfo_extra = format!("password={password}");
        }
        Ok(())
    }

    /// Appends `extra` (e.g. `password=secret`) to the conninfo of every
    /// later [`SqlCluster::connect`].
    pub fn set_conninfo_extra(&mut self, extra: &str) {
        self.conninfo_extra = extra.to_string();
    }

    /// From its next start on, node `id` enters the cluster as `join` says
    /// (the others no longer name it in their `--peer` flags unless it is
    /// [`Join::Original`]).
    pub fn set_join(&mut self, id: NodeId, join: Join) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.join = join;
        }
    }

    /// The node's gRPC address.
    pub fn grpc_addr(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].grpc_port)
    }

    /// The node's own Raft (gRPC) port.
    pub fn raft_port(&self, id: NodeId) -> u16 {
        self.nodes[&id].grpc_port
    }

    /// The node's log file (appended to across restarts).
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.nodes[&id].log.clone()
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The node's PostgreSQL address.
    pub fn pg_addr(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].pg_port)
    }

    /// The node's PostgreSQL port.
    pub fn pg_port(&self, id: NodeId) -> u16 {
        self.nodes[&id].pg_port
    }

    /// The cluster's temp dir (data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) node `id` with its existing data directory.
    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let routes = self
            .nodes
            .get(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?
            .raft_routes
            .clone();
        let join = self.nodes.get(&id).map_or(Join::Original, |n| n.join);
        let join_port = match join {
            Join::Via(via) => self.nodes.get(&via).map(|n| n.grpc_port),
            _ => None,
        };
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| join == Join::Original && n.join == Join::Original)
            .map(|(pid, n)| {
                let raft = routes
                    .get(pid)
                    .cloned()
                    .unwrap_or_else(|| format!("127.0.0.1:{}", n.grpc_port));
                format!("{pid}={raft},127.0.0.1:{}", n.pg_port)
            })
            .collect();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        node.paused = false;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", node.pg_port)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", node.grpc_port)])
            .args(["--read-connections", "2"]);
        for p in &peers {
            cmd.args(["--peer", p]);
        }
        match join {
            Join::Original => {}
            Join::Via(_) => {
                let port = join_port.unwrap_or(0);
                cmd.args(["--join", &format!("127.0.0.1:{port}")]);
            }
            Join::Wait => {
                cmd.arg("--join");
            }
        }
        cmd.args(&self.security_args);
        cmd.args(&self.extra_args);
        let level = std::env::var("RESQLITE_TEST_LOG").unwrap_or_else(|_| "info".to_string());
        cmd.env("RESQLITE_LOG", level)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.child = Some(cmd.spawn().with_context(|| format!("starting node {id}"))?);
        Ok(())
    }

    /// `kill -9` of node `id`.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        node.paused = false;
        Ok(())
    }

    /// Stops node `id` the polite way (SIGTERM, as systemd or Ctrl-C would)
    /// and waits for it to exit; `kill -9` if it has not within `grace`.
    /// Returns whether it exited by itself.
    pub fn terminate(&mut self, id: NodeId, grace: Duration) -> anyhow::Result<bool> {
        self.signal(id, libc::SIGTERM)?;
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let Some(mut child) = node.child.take() else {
            return Ok(true);
        };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(false)
    }

    /// `kill -9` and start again on the same data directory.
    pub fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.kill(id)?;
        self.start_node(id)
    }

    /// Freezes node `id` (SIGSTOP): its sockets stay open, it answers
    /// nothing until [`SqlCluster::resume`].
    pub fn pause(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = true;
        }
        Ok(())
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = false;
        }
        Ok(())
    }

    /// Whether node `id` is stopped by [`SqlCluster::pause`].
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.paused)
    }

    fn signal(&self, id: NodeId, sig: libc::c_int) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let child = node
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid; it has not been waited
        // for (the Child is still held), so the pid cannot be reused.
        if unsafe { libc::kill(pid, sig) } != 0 {
            anyhow::bail!(
                "signal {sig} to node {id}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// A PostgreSQL connection to node `id`.
    pub async fn connect(&self, id: NodeId) -> anyhow::Result<Client> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=resqlite connect_timeout=2 {}",
            self.nodes[&id].pg_port, self.conninfo_extra
        );
        let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Waits until some node says it is the leader (`transaction_read_only`
    /// off) and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let ids = self.running();
        wait_until("a leader", timeout, || {
            let ids = ids.clone();
            async move {
                for id in ids {
                    if let Ok(c) = self.connect(id).await {
                        if let Ok(row) = c.query_one("SHOW transaction_read_only", &[]).await {
                            if row.get::<_, String>(0) == "off" {
                                return Some(id);
                            }
                        }
                    }
                }
                None
            }
        })
        .await
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// Node `id`'s data directory (it may not exist before its first start).
    pub fn data_dir(&self, id: NodeId) -> Option<&Path> {
        self.nodes.get(&id).map(|n| n.data_dir.as_path())
    }

    /// Node `id`'s peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self, id: NodeId) -> anyhow::Result<u64> {
        let pid = self
            .pid(id)
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no VmHWM for node {id}"))?;
        Ok(kb * 1024)
    }

    /// Nodes whose process is running.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s own answer to a read, whatever its role (admin path),
    /// each row rendered as text.
    pub async fn local_rows(&self, id: NodeId, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let addr = format!("127.0.0.1:{}", self.nodes[&id].grpc_port);
        let mut client = ClientClient::new(crate::grpc::channel(&addr).await?);
        let resp = client
            .client_command(ClientCommandRequest {
                statement: Some(Statement::Query(sql.to_string())),
                read_consistency: "local".to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        if let Some(e) = resp.error {
            anyhow::bail!("node {id}: {} {}", e.sqlstate, e.message);
        }
        Ok(resp
            .rows
            .into_iter()
            .map(|r| r.values.into_iter().map(|v| render(v.kind)).collect())
            .collect())
    }

    /// The rows of `sql` on the leader, once every running node holds the
    /// same (each read from the node itself).
    pub async fn converged_rows(
        &self,
        sql: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let leader = self.wait_for_leader(timeout).await?;
        let want = self.local_rows(leader, sql).await?;
        self.wait_all_hold(sql, &want, timeout).await?;
        Ok(want)
    }

    /// Waits until every running node holds the same answer to `sql` as
    /// `want`, read from each node itself.
    pub async fn wait_all_hold(
        &self,
        sql: &str,
        want: &[Vec<String>],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let ids = self.running();
        wait_until("every node to hold the same rows", timeout, || {
            let ids = ids.clone();
            async move {
                for id in ids {
                    match self.local_rows(id, sql).await {
                        Ok(rows) if rows == want => {}
                        _ => return None,
                    }
                }
                Some(())
            }
        })
        .await
    }
}

fn render(kind: Option<value::Kind>) -> String {
    match kind {
        None | Some(value::Kind::Null(_)) => "NULL".to_string(),
        Some(value::Kind::Integer(i)) => i.to_string(),
        Some(value::Kind::Real(f)) => f.to_string(),
        Some(value::Kind::Text(t)) => t,
        Some(value::Kind::Blob(b)) => format!(
            "\\x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

impl Drop for SqlCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for (id, node) in &self.nodes {
                let text = fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- node {id} log tail ({}) ---", node.log.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
