//! `edgeleaf upgrade`: ship an edgeleaf binary to nodes, or send them back to the
//! binary they kept. The binary goes to the hub's object store, a signed
//! announcement to `EDGELEAF_UPGRADES`, and each node does the rest
//! (`node::upgrade`): download, check, trial, and exec, or the previous binary again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::ConnOpts;
use super::deploy::TargetOpts;
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{NodeRow, NodeStatus, UPGRADES_BUCKET};
use crate::shipping::upgrade::{UpgradeSpec, elf_arch};
use crate::shipping::{ModuleRef, SecretKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The edgeleaf binary for one architecture (its ELF header says which).
    #[arg(required_unless_present = "rollback", conflicts_with = "rollback")]
    binary: Option<PathBuf>,
    /// The version the binary reports (`BINARY --version` prints `edgeleaf V`).
    #[arg(
        long = "version",
        value_name = "V",
        required_unless_present = "rollback"
    )]
    version: Option<String>,
    /// Send the targeted nodes back to the binary they kept from their last upgrade
    /// (once: a node keeps one).
    #[arg(long)]
    rollback: bool,
    /// With --rollback: the architecture of the nodes to send back. Default: every
    /// architecture among the targeted nodes.
    #[arg(long, requires = "rollback")]
    arch: Option<String>,
    #[command(flatten)]
    target: TargetOpts,
    /// Publisher secret key (from `edgeleaf keys gen`); nodes never take an unsigned
    /// binary.
    #[arg(long, env = "EDGELEAF_KEY")]
    key: PathBuf,
    /// How long to wait for the online targeted nodes to report; 0 does not wait.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    wait: Duration,
    /// Print one JSON object: what was announced and each node's outcome.
    #[arg(long)]
    json: bool,
}

/// One node's outcome.
#[derive(Debug, Serialize)]
struct NodeOutcome {
    node_id: String,
    /// `upgraded`, `rolled_back`, `failed` (it runs the previous binary again),
    /// `unchanged` (nothing to roll back to), `pending` (offline: converges when
    /// it returns) or `no_report`.
    outcome: String,
    /// The version it runs, as last reported.
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The version announced; empty for a rollback.
    version: String,
    arch: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    keys: Vec<String>,
    nodes: Vec<NodeOutcome>,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let key = SecretKey::load(&args.key)?;
    let targets = args.target.targets()?;
    let client = conn.connect().await?;
    let js = hub::jetstream(client, conn.domain.as_deref());
    let bucket = js.get_key_value(UPGRADES_BUCKET).await.with_context(|| {
        format!("no {UPGRADES_BUCKET} bucket on the hub; run `edgeleaf hub init` (again) first")
    })?;
    let fleet = hub::fleet::nodes(&js, &conn.subjects()).await?;
    let targeted: Vec<&NodeRow> = fleet
        .iter()
        .filter(|n| {
            targets
                .iter()
                .any(|t| t.selects(&n.node_id, &n.heartbeat.tags))
        })
        .collect();

    let (version, arches, module) = match (&args.binary, &args.version) {
        (Some(path), Some(version)) => {
            let (arch, module) = check_binary(path, version, &targeted, &js).await?;
            (version.clone(), vec![arch], Some(module))
        }
        _ => {
            let arches: Vec<String> = match &args.arch {
                Some(a) => vec![a.clone()],
                None => {
                    let mut a: Vec<String> =
                        targeted.iter().map(|n| n.heartbeat.arch.clone()).collect();
                    a.sort();
                    a.dedup();
                    a
                }
            };
            if arches.is_empty() {
                bail!(
                    "no targeted node has sent a heartbeat: give --arch to roll back nodes not seen yet"
                );
            }
            (String::new(), arches, None)
        }
    };
    let mut keys = Vec::new();
    let before: BTreeMap<String, String> = targeted
        .iter()
        .map(|n| (n.node_id.clone(), n.heartbeat.version.clone()))
        .collect();
    for arch in &arches {
        for target in &targets {
            let k = target.key(arch);
            let spec = UpgradeSpec::new(
                version.clone(),
                arch.clone(),
                module.clone(),
                k.clone(),
                &key,
            );
            bucket
                .put(&k, spec.seal(&key).into())
                .await
                .with_context(|| format!("cannot write {k} in {UPGRADES_BUCKET}"))?;
            keys.push(k);
        }
    }
    if !args.json {
        let what = match &module {
            Some(_) => format!("edgeleaf {version}"),
            None => "rollback".into(),
        };
        eprintln!("announced {what} under {}", keys.join(", "));
    }
    let watched: Vec<&NodeRow> = targeted
        .into_iter()
        .filter(|n| arches.contains(&n.heartbeat.arch))
        .collect();
    let nodes = wait(&js, conn, &watched, &version, &before, args.wait).await?;
    let failed = nodes.iter().any(|n| n.outcome == "failed");
    let report = Report {
        version,
        arch: arches,
        digest: module.map(|m| m.digest),
        keys,
        nodes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for n in &report.nodes {
            let reason = n
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            println!(
                "{:<20} {} (runs {}){reason}",
                n.node_id, n.outcome, n.version
            );
        }
    }
    if failed {
        bail!("the upgrade failed on some nodes; they run their previous binary again");
    }
    Ok(())
}

