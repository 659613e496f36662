//! tokio-postgres against the cluster, in its own idiom: a multi-host
//! `Config` with `target_session_attrs=read-write`, `prepare` once and
//! `execute` many times, typed `Row::get`, `DbError::code()`, and
//! `Client::transaction()` (commit, rollback, rollback on drop, nested
//! transactions as savepoints). It logs in with SCRAM-SHA-256
//! (`channel_binding=require`) over TLS from `tokio-postgres-rustls`,
//! trusting only the cluster's CA.
//! Compiled into `server/tests/compat.rs`; returns the `COMPAT` lines.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::{Client, Error, GenericClient};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Target;

const C: &str = "tokio-postgres";

struct Report(Vec<String>);

impl Report {
    fn line(&mut self, feature: &str, ok: bool, note: impl Into<String>) {
        let status = if ok { "pass" } else { "fail" };
        self.0
            .push(format!("COMPAT {C} {feature} {status} {}", note.into()));
    }
    fn check<T: std::fmt::Debug + PartialEq>(
        &mut self,
        feature: &str,
        got: Result<T, Error>,
        want: T,
    ) {
        match got {
            Ok(v) if v == want => self.line(feature, true, ""),
            Ok(v) => self.line(feature, false, format!("got {v:?}, want {want:?}")),
            Err(e) => self.line(feature, false, format!("error: {e}")),
        }
    }
    fn sqlstate(&mut self, feature: &str, got: Result<u64, Error>, want: &str) {
        match got {
            Err(e) => match e.as_db_error() {
                Some(d) if d.code().code() == want => self.line(feature, true, ""),
                Some(d) => self.line(
                    feature,
                    false,
                    format!("got {} {}", d.code().code(), d.message()),
                ),
                None => self.line(feature, false, format!("not a server error: {e}")),
            },
            Ok(n) => self.line(feature, false, format!("succeeded ({n} rows), want {want}")),
        }
    }
}

