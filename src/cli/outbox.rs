//! `edgeleaf outbox`: a node's store-and-forward backlog. sled locks its database for
//! one process, so while the node runs this asks it (`ctl.<node>.outbox`, found
//! through `<state_dir>/node.json`); when it is stopped, it reads the state dir.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::ConnOpts;
use crate::connect::{NatsTarget, Persistence};
use crate::node::NodeFile;
use crate::node::leaf::LeafLogins;
use crate::protocol::{ControlReply, OutboxStats, Subjects};
use crate::store::StoreError;
use crate::store::outbox::Outbox;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask this node over NATS (with -s) instead of reading a state dir.
    #[arg(long)]
    node: Option<String>,
    /// The node's state dir.
    #[arg(long, default_value = "/var/lib/edgeleaf")]
    state_dir: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let (stats, rate) = match &args.node {
        Some(node) => ask(&conn.connect().await?, &conn.subjects(), node).await?,
        None => match Outbox::open_stopped(&args.state_dir) {
            Ok(outbox) => (outbox.stats(), None),
            Err(StoreError::Locked { .. }) => {
                let file = NodeFile::read(&args.state_dir)?;
                let mut target = NatsTarget {
                    url: conn.server.clone().unwrap_or(file.nats_url),
                    ..conn.target()
                };
                // A node with its own leaf: log in as its local user, unless told how.
                let no_login = target.user.is_none()
                    && target.creds.is_none()
                    && target.token.is_none()
                    && target.nkey.is_none();
                if no_login && let Ok(logins) = LeafLogins::read(&args.state_dir) {
                    target.user = Some(logins.local_user.clone());
                    target.password = Some(logins.local_password.clone());
                }
                let client = target.connect("edgeleaf-cli", Persistence::Once).await?;
                ask(&client, &Subjects::new(&file.prefix), &file.node_id).await?
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the state dir {}", args.state_dir.display())
                });
            }
        },
    };
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(r) = rate {
            v["rate_per_s"] = serde_json::json!({"appended": r.0, "forwarded": r.1});
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "depth         {} entries, {} bytes",
        stats.depth, stats.bytes
    );
    println!("oldest        {} s", stats.oldest_age_s);
    println!(
        "dropped       {} (full or expired, since the state dir was new)",
        stats.dropped
    );
    if let Some((appended, forwarded)) = rate {
        println!("rate          {appended:.0}/s appended, {forwarded:.0}/s forwarded");
    }
    Ok(())
}

/// Asks a running node twice, a second apart, for its figures and their rates.
async fn ask(
    client: &async_nats::Client,
    subjects: &Subjects,
    node: &str,
) -> Result<(OutboxStats, Option<(f64, f64)>)> {
    let once = || async {
        let msg = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(subjects.outbox(node), "".into()),
        )
        .await
        .with_context(|| format!("node {node} did not answer within 5s"))?
        .with_context(|| format!("node {node} did not answer (is it running?)"))?;
        match serde_json::from_slice::<ControlReply<OutboxStats>>(&msg.payload)? {
            ControlReply::Ok(s) => Ok(s),
            ControlReply::Error(e) => bail!("{}: {}", e.code, e.message),
        }
    };
    let first = once().await?;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = once().await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    Ok((
        second.clone(),
        Some((
            rate(first.appended, second.appended),
            rate(first.forwarded, second.forwarded),
        )),
    ))
}
