//! `edgeleaf hub …`: hub-side set-up.

use anyhow::Result;

use super::ConnOpts;
use crate::config::parse_duration;
use crate::hub::{self, init::HubOptions};

#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Create the streams and buckets edgeleaf uses (idempotent).
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// JetStream replicas per stream and bucket.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Keep results and events this long.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    telemetry_max_age: std::time::Duration,
    /// Keep at most this much telemetry (e.g. 1GiB).
    #[arg(long, default_value = "1GiB", value_parser = crate::config::parse_size)]
    telemetry_max_bytes: u64,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: HubCommand, conn: &ConnOpts) -> Result<()> {
    match cmd {
        HubCommand::Init(args) => {
            let client = conn.connect().await?;
            let js = hub::jetstream(client.clone(), conn.domain.as_deref());
            let opts = HubOptions {
                replicas: args.replicas,
                telemetry_max_age: args.telemetry_max_age,
                telemetry_max_bytes: i64::try_from(args.telemetry_max_bytes).unwrap_or(i64::MAX),
                ..HubOptions::default()
            };
            let done = hub::init::init(&js, &conn.subjects(), &opts).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                for c in &done {
                    println!("{:<13} {:<22} {}", c.kind, c.name, c.outcome);
                }
            }
            Ok(())
        }
    }
}
