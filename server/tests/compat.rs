//! The compat suite (issue 5): one fresh 3-node cluster, driven by real
//! clients — psql, pgbench, psycopg 3, psycopg2, pgjdbc, node-postgres,
//! tokio-postgres and sqlx — each from its own folder under `compat/`.
//!
//! Every client prints one line per feature,
//! `COMPAT <client> <feature> pass|fail|unsupported <note>`, and exits 1 when
//! some feature failed (any other non-zero exit is a crash). This test
//! collects the lines, fails on any `fail` that is not in [`KNOWN_ISSUES`],
//! and writes the client × feature matrix to `target/compat-matrix.md` (and
//! into `docs/compat.md` with `RESQLITE_WRITE_COMPAT_DOC=1`), so the doc is
//! the output of a run, never written by hand.
//!
//! A client whose tool is not installed is `skipped` locally; with `CI=true`
//! (CI installs them all, see `.ci/run`) a missing client fails the test.
//!
//! The cluster runs as a deployment should: SCRAM-SHA-256 passwords
//! (`--password-file`), TLS required on the PostgreSQL port (`--pg-cert`,
//! `--pg-key`, `--pg-tls-required`) and mutual TLS between nodes
//! (`--certs-dir`). Every client logs in with the password over TLS and
//! verifies the server's certificate against the cluster's CA; the suite
//! also checks that every node refuses a login without a password and a
//! plaintext connection, so it cannot pass with either silently off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use resqlite::certs;
use resqlite_tests::cluster::{wait_until, NodeId};
use resqlite_tests::sql_cluster::SqlCluster;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

#[path = "../../compat/rust/sqlx_client.rs"]
mod sqlx_client;
#[path = "../../compat/rust/tokio_postgres_client.rs"]
mod tokio_postgres_client;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
/// A client that runs longer than this is killed and counted as a crash.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// The bootstrap superuser's password (`--password-file`); with a space,
/// so every client's quoting is exercised.
const PASSWORD: &str = "compat suite secret";

/// A server bug the suite has found and that is not fixed yet, with the
/// features it breaks. A `fail` line not listed here fails the test; a
/// listed feature that passes also fails the test (remove it from the list).
/// Keep it tiny: fix the server, then delete the entry.
#[allow(dead_code)] // constructed only while a server bug is open
struct KnownIssue {
    bug: &'static str,
    affects: &'static [(&'static str, &'static str)],
}

const KNOWN_ISSUES: &[KnownIssue] = &[];

fn known_issue(client: &str, feature: &str) -> Option<&'static str> {
    KNOWN_ISSUES
        .iter()
        .find(|k| k.affects.iter().any(|&(c, f)| c == client && f == feature))
        .map(|k| k.bug)
}

/// The clients, in the order they run and appear in the matrix.
const CLIENTS: &[&str] = &[
    "psql",
    "pgbench",
    "psycopg3",
    "psycopg2",
    "pgjdbc",
    "node-postgres",
    "tokio-postgres",
    "sqlx",
];

/// The features every driver is asked for, in matrix order; client-specific
/// features follow them in the order first seen.
const COMMON_FEATURES: &[&str] = &[
    "connect",
    "multi_host_leader",
    "create_table",
    "insert_bound_params",
    "read_integer",
    "read_float",
    "read_text",
    "read_bytea",
    "read_boolean",
    "read_null",
    "read_expression_types",
    "prepared_repeat",
    "error_23505_unique",
    "error_42601_syntax",
    "error_0A000_nondeterministic",
    "follower_25006_leader_addr",
    // The driver's default transactional mode (docs/compat.md).
    "txn_commit",
    "txn_rollback",
    "txn_error_25P02",
    "txn_savepoint",
];

/// What the cluster looks like to a client (also passed as env vars).
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub ports: Vec<u16>,
    pub leader_port: u16,
    pub follower_port: u16,
    pub leader_addr: String,
    pub user: String,
    /// The user's password (SCRAM-SHA-256).
    pub password: String,
    /// The cluster's CA certificate (PEM), the only root a client trusts.
    pub ca_cert: PathBuf,
}

