//! `edgeleaf agents NODE`: the agents one node runs, from its `ctl.<node>.agents`.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::ConnOpts;
use crate::protocol::{AgentInfo, ControlReply};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node to ask.
    node: String,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let client = conn.connect().await?;
    let subject = conn.subjects().agents(&args.node);
    let msg = tokio::time::timeout(Duration::from_secs(5), client.request(subject, "".into()))
        .await
        .with_context(|| format!("node {} did not answer within 5s", args.node))?
        .with_context(|| format!("node {} did not answer (is it running?)", args.node))?;
    let rows = match serde_json::from_slice::<ControlReply<Vec<AgentInfo>>>(&msg.payload)? {
        ControlReply::Ok(rows) => rows,
        ControlReply::Error(e) => bail!("{}: {}", e.code, e.message),
    };
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("node {} runs no agents", args.node);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<13} {:<13} {:>11} {:>9}  TRIGGERS / ERROR",
        "AGENT", "STATE", "KIND", "DIGEST", "INVOCATIONS", "FAILURES"
    );
    for r in &rows {
        println!(
            "{:<20} {:<8} {:<13} {:<13} {:>11} {:>9}  {}",
            r.name,
            r.state,
            r.kind.as_deref().unwrap_or("-"),
            r.digest
                .as_deref()
                .map(|d| &d[..d.len().min(12)])
                .unwrap_or("-"),
            r.invocations,
            r.failures,
            r.error.clone().unwrap_or_else(|| r.triggers.join(", "))
        );
    }
    Ok(())
}
