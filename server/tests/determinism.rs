//! Replicas that cannot diverge, a cluster that cannot be wedged (issue
//! "determinism"), on a real 3-node cluster: every class of statement that
//! once made replicas diverge or wedged the cluster, in several spellings,
//! is either refused with its SQLSTATE and changes nothing, or applied —
//! and `resqlite check` then finds every node's database identical. A
//! follower whose disk fills halts, loses nothing, and catches up to an
//! identical hash once it has room again.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use resqlite_proto::client::admin_client::AdminClient;
use resqlite_proto::client::{NodeStatusRequest, NodeStatusResponse};
use resqlite_tests::check::check_cluster;
use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const CHECK: Duration = Duration::from_secs(30);
/// How soon after a refused wedge or flood the cluster must take a write.
const SERVES_AGAIN: Duration = Duration::from_secs(2);
/// No node may grow beyond this while refusing a memory flood.
const RSS_BOUND: u64 = 512 << 20;

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}

async fn status(c: &SqlCluster, id: u64) -> anyhow::Result<NodeStatusResponse> {
    let mut admin = AdminClient::new(resqlite_tests::grpc::channel(&c.grpc_addr(id)).await?);
    Ok(admin.node_status(NodeStatusRequest {}).await?.into_inner())
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// `sql` is refused with `want` and leaves `t` and `r` as they were.
async fn refused(db: &tokio_postgres::Client, sql: &str, want: &str) {
    let before = (count(db, "t").await, count(db, "r").await);
    match db.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: applied, expected {want}"),
        Err(e) => assert_eq!(sqlstate(&e), want, "{sql}: {e}"),
    }
    assert_eq!(
        (count(db, "t").await, count(db, "r").await),
        before,
        "{sql} changed something"
    );
}