impl Target {
    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RESQLITE_HOST", self.host.clone()),
            (
                "RESQLITE_PORTS",
                self.ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("RESQLITE_LEADER_PORT", self.leader_port.to_string()),
            ("RESQLITE_FOLLOWER_PORT", self.follower_port.to_string()),
            ("RESQLITE_LEADER_ADDR", self.leader_addr.clone()),
            ("RESQLITE_USER", self.user.clone()),
            // libpq (psql, pgbench, psycopg, psycopg2) reads these itself;
            // pgjdbc and node-postgres are given them by their programs.
            ("PGPASSWORD", self.password.clone()),
            ("PGSSLMODE", "verify-full".into()),
            ("PGSSLROOTCERT", self.ca_cert.display().to_string()),
            // libpq: SCRAM-SHA-256-PLUS, bound to the server's certificate.
            ("PGCHANNELBINDING", "require".into()),
        ]
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Line {
    feature: String,
    status: String,
    note: String,
}

/// One client's run.
#[derive(Debug)]
enum Outcome {
    Ran {
        lines: Vec<Line>,
        /// `None` when the client ended normally or with exit 1; otherwise
        /// what went wrong (crash, timeout, unparsable output).
        crash: Option<String>,
    },
    Skipped(String),
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent: the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `cmd args…` runs and exits 0.
fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parses the `COMPAT` lines of `client` out of a program's stdout.
fn parse_lines(client: &str, stdout: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for raw in stdout.lines() {
        let Some(rest) = raw.strip_prefix("COMPAT ") else {
            continue;
        };
        let mut parts = rest.splitn(4, ' ');
        let (who, feature, status) = (parts.next(), parts.next(), parts.next());
        let note = parts.next().unwrap_or("").trim().to_string();
        match (who, feature, status) {
            (Some(w), Some(f), Some(s))
                if w == client && matches!(s, "pass" | "fail" | "unsupported") =>
            {
                lines.push(Line {
                    feature: f.to_string(),
                    status: s.to_string(),
                    note,
                })
            }
            _ => return Err(format!("malformed line from {client}: {raw:?}")),
        }
    }
    Ok(lines)
}

/// Runs an external client program with the cluster in its environment.
fn run_program(client: &str, mut cmd: Command, target: &Target) -> Outcome {
    for (k, v) in target.envs() {
        cmd.env(k, v);
    }
    // libpq must not pick up a developer's own settings.
    for k in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICE",
        "PGOPTIONS",
        "PGPASSFILE",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLCRL",
        "PGSSLNEGOTIATION",
        "PGREQUIRESSL",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Ran {
                lines: vec![],
                crash: Some(format!("could not start: {e}")),
            }
        }
    };
    let pid = child.id();
    // Kill the client if it outlives its time (the guard thread wakes on the
    // channel when the client ends first).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(CLIENT_TIMEOUT).is_err() {
            // The child is still ours (not yet reaped): its pid is not reused.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return true;
        }
        false
    });
    let out = child.wait_with_output();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Outcome::Ran {
                lines: vec![],
                crash: Some(format!("wait failed: {e}")),
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "--- {client}: {:?} in {:.1?} ---\n{stdout}{}",
        out.status,
        started.elapsed(),
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("stderr:\n{stderr}")
        }
    );
    let (lines, mut crash) = match parse_lines(client, &stdout) {
        Ok(l) => (l, None),
        Err(e) => (vec![], Some(e)),
    };
    if timed_out {
        crash = Some(format!("killed after {CLIENT_TIMEOUT:?}"));
    } else if crash.is_none() {
        match out.status.code() {
            Some(0) => {}
            Some(1) if lines.iter().any(|l| l.status == "fail") => {}
            other => {
                crash = Some(format!(
                    "exited {other:?}: {}",
                    stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ))
            }
        }
    }
    Outcome::Ran { lines, crash }
}

