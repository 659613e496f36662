//! `resqlite certs`: the cluster's own certificate authority, and the
//! certificates it issues to nodes and operators (rcgen).
//!
//! One directory holds everything, named so a node finds its files from
//! its id alone:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA (keep `ca.key` off the nodes in production) |
//! | `node-ID.pem`, `node-ID.key` | node ID: names `node-ID.resqlite` and `cluster.resqlite` |
//! | `admin.pem`, `admin.key` | an operator: names `admin.resqlite` |
//!
//! Identities are DNS names under `.resqlite`, not addresses, so a node
//! keeps its certificate when it moves (see `resqlite_raft::transport::tls`).
//! Keys are ECDSA P-256, written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use resqlite_raft::transport::tls::{node_name, TlsFiles, ADMIN_NAME, CLUSTER_NAME};

/// How long issued certificates are valid, in years.
const VALID_YEARS: i32 = 10;

/// The CA's subject. Fixed, so the CA can sign again later from its key
/// alone (the issuer name of a certificate must equal the CA's subject).
const CA_COMMON_NAME: &str = "ReSQLite cluster CA";

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

fn node_stem(id: u64) -> String {
    format!("node-{id}")
}

/// Creates a new CA in `dir`; refuses to overwrite one.
pub fn create_ca(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if ca_key_path(dir).exists() || ca_cert_path(dir).exists() {
        bail!(
            "{} already holds a CA; remove ca.pem and ca.key first to replace it",
            dir.display()
        );
    }
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = ca_params()
        .self_signed(&key)
        .context("signing the CA certificate")?;
    write_private(&ca_key_path(dir), &key.serialize_pem())?;
    write_public(&ca_cert_path(dir), &cert.pem())?;
    Ok(())
}

/// Issues node `id`'s certificate and key into `dir`, signed by its CA.
pub fn issue_node(dir: &Path, id: u64) -> anyhow::Result<()> {
    anyhow::ensure!(id != 0, "node ids start at 1");
    let names = vec![node_name(id), CLUSTER_NAME.to_string()];
    // A node both serves (peers and operators dial it) and dials.
    let usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(
        dir,
        &node_stem(id),
        &format!("resqlite node {id}"),
        names,
        usages,
    )
}

/// Issues an operator's certificate and key into `dir`.
pub fn issue_admin(dir: &Path) -> anyhow::Result<()> {
    let names = vec![ADMIN_NAME.to_string()];
    issue(
        dir,
        "admin",
        "resqlite admin",
        names,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )
}

/// Issues the PostgreSQL port's server certificate (`pg-server.pem`,
/// `pg-server.key`) for `hosts` (names or IP addresses clients connect to,
/// checked by `sslmode=verify-full`).
pub fn issue_pg_server(dir: &Path, hosts: Vec<String>) -> anyhow::Result<()> {
    anyhow::ensure!(!hosts.is_empty(), "name at least one host");
    issue(
        dir,
        PG_SERVER_STEM,
        "resqlite PostgreSQL server",
        hosts,
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    )
}

/// File stem of the PostgreSQL port's certificate.
pub const PG_SERVER_STEM: &str = "pg-server";

/// The PostgreSQL port's certificate and key paths in `dir`.
pub fn pg_server_paths(dir: &Path) -> (PathBuf, PathBuf) {
    pair(dir, PG_SERVER_STEM)
}

/// Issues a client certificate `stem.pem`/`stem.key` holding other DNS
/// `names` (for roles the node does not know: they may reach nothing).
pub fn issue_other(dir: &Path, stem: &str, names: Vec<String>) -> anyhow::Result<()> {
    issue(
        dir,
        stem,
        stem,
        names,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )
}

/// What a client holding `stem.pem`/`stem.key` presents and trusts.
pub fn client_files(dir: &Path, stem: &str) -> anyhow::Result<TlsFiles> {
    load(dir, stem)
}

/// Makes what `dir` lacks for a local cluster of `nodes` nodes on `host`:
/// the CA, each node's certificate, an admin certificate and the
/// PostgreSQL port's. Existing files are kept, so a restarted local
/// cluster keeps its identities.
pub fn ensure_local_cluster(dir: &Path, nodes: u64, host: &str) -> anyhow::Result<()> {
    if !ca_key_path(dir).exists() {
        create_ca(dir)?;
    }
    for id in 1..=nodes {
        if !pair(dir, &node_stem(id)).0.exists() {
            issue_node(dir, id)?;
        }
    }
    if !pair(dir, "admin").0.exists() {
        issue_admin(dir)?;
    }
    if !pg_server_paths(dir).0.exists() {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !hosts.contains(&host.to_string()) {
            hosts.push(host.to_string());
        }
        issue_pg_server(dir, hosts)?;
    }
    Ok(())
}

/// What node `id` presents and trusts, from `dir`.
pub fn node_files(dir: &Path, id: u64) -> anyhow::Result<TlsFiles> {
    load(dir, &node_stem(id))
}

/// What an operator presents and trusts, from `dir`.
pub fn admin_files(dir: &Path) -> anyhow::Result<TlsFiles> {
    load(dir, "admin")
}

fn load(dir: &Path, stem: &str) -> anyhow::Result<TlsFiles> {
    let (cert, key) = pair(dir, stem);
    let read = |p: &Path| {
        fs::read(p).with_context(|| {
            format!(
                "cannot read {} (make it with `resqlite certs`)",
                p.display()
            )
        })
    };
    Ok(TlsFiles {
        ca_pem: read(&ca_cert_path(dir))?,
        cert_pem: read(&cert)?,
        key_pem: read(&key)?,
    })
}

fn issue(
    dir: &Path,
    stem: &str,
    common_name: &str,
    names: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> anyhow::Result<()> {
    let ca_key_pem = fs::read_to_string(ca_key_path(dir)).with_context(|| {
        format!(
            "cannot read the CA key {} (create the CA first: `resqlite certs ca`)",
            ca_key_path(dir).display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("the CA key is not a valid PEM key")?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::new(names).context("certificate names")?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    let (cert_path, key_path) = pair(dir, stem);
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok(())
}

/// The CA's parameters: the same every time (see [`CA_COMMON_NAME`]).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From the start of last year to [`VALID_YEARS`] years on (a day's clock
/// skew between machines must not make a fresh certificate "not yet valid").
fn set_validity(params: &mut CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Close enough for whole years.
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    write_with_mode(path, pem, 0o600)
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    write_with_mode(path, pem, 0o644)
}

fn write_with_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_cluster_gets_a_ca_nodes_and_an_admin_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        ensure_local_cluster(dir.path(), 3, "127.0.0.1").unwrap();
        for f in [
            "ca.pem",
            "ca.key",
            "node-1.pem",
            "node-3.key",
            "admin.pem",
            "admin.key",
            "pg-server.pem",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        let before = fs::read(dir.path().join("node-2.pem")).unwrap();
        ensure_local_cluster(dir.path(), 3, "127.0.0.1").unwrap();
        assert_eq!(before, fs::read(dir.path().join("node-2.pem")).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys are readable by the owner only"
        );
        assert!(
            create_ca(dir.path()).is_err(),
            "an existing CA is never replaced"
        );
    }
}
