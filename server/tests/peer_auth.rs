//! Mutual TLS on the gRPC port of a real 3-node cluster: only certificates
//! of the cluster's CA get in, a Raft message is accepted only from the
//! certificate that names its sender, and the Admin and ClientCommand
//! services answer operators and nodes only. Each attack of the security
//! review is replayed and must change nothing: the cluster keeps its term,
//! keeps committing, and its replicas stay identical.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use resqlite::certs;
use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::client_client::ClientClient;
use resqlite_proto::client::client_command_request::Statement;
use resqlite_proto::client::{ClientCommandRequest, NodeStatusRequest};
use resqlite_proto::raft as pb;
use resqlite_proto::raft::raft_client::RaftClient;
use resqlite_raft::transport::tls::{node_name, TlsFiles, CLUSTER_NAME};
use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;
use tonic::transport::{Channel, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);

/// A 3-node cluster whose nodes run with mutual TLS from `certs`.
fn tls_cluster(certs: &Path) -> SqlCluster {
    certs::ensure_local_cluster(certs, 3, "127.0.0.1").expect("certificates");
    let mut c = SqlCluster::prepare(BIN, 3).expect("prepare");
    c.set_extra_args(vec!["--certs-dir".to_string(), certs.display().to_string()]);
    c.start_all().expect("start");
    c
}