fn lines_from_rust(client: &str, printed: Vec<String>) -> Outcome {
    let text = printed.join("\n");
    eprintln!("--- {client} ---\n{text}");
    match parse_lines(client, &text) {
        Ok(lines) => Outcome::Ran { lines, crash: None },
        Err(e) => Outcome::Ran {
            lines: vec![],
            crash: Some(e),
        },
    }
}

fn run_psql(target: &Target) -> Outcome {
    if !runs("psql", &["--version"]) || !runs("bash", &["--version"]) {
        return Outcome::Skipped("psql is not installed (apt: postgresql-client)".into());
    }
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("compat/psql/run.sh"));
    run_program("psql", cmd, target)
}

fn run_pgbench(target: &Target) -> Outcome {
    if !runs("pgbench", &["--version"]) {
        return Outcome::Skipped("pgbench is not installed (apt: postgresql-client)".into());
    }
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("compat/pgbench/run.sh"));
    run_program("pgbench", cmd, target)
}

fn run_python(client: &str, module: &str, script: &str, target: &Target) -> Outcome {
    if !runs("python3", &["-c", &format!("import {module}")]) {
        return Outcome::Skipped(format!(
            "python3 module {module} is not installed (pip, see .ci/run)"
        ));
    }
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("compat/python").join(script))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_program(client, cmd, target)
}

fn run_pgjdbc(target: &Target) -> Outcome {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    if !runs("javac", &["-version"]) || !jar.exists() {
        return Outcome::Skipped(
            "javac or /usr/share/java/postgresql.jar missing (apt: default-jdk-headless libpostgresql-jdbc-java)"
                .into(),
        );
    }
    let classes = tempfile::tempdir().expect("a temp dir for the Java classes");
    let compiled = Command::new("javac")
        .arg("-cp")
        .arg(jar)
        .arg("-d")
        .arg(classes.path())
        .arg(repo_root().join("compat/java/Compat.java"))
        .output();
    match compiled {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Outcome::Ran {
                lines: vec![],
                crash: Some(format!(
                    "javac failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                )),
            }
        }
        Err(e) => {
            return Outcome::Ran {
                lines: vec![],
                crash: Some(format!("javac: {e}")),
            }
        }
    }
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}:{}", classes.path().display(), jar.display()))
        .arg("Compat");
    run_program("pgjdbc", cmd, target)
}

fn run_node(target: &Target) -> Outcome {
    let dir = repo_root().join("compat/node");
    if !runs("node", &["--version"]) {
        return Outcome::Skipped("node is not installed (apt: nodejs npm)".into());
    }
    if !dir.join("node_modules/pg").exists() {
        return Outcome::Skipped(
            "compat/node has no node_modules: run `npm ci --prefix compat/node`".into(),
        );
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("compat.js"));
    run_program("node-postgres", cmd, target)
}

