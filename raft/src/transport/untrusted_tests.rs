//! The gRPC service fed hostile input: what a peer sends is refused before
//! it reaches the core (malformed terms and indexes) or the disk (snapshot
//! streams that fail their admission, or go quiet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use resqlite_proto::raft as pb;
use resqlite_proto::raft::raft_client::RaftClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::Code;

use super::snapshot_admission::{SnapshotAdmission, SnapshotLimits};
use super::{Inbound, RaftGrpc};
use crate::core::{Role, Status as CoreStatus};
use crate::driver::snapshot_dir::SnapshotDir;

/// The receiving node.
const ME: u64 = 2;
/// Its current term.
const TERM: u64 = 5;

/// Node 2's service on a port the OS picks, at term 5; aborted on drop,
/// pass or fail.
struct Server {
    addr: std::net::SocketAddr,
    inbound: mpsc::Receiver<Inbound>,
    snapshots: PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn limits() -> SnapshotLimits {
    SnapshotLimits {
        max_bytes: 1 << 20,
        disk_reserve: 0,
        idle_timeout: Duration::from_secs(30),
    }
}

fn status(term: u64) -> CoreStatus {
    CoreStatus {
        id: ME,
        role: Role::Follower,
        term,
        vote: None,
        leader: None,
        commit: 0,
        last_index: 0,
        last_term: 0,
        persisted: 0,
        applied: 0,
        snapshot: 0,
    }
}

async fn serve(limits: SnapshotLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let (inbound_tx, inbound) = mpsc::channel(16);
    // The sender is dropped: the receiver keeps the last value.
    let (_, term) = watch::channel(status(TERM));
    let admission = SnapshotAdmission::new(ME, limits).with_term(term);
    let service = RaftGrpc::new(
        ME,
        inbound_tx,
        SnapshotDir::open(snapshots.clone()).unwrap(),
    )
    .with_snapshot_admission(admission)
    .into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Server {
        addr,
        inbound,
        snapshots,
        task,
        _dir: dir,
    }
}

impl Server {
    async fn client(&self) -> RaftClient<Channel> {
        RaftClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the test server")
    }

