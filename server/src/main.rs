//! The `resqlite` command: run a node (`serve`) or a local cluster
//! (`cluster`), and look at or operate one (`status`, `node`, `check`).

mod admin_cli;
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
    match cli.command {
        cli::Command::Serve(args) => runtime.block_on(serve::serve(args)),
        cli::Command::Cluster(args) => runtime.block_on(cluster::run(args)),
        cli::Command::Status(args) => runtime.block_on(admin_cli::status(args)),
        cli::Command::Node(args) => runtime.block_on(admin_cli::node(args)),
        cli::Command::Check(args) => runtime.block_on(check_cli::check(args)),
    }
}
