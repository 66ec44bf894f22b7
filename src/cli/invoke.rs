//! `edgeleaf invoke NODE AGENT [PAYLOAD]`: one request to one node's agent, on its
//! direct subject `<prefix>.inv.<node>.<agent>`; the reply goes to stdout.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::ConnOpts;
use crate::config::parse_duration;
use crate::protocol::ERROR_HEADER;

#[derive(Debug, clap::Args)]
pub struct Args {
    node: String,
    agent: String,
    /// The request body; `-` reads stdin. Default: empty.
    payload: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let body = match args.payload.as_deref() {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let client = conn.connect().await?;
    let subject = conn.subjects().invoke(&args.node, &args.agent);
    let msg = tokio::time::timeout(args.timeout, client.request(subject.clone(), body.into()))
        .await
        .with_context(|| format!("no reply on {subject} within {:?}", args.timeout))?
        .with_context(|| {
            format!(
                "no agent {} on node {} answered on {subject}",
                args.agent, args.node
            )
        })?;
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