    /// Asserts that nothing was handed to the core.
    fn assert_core_heard_nothing(&mut self) {
        if let Ok(inb) = self.inbound.try_recv() {
            panic!("the core was handed {:?}", inb.msg);
        }
    }
}

/// The files in the snapshot directory.
fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Waits (at most 10 s) until `ok` holds.
async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `f` for at most 10 s.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

fn first_chunk(term: u64, total_size: u64) -> pb::InstallSnapshotChunk {
    pb::InstallSnapshotChunk {
        term,
        from: 1,
        to: ME,
        last_included_index: 10,
        last_included_term: 3,
        offset: 0,
        data: Bytes::from_static(b"0123456789"),
        done: false,
        total_size,
        voters: vec![1, 2, 3],
        ..Default::default()
    }
}

/// A snapshot stream whose first chunk is sent and which then stays open
/// until the returned sender is dropped; resolves to the server's answer.
fn open_snapshot_stream(
    mut client: RaftClient<Channel>,
    first: pb::InstallSnapshotChunk,
) -> (
    mpsc::Sender<pb::InstallSnapshotChunk>,
    tokio::task::JoinHandle<Result<pb::InstallSnapshotResponse, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(first).unwrap();
    let call = tokio::spawn(async move {
        client
            .install_snapshot(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    (tx, call)
}

async fn refusal_of(first: pb::InstallSnapshotChunk, server: &Server) -> tonic::Status {
    let (_open, call) = open_snapshot_stream(server.client().await, first);
    within("the refusal", call)
        .await
        .unwrap()
        .expect_err("the stream is refused")
}

/// The attack: one Heartbeat at term u64::MAX made a cluster's terms wrap.
/// Every way in answers invalid_argument and the core hears nothing.
#[tokio::test]
async fn a_term_beyond_2_63_is_refused_on_every_rpc_and_never_reaches_the_core() {
    let mut server = serve(limits()).await;
    let mut client = server.client().await;
    let heartbeat = pb::HeartbeatRequest {
        term: u64::MAX,
        from: 1,
        to: ME,
        ..Default::default()
    };
    // A message that reached the core would get no answer here: the
    // calls are bounded so such a test fails instead of hanging.
    let unary = within("the heartbeat", client.heartbeat(heartbeat))
        .await
        .unwrap_err();
    assert_eq!(unary.code(), Code::InvalidArgument, "{unary:?}");

    let streamed = tokio_stream::iter(vec![heartbeat]);
    let replies = within("the heartbeat stream", client.heartbeats(streamed))
        .await
        .unwrap()
        .into_inner();
    let end = within("the heartbeat stream's end", async {
        let mut replies = replies;
        replies.message().await
    })
    .await
    .unwrap_err();
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");

    let append = pb::AppendEntriesRequest {
        term: 1 << 63,
        from: 1,
        to: ME,
        ..Default::default()
    };
    let replies = within(
        "the append stream",
        client.append_entries(tokio_stream::iter(vec![append])),
    )
    .await
    .unwrap()
    .into_inner();
    let end = within("the append stream's end", async {
        let mut replies = replies;
        replies.message().await
    })
    .await
    .unwrap_err();
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");

    let vote = pb::RequestVoteRequest {
        term: u64::MAX,
        from: 1,
        to: ME,
        ..Default::default()
    };
    let refused = within("the vote", client.request_vote(vote))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let snapshot = refusal_of(first_chunk(u64::MAX, 10), &server).await;
    assert_eq!(snapshot.code(), Code::InvalidArgument, "{snapshot:?}");
    server.assert_core_heard_nothing();
}

#[tokio::test]
async fn a_snapshot_from_a_stale_term_writes_nothing() {
    let mut server = serve(limits()).await;
    let refused = refusal_of(first_chunk(TERM - 1, 100), &server).await;
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(files(&server.snapshots), Vec::<String>::new());
    server.assert_core_heard_nothing();
}

#[tokio::test]
async fn a_snapshot_from_this_node_itself_or_for_another_is_refused() {
    let server = serve(limits()).await;
    let from_me = pb::InstallSnapshotChunk {
        from: ME,
        ..first_chunk(TERM, 100)
    };
    let refused = refusal_of(from_me, &server).await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let for_another = pb::InstallSnapshotChunk {
        to: 3,
        ..first_chunk(TERM, 100)
    };
    let refused = refusal_of(for_another, &server).await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(files(&server.snapshots), Vec::<String>::new());
}

#[tokio::test]
async fn a_snapshot_announcing_more_than_the_cap_is_refused_before_writing() {
    let server = serve(limits()).await;
    let refused = refusal_of(first_chunk(TERM, (1 << 20) + 1), &server).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("limit"), "{refused:?}");
    assert_eq!(files(&server.snapshots), Vec::<String>::new());
}

#[tokio::test]
async fn a_snapshot_larger_than_the_free_space_is_refused_before_writing() {
    // No cap to speak of: only the file system's free space refuses it.
    let server = serve(SnapshotLimits {
        max_bytes: u64::MAX,
        ..limits()
    })
    .await;
    let refused = refusal_of(first_chunk(TERM, 1 << 62), &server).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("free"), "{refused:?}");
    assert_eq!(files(&server.snapshots), Vec::<String>::new());
}

#[tokio::test]
async fn a_second_concurrent_snapshot_stream_is_refused_before_writing() {
    let server = serve(limits()).await;
    let (first_open, first_call) =
        open_snapshot_stream(server.client().await, first_chunk(TERM, 100));
    // The first stream is admitted once its temporary file exists.
    wait_for("the first stream's temporary file", || {
        files(&server.snapshots).len() == 1
    })
    .await;
    let refused = refusal_of(first_chunk(TERM, 100), &server).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        files(&server.snapshots).len(),
        1,
        "the second wrote nothing"
    );

    // The first one ends unfinished: its file goes, and its slot is free.
    drop(first_open);
    let ended = within("the first stream's end", first_call).await.unwrap();
    assert!(ended.is_err(), "an unfinished snapshot is not accepted");
    wait_for("the partial file removed", || {
        files(&server.snapshots).is_empty()
    })
    .await;
    let (_open, third) = open_snapshot_stream(server.client().await, first_chunk(TERM, 100));
    wait_for("a later stream admitted", || {
        files(&server.snapshots).len() == 1
    })
    .await;
    third.abort();
}

#[tokio::test]
async fn an_idle_snapshot_stream_is_dropped_and_its_file_removed() {
    let server = serve(SnapshotLimits {
        idle_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let (_open, call) = open_snapshot_stream(server.client().await, first_chunk(TERM, 100));
    wait_for("the temporary file", || files(&server.snapshots).len() == 1).await;
    // The stream stays open and sends nothing more.
    let dropped = within("the idle stream dropped", call)
        .await
        .unwrap()
        .expect_err("an idle stream is dropped");
    assert_eq!(dropped.code(), Code::DeadlineExceeded, "{dropped:?}");
    assert_eq!(files(&server.snapshots), Vec::<String>::new());
}
