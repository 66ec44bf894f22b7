//! `edgeleaf nodes`: the fleet from the hub's heartbeat stream.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;

use super::{ConnOpts, tags_text};
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{NodeRow, NodeStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON array of rows (`node_id`, `status`, `last_seen`, `heartbeat` …).
    #[arg(long)]
    json: bool,
    /// Refresh until Ctrl-C (with --json: one array per line).
    #[arg(long)]
    watch: bool,
    /// Refresh period for --watch.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    every: Duration,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    let subjects = conn.subjects();
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    loop {
        let rows = hub::fleet::nodes(&js, &subjects).await?;
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        } else {
            if args.watch && std::io::stdout().is_terminal() {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write_table(&mut out, &rows)?;
        }
        out.flush()?;
        drop(out);
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(args.every) => {}
        }
    }
}

fn write_table(out: &mut impl Write, rows: &[NodeRow]) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no node has sent a heartbeat yet");
    }
    writeln!(
        out,
        "{:<20} {:<8} {:>8} {:<12} {:<8} {:<5} {:>5} {:>6}  {:<22} TAGS",
        "NODE", "STATUS", "AGE", "VERSION", "ARCH", "HUB", "CPU%", "MEM%", "UPGRADE"
    )?;
    for r in rows {
        let hb = &r.heartbeat;
        let mem_pct = if hb.mem_total > 0 {
            100.0 * hb.mem_used as f64 / hb.mem_total as f64
        } else {
            0.0
        };
        let status = match r.status {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        };
        writeln!(
            out,
            "{:<20} {:<8} {:>7.0}s {:<12} {:<8} {:<5} {:>5.1} {:>6.1}  {:<22} {}",
            r.node_id,
            status,
            r.age_s,
            hb.version,
            hb.arch,
            format!("{:?}", hb.hub_link.state).to_lowercase(),
            hb.cpu_pct,
            mem_pct,
            upgrade_text(&hb.upgrade),
            tags_text(&hb.tags)
        )?;
    }
    Ok(())
}

/// The UPGRADE column: a trial under way, else how the last upgrade ended.
fn upgrade_text(u: &crate::protocol::UpgradeInfo) -> String {
    match (&u.staged, &u.last) {
        (Some(v), _) => format!("trying {v}"),
        (None, Some(last)) => {
            let v = &last.version;
            match last.outcome.as_str() {
                "rolled_back" => format!("rolled back to {v}"),
                "superseded" => format!("superseded by {v}"),
                other => format!("{other} {v}"),
            }
        }
        (None, None) => "-".into(),
    }
}