/// TLS as libpq's `sslmode=verify-full`: the server's chain must lead to
/// the CA in `ca_cert` (the only root trusted), and rustls checks that the
/// certificate names the host connected to.
pub fn tls(ca_cert: &Path) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_cert)
        .map_err(|e| format!("{}: {e}", ca_cert.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_cert.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_cert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A conninfo value in single quotes (the password may hold spaces).
pub fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn connect(conninfo: &str, tls: &MakeRustlsConnect) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, tls.clone()).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

pub async fn run(t: &Target) -> Vec<String> {
    let mut r = Report(Vec::new());
    let tls = match tls(&t.ca_cert) {
        Ok(tls) => tls,
        Err(e) => {
            r.line("connect", false, format!("TLS setup: {e}"));
            return r.0;
        }
    };
    // sslmode=require: TLS or nothing; the connector verifies the server.
    let auth = format!(
        "user={} password={} sslmode=require channel_binding=require connect_timeout=5",
        t.user,
        quoted(&t.password)
    );
    let direct = format!("host={} port={} {auth}", t.host, t.leader_port);
    let db = match connect(&direct, &tls).await {
        Ok(db) => {
            r.line("connect", true, "");
            db
        }
        Err(e) => {
            r.line("connect", false, format!("{e}"));
            return r.0;
        }
    };

    let ports: Vec<String> = t.ports.iter().map(|p| p.to_string()).collect();
    let multi = format!(
        "host={} port={} target_session_attrs=read-write {auth}",
        vec![t.host.as_str(); t.ports.len()].join(","),
        ports.join(","),
    );
    let landed = async {
        let c = connect(&multi, &tls).await?;
        let row = c.query_one("SHOW transaction_read_only", &[]).await?;
        Ok::<String, Error>(row.get(0))
    }
    .await;
    r.check("multi_host_leader", landed, "off".to_string());

    r.check(
        "create_table",
        db.batch_execute(
            "CREATE TABLE tp_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)",
        )
        .await,
        (),
    );
    r.check(
        "insert_bound_params",
        db.execute(
            "INSERT INTO tp_items (id, n, f, s, b, ok, z) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &1i64,
                &-42i64,
                &2.5f64,
                &"héllo",
                &vec![0u8, 1, 0xfe, 0xff],
                &true,
                &None::<String>,
            ],
        )
        .await,
        1,
    );
    match db
        .query_one(
            "SELECT n, f, s, b, ok, z FROM tp_items WHERE id = $1",
            &[&1i64],
        )
        .await
    {
        Ok(row) => {
            r.check("read_integer", row.try_get::<_, i64>(0), -42);
            r.check("read_float", row.try_get::<_, f64>(1), 2.5);
            r.check(
                "read_text",
                row.try_get::<_, String>(2),
                "héllo".to_string(),
            );
            r.check(
                "read_bytea",
                row.try_get::<_, Vec<u8>>(3),
                vec![0u8, 1, 0xfe, 0xff],
            );
            r.check("read_boolean", row.try_get::<_, bool>(4), true);
            r.check("read_null", row.try_get::<_, Option<String>>(5), None);
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
                r.line(f, false, format!("select failed: {e}"));
            }
        }
    }

    // Result columns that are expressions (no declared column type), read
    // through the extended protocol with a bound parameter.
    match db
        .query_one(
            "SELECT count(*), sum(f) FROM tp_items WHERE id = $1",
            &[&1i64],
        )
        .await
    {
        Ok(row) => r.check(
            "read_expression_types",
            row.try_get::<_, i64>(0)
                .and_then(|n| Ok((n, row.try_get::<_, f64>(1)?))),
            (1, 2.5),
        ),
        Err(e) => r.line(
            "read_expression_types",
            false,
            format!("select failed: {e}"),
        ),
    }

    let prepared = async {
        let ins = db
            .prepare("INSERT INTO tp_items (id, n, s) VALUES ($1, $2, $3)")
            .await?;
        for i in 100..200i64 {
            db.execute(&ins, &[&i, &(i * 2), &format!("row {i}")])
                .await?;
        }
        let sel = db.prepare("SELECT n FROM tp_items WHERE id = $1").await?;
        let mut sum = 0i64;
        for i in 100..200i64 {
            sum += db.query_one(&sel, &[&i]).await?.get::<_, i64>(0);
        }
        Ok::<i64, Error>(sum)
    }
    .await;
    r.check(
        "prepared_repeat",
        prepared,
        (100..200i64).map(|i| i * 2).sum(),
    );

    r.sqlstate(
        "error_23505_unique",
        db.execute("INSERT INTO tp_items (id) VALUES ($1)", &[&1i64])
            .await,
        "23505",
    );
    r.sqlstate(
        "error_42601_syntax",
        db.execute("INSERT INTO tp_items VALUE", &[]).await,
        "42601",
    );
    r.sqlstate(
        "error_0A000_nondeterministic",
        db.execute("INSERT INTO tp_items (id, n) VALUES (2, random())", &[])
            .await,
        "0A000",
    );

    let follower = format!("host={} port={} {auth}", t.host, t.follower_port);
    match connect(&follower, &tls).await {
        Err(e) => r.line("follower_25006_leader_addr", false, format!("connect: {e}")),
        Ok(f) => match f.execute("INSERT INTO tp_items (id) VALUES (3)", &[]).await {
            Err(e) => match e.as_db_error() {
                Some(d) if d.code().code() == "25006" && d.message().contains(&t.leader_addr) => {
                    r.line("follower_25006_leader_addr", true, "")
                }
                Some(d) => r.line(
                    "follower_25006_leader_addr",
                    false,
                    format!("got {} {}", d.code().code(), d.message()),
                ),
                None => r.line("follower_25006_leader_addr", false, format!("{e}")),
            },
            Ok(_) => r.line(
                "follower_25006_leader_addr",
                false,
                "the follower accepted a write",
            ),
        },
    }

    // tokio-postgres binds with the parameter types the server infers (from
    // the statement's Describe): an i64 compared with an INTEGER column
    // through BETWEEN or IN must be inferred as int8, as with `=`.
    let between_in = async {
        let a: i64 = db
            .query_one(
                "SELECT count(*) FROM tp_items WHERE id BETWEEN $1 AND $2",
                &[&100i64, &109i64],
            )
            .await?
            .get(0);
        let b: i64 = db
            .query_one(
                "SELECT count(*) FROM tp_items WHERE id IN ($1, $2)",
                &[&100i64, &101i64],
            )
            .await?
            .get(0);
        Ok::<_, Error>((a, b))
    }
    .await;
    r.check("param_types_between_in", between_in, (10, 2));

    // A long read, cancelled from the side with the connection's CancelToken.
    let token = db.cancel_token();
    let cancel_tls = tls.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token.cancel_query(cancel_tls).await
    });
    let long = db
        .query_one(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c",
            &[],
        )
        .await;
    let sent = canceller.await;
    match (long, sent) {
        (Err(e), Ok(Ok(()))) if e.as_db_error().is_some_and(|d| d.code().code() == "57014") => {
            r.line("cancel", true, "")
        }
        (long, sent) => r.line(
            "cancel",
            false,
            format!("query: {:?}; cancel: {sent:?}", long.map(|_| "finished")),
        ),
    }

    // Transactions through the driver's API: Client::transaction() sends
    // BEGIN, commit()/rollback() end it, dropping it rolls back, and a
    // transaction() inside one is a savepoint. Each is checked by what a
    // new connection sees afterwards.
    let mut db = db;
    if let Err(e) = db
        .batch_execute("CREATE TABLE tp_txn (id INTEGER PRIMARY KEY, s TEXT)")
        .await
    {
        r.line("txn_commit", false, format!("CREATE TABLE tp_txn: {e}"));
    }
    let fresh = |lo: i64, hi: i64| committed_ids(&direct, &tls, lo, hi);

    let commit = async {
        let tx = db.transaction().await?;
        insert(&tx, 1).await?;
        insert(&tx, 2).await?;
        let own: i64 = tx
            .query_one("SELECT count(*) FROM tp_txn", &[])
            .await?
            .get(0);
        let others = fresh(1, 9).await?;
        tx.commit().await?;
        Ok::<_, Error>((own, others, fresh(1, 9).await?))
    }
    .await;
    r.check("txn_commit", commit, (2, vec![], vec![1, 2]));

    let rollback = async {
        let tx = db.transaction().await?;
        insert(&tx, 10).await?;
        tx.rollback().await?;
        let tx = db.transaction().await?;
        insert(&tx, 11).await?;
        drop(tx); // Transaction's Drop sends ROLLBACK
        insert(&db, 12).await?;
        fresh(10, 19).await
    }
    .await;
    r.check("txn_rollback", rollback, vec![12]);

    let failed = async {
        let tx = db.transaction().await?;
        insert(&tx, 30).await?;
        let first = sqlstate_of(insert(&tx, 30).await);
        let then = sqlstate_of(tx.execute("SELECT 1", &[]).await);
        tx.rollback().await?;
        Ok::<_, Error>((first, then, fresh(30, 39).await?))
    }
    .await;
    r.check(
        "txn_error_25P02",
        failed,
        ("23505".to_string(), "25P02".to_string(), vec![]),
    );

    let savepoints = async {
        let mut tx = db.transaction().await?;
        insert(&tx, 50).await?;
        let sp = tx.transaction().await?; // SAVEPOINT sp_1
        insert(&sp, 51).await?;
        sp.rollback().await?;
        let sp = tx.transaction().await?;
        insert(&sp, 52).await?;
        sp.commit().await?; // RELEASE
        let sp = tx.transaction().await?;
        let dup = sqlstate_of(insert(&sp, 50).await);
        drop(sp); // ROLLBACK TO: the error spares the outer transaction
        insert(&tx, 53).await?;
        tx.commit().await?;
        Ok::<_, Error>((dup, fresh(50, 59).await?))
    }
    .await;
    r.check(
        "txn_savepoint",
        savepoints,
        ("23505".to_string(), vec![50, 52, 53]),
    );
    r.0
}

async fn insert(c: &impl GenericClient, id: i64) -> Result<u64, Error> {
    c.execute(
        "INSERT INTO tp_txn (id, s) VALUES ($1, $2)",
        &[&id, &format!("row {id}")],
    )
    .await
}

/// The ids in `lo..=hi` a new connection sees: the committed ones.
async fn committed_ids(
    conninfo: &str,
    tls: &MakeRustlsConnect,
    lo: i64,
    hi: i64,
) -> Result<Vec<i64>, Error> {
    let f = connect(conninfo, tls).await?;
    let rows = f
        .query(
            "SELECT id FROM tp_txn WHERE id >= $1 AND id <= $2 ORDER BY id",
            &[&lo, &hi],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The SQLSTATE of a server error, or what happened instead.
fn sqlstate_of<T>(got: Result<T, Error>) -> String {
    match got {
        Ok(_) => "no error".to_string(),
        Err(e) => match e.as_db_error() {
            Some(d) => d.code().code().to_string(),
            None => format!("not a server error: {e}"),
        },
    }
}