/// A TLS channel to `addr` presenting `files`, expecting the server to hold
/// `server_name`.
async fn channel(addr: &str, files: &TlsFiles, server_name: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(files.client_config(server_name))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

async fn admin(addr: &str, files: &TlsFiles) -> AdminClient<Channel> {
    AdminClient::new(
        channel(addr, files, CLUSTER_NAME)
            .await
            .expect("an admin certificate reaches the node"),
    )
}

/// (term, members) as node `addr` reports them.
async fn term_and_members(addr: &str, files: &TlsFiles) -> (u64, usize) {
    let s = admin(addr, files)
        .await
        .node_status(NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    (s.term, s.members.len())
}

async fn row_count(c: &SqlCluster, leader: u64) -> i64 {
    let db = c.connect(leader).await.expect("connect");
    db.query_one("SELECT count(*) FROM notes", &[])
        .await
        .expect("count")
        .get(0)
}

/// `resqlite check` with the operator's certificate: every member holds
/// the same database.
fn assert_replicas_identical(addr: &str, certs_dir: &Path) {
    let (ok, out) = resqlite_tests::cli::run(
        BIN,
        &[
            "check",
            "--node",
            addr,
            "--certs-dir",
            &certs_dir.display().to_string(),
        ],
    );
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_of_the_cluster_reach_the_grpc_port() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    let c = tls_cluster(&ours);
    // Another CA, with certificates named exactly like ours.
    certs::ensure_local_cluster(&theirs, 3, "127.0.0.1").unwrap();
    // A certificate of our CA that is neither an operator nor a node.
    certs::issue_other(&ours, "someone", vec!["someone.resqlite".into()]).unwrap();
    let admin_files = certs::admin_files(&ours).unwrap();
    c.wait_for_leader(ELECTION).await.expect("a leader");
    let addr = c.grpc_addr(2);

    // No TLS at all.
    let plain = async {
        let mut a = AdminClient::connect(format!("http://{addr}")).await?;
        anyhow::Ok(a.node_status(NodeStatusRequest {}).await?)
    };
    assert!(plain.await.is_err(), "a plaintext client got an answer");

    // TLS with the other CA's admin certificate: the handshake fails.
    let foreign = certs::admin_files(&theirs).unwrap();
    let call = async {
        let mut a = AdminClient::new(channel(&addr, &foreign, CLUSTER_NAME).await?);
        anyhow::Ok(a.node_status(NodeStatusRequest {}).await?)
    };
    assert!(
        call.await.is_err(),
        "another CA's certificate got an answer"
    );

    // Our CA, but neither an operator's nor a node's certificate.
    let someone = certs::client_files(&ours, "someone").unwrap();
    let ch = channel(&addr, &someone, CLUSTER_NAME)
        .await
        .expect("the handshake itself succeeds");
    let status = AdminClient::new(ch.clone())
        .node_status(NodeStatusRequest {})
        .await
        .expect_err("a certificate naming no role was answered");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let sql = ClientClient::new(ch)
        .client_command(ClientCommandRequest {
            statement: Some(Statement::Query("SELECT 1".into())),
            read_consistency: "local".into(),
            ..Default::default()
        })
        .await
        .expect_err("ClientCommand answered a certificate naming no role");
    assert_eq!(sql.code(), tonic::Code::PermissionDenied, "{sql:?}");

    // The operator's certificate works, and so does the CLI with it.
    let (_, members) = term_and_members(&addr, &admin_files).await;
    assert_eq!(members, 3);
    let (ok, out) = resqlite_tests::cli::run(
        BIN,
        &[
            "status",
            "--node",
            &addr,
            "--certs-dir",
            &ours.display().to_string(),
        ],
    );
    assert!(ok && out.contains("leader"), "{out}");
    let (ok, out) = resqlite_tests::cli::run(BIN, &["status", "--node", &addr]);
    assert!(!ok && out.contains("--certs-dir"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_messages_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let c = tls_cluster(&certs_dir);
    let admin_files = certs::admin_files(&certs_dir).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let db = c.connect(leader).await.expect("connect");
    db.batch_execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    db.execute("INSERT INTO notes (body) VALUES ('before')", &[])
        .await
        .unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = c
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let target = c.grpc_addr(follower);
    let (term, _) = term_and_members(&target, &admin_files).await;

    // Two impostors: an operator (a valid certificate, but not a node),
    // and node `other` claiming to be the leader.
    let impostors = [
        ("the admin certificate", admin_files.clone()),
        (
            "another node's certificate",
            certs::node_files(&certs_dir, other).unwrap(),
        ),
    ];
    for (who, files) in &impostors {
        let ch = channel(&target, files, &node_name(follower))
            .await
            .expect("handshake");
        let mut raft = RaftClient::new(ch);
        // A heartbeat of a newer term: only the certificate can tell.
        let beat = raft
            .heartbeat(pb::HeartbeatRequest {
                term: term + 1,
                from: leader,
                to: follower,
                commit: 0,
                read_round: 0,
                rpc_id: 1,
            })
            .await
            .expect_err("a heartbeat from an impostor was taken");
        assert_eq!(
            beat.code(),
            tonic::Code::PermissionDenied,
            "{who}: {beat:?}"
        );
        // The term-overflow heartbeat of the review: refused as malformed
        // even before the certificate is looked at.
        let overflow = raft
            .heartbeat(pb::HeartbeatRequest {
                term: u64::MAX,
                from: leader,
                to: follower,
                commit: 0,
                read_round: 0,
                rpc_id: 1,
            })
            .await
            .expect_err("the term-overflow heartbeat was taken");
        assert!(
            matches!(
                overflow.code(),
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ),
            "{who}: {overflow:?}"
        );
        let vote = raft
            .request_vote(pb::RequestVoteRequest {
                term: term + 1,
                from: leader,
                to: follower,
                last_log_index: u64::MAX / 4,
                last_log_term: term + 1,
                pre_vote: false,
                transfer: true,
                rpc_id: 2,
            })
            .await
            .expect_err("a vote request from an impostor was taken");
        assert_eq!(
            vote.code(),
            tonic::Code::PermissionDenied,
            "{who}: {vote:?}"
        );
        let timeout_now = raft
            .timeout_now(pb::TimeoutNowRequest {
                term,
                from: leader,
                to: follower,
                ..Default::default()
            })
            .await
            .expect_err("TimeoutNow from an impostor was taken");
        assert_eq!(timeout_now.code(), tonic::Code::PermissionDenied, "{who}");

        // A forged write on the AppendEntries stream: the stream is closed
        // before the entry reaches the core, so nothing answers it.
        let forged = pb::AppendEntriesRequest {
            term: term + 1,
            from: leader,
            to: follower,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![pb::Entry {
                term: term + 1,
                index: 1,
                kind: pb::EntryKind::Normal as i32,
                data: b"forged".to_vec().into(),
            }],
            leader_commit: 1,
            rpc_id: 3,
        };
        let replies = raft
            .append_entries(futures::stream::iter(vec![forged]))
            .await;
        if let Ok(replies) = replies {
            let mut replies = replies.into_inner();
            let first = tokio::time::timeout(Duration::from_secs(5), replies.message()).await;
            assert!(
                !matches!(first, Ok(Ok(Some(_)))),
                "{who}: the forged append was answered: {first:?}"
            );
        }

        // A fake snapshot: refused before a byte reaches the disk.
        let chunk = pb::InstallSnapshotChunk {
            term: term + 1,
            from: leader,
            to: follower,
            last_included_index: 1_000_000,
            last_included_term: term + 1,
            offset: 0,
            data: vec![0u8; 1 << 20].into(),
            done: false,
            total_size: 300 << 20,
            ..Default::default()
        };
        let snap = raft
            .install_snapshot(futures::stream::iter(vec![chunk]))
            .await
            .expect_err("a snapshot from an impostor was taken");
        assert_eq!(
            snap.code(),
            tonic::Code::PermissionDenied,
            "{who}: {snap:?}"
        );
        let snapshots = c.data_dir(follower).unwrap().join("snapshots");
        let incoming: Vec<_> = std::fs::read_dir(&snapshots)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("incoming"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(incoming.is_empty(), "{who}: snapshot files {incoming:?}");
    }

    // Nothing changed: same term everywhere, the cluster still commits,
    // the forged row is nowhere, the replicas are identical.
    for id in c.ids() {
        let (t, members) = term_and_members(&c.grpc_addr(id), &admin_files).await;
        assert_eq!((t, members), (term, 3), "node {id}");
    }
    db.execute("INSERT INTO notes (body) VALUES ('after')", &[])
        .await
        .expect("the cluster still commits");
    assert_eq!(row_count(&c, leader).await, 2);
    assert_replicas_identical(&c.grpc_addr(leader), &certs_dir);
}

/// A `resqlite serve --join` outside the cluster's CA.
fn rogue_node(dir: &Path, via: &str, certs_dir: Option<&Path>) -> Child {
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let pg = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let grpc = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--id", "4"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{pg}")])
        .args(["--raft-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--join", via])
        .env_remove("RESQLITE_CERTS_DIR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).expect("log file"));
    if let Some(d) = certs_dir {
        cmd.arg("--certs-dir").arg(d);
    }
    cmd.spawn().expect("start the rogue node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_clusters_certificate_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    let c = tls_cluster(&ours);
    certs::ensure_local_cluster(&theirs, 4, "127.0.0.1").unwrap();
    let admin_files = certs::admin_files(&ours).unwrap();
    c.wait_for_leader(ELECTION).await.expect("a leader");
    let via = c.grpc_addr(1);
    let mut rogues = vec![
        rogue_node(&dir.path().join("plain"), &via, None),
        rogue_node(&dir.path().join("foreign"), &via, Some(&theirs)),
    ];
    // `serve --join` retries for ever: wait until each has been turned
    // away several times.
    for name in ["plain", "foreign"] {
        let log = dir.path().join(name).with_extension("log");
        wait_until(
            &format!("the {name} node to be refused"),
            ELECTION,
            || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                (text.matches("joining the cluster failed").count() >= 3).then_some(())
            },
        )
        .await
        .expect("the rogue node tries to join and is refused");
    }
    for id in c.ids() {
        let (_, members) = term_and_members(&c.grpc_addr(id), &admin_files).await;
        assert_eq!(members, 3, "node {id} took a member in");
    }
    for r in &mut rogues {
        let _ = r.kill();
        let _ = r.wait();
    }
    // The operator can still add node 4 the proper way: our CA's node-4
    // certificate, then `serve --join`.
    certs::issue_node(&ours, 4).unwrap();
    let mut proper = rogue_node(&dir.path().join("proper"), &via, Some(&ours));
    let joined = wait_until("node 4 to be a member", ELECTION * 2, || async {
        let (_, members) = term_and_members(&via, &admin_files).await;
        (members == 4).then_some(())
    })
    .await;
    let _ = proper.kill();
    let _ = proper.wait();
    joined.expect("a node with the cluster's certificate joins");
}

#[test]
fn a_node_open_to_the_network_without_protection_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--data-dir", &data];
        args.extend_from_slice(extra);
        resqlite_tests::cli::run(BIN, &args)
    };
    let (ok, out) = serve(&["--raft-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0"]);
    assert!(
        !ok && out.contains("without TLS") && out.contains("--certs-dir"),
        "{out}"
    );
    let (ok, out) = serve(&["--raft-listen", "127.0.0.1:0", "--listen", "0.0.0.0:0"]);
    assert!(!ok && out.contains("passwords"), "{out}");

    // With --insecure it starts (and is stopped here).
    let pg_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir", &data, "--insecure"])
        .args(["--raft-listen", "0.0.0.0:0", "--listen"])
        .arg(format!("0.0.0.0:{pg_port}"))
        .env_remove("RESQLITE_CERTS_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pg = pg_port.to_string();
    let listening = (0..100).any(|_| {
        if std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        listening && still_running,
        "--insecure did not let the node start on port {pg}"
    );
}
