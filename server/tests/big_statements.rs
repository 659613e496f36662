//! Statements up to the documented maximum size (`MAX_STATEMENT_BYTES`,
//! 8 MiB) commit on a real 3-node cluster without a leadership change,
//! while another client keeps writing; one byte more is refused with 54000
//! before anything is proposed. Before the fix, the leader prepared such a
//! statement inside one poll of a tokio worker (about a second in a debug
//! build), its Raft event loop stopped ticking, and the followers elected a
//! new leader: the client got 40003 and nothing was applied (issue 12,
//! item 10).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::NodeStatusRequest;
use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;
use resqlite_wire::MAX_STATEMENT_BYTES;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
/// An 8 MiB write in a debug build on a loaded 2-core machine takes a few
/// seconds; this only bounds a hang.
const COMMIT: Duration = Duration::from_secs(120);
/// How soon after large statements the cluster must take a write.
const SERVES_AGAIN: Duration = Duration::from_secs(2);
/// No node may grow beyond this.
const RSS_BOUND: u64 = 512 << 20;

/// Each node's own (role, term, leader), from the admin status RPC.
async fn views(c: &SqlCluster) -> anyhow::Result<BTreeMap<u64, (String, u64, u64)>> {
    let mut out = BTreeMap::new();
    for id in c.ids() {
        let mut client = AdminClient::new(resqlite_tests::grpc::channel(&c.grpc_addr(id)).await?);
        let s = client.node_status(NodeStatusRequest {}).await?.into_inner();
        out.insert(id, (s.role, s.term, s.leader));
    }
    Ok(out)
}

/// The term once every node is in it and follows the same leader.
async fn settled(c: &SqlCluster) -> (u64, u64) {
    wait_until(
        "every node in one term under one leader",
        ELECTION,
        || async {
            let v = views(c).await.ok()?;
            let (_, term, leader) = v.values().next()?.clone();
            let one = v.values().all(|(_, t, l)| *t == term && *l == leader);
            let leads = v.get(&leader).is_some_and(|(role, _, _)| role == "leader");
            (one && leads && leader != 0).then_some((term, leader))
        },
    )
    .await
    .expect("a settled cluster")
}

/// `INSERT INTO big (tag, v) VALUES (<tag>, '<x…>')` of exactly `bytes`
/// bytes of SQL text, and the length of the value it inserts.
fn insert_of_size(bytes: usize, tag: u64) -> (String, usize) {
    let head = format!("INSERT INTO big (tag, v) VALUES ({tag}, '");
    let tail = "')";
    let fill = bytes - head.len() - tail.len();
    let mut sql = String::with_capacity(bytes);
    sql.push_str(&head);
    sql.extend(std::iter::repeat_n('x', fill));
    sql.push_str(tail);
    assert_eq!(sql.len(), bytes);
    (sql, fill)
}

