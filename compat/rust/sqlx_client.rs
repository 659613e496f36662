//! sqlx (postgres, runtime-tokio, TLS through rustls, no macros) against
//! the cluster, in its own idiom: a `PgPool`, `query(..).bind(..)`, typed
//! `Row::try_get`, the statement cache for repeated queries,
//! `DatabaseError::code()`, and `Pool::begin()` (commit, rollback, rollback
//! on drop, `begin()` on a transaction as a savepoint). It logs in with
//! SCRAM-SHA-256 over TLS with `PgSslMode::VerifyFull` against the
//! cluster's CA.
//! Compiled into `server/tests/compat.rs`; returns the `COMPAT` lines.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::Target;

const C: &str = "sqlx";

struct Report(Vec<String>);

impl Report {
    fn line(&mut self, feature: &str, status: &str, note: impl Into<String>) {
        self.0
            .push(format!("COMPAT {C} {feature} {status} {}", note.into()));
    }
    fn check<T: std::fmt::Debug + PartialEq>(
        &mut self,
        feature: &str,
        got: Result<T, sqlx::Error>,
        want: T,
    ) {
        match got {
            Ok(v) if v == want => self.line(feature, "pass", ""),
            Ok(v) => self.line(feature, "fail", format!("got {v:?}, want {want:?}")),
            Err(e) => self.line(feature, "fail", format!("error: {e}")),
        }
    }
    fn sqlstate<T>(
        &mut self,
        feature: &str,
        got: Result<T, sqlx::Error>,
        want: &str,
    ) -> Option<String> {
        match got {
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(want) => {
                self.line(feature, "pass", "");
                Some(d.message().to_string())
            }
            Err(sqlx::Error::Database(d)) => {
                self.line(
                    feature,
                    "fail",
                    format!("got {:?} {}", d.code(), d.message()),
                );
                None
            }
            Err(e) => {
                self.line(feature, "fail", format!("not a server error: {e}"));
                None
            }
            Ok(_) => {
                self.line(feature, "fail", format!("succeeded, want {want}"));
                None
            }
        }
    }
}

fn options(t: &Target, port: u16) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&t.host)
        .port(port)
        .username(&t.user)
        .password(&t.password)
        .database(&t.user)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&t.ca_cert)
}