/// The cluster takes a new write within [`SERVES_AGAIN`] of `after` being
/// refused: a liveness bound (a wedged cluster never answers), not a
/// benchmark.
async fn serves_again(db: &tokio_postgres::Client, after: &str) {
    let began = Instant::now();
    tokio::time::timeout(
        SERVES_AGAIN,
        db.batch_execute("INSERT INTO r (a) VALUES ('after')"),
    )
    .await
    .unwrap_or_else(|_| panic!("no write within {SERVES_AGAIN:?} after {after}"))
    .unwrap();
    eprintln!("next write {:?} after refusing: {after}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_divergence_is_refused_or_applied_identically() {
    let mut c = SqlCluster::prepare(BIN, 3).unwrap();
    // As deployed: mutual TLS between nodes, SCRAM passwords.
    c.secure(true).unwrap();
    c.start_all().unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE t (v);
         CREATE TABLE r (a TEXT);
         CREATE TABLE log (a);
         CREATE TABLE g (a, b TEXT GENERATED ALWAYS AS (datetime(a)) STORED);",
    )
    .await
    .unwrap();

    // 1. The clock as a time value: 'subsec', no value at all, and where it
    // would run later (DEFAULT, trigger, CTAS, generated column).
    for sql in [
        "INSERT INTO t (v) VALUES (datetime('subsec'))",
        "INSERT INTO t (v) VALUES (julianday('subsecond'))",
        "INSERT INTO t (v) VALUES (unixepoch('subsec'))",
        "INSERT INTO t (v) VALUES (timediff('2000-01-01', 'subsec'))",
        "INSERT INTO t (v) SELECT 1 WHERE date() > '2000-01-01'",
        "CREATE TABLE ctas AS SELECT datetime('subsec') AS x",
        "INSERT INTO g (a) VALUES ('subsec')",
        "INSERT INTO t (v) VALUES (CURRENT_TIMESTAMP)",
    ] {
        refused(&db, sql, "0A000").await;
    }
    db.batch_execute("CREATE TABLE d (a, b TEXT DEFAULT (datetime('subsec')))")
        .await
        .unwrap();
    refused(&db, "INSERT INTO d (a) VALUES (1)", "0A000").await;
    db.batch_execute(
        "CREATE TRIGGER tr AFTER INSERT ON log BEGIN INSERT INTO r VALUES (julianday('subsec')); END",
    )
    .await
    .unwrap();
    refused(&db, "INSERT INTO log VALUES (1)", "0A000").await;

    // 2. Clock and zone words as a BLOB, with a NUL, or as a parameter.
    for sql in [
        "INSERT INTO t (v) VALUES (strftime('%Y-%m-%d %H:%M:%f', X'6E6F77'))",
        "INSERT INTO t (v) VALUES (date(CAST('now' AS BLOB)))",
        "INSERT INTO t (v) VALUES (date('now' || char(0)))",
        "INSERT INTO t (v) VALUES (datetime(0, X'6C6F63616C74696D65'))",
        "INSERT INTO t (v) VALUES (datetime(0, 'localtime' || char(0)))",
        "INSERT INTO t (v) VALUES (datetime(0, CAST('utc' AS BLOB)))",
    ] {
        refused(&db, sql, "0A000").await;
    }
    for (sql, word) in [
        ("INSERT INTO t (v) VALUES (datetime($1))", "now"),
        ("INSERT INTO t (v) VALUES (julianday($1))", "subsec"),
        (
            "INSERT INTO t (v) VALUES (datetime('2020-01-01', $1))",
            "localtime",
        ),
        (
            "INSERT INTO t (v) VALUES (datetime('2020-01-01', $1))",
            "utc",
        ),
    ] {
        let e = db
            .execute(sql, &[&word])
            .await
            .expect_err("a clock word as a parameter");
        assert_eq!(sqlstate(&e), "0A000", "{word}: {e}");
    }

    // 3. The largest rowid, after which SQLite picks random ones.
    refused(
        &db,
        "INSERT INTO r (rowid, a) VALUES (9223372036854775807, 'max')",
        "22003",
    )
    .await;
    db.batch_execute("INSERT INTO r (rowid, a) VALUES (9223372036854775806, 'last')")
        .await
        .unwrap();
    refused(&db, "INSERT INTO r (a) VALUES ('x1')", "22003").await;
    refused(
        &db,
        "UPDATE r SET rowid = 9223372036854775807 WHERE a = 'last'",
        "22003",
    )
    .await;
    db.batch_execute("DELETE FROM r WHERE a = 'last'")
        .await
        .unwrap();

    // 4. Node-local tables inside writes.
    for sql in [
        "INSERT INTO t (v) SELECT value FROM _resqlite_meta",
        "INSERT INTO t (v) SELECT value FROM main.\"_RESQLITE_META\"",
        "CREATE TABLE leak AS SELECT * FROM dbstat",
        "INSERT INTO t (v) SELECT pageno FROM dbstat",
        "INSERT INTO t (v) SELECT * FROM pragma_page_count()",
        "INSERT INTO t (v) SELECT file FROM pragma_database_list",
    ] {
        refused(&db, sql, "0A000").await;
    }

    // 5. fts3_tokenizer, in writes and in reads.
    refused(
        &db,
        "INSERT INTO t (v) VALUES (fts3_tokenizer('simple'))",
        "42501",
    )
    .await;
    for sql in [
        "SELECT fts3_tokenizer('simple')",
        "SELECT hex(FTS3_TOKENIZER('porter'))",
        "SELECT \"fts3_tokenizer\"('unicode61')",
    ] {
        let e = db.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
    }

    // 6. TEMP objects, which live in one node's connection only.
    for sql in [
        "CREATE TEMP TABLE tmp (a)",
        "CREATE TEMPORARY TABLE tmp2 AS SELECT 1 AS a",
        "CREATE TABLE temp.tmp3 (a)",
        "CREATE TEMP VIEW tv AS SELECT 1",
        "CREATE TEMP TRIGGER tt AFTER INSERT ON t BEGIN SELECT 1; END",
        "INSERT INTO t (v) SELECT a FROM temp.tmp",
    ] {
        refused(&db, sql, "0A000").await;
    }

    // Deterministic writes next to all of that still apply.
    db.batch_execute(
        "INSERT INTO t (v) VALUES (datetime('2024-02-28 10:00', '+1 day'));
         INSERT INTO t (v) VALUES (julianday('2000-01-01'));
         INSERT INTO r (a) VALUES ('ok');",
    )
    .await
    .unwrap();

    // 8. A write that never ends: refused by its budget on every node, and
    // the cluster takes the next write at once.
    for sql in [
        "INSERT INTO t (v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
         SELECT x+1 FROM c) SELECT count(*) AS x FROM c)",
        "INSERT INTO t (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) \
         SELECT max(x) FROM c",
        "UPDATE r SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) \
         SELECT count(*) FROM c)",
    ] {
        refused(&db, sql, "54000").await;
        serves_again(&db, sql).await;
    }

    // 9. RETURNING rows that would fill every node's memory.
    db.batch_execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 20) \
         INSERT INTO r (a) SELECT 'row ' || x FROM c",
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE r SET a = a RETURNING printf('%.*c', 10000000, 'x')",
        "INSERT INTO t (v) SELECT a FROM r RETURNING printf('%.*c', 50000000, 'x')",
        "DELETE FROM r RETURNING zeroblob(15000000), zeroblob(15000000)",
    ] {
        match db.query(sql, &[]).await {
            Ok(rows) => panic!("{sql}: applied, {} rows", rows.len()),
            Err(e) => assert_eq!(sqlstate(&e), "54000", "{sql}: {e}"),
        }
        serves_again(&db, sql).await;
    }
    for id in c.ids() {
        let rss = c.peak_rss(id).unwrap();
        eprintln!("node {id} peak RSS {} MiB", rss >> 20);
        assert!(rss < RSS_BOUND, "node {id} peak RSS {rss} bytes");
    }

    // A Parse naming a parameter no Bind could carry is refused, and the
    // node lives on (it used to abort allocating for every number below).
    let e = db
        .prepare("SELECT $99999999999")
        .await
        .expect_err("parameter out of range");
    assert_eq!(sqlstate(&e), "42P02", "{e}");
    db.batch_execute("INSERT INTO r (a) VALUES ('alive')")
        .await
        .unwrap();

    // Statements whose expressions nest deeper than any stack allows get
    // 54001 on any node (classification runs before routing), and the
    // nodes live on: 60,000 terms used to overflow the stack and abort.
    let chain = format!("SELECT {}1", "1+".repeat(60_000));
    let or_chain = format!("SELECT 1 WHERE {}1=1", "1=1 OR ".repeat(40_000));
    for id in c.ids() {
        let client = c.connect(id).await.unwrap();
        for sql in [&chain, &or_chain] {
            let e = client.simple_query(sql).await.expect_err("too complex");
            assert_eq!(sqlstate(&e), "54001", "node {id}: {e}");
        }
        client
            .simple_query("SHOW transaction_read_only")
            .await
            .unwrap();
    }

    // Whatever was applied, every node holds the same database.
    let report = check_cluster(&c, CHECK).await.unwrap();
    assert!(report.identical(), "{}", report.describe());
    assert!(report.diverged.is_empty(), "{}", report.describe());
    for id in c.ids() {
        let s = status(&c, id).await.unwrap();
        assert_eq!(
            s.term,
            status(&c, leader).await.unwrap().term,
            "term changed"
        );
        assert!(s.halted.is_empty(), "node {id} halted: {}", s.halted);
    }
}

