//! `edgeleaf agents [--node ID] [--json]`: per node and agent, what the nodes
//! reported in `EDGELEAF_STATUS` (version, digest, state, last error) joined with
//! the live counters of the nodes that answer `ctl.<node>.agents` now.

use anyhow::Result;

use super::ConnOpts;
use crate::hub;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    let rows = hub::fleet::agents(&client, &js, &conn.subjects(), args.node.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no agents");
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<8} {:>7} {:<12} {:>11} {:>8}  TRIGGERS, SCHEDULE / LAST ERROR",
        "NODE", "AGENT", "STATE", "VERSION", "DIGEST", "INVOCATIONS", "FAILURES"
    );
    for r in &rows {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<16} {:<8} {:>7} {:<12} {:>11} {:>8}  {}",
            r.node_id,
            r.agent,
            r.state,
            opt(r.version),
            r.digest
                .as_deref()
                .map(|d| &d[..d.len().min(12)])
                .unwrap_or("-"),
            opt(r.invocations),
            opt(r.failures),
            match &r.last_error {
                Some(e) => format!("{}: {}", e.code, e.message),
                None => r
                    .triggers
                    .iter()
                    .chain(&r.schedule)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        );
    }
    Ok(())
}
