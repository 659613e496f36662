//! Passwords (SCRAM-SHA-256) and TLS for clients, against tokio-postgres
//! and psql.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use resqlite_wire::{Auth, ClientTls, Roles, ScramVerifier, WireOptions};

use crate::fake::{start, Fake};

/// Roles in memory: name → (password, superuser).
struct TestRoles(HashMap<String, (ScramVerifier, bool)>);

impl TestRoles {
    fn new(roles: &[(&str, &str, bool)]) -> Arc<Self> {
        Arc::new(TestRoles(
            roles
                .iter()
                .map(|(name, password, superuser)| {
                    let salt: [u8; 16] = rand::random();
                    (
                        name.to_string(),
                        (
                            ScramVerifier::from_password(password, &salt, 4096),
                            *superuser,
                        ),
                    )
                })
                .collect(),
        ))
    }
}

impl Roles for TestRoles {
    fn login_verifier(&self, user: &str) -> Option<ScramVerifier> {
        self.0.get(user).map(|(v, _)| v.clone())
    }

    fn is_superuser(&self, user: &str) -> bool {
        self.0.get(user).is_some_and(|(_, s)| *s)
    }
}

fn roles() -> Arc<TestRoles> {
    TestRoles::new(&[("alice", "wonderland", true), ("bob", "builder", false)])
}

async fn try_connect(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut conninfo = format!("host=127.0.0.1 port={} user={user}", addr.port());
    if let Some(p) = password {
        conninfo.push_str(&format!(" password={p}"));
    }
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test]
async fn scram_lets_in_the_right_password_only() {
    let addr = start(
        Arc::new(Fake::default()),
        WireOptions {
            auth: Auth::Scram(roles()),
            ..Default::default()
        },
    )
    .await;

    let alice = try_connect(addr, "alice", Some("wonderland"))
        .await
        .expect("the right password");
    let row = alice.query_one("SHOW is_superuser", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    let bob = try_connect(addr, "bob", Some("builder")).await.unwrap();
    let row = bob.query_one("SHOW is_superuser", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "off",
        "is_superuser tells the truth"
    );

    let wrong = try_connect(addr, "alice", Some("alice"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        sqlstate(&wrong),
        (
            "28P01".to_string(),
            "password authentication failed for user \"alice\"".to_string()
        )
    );
    // A user that does not exist fails the same way, at the same step.
    let nobody = try_connect(addr, "mallory", Some("x")).await.err().unwrap();
    assert_eq!(
        sqlstate(&nobody),
        (
            "28P01".to_string(),
            "password authentication failed for user \"mallory\"".to_string()
        )
    );
    // No password at all: the client cannot answer the SCRAM challenge.
    assert!(try_connect(addr, "alice", None).await.is_err());
}

#[tokio::test]
async fn trust_says_every_session_is_a_superuser() {
    let addr = start(Arc::new(Fake::default()), WireOptions::default()).await;
    let c = try_connect(addr, "anyone", None).await.unwrap();
    let row = c.query_one("SHOW is_superuser", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written to `dir`
/// as cert.pem and key.pem.
fn server_certificate(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (cert.pem().into_bytes(), key.serialize_pem().into_bytes());
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    (cert_pem, key_pem)
}

/// psql's exit status and output for `SELECT 1` with `conninfo`.
fn psql(addr: SocketAddr, conninfo: &str, password: &str) -> (bool, String) {
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=postgres connect_timeout=5 {conninfo}",
            addr.port()
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .env("PGPASSWORD", password)
        .env_remove("PGSSLMODE")
        .output()
        .expect("psql is installed (.ci/run installs postgresql-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn psql_connects_over_verified_tls_with_channel_binding_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_certificate(dir.path());
    let root = dir.path().join("cert.pem");
    let root = root.display();
    let addr = start(
        Arc::new(Fake::default()),
        WireOptions {
            auth: Auth::Scram(roles()),
            tls: Some(ClientTls::from_pem(&cert, &key, true).unwrap()),
            ..Default::default()
        },
    )
    .await;
    let ok = |conninfo: String, password: &'static str| {
        tokio::task::spawn_blocking(move || psql(addr, &conninfo, password))
    };
    let (pass, out) = ok(
        format!("user=alice sslmode=verify-full sslrootcert={root} channel_binding=require"),
        "wonderland",
    )
    .await
    .unwrap();
    assert!(pass, "verify-full with channel binding: {out}");
    let (pass, out) = ok("user=alice sslmode=require".to_string(), "wonderland")
        .await
        .unwrap();
    assert!(pass, "sslmode=require: {out}");
    let (pass, out) = ok("user=alice sslmode=require".to_string(), "wrong")
        .await
        .unwrap();
    assert!(
        !pass && out.contains("password authentication failed"),
        "{out}"
    );
    let (pass, out) = ok("user=alice sslmode=disable".to_string(), "wonderland")
        .await
        .unwrap();
    assert!(!pass && out.contains("only TLS connections"), "{out}");
}

#[tokio::test]
async fn tls_is_optional_unless_required() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_certificate(dir.path());
    let addr = start(
        Arc::new(Fake::default()),
        WireOptions {
            tls: Some(ClientTls::from_pem(&cert, &key, false).unwrap()),
            ..Default::default()
        },
    )
    .await;
    let (pass, out) = tokio::task::spawn_blocking(move || psql(addr, "user=x sslmode=disable", ""))
        .await
        .unwrap();
    assert!(pass, "{out}");
    let (pass, out) = tokio::task::spawn_blocking(move || psql(addr, "user=x sslmode=require", ""))
        .await
        .unwrap();
    assert!(pass, "{out}");
    assert!(ClientTls::from_pem(b"not pem", &key, false).is_err());
}
