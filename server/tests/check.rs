//! `resqlite check` against a real 3-node cluster: identical replicas
//! report one hash; a follower whose database file was changed behind
//! ReSQLite's back is named, the command fails, and the node reports itself
//! diverged in `resqlite status` — still so once that node leads.

use std::time::Duration;

use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);

/// Runs the `resqlite` command line; returns success and everything it said.
fn resqlite(args: &[&str]) -> (bool, String) {
    resqlite_tests::cli::run(BIN, args)
}

/// The member lines of `resqlite check`: (node, hash, verdict).
fn member_lines(out: &str) -> Vec<(u64, String, String)> {
    out.lines()
        .filter(|l| l.starts_with("node ") && l.contains("  index "))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (
                cells[1].parse().expect("node id"),
                cells[5].to_string(),
                cells[6..].join(" "),
            )
        })
        .collect()
}

async fn write_some_rows(c: &SqlCluster) -> u64 {
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let db = c.connect(leader).await.expect("connect");
    db.batch_execute(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance REAL);
         CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
         CREATE TABLE tags (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;",
    )
    .await
    .expect("schema");
    for i in 1..=30i64 {
        db.execute(
            "INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3)",
            &[&i, &format!("owner {i}"), &(i as f64 * 10.5)],
        )
        .await
        .expect("insert");
        db.execute(
            "INSERT INTO events (what) VALUES ($1)",
            &[&format!("opened {i}")],
        )
        .await
        .expect("insert");
    }
    db.batch_execute("INSERT INTO tags VALUES ('a', x'01'), ('b', x'02')")
        .await
        .expect("insert");
    db.batch_execute("UPDATE accounts SET balance = balance - 1 WHERE id % 3 = 0")
        .await
        .expect("update");
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_replicas_report_one_hash() {
    let c = SqlCluster::start(BIN, 3).expect("cluster");
    let leader = write_some_rows(&c).await;
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();

    // Asked through a follower: it forwards to the leader.
    let (ok, out) = resqlite(&["check", "--node", &c.grpc_addr(follower)]);
    println!("{out}");
    assert!(ok, "{out}");
    let lines = member_lines(&out);
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{out}"
    );
    assert!(lines.iter().all(|l| l.2 == "ok"), "{out}");
    assert!(lines.iter().all(|l| l.1 == lines[0].1), "{out}");
    assert_eq!(lines[0].1.len(), 64, "a SHA-256 in hex: {out}");

    // A second check after another write: a new index and a new hash,
    // again the same everywhere.
    let db = c.connect(leader).await.unwrap();
    db.batch_execute("DELETE FROM accounts WHERE id = 5")
        .await
        .unwrap();
    let (ok, again) = resqlite(&["check", "--node", &c.grpc_addr(leader)]);
    assert!(ok, "{again}");
    let second = member_lines(&again);
    assert!(
        second.iter().all(|l| l.2 == "ok" && l.1 == second[0].1),
        "{again}"
    );
    assert_ne!(second[0].1, lines[0].1, "the hash follows the contents");
    let (ok, status) = resqlite(&["status", "--node", &c.grpc_addr(leader)]);
    assert!(ok && !status.contains("DIVERGED"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_changed_behind_our_back_is_named_and_reports_itself_diverged() {
    let mut c = SqlCluster::start(BIN, 3).expect("cluster");
    let leader = write_some_rows(&c).await;
    let victim = c.ids().into_iter().find(|&i| i != leader).unwrap();
    // Every node holds the rows before the victim stops.
    let want = c
        .local_rows(leader, "SELECT count(*) FROM accounts")
        .await
        .unwrap();
    c.wait_all_hold("SELECT count(*) FROM accounts", &want, ELECTION)
        .await
        .unwrap();

    assert!(c.terminate(victim, Duration::from_secs(10)).unwrap());
    let db_path = c.dir().join(format!("node{victim}")).join("db.sqlite");
    {
        let file = rusqlite::Connection::open(&db_path).expect("open the victim's database");
        let changed = file
            .execute("UPDATE accounts SET balance = 0 WHERE id = 7", [])
            .expect("change one row");
        assert_eq!(changed, 1);
    }
    c.start_node(victim).unwrap();
    c.wait_for_leader(ELECTION).await.unwrap();

    let (ok, out) = resqlite(&["check", "--node", &c.grpc_addr(leader)]);
    println!("{out}");
    assert!(!ok, "a diverged replica must fail the check: {out}");
    let lines = member_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    for (id, _, verdict) in &lines {
        let want = if *id == victim { "MISMATCH" } else { "ok" };
        assert_eq!(verdict, want, "node {id}: {out}");
    }
    assert!(
        out.contains("do not hold the majority's database"),
        "the error says what is wrong: {out}"
    );

    // The victim applied the leader's verdict and says so in its status.
    let status = wait_until("the victim to report itself diverged", ELECTION, || async {
        let (ok, status) = resqlite(&["status", "--node", &c.grpc_addr(leader)]);
        (ok && status.contains(&format!("node {victim} diverged"))).then_some(status)
    })
    .await
    .unwrap();
    println!("{status}");
    let row = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&victim.to_string()))
        .unwrap();
    assert!(row.contains("DIVERGED"), "{status}");
    let healthy = status
        .lines()
        .skip(1)
        .filter(|l| l.contains("127.0.0.1:") && !l.contains("DIVERGED"))
        .count();
    assert_eq!(healthy, 2, "{status}");

    // The damaged node leads now: the verdict is still the majority's
    // hash, so it is the one named, and the healthy followers are not.
    let (ok, out) = resqlite(&[
        "node",
        "transfer-leader",
        "--node",
        &c.grpc_addr(leader),
        "--to",
        &victim.to_string(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = wait_until("a check run by the damaged leader", ELECTION, || async {
        let (ok, out) = resqlite(&["check", "--node", &c.grpc_addr(leader)]);
        out.contains(&format!("run by leader node {victim}"))
            .then_some((ok, out))
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(!ok, "{out}");
    for (id, _, verdict) in member_lines(&out) {
        let want = if id == victim { "MISMATCH" } else { "ok" };
        assert_eq!(verdict, want, "node {id}: {out}");
    }
    let (_, status) = resqlite(&["status", "--node", &c.grpc_addr(leader)]);
    assert_eq!(status.matches("DIVERGED").count(), 1, "{status}");
}