/// A connection to node `port` as the suite's user, over TLS verified
/// against the cluster's CA, with `auth` (password, sslmode…) appended.
async fn connect_tls(
    port: u16,
    auth: &str,
    tls: &MakeRustlsConnect,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo = format!("host=127.0.0.1 port={port} user=resqlite connect_timeout=3 {auth}");
    let (client, conn) = tokio_postgres::connect(&conninfo, tls.clone()).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The node that says it is the leader, asked over TLS with the password
/// (`SqlCluster::wait_for_leader` speaks plaintext, which this cluster
/// refuses).
async fn wait_for_leader(c: &SqlCluster, tls: &MakeRustlsConnect) -> anyhow::Result<NodeId> {
    let auth = format!(
        "password={} sslmode=require",
        tokio_postgres_client::quoted(PASSWORD)
    );
    wait_until("a leader", ELECTION, || async {
        for id in c.running() {
            let Ok(client) = connect_tls(c.pg_port(id), &auth, tls).await else {
                continue;
            };
            if let Ok(row) = client.query_one("SHOW transaction_read_only", &[]).await {
                if row.get::<_, String>(0) == "off" {
                    return Some(id);
                }
            }
        }
        None
    })
    .await
}

/// A server error as `SQLSTATE message`; a client-side one with its causes.
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return format!("{} {}", d.code().code(), d.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Proves the cluster is not open: on every node a login without a
/// password, with a wrong one, and a plaintext login with the right one
/// are all refused. Returns what was seen (for the matrix) and the
/// problems (a login that got in).
async fn refusals(c: &SqlCluster, tls: &MakeRustlsConnect) -> (Vec<String>, Vec<String>) {
    let password = tokio_postgres_client::quoted(PASSWORD);
    // (what, conninfo, the SQLSTATE of the refusal, or None: tokio-postgres
    // gives up with "password missing" once the server asks for one).
    let probes: [(&str, String, Option<&str>); 3] = [
        ("no password, TLS", "sslmode=require".into(), None),
        (
            "a wrong password, TLS",
            "password='not the password' sslmode=require".into(),
            Some("28P01"),
        ),
        (
            "the right password, plaintext",
            format!("password={password} sslmode=disable"),
            Some("28000"),
        ),
    ];
    let mut seen: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for (what, auth, want) in &probes {
        for id in c.ids() {
            let port = c.pg_port(id);
            let got = if want == &Some("28000") {
                let conninfo =
                    format!("host=127.0.0.1 port={port} user=resqlite connect_timeout=3 {auth}");
                tokio_postgres::connect(&conninfo, NoTls).await.map(|_| ())
            } else {
                connect_tls(port, auth, tls).await.map(|_| ())
            };
            match got {
                Ok(()) => problems.push(format!("node {id} let in a login with {what}")),
                Err(e) => {
                    let text = error_text(&e);
                    let code = e.as_db_error().map(|d| d.code().code().to_string());
                    match want {
                        Some(want) if code.as_deref() != Some(*want) => problems.push(format!(
                            "node {id}, login with {what}: got {text:?}, want {want}"
                        )),
                        None if !text.contains("password missing") => problems.push(format!(
                            "node {id}, login with {what}: got {text:?}, want a password request"
                        )),
                        _ => {}
                    }
                    let line = format!("{what}: `{text}`");
                    if !seen.contains(&line) {
                        seen.push(line);
                    }
                }
            }
        }
    }
    (seen, problems)
}

/// The matrix and the notes behind it, as markdown, after what the
/// refusal probes saw.
fn render_matrix(results: &BTreeMap<&str, Outcome>, refused: &[String]) -> String {
    let mut features: Vec<String> = COMMON_FEATURES.iter().map(|f| f.to_string()).collect();
    let mut seen: BTreeSet<String> = features.iter().cloned().collect();
    for client in CLIENTS {
        if let Some(Outcome::Ran { lines, .. }) = results.get(client) {
            for l in lines {
                if seen.insert(l.feature.clone()) {
                    features.push(l.feature.clone());
                }
            }
        }
    }
    let mut md = String::new();
    md.push_str(
        "The cluster of this run required SCRAM-SHA-256 passwords and TLS \
         (`--password-file`, `--pg-cert`, `--pg-key`, `--pg-tls-required`; \
         `--certs-dir` between nodes): every client below logged in with the \
         password over TLS, verifying the server's certificate against the \
         cluster's CA. Refused on every node (as tokio-postgres saw it; \
         `password missing` is its answer to the server's password request):\n\n",
    );
    for r in refused {
        md.push_str(&format!("- {r}\n"));
    }
    md.push_str("\n| feature |");
    for c in CLIENTS {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str("\n|---|");
    for _ in CLIENTS {
        md.push_str("---|");
    }
    md.push('\n');
    let mut notes = Vec::new();
    for f in &features {
        md.push_str(&format!("| `{f}` |"));
        for c in CLIENTS {
            let cell = match results.get(c) {
                Some(Outcome::Skipped(_)) | None => "skipped".to_string(),
                Some(Outcome::Ran { lines, .. }) => match lines.iter().find(|l| &l.feature == f) {
                    None => "—".to_string(),
                    Some(l) => {
                        let mut note = l.note.clone();
                        if l.status == "fail" {
                            if let Some(k) = KNOWN_ISSUES
                                .iter()
                                .position(|k| k.affects.iter().any(|&(kc, kf)| kc == *c && kf == f))
                            {
                                note = format!("{note} — known server bug K{}", k + 1);
                            }
                        }
                        if note.is_empty() {
                            l.status.clone()
                        } else {
                            notes.push(format!("{c} / `{f}`: {note}"));
                            format!("{} [{}]", l.status, notes.len())
                        }
                    }
                },
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push_str("\n— : not applicable to this client.\n\n");
    if !KNOWN_ISSUES.is_empty() {
        md.push_str(
            "Known server bugs (the suite's `KNOWN_ISSUES`, to be fixed in the server):\n\n",
        );
        for (i, k) in KNOWN_ISSUES.iter().enumerate() {
            md.push_str(&format!("- **K{}**: {}\n", i + 1, k.bug));
        }
        md.push_str("\nNotes:\n\n");
    }
    for (i, n) in notes.iter().enumerate() {
        md.push_str(&format!("{}. {n}\n", i + 1));
    }
    for c in CLIENTS {
        match results.get(c) {
            Some(Outcome::Skipped(why)) => md.push_str(&format!("\n{c} was skipped: {why}\n")),
            Some(Outcome::Ran {
                crash: Some(why), ..
            }) => md.push_str(&format!("\n{c} crashed: {why}\n")),
            _ => {}
        }
    }
    md
}

const BEGIN_MARK: &str = "<!-- BEGIN GENERATED: cargo test -p resqlite --test compat -->";
const END_MARK: &str = "<!-- END GENERATED -->";

/// Replaces the generated part of docs/compat.md.
fn write_doc(matrix: &str) {
    let path = repo_root().join("docs/compat.md");
    let doc = std::fs::read_to_string(&path).expect("docs/compat.md exists");
    let (head, rest) = doc
        .split_once(BEGIN_MARK)
        .expect("docs/compat.md has the BEGIN GENERATED marker");
    let (_, tail) = rest
        .split_once(END_MARK)
        .expect("docs/compat.md has the END GENERATED marker");
    let new = format!("{head}{BEGIN_MARK}\n{matrix}{END_MARK}{tail}");
    std::fs::write(&path, new).expect("write docs/compat.md");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_against_a_real_cluster() {
    let suite_started = Instant::now();
    let dir = tempfile::tempdir().expect("a temp dir for certificates");
    let certs_dir = dir.path().join("certs");
    certs::ensure_local_cluster(&certs_dir, 3, "127.0.0.1").expect("certificates");
    let (pg_cert, pg_key) = certs::pg_server_paths(&certs_dir);
    let password_file = dir.path().join("superuser-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let mut c = SqlCluster::prepare(BIN, 3).unwrap();
    c.set_extra_args(
        [
            "--password-file".into(),
            password_file.display().to_string(),
            "--certs-dir".into(),
            certs_dir.display().to_string(),
            "--pg-cert".into(),
            pg_cert.display().to_string(),
            "--pg-key".into(),
            pg_key.display().to_string(),
            "--pg-tls-required".into(),
        ]
        .into(),
    );
    c.start_all().unwrap();
    let ca_cert = certs::ca_cert_path(&certs_dir);
    let tls = tokio_postgres_client::tls(&ca_cert).expect("the cluster's CA loads");
    let leader = wait_for_leader(&c, &tls).await.unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let target = Target {
        host: "127.0.0.1".into(),
        ports: c.ids().iter().map(|&id| c.pg_port(id)).collect(),
        leader_port: c.pg_port(leader),
        follower_port: c.pg_port(follower),
        leader_addr: c.pg_addr(leader),
        user: "resqlite".into(),
        password: PASSWORD.into(),
        ca_cert,
    };
    let (refused, mut problems) = refusals(&c, &tls).await;

    let mut results: BTreeMap<&str, Outcome> = BTreeMap::new();
    for &client in CLIENTS {
        let t = Instant::now();
        let outcome = match client {
            "psql" => run_psql(&target),
            "pgbench" => run_pgbench(&target),
            "psycopg3" => run_python(client, "psycopg", "psycopg3_compat.py", &target),
            "psycopg2" => run_python(client, "psycopg2", "psycopg2_compat.py", &target),
            "pgjdbc" => run_pgjdbc(&target),
            "node-postgres" => run_node(&target),
            "tokio-postgres" => lines_from_rust(client, tokio_postgres_client::run(&target).await),
            "sqlx" => lines_from_rust(client, sqlx_client::run(&target).await),
            other => unreachable!("no runner for {other}"),
        };
        eprintln!("{client}: {:.1?}", t.elapsed());
        results.insert(client, outcome);
        // The suite assumes one leader throughout; say so if it moved.
        let now = wait_for_leader(&c, &tls).await.unwrap();
        assert_eq!(now, leader, "leadership moved during {client}");
    }

    // The suite ends with the replicas proving they are identical after
    // every client's writes: `resqlite check` with the operator's
    // certificate, as the gRPC port wants one.
    let (checked, check_out) = tokio::task::block_in_place(|| {
        resqlite_tests::cli::run(
            BIN,
            &[
                "check",
                "--node",
                &c.grpc_addr(leader),
                "--certs-dir",
                &certs_dir.display().to_string(),
                "--timeout-secs",
                "60",
            ],
        )
    });

    let matrix = render_matrix(&results, &refused);
    let dir = target_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("compat-matrix.md"), &matrix).unwrap();
    eprintln!("{matrix}");
    eprintln!("suite: {:.1?}", suite_started.elapsed());

    if checked {
        eprintln!("resqlite check:\n{check_out}");
    } else {
        problems.push(format!("resqlite check failed:\n{check_out}"));
    }
    for &client in CLIENTS {
        match &results[client] {
            Outcome::Skipped(why) => {
                if in_ci() {
                    problems.push(format!("{client} is not installed in CI: {why}"));
                } else {
                    eprintln!("{client} skipped: {why}");
                }
            }
            Outcome::Ran { lines, crash } => {
                if let Some(why) = crash {
                    problems.push(format!("{client} crashed: {why}"));
                }
                if lines.is_empty() {
                    problems.push(format!("{client} reported no feature"));
                }
                // pgbench is a load tool, not a driver: it reports what it can.
                for f in COMMON_FEATURES.iter().filter(|_| client != "pgbench") {
                    if !lines.iter().any(|l| l.feature == *f) {
                        problems.push(format!("{client} did not report {f}"));
                    }
                }
                for l in lines {
                    match (l.status.as_str(), known_issue(client, &l.feature)) {
                        ("fail", None) => {
                            problems.push(format!("{client} {}: {}", l.feature, l.note))
                        }
                        ("fail", Some(_)) => {}
                        (_, Some(why)) => problems.push(format!(
                            "{client} {} is a known issue ({why}) but reported {}: \
                             remove it from KNOWN_ISSUES",
                            l.feature, l.status
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "compat suite problems:\n  {}",
        problems.join("\n  ")
    );
    if std::env::var("RESQLITE_WRITE_COMPAT_DOC").is_ok_and(|v| v == "1") {
        let skipped: Vec<_> = CLIENTS
            .iter()
            .filter(|c| matches!(results[*c], Outcome::Skipped(_)))
            .collect();
        assert!(
            skipped.is_empty(),
            "not writing docs/compat.md from a run that skipped {skipped:?}"
        );
        write_doc(&matrix);
    }
}
