//! `edgeleaf keys gen --out FILE`: a publisher key pair for signing deployments.

use std::path::PathBuf;

use anyhow::Result;

use crate::shipping::SecretKey;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make an ed25519 key pair: FILE (secret, mode 0600) and FILE.pub.
    Gen {
        /// Where to write the secret key; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Gen { out } => {
            let key = SecretKey::generate();
            key.save(&out)?;
            eprintln!("secret key written to {} (keep it private)", out.display());
            eprintln!("add the public key to each node's [security] trusted_publishers:");
            println!("{}", key.public());
            Ok(())
        }
    }
}
