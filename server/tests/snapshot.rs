//! Snapshots and log compaction with real `resqlite serve` processes: a
//! follower that was down while the leader compacted its log past the
//! follower's position catches up by InstallSnapshot, and every node ends
//! with identical contents holding every acknowledged row.

use std::collections::BTreeMap;
use std::time::Duration;

use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(60);
const ROWS: i64 = 500;

/// `resqlite status` asked through node `via`: each member's cells (id,
/// role, term, commit, applied, lag, snapshot, …) by id.
async fn status(c: &SqlCluster, via: u64) -> anyhow::Result<BTreeMap<u64, Vec<String>>> {
    let out = tokio::process::Command::new(BIN)
        .args([
            "status",
            "--node",
            &format!("127.0.0.1:{}", c.raft_port(via)),
        ])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(out.status.success(), "status failed: {text}");
    let mut rows = BTreeMap::new();
    for line in text.lines().skip(1) {
        let cells: Vec<String> = line.split_whitespace().map(String::from).collect();
        if let Some(id) = cells.first().and_then(|id| id.parse().ok()) {
            rows.insert(id, cells);
        }
    }
    Ok(rows)
}

/// Column `col` of member `id` in `resqlite status` through `via`, as a number.
async fn status_number(c: &SqlCluster, via: u64, id: u64, col: usize) -> Option<u64> {
    let rows = status(c, via).await.ok()?;
    rows.get(&id)?.get(col)?.parse().ok()
}

const APPLIED: usize = 4;
const SNAPSHOT: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut c = SqlCluster::prepare(BIN, 3).unwrap();
    c.set_extra_args(vec!["--snapshot-entries".into(), "50".into()]);
    c.start_all().unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();
    let insert = db.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
    let mut acked = Vec::new();
    for k in 1..=20i64 {
        db.execute(&insert, &[&k, &format!("value {k}")])
            .await
            .unwrap();
        acked.push(k);
    }
    let sql = "SELECT k, v FROM t ORDER BY k";
    let want = c.local_rows(leader, sql).await.unwrap();
    c.wait_all_hold(sql, &want, CONVERGE).await.unwrap();

    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let behind = wait_until("the follower's applied index", ELECTION, || {
        status_number(&c, leader, follower, APPLIED)
    })
    .await
    .unwrap();
    c.kill(follower).unwrap();

    for k in 21..=20 + ROWS {
        // Every write is acknowledged by the two nodes left.
        db.execute(&insert, &[&k, &format!("value {k}")])
            .await
            .unwrap();
        acked.push(k);
    }
    // The leader snapshots every 50 entries and compacts its log: what the
    // follower lacks is no longer in the log.
    let snapshot = wait_until(
        "the leader to compact past the follower",
        CONVERGE,
        || async {
            let s = status_number(&c, leader, leader, SNAPSHOT).await?;
            (s > behind + 50).then_some(s)
        },
    )
    .await
    .unwrap();
    assert!(
        snapshot > behind,
        "snapshot {snapshot}, follower at {behind}"
    );

    c.start_node(follower).unwrap();
    let want = c.local_rows(leader, sql).await.unwrap();
    let keys: Vec<i64> = want.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(keys, acked, "every acknowledged row, and nothing else");
    c.wait_all_hold(sql, &want, CONVERGE).await.unwrap();

    let log = std::fs::read_to_string(c.log_path(follower)).unwrap();
    assert!(
        log.contains("state machine restored from snapshot"),
        "node {follower} caught up without a snapshot:\n{log}"
    );
    // The restored follower keeps following the log.
    db.execute(&insert, &[&(ROWS + 21), &"after".to_string()])
        .await
        .unwrap();
    let want = c.local_rows(leader, sql).await.unwrap();
    c.wait_all_hold(sql, &want, CONVERGE).await.unwrap();
}