pub async fn run(t: &Target) -> Vec<String> {
    let mut r = Report(Vec::new());
    let pool = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options(t, t.leader_port))
        .await
    {
        Ok(p) => {
            r.line("connect", "pass", "");
            p
        }
        Err(e) => {
            r.line("connect", "fail", format!("{e}"));
            return r.0;
        }
    };
    r.line(
        "multi_host_leader",
        "unsupported",
        "sqlx's PgConnectOptions takes one host; no target_session_attrs",
    );

    r.check(
        "create_table",
        pool.execute("CREATE TABLE sx_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)")
            .await
            .map(|_| ()),
        (),
    );
    r.check(
        "insert_bound_params",
        sqlx::query(
            "INSERT INTO sx_items (id, n, f, s, b, ok, z) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(1i64)
        .bind(-42i64)
        .bind(2.5f64)
        .bind("héllo")
        .bind(vec![0u8, 1, 0xfe, 0xff])
        .bind(true)
        .bind(None::<String>)
        .execute(&pool)
        .await
        .map(|done| done.rows_affected()),
        1,
    );
    match sqlx::query("SELECT n, f, s, b, ok, z FROM sx_items WHERE id = $1")
        .bind(1i64)
        .fetch_one(&pool)
        .await
    {
        Ok(row) => {
            r.check("read_integer", row.try_get::<i64, _>(0), -42);
            r.check("read_float", row.try_get::<f64, _>(1), 2.5);
            r.check(
                "read_text",
                row.try_get::<String, _>(2),
                "héllo".to_string(),
            );
            r.check(
                "read_bytea",
                row.try_get::<Vec<u8>, _>(3),
                vec![0u8, 1, 0xfe, 0xff],
            );
            r.check("read_boolean", row.try_get::<bool, _>(4), true);
            r.check("read_null", row.try_get::<Option<String>, _>(5), None);
        }
        Err(e) => {
            for f in [
                "read_integer",
                "read_float",
                "read_text",
                "read_bytea",
                "read_boolean",
                "read_null",
            ] {
                r.line(f, "fail", format!("select failed: {e}"));
            }
        }
    }

    // Result columns that are expressions (no declared column type).
    r.check(
        "read_expression_types",
        sqlx::query("SELECT count(*), sum(f) FROM sx_items WHERE id = $1")
            .bind(1i64)
            .fetch_one(&pool)
            .await
            .and_then(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<f64, _>(1)?))),
        (1, 2.5),
    );

    // sqlx prepares each distinct query once per connection (its statement
    // cache) and re-executes the named statement afterwards.
    let prepared = async {
        let mut conn = pool.acquire().await?;
        for i in 100..200i64 {
            sqlx::query("INSERT INTO sx_items (id, n, s) VALUES ($1, $2, $3)")
                .bind(i)
                .bind(i * 2)
                .bind(format!("row {i}"))
                .execute(&mut *conn)
                .await?;
        }
        let mut sum = 0i64;
        for i in 100..200i64 {
            let row = sqlx::query("SELECT n FROM sx_items WHERE id = $1")
                .bind(i)
                .fetch_one(&mut *conn)
                .await?;
            sum += row.try_get::<i64, _>(0)?;
        }
        Ok::<i64, sqlx::Error>(sum)
    }
    .await;
    r.check(
        "prepared_repeat",
        prepared,
        (100..200i64).map(|i| i * 2).sum(),
    );

    r.sqlstate(
        "error_23505_unique",
        sqlx::query("INSERT INTO sx_items (id) VALUES ($1)")
            .bind(1i64)
            .execute(&pool)
            .await,
        "23505",
    );
    r.sqlstate(
        "error_42601_syntax",
        sqlx::query("INSERT INTO sx_items VALUE")
            .execute(&pool)
            .await,
        "42601",
    );
    r.sqlstate(
        "error_0A000_nondeterministic",
        sqlx::query("INSERT INTO sx_items (id, n) VALUES (2, random())")
            .execute(&pool)
            .await,
        "0A000",
    );

    match PgConnection::connect_with(&options(t, t.follower_port)).await {
        Err(e) => r.line(
            "follower_25006_leader_addr",
            "fail",
            format!("connect: {e}"),
        ),
        Ok(mut f) => {
            let got = sqlx::query("INSERT INTO sx_items (id) VALUES (3)")
                .execute(&mut f)
                .await;
            match got {
                Err(sqlx::Error::Database(d))
                    if d.code().as_deref() == Some("25006")
                        && d.message().contains(&t.leader_addr) =>
                {
                    r.line("follower_25006_leader_addr", "pass", "")
                }
                other => r.line(
                    "follower_25006_leader_addr",
                    "fail",
                    format!("{:?}", other.map(|d| d.rows_affected())),
                ),
            }
        }
    }

    // Transactions through the driver's API: Pool::begin() sends BEGIN,
    // commit()/rollback() end it, dropping it rolls back, and begin() on a
    // transaction is a savepoint. Each is checked by what a new connection
    // sees afterwards.
    if let Err(e) = pool
        .execute("CREATE TABLE sx_txn (id INTEGER PRIMARY KEY, s TEXT)")
        .await
    {
        r.line("txn_commit", "fail", format!("CREATE TABLE sx_txn: {e}"));
    }
    let fresh = |lo: i64, hi: i64| committed_ids(t, lo, hi);

    let commit = async {
        let mut tx = pool.begin().await?;
        insert(&mut tx, 1).await?;
        insert(&mut tx, 2).await?;
        let own: i64 = sqlx::query_scalar("SELECT count(*) FROM sx_txn")
            .fetch_one(&mut *tx)
            .await?;
        let others = fresh(1, 9).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((own, others, fresh(1, 9).await?))
    }
    .await;
    r.check("txn_commit", commit, (2, vec![], vec![1, 2]));

    let rollback = async {
        let mut tx = pool.begin().await?;
        insert(&mut tx, 10).await?;
        tx.rollback().await?;
        fresh(10, 19).await
    }
    .await;
    r.check("txn_rollback", rollback, vec![]);

    // Dropping a Transaction queues a ROLLBACK on its connection, sent when
    // the pool takes the connection back. The same id is then written from
    // a new connection: it must be free (not committed) and not locked.
    let on_drop = async {
        let mut tx = pool.begin().await?;
        insert(&mut tx, 20).await?;
        drop(tx);
        let mut other = PgConnection::connect_with(&options(t, t.leader_port)).await?;
        sqlx::query("INSERT INTO sx_txn (id, s) VALUES (20, 'from another connection')")
            .execute(&mut other)
            .await?;
        let s: String = sqlx::query_scalar("SELECT s FROM sx_txn WHERE id = 20")
            .fetch_one(&pool)
            .await?;
        Ok::<_, sqlx::Error>((s, fresh(20, 29).await?))
    }
    .await;
    r.check(
        "txn_rollback_on_drop",
        on_drop,
        ("from another connection".to_string(), vec![20]),
    );

    let failed = async {
        let mut tx = pool.begin().await?;
        insert(&mut tx, 30).await?;
        let first = sqlstate_of(insert(&mut tx, 30).await);
        let then = sqlstate_of(sqlx::query("SELECT 1").execute(&mut *tx).await);
        tx.rollback().await?;
        Ok::<_, sqlx::Error>((first, then, fresh(30, 39).await?))
    }
    .await;
    r.check(
        "txn_error_25P02",
        failed,
        ("23505".to_string(), "25P02".to_string(), vec![]),
    );

    let savepoints = async {
        let mut tx = pool.begin().await?;
        insert(&mut tx, 50).await?;
        let mut sp = tx.begin().await?; // SAVEPOINT _sqlx_savepoint_1
        insert(&mut sp, 51).await?;
        sp.rollback().await?;
        let mut sp = tx.begin().await?;
        insert(&mut sp, 52).await?;
        sp.commit().await?; // RELEASE SAVEPOINT
        let mut sp = tx.begin().await?;
        let dup = sqlstate_of(insert(&mut sp, 50).await);
        sp.rollback().await?; // the error spares the outer transaction
        insert(&mut tx, 53).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((dup, fresh(50, 59).await?))
    }
    .await;
    r.check(
        "txn_savepoint",
        savepoints,
        ("23505".to_string(), vec![50, 52, 53]),
    );
    pool.close().await;
    r.0
}

async fn insert(c: &mut PgConnection, id: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("INSERT INTO sx_txn (id, s) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("row {id}"))
        .execute(c)
        .await
        .map(|done| done.rows_affected())
}

/// The ids in `lo..=hi` a new connection sees: the committed ones.
async fn committed_ids(t: &Target, lo: i64, hi: i64) -> Result<Vec<i64>, sqlx::Error> {
    let mut f = PgConnection::connect_with(&options(t, t.leader_port)).await?;
    let ids = sqlx::query_scalar("SELECT id FROM sx_txn WHERE id BETWEEN $1 AND $2 ORDER BY id")
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut f)
        .await?;
    f.close().await?;
    Ok(ids)
}

/// The SQLSTATE of a server error, or what happened instead.
fn sqlstate_of<T>(got: Result<T, sqlx::Error>) -> String {
    match got {
        Ok(_) => "no error".to_string(),
        Err(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()).unwrap_or_default(),
        Err(e) => format!("not a server error: {e}"),
    }
}
