//! `edgeleaf ping`: which nodes answer right now.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::{ConnOpts, parse_tag, tags_text};
use crate::config::parse_duration;
use crate::protocol::{NodeInfo, PingRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only nodes with this tag answer (repeat for several; all must match).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// How long to collect answers.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the answers as a JSON array of NodeInfo.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let client = conn.connect().await?;
    let request = PingRequest {
        tags: args.tags.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let body = if request.tags.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&request)?
    };
    let mut nodes: Vec<NodeInfo> =
        super::gather(&client, conn.subjects().ping(), body.into(), args.timeout).await?;
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    if args.json {
        println!("{}", serde_json::to_string(&nodes)?);
        return Ok(());
    }
    if nodes.is_empty() {
        println!("no node answered within {:?}", args.timeout);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<8} {:>9} {:<5}  TAGS",
        "NODE", "VERSION", "ARCH", "UPTIME", "HUB"
    );
    for n in &nodes {
        println!(
            "{:<20} {:<8} {:<8} {:>8}s {:<5}  {}",
            n.node_id,
            n.version,
            n.arch,
            n.uptime_s,
            format!("{:?}", n.hub_link.state).to_lowercase(),
            tags_text(&n.tags)
        );
    }
    Ok(())
}