/// Another client: one insert every 20 ms on `db` until told to stop,
/// counting acknowledgements; returns the errors. A trickle rather than a
/// flood: between its writes the leader's runtime idles, which is when one
/// long poll on a worker used to stall the whole node.
async fn write_paced(
    db: Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
    acks: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for key in 1i64.. {
        tokio::select! {
            _ = stop.wait_for(|&s| s) => break,
            _ = pace.tick() => {}
        }
        match db.execute("INSERT INTO t VALUES ($1)", &[&key]).await {
            Ok(_) => {
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => errors.push(format!("write {key}: {e:?}")),
        }
    }
    errors
}

fn affected(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_up_to_the_maximum_commit_without_a_leadership_change() {
    let mut c = SqlCluster::prepare(BIN, 3).unwrap();
    // As deployed: mutual TLS between nodes, SCRAM passwords.
    c.secure(true).unwrap();
    c.start_all().unwrap();
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY);
         CREATE TABLE quick (id INTEGER PRIMARY KEY);
         CREATE TABLE big (id INTEGER PRIMARY KEY, tag INTEGER NOT NULL, v TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let (term, leader) = settled(&c).await;

    // Another client writes all along, on whichever node leads.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let acks = Arc::new(AtomicUsize::new(0));
    let other = c.connect(leader).await.unwrap();
    let writer = tokio::spawn(write_paced(other, stopped, acks.clone()));
    let writes_go_on = |after: usize| {
        let acks = acks.clone();
        async move {
            wait_until("the other client's next write", COMMIT, || {
                let acks = acks.clone();
                async move { (acks.load(Ordering::Relaxed) > after).then_some(()) }
            })
            .await
            .unwrap()
        }
    };
    writes_go_on(0).await;

    // A Query message carries the text and its NUL: the largest text is one
    // byte under the limit. Two clients send one each at the same time,
    // three rounds: more than one large statement at once is what used to
    // leave no worker free on the leader.
    let second = c.connect(leader).await.unwrap();
    let largest = MAX_STATEMENT_BYTES - 1;
    let mut want = Vec::new();
    for round in 0..3 {
        let before = acks.load(Ordering::Relaxed);
        let tags = [2 * round + 1, 2 * round + 2];
        let (a, a_len) = insert_of_size(largest, tags[0]);
        let (b, b_len) = insert_of_size(largest, tags[1]);
        want.push(vec![tags[0].to_string(), a_len.to_string()]);
        want.push(vec![tags[1].to_string(), b_len.to_string()]);
        let both = async { tokio::join!(db.simple_query(&a), second.simple_query(&b)) };
        let (ra, rb) = tokio::time::timeout(COMMIT, both)
            .await
            .expect("the statements are answered");
        for (tag, result) in tags.iter().zip([ra, rb]) {
            match result {
                Ok(messages) => assert_eq!(affected(&messages), Some(1), "statement {tag}"),
                Err(e) => panic!("statement {tag} of {largest} bytes failed: {e:?}"),
            }
        }
        writes_go_on(before).await;
        // And a write right after them is taken at once (a liveness bound:
        // a wedged leader never answers).
        tokio::time::timeout(
            SERVES_AGAIN,
            db.batch_execute("INSERT INTO quick DEFAULT VALUES"),
        )
        .await
        .expect("a write within SERVES_AGAIN of the large ones")
        .expect("the write commits");
    }

    // The extended protocol: a short text with one large bound parameter,
    // the whole Bind message within the limit.
    let value = "y".repeat(MAX_STATEMENT_BYTES - 1024);
    let n = tokio::time::timeout(
        COMMIT,
        db.execute("INSERT INTO big (tag, v) VALUES (7, $1)", &[&value]),
    )
    .await
    .expect("the statement is answered")
    .expect("a bound statement at the limit commits");
    assert_eq!(n, 1);
    want.push(vec!["7".to_string(), value.len().to_string()]);

    // One byte over the limit: refused with 54000, saying the limit.
    let refused = db
        .simple_query(&insert_of_size(largest + 1, 8).0)
        .await
        .expect_err("over the limit");
    let e = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(e.code(), &SqlState::PROGRAM_LIMIT_EXCEEDED, "{e:?}");
    assert!(
        e.message().contains(&MAX_STATEMENT_BYTES.to_string()),
        "the message names the limit: {}",
        e.message()
    );
    let value = "z".repeat(MAX_STATEMENT_BYTES + 1);
    let refused = db
        .execute("INSERT INTO big (tag, v) VALUES (9, $1)", &[&value])
        .await
        .expect_err("a parameter over the limit");
    assert_eq!(refused.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED));
    // The connection goes on.
    db.simple_query("SELECT 1").await.unwrap();

    let after = acks.load(Ordering::Relaxed);
    writes_go_on(after).await;
    stop.send_replace(true);
    let errors = writer.await.unwrap();
    assert!(
        errors.is_empty(),
        "the other client's writes failed: {errors:?}"
    );

    // No node changed term, and the leader is the same.
    let now = views(&c).await.unwrap();
    for (id, (_, t, l)) in &now {
        assert_eq!((*t, *l), (term, leader), "node {id}: {now:?}");
    }

    // Memory stays bounded on every node.
    for id in c.ids() {
        let rss = c.peak_rss(id).unwrap();
        eprintln!("node {id} peak RSS {} MiB", rss >> 20);
        assert!(rss < RSS_BOUND, "node {id} peak RSS {rss} bytes");
    }

    // Every node holds the four statements that committed, whole, and
    // nothing of the refused ones.
    c.wait_all_hold("SELECT tag, length(v) FROM big ORDER BY tag", &want, COMMIT)
        .await
        .unwrap();
}
