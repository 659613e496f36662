//! Operator commands against a real 3-node cluster: `resqlite status`,
//! `resqlite node transfer-leader`, and the hand-over a leader does when it
//! is stopped with SIGTERM (so a rolling restart costs no election).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;
use resqlite_tests::writer::write_steadily;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);

/// Runs the `resqlite` command line; returns success and everything it said.
fn resqlite(args: &[&str]) -> (bool, String) {
    resqlite_tests::cli::run(BIN, args)
}

/// The leader as `resqlite status` shows it, asked through node `via`.
fn leader_per_status(c: &SqlCluster, via: u64) -> Option<u64> {
    let (ok, out) = resqlite(&["status", "--node", &grpc(c, via)]);
    if !ok {
        return None;
    }
    let leaders: Vec<u64> = out
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some("leader"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

fn grpc(c: &SqlCluster, id: u64) -> String {
    format!("127.0.0.1:{}", c.raft_port(id))
}

async fn wait_until_leader_is(c: &SqlCluster, via: u64, want: u64) {
    wait_until(&format!("node {want} to lead"), ELECTION, || async move {
        (leader_per_status(c, via) == Some(want)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_transfer_leader_and_sigterm_hand_over() {
    let mut c = SqlCluster::start(BIN, 3).expect("cluster");
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let db = c.connect(leader).await.unwrap();
    db.simple_query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    db.simple_query("INSERT INTO t VALUES (1)").await.unwrap();
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();

    // Asked through a follower, status lists every node, one leader, and
    // each node's own positions.
    let (ok, out) = resqlite(&["status", "--node", &grpc(&c, follower)]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header[..6],
        ["id", "role", "term", "commit", "applied", "lag"],
        "{out}"
    );
    assert_eq!(leader_per_status(&c, follower), Some(leader), "{out}");
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], (i + 1).to_string(), "{out}");
        assert!(cells[3].parse::<u64>().unwrap() >= 2, "commit index: {out}");
        assert!(cells[7].starts_with("127.0.0.1:"), "{out}");
    }

    // Transfer to a named follower, asked through any node.
    let (ok, out) = resqlite(&[
        "node",
        "transfer-leader",
        "--node",
        &grpc(&c, leader),
        "--to",
        &follower.to_string(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("to node {follower}")), "{out}");
    wait_until_leader_is(&c, leader, follower).await;
    let (ok, out) = resqlite(&[
        "node",
        "transfer-leader",
        "--node",
        &grpc(&c, leader),
        "--to",
        "9",
    ]);
    assert!(!ok && out.contains("not a voter"), "{out}");

    // SIGTERM of the leader under a steady write load: it hands over
    // before it exits. The writer tries every other node in turn.
    let stopping = follower;
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&i| i != stopping).collect();
    // The writer starts on the leader and follows redirects to the others.
    let mut order = vec![stopping];
    order.extend(&survivors);
    let targets: Vec<String> = order.iter().map(|&i| c.pg_addr(i)).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acks = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_steadily(targets, stop_rx, acks.clone()));
    let acked_at_least = |n: usize| {
        let acks = acks.clone();
        move || {
            let acks = acks.clone();
            async move { (acks.load(Ordering::Relaxed) >= n).then_some(()) }
        }
    };
    wait_until("a first acknowledged write", ELECTION, acked_at_least(1))
        .await
        .unwrap();
    let exited = c.terminate(stopping, Duration::from_secs(10)).unwrap();
    assert!(exited, "the leader did not exit on SIGTERM");
    let at_exit = acks.load(Ordering::Relaxed);
    wait_until(
        "a write acknowledged after the old leader exited",
        ELECTION,
        acked_at_least(at_exit + 1),
    )
    .await
    .unwrap();
    stop_tx.send(true).unwrap();
    let (acked, unknown, longest_gap) = writer.await.unwrap();
    let log = std::fs::read_to_string(c.log_path(stopping)).unwrap();
    assert!(log.contains("leadership handed over"), "{log}");
    println!(
        "SIGTERM of the leader: {} writes acknowledged, {} unknown; longest gap between \
         acknowledged writes {longest_gap:?}",
        acked.len(),
        unknown.len()
    );
    assert!(
        acked.iter().any(|&k| k > 1000),
        "writes went on after the hand-over"
    );
    // Every acknowledged write is on every node that is up, the nodes agree,
    // and nothing is there that no client wrote.
    let expected: Vec<i64> = std::iter::once(1).chain(acked.iter().copied()).collect();
    let read_all = || async {
        let mut contents = Vec::new();
        for &id in &survivors {
            let rows = c
                .local_rows(id, "SELECT id FROM t ORDER BY id")
                .await
                .ok()?;
            let keys: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
            contents.push((id, keys));
        }
        Some(contents)
    };
    let converged = wait_until(
        "the survivors to hold every acknowledged write",
        ELECTION,
        || async {
            let contents = read_all().await?;
            let all_there = contents
                .iter()
                .all(|(_, keys)| expected.iter().all(|k| keys.contains(k)));
            let agree = contents.windows(2).all(|w| w[0].1 == w[1].1);
            (all_there && agree).then_some(contents)
        },
    )
    .await;
    let contents = match converged {
        Ok(contents) => contents,
        // Fall through to the assertions, which say what is wrong.
        Err(_) => read_all().await.expect("per-node reads"),
    };
    for (id, keys) in &contents {
        for k in &expected {
            assert!(keys.contains(k), "node {id} lost acknowledged write {k}");
        }
        for k in keys {
            assert!(
                *k == 1 || acked.contains(k) || unknown.contains(k),
                "node {id}: stray {k}"
            );
        }
    }
    assert!(
        contents.windows(2).all(|w| w[0].1 == w[1].1),
        "nodes differ"
    );
}
