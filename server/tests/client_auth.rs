//! Passwords and TLS on the PostgreSQL port of a real 3-node cluster:
//! roles made with CREATE ROLE on the leader log in on every node, wrong
//! or missing passwords are refused there, only superusers manage roles,
//! nobody reads the verifiers, and a TLS-only cluster refuses plaintext.

use std::process::Command;
use std::time::Duration;

use resqlite::certs;
use resqlite_tests::cluster::wait_until;
use resqlite_tests::sql_cluster::SqlCluster;
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);
const SUPERUSER_PASSWORD: &str = "bootstrap secret";

/// A 3-node cluster whose bootstrap superuser `resqlite` has a password;
/// `extra` flags go to every node.
fn cluster_with_passwords(dir: &std::path::Path, extra: &[String]) -> SqlCluster {
    let file = dir.join("superuser-password");
    std::fs::write(&file, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
    let mut c = SqlCluster::prepare(BIN, 3).expect("prepare");
    let mut args = vec!["--password-file".to_string(), file.display().to_string()];
    args.extend_from_slice(extra);
    c.set_extra_args(args);
    c.set_conninfo_extra(&format!("password='{SUPERUSER_PASSWORD}'"));
    c.start_all().expect("start");
    c
}

async fn login(c: &SqlCluster, id: u64, user: &str, password: &str) -> Result<Client, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} password='{password}' connect_timeout=3",
        c.pg_port(id)
    );
    match tokio_postgres::connect(&conninfo, NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())),
    }
}