/// Checks the binary against the version and the targeted nodes, and uploads it.
async fn check_binary(
    path: &PathBuf,
    version: &str,
    targeted: &[&NodeRow],
    js: &async_nats::jetstream::Context,
) -> Result<(String, ModuleRef)> {
    if !crate::version::valid(version) {
        bail!(
            "--version {version:?} is not a version (digits first, then letters, digits, . + - _)"
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let arch = elf_arch(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let other: Vec<String> = targeted
        .iter()
        .filter(|n| n.heartbeat.arch != arch)
        .map(|n| format!("{} ({})", n.node_id, n.heartbeat.arch))
        .collect();
    if !targeted.is_empty() && other.len() == targeted.len() {
        bail!(
            "{} is built for {arch}, and no targeted node runs on {arch}: {}",
            path.display(),
            other.join(", ")
        );
    }
    if !other.is_empty() {
        eprintln!(
            "warning: not for these targeted nodes (another architecture): {}",
            other.join(", ")
        );
    }
    // Where the binary runs here, check what it says before a fleet does.
    if arch == std::env::consts::ARCH {
        let out = std::process::Command::new(path)
            .arg("--version")
            .env_clear()
            .output()
            .with_context(|| format!("cannot run `{} --version`", path.display()))?;
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if printed != format!("edgeleaf {version}") {
            bail!(
                "`{} --version` prints {printed:?}, not \"edgeleaf {version}\"",
                path.display()
            );
        }
    }
    let digest = super::deploy::upload_module(js, &bytes).await?;
    Ok((
        arch.to_owned(),
        ModuleRef {
            digest,
            size: bytes.len() as u64,
        },
    ))
}

/// Follows the nodes' heartbeats until each online one reported its outcome, or
/// `wait` ran out.
async fn wait(
    js: &async_nats::jetstream::Context,
    conn: &ConnOpts,
    nodes: &[&NodeRow],
    version: &str,
    before: &BTreeMap<String, String>,
    wait: Duration,
) -> Result<Vec<NodeOutcome>> {
    let deadline = Instant::now() + wait;
    let mut out: BTreeMap<String, NodeOutcome> = BTreeMap::new();
    for n in nodes {
        if n.status == NodeStatus::Offline {
            out.insert(n.node_id.clone(), outcome(n, "pending", None));
        }
    }
    loop {
        let fleet = hub::fleet::nodes(js, &conn.subjects()).await?;
        for n in &fleet {
            if !nodes.iter().any(|t| t.node_id == n.node_id) || out.contains_key(&n.node_id) {
                continue;
            }
            if let Some(done) = settled(n, version, before.get(&n.node_id)) {
                out.insert(n.node_id.clone(), done);
            }
        }
        if out.len() == nodes.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in nodes {
        out.entry(n.node_id.clone())
            .or_insert_with(|| outcome(n, "no_report", None));
    }
    Ok(out.into_values().collect())
}

fn outcome(n: &NodeRow, what: &str, reason: Option<String>) -> NodeOutcome {
    NodeOutcome {
        node_id: n.node_id.clone(),
        outcome: what.to_owned(),
        version: n.heartbeat.version.clone(),
        reason,
    }
}

/// The node's outcome, once its heartbeat shows one: for an upgrade, the announced
/// version running with the last outcome `succeeded`, or that version `failed`;
/// for a rollback (`version` empty), another version than before, rolled back, or
/// nothing kept to roll back to.
fn settled(n: &NodeRow, version: &str, before: Option<&String>) -> Option<NodeOutcome> {
    let hb = &n.heartbeat;
    let last = hb.upgrade.last.as_ref();
    if version.is_empty() {
        let moved = before.is_some_and(|b| *b != hb.version);
        return match last {
            Some(l) if moved && l.outcome == "rolled_back" => Some(outcome(n, "rolled_back", None)),
            Some(l) if moved && l.outcome == "failed" => {
                Some(outcome(n, "failed", l.reason.clone()))
            }
            _ if !moved && hb.upgrade.previous.is_none() && hb.upgrade.staged.is_none() => Some(
                outcome(n, "unchanged", Some("nothing to roll back to".into())),
            ),
            _ => None,
        };
    }
    match last {
        Some(l) if l.version == version && l.outcome == "failed" && hb.version != version => {
            Some(outcome(n, "failed", l.reason.clone()))
        }
        _ if hb.version == version && hb.upgrade.staged.is_none() => {
            let already = before.is_some_and(|b| b == version);
            Some(outcome(
                n,
                if already { "unchanged" } else { "upgraded" },
                None,
            ))
        }
        _ => None,
    }
}