/// Mounts a tmpfs of `bytes` at `dir`; `false` when this process may not
/// mount (not root), in which case the test cannot run here.
fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "running as root, yet tmpfs cannot be mounted at {dir:?}"
    );
    true
}

fn remount_tmpfs(dir: &Path, bytes: u64) {
    let ok = Command::new("mount")
        .args(["-o", &format!("remount,size={bytes}")])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "remount of {dir:?}");
}

/// Unmounts at drop, pass or fail.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_halts_loses_nothing_and_catches_up() {
    let mut c = SqlCluster::prepare(BIN, 3).unwrap();
    // Node 3's SQLite database lives on a small disk of its own (its Raft
    // log stays on the big one, so only the state machine runs out).
    let small = c.dir().join("node3-small-disk");
    if !mount_tmpfs(&small, 24 << 20) {
        eprintln!("SKIPPED: mounting a small disk needs root");
        return;
    }
    let _unmount = Unmount(small.clone());
    let data = c.data_dir(3).unwrap().to_path_buf();
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(small.join("db.sqlite"), data.join("db.sqlite")).unwrap();
    c.start_all().unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    if leader == 3 {
        // Node 3 must be a follower: hand leadership to another node.
        let (ok, out) = resqlite_tests::cli::run(
            BIN,
            &[
                "node",
                "transfer-leader",
                "--node",
                &c.grpc_addr(1),
                "--to",
                "1",
            ],
        );
        assert!(ok, "{out}");
    }
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    assert_ne!(leader, 3);
    let db = c.connect(leader).await.unwrap();
    db.batch_execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
        .await
        .unwrap();
    // 2 MiB per row: node 3's 24 MiB fill after about ten rows; the other
    // two keep acknowledging every write.
    let mut acknowledged = 0i64;
    for i in 0..20i64 {
        db.execute(
            "INSERT INTO blobs (id, b) VALUES ($1, zeroblob(2000000))",
            &[&i],
        )
        .await
        .unwrap_or_else(|e| panic!("row {i}: {e}"));
        acknowledged += 1;
    }
    let halted = wait_until("node 3 to halt", Duration::from_secs(30), || async {
        let s = status(&c, 3).await.ok()?;
        (!s.halted.is_empty()).then_some(s)
    })
    .await
    .unwrap();
    eprintln!("node 3: {}", halted.halted);
    assert!(
        halted.halted.contains("full"),
        "the reason names the full disk: {}",
        halted.halted
    );
    assert!(halted.applied_index < halted.commit_index);
    assert_ne!(halted.role, "leader");
    // `resqlite status` says so too.
    let (_, table) = resqlite_tests::cli::run(BIN, &["status", "--node", &c.grpc_addr(leader)]);
    assert!(
        table.contains("HALTED") && table.contains("node 3 halted"),
        "{table}"
    );
    // It stays halted: later entries are not applied past the hole.
    db.batch_execute("INSERT INTO blobs (id, b) VALUES (100, x'00')")
        .await
        .unwrap();
    acknowledged += 1;
    let later = status(&c, 3).await.unwrap();
    assert_eq!(later.applied_index, halted.applied_index);

    // Room again: restarted, it retries the same entry and catches up.
    c.kill(3).unwrap();
    remount_tmpfs(&small, 256 << 20);
    c.start_node(3).unwrap();
    let commit = status(&c, leader).await.unwrap().commit_index;
    wait_until("node 3 to catch up", Duration::from_secs(60), || async {
        let s = status(&c, 3).await.ok()?;
        (s.applied_index >= commit && s.halted.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let rows = c.local_rows(3, "SELECT count(*) FROM blobs").await.unwrap();
    assert_eq!(rows, vec![vec![acknowledged.to_string()]]);
    let report = check_cluster(&c, CHECK).await.unwrap();
    assert!(report.identical(), "{}", report.describe());
}
