//! `edgeleaf invoke SUBJ [PAYLOAD|-]`: one request on a subject (a trigger: one node
//! of the fleet answers, by queue group), or with `--node ID --agent NAME` straight
//! to that node's agent on `<prefix>.inv.<node>.<agent>`. The reply goes to stdout;
//! an error reply goes to stderr with a non-zero exit.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::ConnOpts;
use crate::config::parse_duration;
use crate::protocol::ERROR_HEADER;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// SUBJ [PAYLOAD], or with --node/--agent just [PAYLOAD]. A payload of `-`
    /// reads stdin; no payload sends an empty body.
    #[arg(value_name = "SUBJ|PAYLOAD")]
    args: Vec<String>,
    /// Reach this node's agent directly (with --agent), bypassing the queue group.
    #[arg(long, requires = "agent")]
    node: Option<String>,
    /// The agent to reach on --node.
    #[arg(long, requires = "node")]
    agent: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let (subject, payload) = match (&args.node, &args.agent) {
        (Some(node), Some(agent)) => {
            if args.args.len() > 1 {
                bail!("with --node and --agent, give only the payload");
            }
            (conn.subjects().invoke(node, agent), args.args.first())
        }
        _ => match args.args.as_slice() {
            [subject] | [subject, _] => (subject.clone(), args.args.get(1)),
            [] => bail!("give a subject (or --node ID --agent NAME)"),
            _ => bail!("give a subject and at most one payload"),
        },
    };
    let body = match payload.map(String::as_str) {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let client = conn.connect().await?;
    let msg = tokio::time::timeout(args.timeout, client.request(subject.clone(), body.into()))
        .await
        .with_context(|| format!("no reply on {subject} within {:?}", args.timeout))?
        .with_context(|| format!("nothing answered on {subject}"))?;
    if let Some(code) = msg.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
        bail!("{code}: {}", String::from_utf8_lossy(&msg.payload));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&msg.payload)?;
    if !msg.payload.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}