/// Waits until `user` can log in with `password` on every node.
async fn can_log_in_everywhere(c: &SqlCluster, user: &str, password: &str) {
    for id in c.ids() {
        wait_until(
            &format!("{user} to log in on node {id}"),
            ELECTION,
            || async { login(c, id, user, password).await.ok().map(|_| ()) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e} (password {password:?})"));
    }
}

/// Waits until `user` with `password` is refused on every node, as a
/// wrong password is (28P01).
async fn refused_everywhere(c: &SqlCluster, user: &str, password: &str) {
    for id in c.ids() {
        let refused = wait_until(
            &format!("{user} refused on node {id}"),
            ELECTION,
            || async {
                match login(c, id, user, password).await {
                    Err(e) if e.starts_with("28P01 password authentication failed") => Some(e),
                    _ => None,
                }
            },
        )
        .await;
        refused.unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
}

fn sqlstate(e: tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_replicated_and_every_node_checks_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_with_passwords(dir.path(), &[]);
    let leader = c.wait_for_leader(ELECTION).await.expect("a leader");
    let su = c
        .connect(leader)
        .await
        .expect("the bootstrap superuser logs in");
    let row = su.query_one("SHOW is_superuser", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on");

    // No password, a wrong one, a user that does not exist: refused on
    // every node, followers included.
    for id in c.ids() {
        for (user, password) in [("resqlite", "wrong"), ("resqlite", ""), ("mallory", "x")] {
            let e = login(&c, id, user, password).await.err();
            assert!(
                e.as_deref().is_some_and(|e| e.starts_with("28P01")),
                "node {id} {user}/{password:?}: {e:?}"
            );
        }
    }

    su.batch_execute(
        "CREATE ROLE app LOGIN PASSWORD 'app secret';
         CREATE USER ops SUPERUSER PASSWORD 'ops secret';
         CREATE ROLE nologin PASSWORD 'x';
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
    )
    .await
    .expect("a superuser makes roles");
    can_log_in_everywhere(&c, "app", "app secret").await;
    can_log_in_everywhere(&c, "ops", "ops secret").await;
    refused_everywhere(&c, "nologin", "x").await;
    refused_everywhere(&c, "app", "ops secret").await;

    // A role that is not a superuser works with data but not with roles.
    let app = login(&c, leader, "app", "app secret").await.unwrap();
    let row = app.query_one("SHOW is_superuser", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "off",
        "is_superuser tells the truth"
    );
    app.execute("INSERT INTO notes (body) VALUES ('by app')", &[])
        .await
        .expect("app writes data");
    for sql in [
        "CREATE ROLE sneaky SUPERUSER LOGIN PASSWORD 'x'",
        "ALTER ROLE app SUPERUSER",
        "ALTER ROLE ops PASSWORD 'taken over'",
        "DROP ROLE ops",
    ] {
        let e = app.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(e), "42501", "{sql}");
    }
    app.batch_execute("ALTER ROLE app PASSWORD 'new app secret'")
        .await
        .expect("a role changes its own password");
    can_log_in_everywhere(&c, "app", "new app secret").await;
    refused_everywhere(&c, "app", "app secret").await;

    // Nobody reads the verifiers, not even a superuser.
    let e = su
        .query("SELECT * FROM _resqlite_roles", &[])
        .await
        .expect_err("the verifiers were read");
    assert_eq!(sqlstate(e), "42501");

    // The bootstrap superuser's password yields to a replicated one.
    su.batch_execute("ALTER ROLE resqlite PASSWORD 'rotated'")
        .await
        .unwrap();
    can_log_in_everywhere(&c, "resqlite", "rotated").await;
    refused_everywhere(&c, "resqlite", SUPERUSER_PASSWORD).await;

    // Errors as PostgreSQL's.
    let e = su.batch_execute("CREATE ROLE app").await.unwrap_err();
    assert_eq!(sqlstate(e), "42710");
    let e = su.batch_execute("DROP ROLE nobody").await.unwrap_err();
    assert_eq!(sqlstate(e), "42704");
    let e = su.batch_execute("DROP ROLE resqlite").await.unwrap_err();
    assert_eq!(sqlstate(e), "55006");

    su.batch_execute("DROP ROLE app, nologin").await.unwrap();
    refused_everywhere(&c, "app", "new app secret").await;

    // Every replica holds the same roles (they are part of the hash).
    let (ok, out) = resqlite_tests::cli::run(BIN, &["check", "--node", &c.grpc_addr(leader)]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_cluster_refuses_plaintext_and_psql_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::ensure_local_cluster(&certs_dir, 3, "127.0.0.1").unwrap();
    let (pg_cert, pg_key) = certs::pg_server_paths(&certs_dir);
    let mut c = cluster_with_passwords(
        dir.path(),
        &[
            "--certs-dir".into(),
            certs_dir.display().to_string(),
            "--pg-cert".into(),
            pg_cert.display().to_string(),
            "--pg-key".into(),
            pg_key.display().to_string(),
            "--pg-tls-required".into(),
        ],
    );
    c.set_conninfo_extra(&format!("password='{SUPERUSER_PASSWORD}'"));
    let ca = certs::ca_cert_path(&certs_dir);
    // libpq finds the leader itself.
    let ports: Vec<String> = c
        .ids()
        .iter()
        .map(|&id| c.pg_port(id).to_string())
        .collect();
    let ports = ports.join(",");
    let psql = |conninfo: String| {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1,127.0.0.1,127.0.0.1 port={ports} target_session_attrs=read-write \
                 user=resqlite dbname=postgres connect_timeout=5 {conninfo}"
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT 40 + 2"])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env_remove("PGSSLMODE")
            .output()
            .expect("psql is installed");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let verified = format!(
        "sslmode=verify-full sslrootcert={} channel_binding=require",
        ca.display()
    );
    let ready = wait_until("psql over TLS", ELECTION, || {
        let verified = verified.clone();
        let psql = &psql;
        async move {
            let (ok, out) = tokio::task::block_in_place(|| psql(verified));
            (ok && out.trim() == "42").then_some(())
        }
    })
    .await;
    ready.unwrap_or_else(|e| panic!("{e}: {:?}", psql(verified.clone())));
    let (ok, out) = psql("sslmode=disable".into());
    assert!(!ok && out.contains("only TLS connections"), "{out}");
    let (ok, out) = psql("sslmode=require password=wrong".to_string());
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
}
