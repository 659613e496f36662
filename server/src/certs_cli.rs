//! `resqlite certs ca | node --id N | admin`.

use resqlite::certs;

use crate::cli::{CertsArgs, CertsCommand};

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Ca(d) => {
            certs::create_ca(&d.dir)?;
            println!(
                "created the cluster CA in {} (ca.pem; keep ca.key off the nodes)",
                d.dir.display()
            );
        }
        CertsCommand::Node(n) => {
            certs::issue_node(&n.dir.dir, n.id)?;
            println!(
                "issued node-{id}.pem and node-{id}.key in {}",
                n.dir.dir.display(),
                id = n.id
            );
        }
        CertsCommand::Pg(p) => {
            certs::issue_pg_server(&p.dir.dir, p.hosts)?;
            println!(
                "issued pg-server.pem and pg-server.key in {}",
                p.dir.dir.display()
            );
        }
        CertsCommand::Admin(d) => {
            certs::issue_admin(&d.dir)?;
            println!("issued admin.pem and admin.key in {}", d.dir.display());
        }
    }
    Ok(())
}
