//! A throwaway PostgreSQL 15 server, the oracle the differential tests
//! compare ReSQLite with: initdb into a temporary directory, trust
//! authentication on loopback, stopped (fast shutdown) when dropped.
//! PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` user that Debian's package creates.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_postgres::{Client, NoTls};

use crate::cluster::{pick_port, wait_until};

/// Where Debian's PostgreSQL 15 server binaries live.
pub const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Whether the server binaries are installed.
    pub fn installed() -> bool {
        Path::new(PG15_BIN).join("postgres").exists()
    }

    /// initdb and start a server on a free loopback port.
    pub async fn start() -> anyhow::Result<Postgres> {
        let dir = tempfile::Builder::new().prefix("resqlite-pg-").tempdir()?;
        let data = dir.path().join("data");
        let runas = run_as()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        let initdb = as_user(Command::new(bin("initdb")), runas)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-D",
            ])
            .arg(&data)
            .current_dir("/")
            .output()
            .context("running initdb")?;
        if !initdb.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        }
        let port = pick_port()?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        std::fs::set_permissions(
            dir.path().join("postgres.log"),
            std::fs::Permissions::from_mode(0o666),
        )?;
        let child = as_user(Command::new(bin("postgres")), runas)
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("port={port}")])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args(["-c", "fsync=off", "-c", "TimeZone=UTC"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let pg = Postgres {
            child,
            port,
            _dir: dir,
        };
        wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || {
                let pg = &pg;
                async move { pg.connect().await.ok() }
            },
        )
        .await?;
        Ok(pg)
    }

    /// A new connection as the superuser `postgres`.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    Path::new(PG15_BIN).join(name)
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root and there is no postgres user to run PostgreSQL as");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn as_user(mut command: Command, runas: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = runas {
        command.gid(gid).uid(uid);
    }
    command
}
