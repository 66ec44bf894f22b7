//! `edgeleaf deploy` and `edgeleaf undeploy`: write (or delete) a signed deployment
//! in the hub's `EDGELEAF_DEPLOYMENTS` bucket, then wait for the online nodes it
//! targets to report. Offline nodes converge when they return.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::kv;
use futures::StreamExt;

use super::run_agent::AgentOpts;
use super::{ConnOpts, parse_tag};
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{
    DEPLOYMENTS_BUCKET, DeployStatus, MODULES_BUCKET, NodeStatus, STATUS_BUCKET,
};
use crate::shipping::{self, DeploymentSpec, ModuleRef, SecretKey, SignedDeployment, Target};

/// Exactly one of `--node`, `--tag`, `--all`.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetOpts {
    /// Deploy to one node, by id.
    #[arg(long)]
    node: Option<String>,
    /// Deploy to every node with this tag (key=value).
    #[arg(long, value_parser = parse_tag)]
    tag: Option<(String, String)>,
    /// Deploy to every node.
    #[arg(long)]
    all: bool,
}

impl TargetOpts {
    fn target(&self) -> Result<Target> {
        Ok(match (&self.node, &self.tag) {
            (Some(id), _) => {
                if !crate::protocol::is_token(id) {
                    bail!("--node {id:?} is not a node id (a single NATS token)");
                }
                Target::Node(id.clone())
            }
            (_, Some((k, v))) => Target::Tag(k.clone(), v.clone()),
            _ => Target::All,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The agent module (.wasm).
    file: PathBuf,
    #[command(flatten)]
    agent: AgentOpts,
    #[command(flatten)]
    target: TargetOpts,
    /// Publisher secret key (from `edgeleaf keys gen`).
    #[arg(long, env = "EDGELEAF_KEY")]
    key: Option<PathBuf>,
    /// Deploy unsigned (only nodes with security.allow_unsigned accept it).
    #[arg(long, conflicts_with = "key")]
    unsigned: bool,
    /// Version to deploy. Default: one above the highest deployed for this name.
    #[arg(long)]
    set_version: Option<u64>,
    /// How long to wait for the online targeted nodes; 0 does not wait.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    wait: Duration,
}

#[derive(Debug, clap::Args)]
pub struct UndeployArgs {
    /// The agent name.
    name: String,
    #[command(flatten)]
    target: TargetOpts,
}

pub async fn deploy(args: DeployArgs, conn: &ConnOpts) -> Result<()> {
    let key = match (&args.key, args.unsigned) {
        (Some(path), _) => Some(SecretKey::load(path)?),
        (None, true) => None,
        (None, false) => {
            bail!("give --key FILE to sign the deployment (see `edgeleaf keys gen`), or --unsigned")
        }
    };
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let agent = args.agent.spec(&args.file);
    agent
        .check(&conn.prefix)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let target = args.target.target()?;
    let kv_key = target.key(&agent.name);

    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    let modules = js
        .get_object_store(MODULES_BUCKET)
        .await
        .context("no module store on the hub; run `edgeleaf hub init` first")?;
    let digest = shipping::modules::digest(&wasm);
    let bar = progress_bar(wasm.len() as u64);
    let uploaded = shipping::modules::upload(&modules, &wasm, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    eprintln!(
        "module {} ({} bytes) {}",
        &digest[..12],
        wasm.len(),
        if uploaded {
            "uploaded"
        } else {
            "already on the hub"
        }
    );

    let bucket = js
        .get_key_value(DEPLOYMENTS_BUCKET)
        .await
        .context("no deployments bucket on the hub; run `edgeleaf hub init` first")?;
    let version = match args.set_version {
        Some(v) => v,
        None => highest_version(&bucket, &agent.name).await? + 1,
    };
    let spec = DeploymentSpec {
        module: ModuleRef {
            digest: digest.clone(),
            size: wasm.len() as u64,
        },
        version,
        issued_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        nonce: format!("{:032x}", rand::random::<u128>()),
        target: kv_key.clone(),
        publisher: key.as_ref().map(|k| k.public().to_string()),
        agent,
    };
    let sealed = SignedDeployment::seal(&spec, key.as_ref());
    bucket
        .put(&kv_key, sealed.to_bytes().into())
        .await
        .with_context(|| format!("cannot write deployment {kv_key}"))?;
    println!("deployed {} version {version} to {kv_key}", spec.agent.name);
    if args.wait.is_zero() {
        return Ok(());
    }
    wait_for_nodes(&js, conn, &target, &spec.agent.name, version, args.wait).await
}

pub async fn undeploy(args: UndeployArgs, conn: &ConnOpts) -> Result<()> {
    let kv_key = args.target.target()?.key(&args.name);
    let client = conn.connect().await?;
    let js = hub::jetstream(client, conn.domain.as_deref());
    let bucket = js
        .get_key_value(DEPLOYMENTS_BUCKET)
        .await
        .context("no deployments bucket on the hub; run `edgeleaf hub init` first")?;
    if bucket.get(&kv_key).await?.is_none() {
        bail!("nothing is deployed under {kv_key}");
    }
    bucket
        .delete(&kv_key)
        .await
        .with_context(|| format!("cannot delete {kv_key}"))?;
    println!("undeployed {kv_key}; targeted nodes remove the agent as they see it");
    Ok(())
}

/// The highest version deployed for `agent` under any target (0 if none).
async fn highest_version(bucket: &kv::Store, agent: &str) -> Result<u64> {
    let mut highest = 0;
    let mut keys = bucket.keys().await.context("cannot list deployments")?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if Target::parse_key(&key).is_none_or(|(_, name)| name != agent) {
            continue;
        }
        if let Some(raw) = bucket.get(&key).await?
            && let Some(v) = SignedDeployment::peek_version(&raw)
        {
            highest = highest.max(v);
        }
    }
    Ok(highest)
}

/// Waits until every online node the target selects reports on this version.
async fn wait_for_nodes(
    js: &async_nats::jetstream::Context,
    conn: &ConnOpts,
    target: &Target,
    agent: &str,
    version: u64,
    wait: Duration,
) -> Result<()> {
    let rows = hub::fleet::nodes(js, &conn.subjects())
        .await
        .unwrap_or_default();
    let (online, offline): (Vec<_>, Vec<_>) = rows
        .iter()
        .filter(|r| target.selects(&r.node_id, &r.heartbeat.tags))
        .partition(|r| r.status == NodeStatus::Online);
    for r in &offline {
        println!("{:<20} offline; converges when it returns", r.node_id);
    }
    if online.is_empty() {
        println!("no targeted node is online now");
        return Ok(());
    }
    let status = js
        .get_key_value(STATUS_BUCKET)
        .await
        .context("no status bucket on the hub")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending: BTreeMap<String, ()> =
        online.iter().map(|r| (r.node_id.clone(), ())).collect();
    let mut failed = 0;
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        for node in pending.keys().cloned().collect::<Vec<_>>() {
            let Some(raw) = status.get(format!("{node}.{agent}")).await? else {
                continue;
            };
            let Ok(s) = serde_json::from_slice::<DeployStatus>(&raw) else {
                continue;
            };
            if s.version != Some(version) {
                continue;
            }
            pending.remove(&node);
            match &s.error {
                None => println!("{node:<20} {} version {version}", s.state),
                Some(e) => {
                    failed += 1;
                    let still = s
                        .running_version
                        .map(|v| format!(" (version {v} keeps running)"))
                        .unwrap_or_default();
                    println!("{node:<20} {} {}: {}{still}", s.state, e.code, e.message);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in pending.keys() {
        println!("{node:<20} no report within {wait:?}");
    }
    if failed > 0 || !pending.is_empty() {
        bail!(
            "{failed} node(s) refused or failed, {} did not report",
            pending.len()
        );
    }
    Ok(())
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style);
    }
    bar
}
