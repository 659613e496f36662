//! Three real `resqlite serve` processes on loopback, driven with
//! tokio-postgres (and psql where installed): writes through Raft, typed
//! reads, follower redirects, refusals that change nothing, kill -9 of the
//! leader and of the whole cluster with no acknowledged row lost, and every
//! node ending with identical contents (read from each node itself).

use std::time::Duration;

use resqlite_tests::sql_cluster::SqlCluster;
use tokio_postgres::error::SqlState;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(15);

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}

async fn rows_everywhere(c: &SqlCluster, sql: &str) -> Vec<Vec<String>> {
    c.converged_rows(sql, CONVERGE).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_with_typed_reads_and_followers_redirect() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, \
         data BLOB, active BOOLEAN, note TEXT)",
    )
    .await
    .unwrap();
    let insert = db
        .prepare("INSERT INTO items (id, name, price, data, active, note) VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    for i in 1..=20i64 {
        let note: Option<&str> = if i % 2 == 0 { Some("even") } else { None };
        let n = db
            .execute(
                &insert,
                &[
                    &i,
                    &format!("item {i}"),
                    &(i as f64 * 1.5),
                    &vec![i as u8, 0xff],
                    &(i % 3 == 0),
                    &note,
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let row = db
        .query_one(
            "SELECT id, name, price, data, active, note FROM items WHERE id = $1",
            &[&6i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 6);
    assert_eq!(row.get::<_, String>(1), "item 6");
    assert_eq!(row.get::<_, f64>(2), 9.0);
    assert_eq!(row.get::<_, Vec<u8>>(3), vec![6u8, 0xff]);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("even"));
    let updated = db
        .execute(
            "UPDATE items SET price = price * 2 WHERE id <= $1",
            &[&5i64],
        )
        .await
        .unwrap();
    assert_eq!(updated, 5);

    // A follower refuses reads and writes with 25006 and names the leader.
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let f = c.connect(follower).await.unwrap();
    for sql in [
        "INSERT INTO items (id, name) VALUES (99, 'x')",
        "SELECT count(*) FROM items",
    ] {
        let err = f.simple_query(sql).await.unwrap_err();
        let db_err = err.as_db_error().expect("a database error");
        assert_eq!(db_err.code(), &SqlState::READ_ONLY_SQL_TRANSACTION, "{sql}");
        assert_eq!(
            db_err.message(),
            format!("not the leader; leader: {}", c.pg_addr(leader))
        );
        assert_eq!(db_err.detail(), Some(c.pg_addr(leader).as_str()));
    }
    let ro = f
        .query_one("SHOW transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(ro.get::<_, String>(0), "on");

    let all = rows_everywhere(
        &c,
        "SELECT id, name, price, data, active, note FROM items ORDER BY id",
    )
    .await;
    assert_eq!(all.len(), 20);
    assert_eq!(all[0], vec!["1", "item 1", "3", "\\x01ff", "0", "NULL"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_statements_get_their_sqlstate_and_change_nothing() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one')",
    )
    .await
    .unwrap();
    let before = rows_everywhere(&c, "SELECT k, v FROM t ORDER BY k").await;
    let cases = [
        // Outside a transaction block, as in PostgreSQL.
        ("SAVEPOINT s", "25P01"),
        ("INSERT INTO t VALUES (2, random())", "0A000"),
        ("UPDATE t SET v = CURRENT_TIMESTAMP", "0A000"),
        ("INSERT INTO t VALUES (3, datetime('now'))", "0A000"),
        ("CREATE TABLE d (a INT DEFAULT CURRENT_TIMESTAMP)", "0A000"),
        (
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET v = random(); END",
            "0A000",
        ),
        ("ATTACH '/tmp/x.db' AS x", "42501"),
        ("VACUUM INTO '/tmp/copy.db'", "42501"),
        ("PRAGMA synchronous = OFF", "42501"),
        ("SELECT load_extension('x')", "42501"),
        ("INSERT INTO t VALUES (1, 'dup')", "23505"),
        ("INSERT INTO", "42601"),
        ("SELEC 1", "42601"),
    ];
    for (sql, want) in cases {
        let err = db.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), want, "{sql}");
    }
    // 'now' smuggled in as a parameter is refused inside SQLite on every node.
    let err = db
        .execute("INSERT INTO t VALUES (5, datetime($1))", &[&"now"])
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|d| d.message().contains("'now'")),
        "{err}"
    );
    // A multi-statement string is one implicit transaction: the first
    // error undoes the statements before it, as in PostgreSQL.
    let err = db
        .simple_query("INSERT INTO t VALUES (6, 'six'); INSERT INTO t VALUES (1, 'dup'); INSERT INTO t VALUES (7, 'seven')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23505");
    c.wait_all_hold("SELECT k, v FROM t ORDER BY k", &before, CONVERGE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_and_full_restart_keep_every_acknowledged_row() {
    let mut c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute("CREATE TABLE log (n INTEGER PRIMARY KEY, at TEXT)")
        .await
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..50i64 {
        db.execute("INSERT INTO log VALUES ($1, $2)", &[&n, &format!("t{n}")])
            .await
            .unwrap();
        acked.push(n);
    }
    drop(db);

    c.kill(leader).unwrap();
    let started = std::time::Instant::now();
    let new_leader = c.wait_for_leader(ELECTION).await.unwrap();
    assert_ne!(new_leader, leader);
    let db = c.connect(new_leader).await.unwrap();
    let mut n = 50i64;
    // The first write on the new leader may race its first commit; retry
    // only on "no leader yet".
    loop {
        match db
            .execute("INSERT INTO log VALUES ($1, 'after')", &[&n])
            .await
        {
            Ok(_) => break,
            Err(e) if sqlstate(&e) == "57P03" || sqlstate(&e) == "25006" => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("write on the new leader failed: {e}"),
        }
    }
    println!(
        "failover: first write on the new leader {:?} after kill -9",
        started.elapsed()
    );
    acked.push(n);
    for _ in 0..20 {
        n += 1;
        db.execute("INSERT INTO log VALUES ($1, 'after')", &[&n])
            .await
            .unwrap();
        acked.push(n);
    }
    let got: Vec<i64> = db
        .query("SELECT n FROM log ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, acked);
    drop(db);

    // The old leader comes back and catches up.
    c.start_node(leader).unwrap();
    let want: Vec<Vec<String>> = acked.iter().map(|n| vec![n.to_string()]).collect();
    c.wait_all_hold("SELECT n FROM log ORDER BY n", &want, CONVERGE)
        .await
        .unwrap();

    // Every node dies at once and comes back: nothing acknowledged is lost.
    for id in c.ids() {
        c.kill(id).unwrap();
    }
    for id in c.ids() {
        c.start_node(id).unwrap();
    }
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    let got: Vec<i64> = db
        .query("SELECT n FROM log ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, acked);
    c.wait_all_hold("SELECT n FROM log ORDER BY n", &want, CONVERGE)
        .await
        .unwrap();
}

/// psql, where installed (CI installs postgresql-client): `-c`, and the
/// multi-host connection string that finds the leader by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_finds_the_leader_with_a_multi_host_string() {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("psql is not installed; skipping (CI installs it)");
        return;
    }
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let ports: Vec<String> = c
        .ids()
        .iter()
        .map(|&id| c.pg_port(id).to_string())
        .collect();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=resqlite target_session_attrs=read-write",
        ports.join(",")
    );
    let psql = |args: Vec<String>| {
        let out = std::process::Command::new("psql")
            .args(&args)
            .output()
            .expect("run psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = psql(vec![
        conninfo.clone(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-c".into(),
        "CREATE TABLE p (a INTEGER, b TEXT)".into(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = psql(vec![
        conninfo.clone(),
        "-c".into(),
        "INSERT INTO p VALUES (1, 'x'), (2, 'y')".into(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = psql(vec![
        conninfo,
        "-At".into(),
        "-c".into(),
        "SELECT a, b FROM p ORDER BY a".into(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|x\n2|y");
    // Straight at a follower: the error names the leader.
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let (ok, _, err) = psql(vec![
        format!("host=127.0.0.1 port={} user=resqlite", c.pg_port(follower)),
        "-c".into(),
        "INSERT INTO p VALUES (3, 'z')".into(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("not the leader; leader: {}", c.pg_addr(leader))),
        "{err}"
    );
}

/// `SERIAL` and `IDENTITY` primary keys are numbered (they used to store
/// NULL ids), the same on every node, never reusing an id; `RETURNING`
/// hands the id back; result columns carry PostgreSQL's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_and_identity_keys_are_numbered_on_every_node() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL); \
         CREATE TABLE events (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT); \
         INSERT INTO notes (body) VALUES ('a'), ('b')",
    )
    .await
    .unwrap();
    let id: i64 = db
        .query_one("INSERT INTO notes (body) VALUES ($1) RETURNING id", &[&"c"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 3);
    // A deleted highest id is not handed out again, as with a sequence.
    db.batch_execute(
        "DELETE FROM notes WHERE id = 3; INSERT INTO notes (body) VALUES ('d'); \
         BEGIN; INSERT INTO events (kind) VALUES ('x'), ('y'); COMMIT",
    )
    .await
    .unwrap();
    // A numbered column SQLite cannot number is refused, not left NULL.
    let err = db
        .simple_query("CREATE TABLE bad (id serial, x int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");

    let count = db
        .query_one("SELECT count(*), max(id) + 1 FROM notes", &[])
        .await
        .unwrap();
    assert_eq!(count.columns()[0].name(), "count");
    assert_eq!(count.columns()[1].name(), "?column?");
    assert_eq!(count.get::<_, i64>(0), 3);

    let notes = rows_everywhere(&c, "SELECT id, body FROM notes ORDER BY id").await;
    let want: Vec<Vec<String>> = [("1", "a"), ("2", "b"), ("4", "d")]
        .iter()
        .map(|(i, b)| vec![i.to_string(), b.to_string()])
        .collect();
    assert_eq!(notes, want);
    let events = rows_everywhere(&c, "SELECT id, kind FROM events ORDER BY id").await;
    assert_eq!(events, vec![vec!["1", "x"], vec!["2", "y"]]);
}

/// A statement cached before a schema change answers with the columns the
/// table has now: `SELECT *` and `RETURNING *` after `ALTER TABLE … ADD
/// COLUMN` lost the new column (a cached SQLite statement keeps its old
/// columns until a step prepares it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_statements_see_a_changed_schema() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute("CREATE TABLE s (a INTEGER PRIMARY KEY, b TEXT)")
        .await
        .unwrap();
    let width = |messages: Vec<tokio_postgres::SimpleQueryMessage>| {
        messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(cols) => Some(cols.len()),
                _ => None,
            })
            .expect("a row description")
    };
    // Cache both statements: the read on every reader connection.
    for i in 0..20 {
        assert_eq!(width(db.simple_query("SELECT * FROM s").await.unwrap()), 2);
        let insert = format!("INSERT INTO s (b) VALUES ('{i}') RETURNING *");
        assert_eq!(width(db.simple_query(&insert).await.unwrap()), 2);
    }
    db.batch_execute("ALTER TABLE s ADD COLUMN c TEXT DEFAULT 'new'")
        .await
        .unwrap();
    for i in 0..20 {
        let rows = db.query("SELECT * FROM s WHERE a = 1", &[]).await.unwrap();
        assert_eq!(rows[0].len(), 3);
        assert_eq!(width(db.simple_query("SELECT * FROM s").await.unwrap()), 3);
        let insert = format!("INSERT INTO s (b) VALUES ('{i}') RETURNING *");
        assert_eq!(width(db.simple_query(&insert).await.unwrap()), 3);
    }
}

/// PostgreSQL's functions (`store::pg_functions`) exist on every node, so
/// a write, a CHECK constraint or an index may use them and every node
/// stores the same; their errors carry PostgreSQL's SQLSTATEs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_functions_in_writes_are_the_same_on_every_node() {
    let c = SqlCluster::start(BIN, 3).unwrap();
    let leader = c.wait_for_leader(ELECTION).await.unwrap();
    let db = c.connect(leader).await.unwrap();
    db.batch_execute(
        "CREATE TABLE f (k TEXT PRIMARY KEY CHECK (char_length(k) <= 8), v TEXT); \
         CREATE INDEX f_initial ON f (left(v, 1)); \
         INSERT INTO f VALUES (lpad('7', 3, '0'), initcap(repeat('ab ', 2))), \
         ('h', md5('abc')), ('p', split_part('a,b,c', ',', -1) || to_hex(255) || chr(66))",
    )
    .await
    .unwrap();
    let err = db
        .simple_query("INSERT INTO f VALUES ('too long a key', 'x')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514");
    let err = db
        .simple_query("INSERT INTO f VALUES ('m', mod(1, 0))")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    let err = db
        .simple_query("INSERT INTO f VALUES ('r', repeat('x', 1000000000))")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "54000");
    let rows = rows_everywhere(&c, "SELECT k, v FROM f ORDER BY k").await;
    assert_eq!(
        rows,
        vec![
            vec!["007", "Ab Ab "],
            vec!["h", "900150983cd24fb0d6963f7d28e17f72"],
            vec!["p", "cffB"],
        ]
    );
}
