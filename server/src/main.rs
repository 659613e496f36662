//! The `resqlite` command: run a node (`serve`) or a local cluster
//! (`cluster`), and look at or operate one (`status`, `node`, `check`).

mod admin_cli;
mod certs_cli;
mod check_cli;
mod cli;
mod cluster;
mod serve;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESQLITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut plaintext_admin = false;
    if let Some(admin) = cli.command.admin_args() {
        let files = match &admin.certs_dir {
            Some(dir) => Some(resqlite::certs::admin_files(dir)?),
            None => None,
        };
        plaintext_admin = files.is_none();
        resqlite::grpc_tls::dial_as(files);
    }
    let result = run(cli, &runtime);
    match result {
        // A node with TLS on drops a plaintext client: say what to do.
        Err(e) if plaintext_admin && format!("{e:#}").contains("transport error") => Err(e
            .context(
                "the node did not answer; if the cluster runs with TLS, give its certificates \
             with --certs-dir or RESQLITE_CERTS_DIR",
            )),
        other => other,
    }
}

fn run(cli: cli::Cli, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        cli::Command::Cluster(args) => runtime.block_on(cluster::run(args)),
        cli::Command::Status(args) => runtime.block_on(admin_cli::status(args)),
        cli::Command::Node(args) => runtime.block_on(admin_cli::node(args)),
        cli::Command::Check(args) => runtime.block_on(check_cli::check(args)),
        cli::Command::Certs(args) => certs_cli::run(args),
    }
}
