//! `edgeleaf deploy` and `edgeleaf undeploy`: write (or delete) a signed deployment
//! in the hub's `EDGELEAF_DEPLOYMENTS` bucket, then wait for the online nodes it
//! targets to report. Offline nodes converge when they return.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::kv;
use futures::StreamExt;

use super::run_agent::AgentOpts;
use super::{ConnOpts, parse_tag};
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::AgentSpec;
use crate::protocol::{
    DEPLOYMENTS_BUCKET, DeployStatus, MODULES_BUCKET, NodeStatus, STATUS_BUCKET,
};
use crate::shipping::{self, DeploymentSpec, ModuleRef, SecretKey, SignedDeployment, Target};

/// Where to: nodes by id, nodes by tag, or all (one kind per command).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetOpts {
    /// A node, by id (repeat for several).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Every node with this tag, key=value (repeat for several tags: one
    /// deployment per tag).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Every node.
    #[arg(long)]
    all: bool,
}

impl TargetOpts {
    pub(crate) fn targets(&self) -> Result<Vec<Target>> {
        for id in &self.nodes {
            if !crate::protocol::is_token(id) {
                bail!("--node {id:?} is not a node id (a single NATS token)");
            }
        }
        let nodes = self.nodes.iter().map(|id| Target::Node(id.clone()));
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| Target::Tag(k.clone(), v.clone()));
        let mut out: Vec<Target> = nodes.chain(tags).collect();
        if self.all {
            out.push(Target::All);
        }
        Ok(out)
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
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    wait: Duration,
    /// Keep the agent's kv data when it is undeployed.
    #[arg(long)]
    keep_kv: bool,
    /// A secret config value, NAME=VALUE or NAME=@FILE (repeat). It is sealed to each
    /// targeted node's key (nodes that have sent a heartbeat), travels and is stored
    /// encrypted, and reaches the agent like `--config`. Never printed.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// Seal secrets to this node's new encryption key although it differs from the
    /// one pinned when secrets were first sent to it (repeat). Check why first: a
    /// reinstalled node, or something posing as it.
    #[arg(long = "accept-new-key", value_name = "NODE")]
    accept_new_keys: Vec<String>,
    /// Print one JSON object: the deployments written and each node's outcome (with
    /// --waves: the rollout's `outcome`, `reason` and `waves`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    waves: super::rollout::WaveOpts,
    #[command(flatten)]
    precompile: super::precompile::PrecompileOpts,
}

/// One node's outcome, for `--json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct NodeOutcome {
    pub node_id: String,
    /// `running`, `rejected`, `failed`, `pending` (offline: converges when it
    /// returns) or `no_report` (online but silent until --wait ran out).
    pub state: String,
    version: Option<u64>,
    running_version: Option<u64>,
    pub error: Option<crate::protocol::ErrorBody>,
}

#[derive(Debug, clap::Args)]
pub struct UndeployArgs {
    /// The agent name.
    name: String,
    #[command(flatten)]
    target: TargetOpts,
    /// Publisher secret key: with --waves, each wave's nodes get a signed tombstone
    /// under their own key.
    #[arg(long, env = "EDGELEAF_KEY")]
    key: Option<PathBuf>,
    /// With --waves: how long each wave's nodes have to drop the agent.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "waves")]
    wait: Duration,
    /// With --waves: print the rollout's report as one JSON object.
    #[arg(long, requires = "waves")]
    json: bool,
    #[command(flatten)]
    waves: super::rollout::WaveOpts,
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
    let targets = args.target.targets()?;
    let secrets = read_secrets(&args.secrets, &agent)?;
    if !secrets.is_empty() && key.is_none() {
        bail!("--secret needs a signed deployment (--key): nodes refuse secrets in unsigned ones");
    }

    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    // The reported nodes: whom secrets are sealed to, and which engines need the
    // module precompiled.
    let fleet = if secrets.is_empty() && args.precompile.no_precompile {
        Vec::new()
    } else {
        hub::fleet::nodes(&js, &conn.subjects()).await?
    };
    let engines = super::precompile::engines(&args.precompile, &targets, &fleet, key.is_some())?;
    let artifacts = super::precompile::build_and_upload(&js, &engines, &agent, &wasm).await?;
    if args.waves.waves.is_some() {
        let Some(key) = &key else {
            bail!("--waves needs a signed deployment (--key)");
        };
        if !secrets.is_empty() {
            bail!("--waves cannot carry --secret yet: deploy secrets without --waves");
        }
        let digest = upload_module(&js, &wasm).await?;
        let module = ModuleRef {
            digest,
            size: wasm.len() as u64,
        };
        return super::rollout::start(
            conn,
            &args.waves,
            agent,
            (module, artifacts),
            &targets,
            key,
            args.set_version,
            args.keep_kv,
            args.wait,
            args.json,
            false,
        )
        .await;
    }
    // The nodes each target reaches, by their reported keys: secrets are sealed to
    // them before anything is written.
    let recipients = match secrets.is_empty() {
        true => Vec::new(),
        false => {
            let recipients = targets
                .iter()
                .map(|t| recipients(t, &fleet))
                .collect::<Result<Vec<_>>>()?;
            pin_keys(&js, &recipients, &args.accept_new_keys).await?;
            recipients
        }
    };
    // Each target's secrets, sealed to the nodes it reaches, before anything is written.
    let publisher = key
        .as_ref()
        .map(|k| k.public().to_string())
        .unwrap_or_default();
    let mut sealed = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let kv_key = target.key(&agent.name);
        let Some(nodes) = recipients.get(i) else {
            sealed.push(Default::default());
            continue;
        };
        let these = seal_secrets(&secrets, nodes, &kv_key, &publisher)?;
        if !these.is_empty() && !args.json {
            let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
            eprintln!(
                "{} secret(s) for {kv_key} sealed to {}",
                secrets.len(),
                ids.join(", ")
            );
        }
        sealed.push(these);
    }
    let release = Release {
        agent: &agent,
        wasm: &wasm,
        key: key.as_ref(),
        targets: &targets,
        set_version: args.set_version,
        keep_kv: args.keep_kv,
        sealed,
        artifacts,
        quiet: args.json,
    };
    let Written {
        version,
        digest,
        keys,
        envelopes,
    } = release.write(&js).await?;
    let outcomes = if args.wait.is_zero() {
        Vec::new()
    } else {
        wait_for_nodes(
            &js,
            conn,
            &targets,
            &agent.name,
            version,
            &envelopes,
            args.wait,
        )
        .await?
    };
    if args.json {
        let out = serde_json::json!({
            "agent": agent.name,
            "version": version,
            "digest": digest,
            "keys": keys,
            "nodes": outcomes,
        });
        println!("{out}");
    } else {
        for o in &outcomes {
            print_outcome(o);
        }
    }
    let bad = outcomes
        .iter()
        .filter(|o| !matches!(o.state.as_str(), "running" | "pending"))
        .count();
    if bad > 0 {
        bail!(
            "{bad} online node(s) refused the deployment or did not report within {:?}",
            args.wait
        );
    }
    Ok(())
}

/// One version of an agent, ready to be written under each of its targets' keys.
pub(crate) struct Release<'a> {
    pub agent: &'a AgentSpec,
    pub wasm: &'a [u8],
    pub key: Option<&'a SecretKey>,
    pub targets: &'a [Target],
    /// Default: one above the highest deployed for this name.
    pub set_version: Option<u64>,
    pub keep_kv: bool,
    /// Each target's sealed secrets (empty, or one map per target, in order).
    pub sealed: Vec<SealedSecrets>,
    /// The module precompiled, by engine (see [`DeploymentSpec::artifacts`]).
    pub artifacts: BTreeMap<String, ModuleRef>,
    /// Print nothing on stdout (for `--json`).
    pub quiet: bool,
}

/// Secret name -> node id -> sealed value.
pub(crate) type SealedSecrets = BTreeMap<String, BTreeMap<String, String>>;

/// What [`Release::write`] wrote.
pub(crate) struct Written {
    pub version: u64,
    pub digest: String,
    /// The bucket keys written, one per target.
    pub keys: Vec<String>,
    /// The sha256 of each envelope written, to tell the nodes' reports on them apart.
    pub envelopes: BTreeSet<String>,
}

impl Release<'_> {
    /// Uploads the module (unless the hub has it) and writes one signed deployment
    /// per target.
    pub async fn write(self, js: &async_nats::jetstream::Context) -> Result<Written> {
        let (agent, wasm, key) = (self.agent, self.wasm, self.key);
        let digest = upload_module(js, wasm).await?;

        let bucket = js
            .get_key_value(DEPLOYMENTS_BUCKET)
            .await
            .map_err(|e| hub::opening("deployments bucket", e))?;
        let version = match self.set_version {
            Some(v) => v,
            None => {
                let kv_keys: Vec<String> =
                    self.targets.iter().map(|t| t.key(&agent.name)).collect();
                let highest =
                    highest_version(&bucket, &agent.name, &kv_keys, key.is_none()).await?;
                highest.checked_add(1).with_context(|| {
                    format!(
                        "version {highest} of {} is the highest there is: give --set-version",
                        agent.name
                    )
                })?
            }
        };
        let mut keys = Vec::new();
        let mut envelopes = BTreeSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            let kv_key = target.key(&agent.name);
            let module = ModuleRef {
                digest: digest.clone(),
                size: wasm.len() as u64,
            };
            let secrets = self.sealed.get(i).cloned().unwrap_or_default();
            let spec = DeploymentSpec {
                artifacts: self.artifacts.clone(),
                ..DeploymentSpec::new(
                    agent.clone(),
                    module,
                    version,
                    kv_key.clone(),
                    key,
                    self.keep_kv,
                    secrets,
                )
            };
            let sealed = SignedDeployment::seal(&spec, key).to_bytes();
            envelopes.insert(shipping::modules::digest(&sealed));
            bucket
                .put(&kv_key, sealed.into())
                .await
                .with_context(|| format!("cannot write deployment {kv_key}"))?;
            if !self.quiet {
                println!("deployed {} version {version} to {kv_key}", agent.name);
            }
            keys.push(kv_key);
        }
        Ok(Written {
            version,
            digest,
            keys,
            envelopes,
        })
    }
}

/// Puts the module in the hub's object store (unless it is there) and returns its
/// digest.
pub(crate) async fn upload_module(
    js: &async_nats::jetstream::Context,
    wasm: &[u8],
) -> Result<String> {
    upload_object(js, "module", wasm).await
}

/// Puts `bytes` (a module, an artifact, a binary: `what`, for messages) in the
/// hub's object store unless it is there, and returns their digest.
pub(crate) async fn upload_object(
    js: &async_nats::jetstream::Context,
    what: &str,
    wasm: &[u8],
) -> Result<String> {
    let modules = js
        .get_object_store(MODULES_BUCKET)
        .await
        .map_err(|e| hub::opening("module store", e))?;
    let digest = shipping::modules::digest(wasm);
    let bar = progress_bar(wasm.len() as u64);
    let uploaded = shipping::modules::upload(&modules, wasm, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    eprintln!(
        "{what} {} ({} bytes) {}",
        &digest[..12],
        wasm.len(),
        if uploaded {
            "uploaded"
        } else {
            "already on the hub"
        }
    );
    Ok(digest)
}

pub(crate) fn print_outcome(o: &NodeOutcome) {
    let node = &o.node_id;
    match (&o.error, o.state.as_str()) {
        (_, "pending") => println!("{node:<20} pending: offline, converges when it returns"),
        (_, "no_report") => println!("{node:<20} no report in time"),
        (None, state) => println!(
            "{node:<20} {state} version {}",
            o.version.unwrap_or_default()
        ),
        (Some(e), state) => {
            let still = o
                .running_version
                .map(|v| format!(" (version {v} keeps running)"))
                .unwrap_or_default();
            println!("{node:<20} {state} {}: {}{still}", e.code, e.message);
        }
    }
}

pub async fn undeploy(args: UndeployArgs, conn: &ConnOpts) -> Result<()> {
    if args.waves.waves.is_some() {
        let Some(key) = &args.key else {
            bail!("--waves needs --key: each wave's nodes get a signed tombstone");
        };
        let key = SecretKey::load(key)?;
        let agent = AgentSpec {
            name: args.name.clone(),
            ..Default::default()
        };
        let module = ModuleRef {
            digest: String::new(),
            size: 0,
        };
        let targets = args.target.targets()?;
        return super::rollout::start(
            conn,
            &args.waves,
            agent,
            (module, BTreeMap::new()),
            &targets,
            &key,
            None,
            false,
            args.wait,
            args.json,
            true,
        )
        .await;
    }
    let client = conn.connect().await?;
    let js = hub::jetstream(client, conn.domain.as_deref());
    let bucket = js
        .get_key_value(DEPLOYMENTS_BUCKET)
        .await
        .map_err(|e| hub::opening("deployments bucket", e))?;
    for target in args.target.targets()? {
        let kv_key = target.key(&args.name);
        if bucket.get(&kv_key).await?.is_none() {
            bail!("nothing is deployed under {kv_key}");
        }
        bucket
            .delete(&kv_key)
            .await
            .with_context(|| format!("cannot delete {kv_key}"))?;
        println!("undeployed {kv_key}; targeted nodes remove the agent as they see it");
    }
    Ok(())
}

/// `--secret NAME=VALUE` / `NAME=@FILE`, checked against the agent's plain config.
fn read_secrets(
    args: &[String],
    agent: &crate::protocol::AgentSpec,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for arg in args {
        // The value is never echoed back, not even in an error.
        let Some((name, value)) = arg.split_once('=') else {
            bail!("--secret wants NAME=VALUE or NAME=@FILE (no '=' in the argument)");
        };
        if name.is_empty() || agent.config.contains_key(name) || out.contains_key(name) {
            bail!("--secret {name:?}: empty, or already given (as --config or --secret)");
        }
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--secret {name}: cannot read {path}"))?
                .trim_end_matches('\n')
                .to_owned(),
            None => value.to_owned(),
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

/// The nodes `target` selects among those that reported, with their public keys.
fn recipients(
    target: &Target,
    fleet: &[crate::protocol::NodeRow],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut keyless = Vec::new();
    for row in fleet {
        if !target.selects(&row.node_id, &row.heartbeat.tags) {
            continue;
        }
        match &row.heartbeat.enc_key {
            Some(key) => out.push((row.node_id.clone(), key.clone())),
            None => keyless.push(row.node_id.as_str()),
        }
    }
    if !keyless.is_empty() {
        eprintln!(
            "warning: {} reported no encryption key (an older edgeleaf): they cannot open the secrets",
            keyless.join(", ")
        );
    }
    if out.is_empty() {
        bail!(
            "no node with an encryption key matches {}: secrets are sealed to nodes that \
             have sent a heartbeat; start the node first",
            target.key("<agent>")
        );
    }
    Ok(out)
}

/// Pins each recipient's key on first use and refuses changed ones (see
/// [`hub::node_keys`]), before anything is uploaded or written.
async fn pin_keys(
    js: &async_nats::jetstream::Context,
    recipients: &[Vec<(String, String)>],
    accept_new: &[String],
) -> Result<()> {
    let mut nodes: Vec<(String, String)> = recipients.iter().flatten().cloned().collect();
    nodes.sort();
    nodes.dedup();
    for (id, pin) in hub::node_keys::check_and_pin(js, &nodes, accept_new).await? {
        match pin {
            hub::node_keys::Pin::First => eprintln!("pinned the encryption key of {id}"),
            hub::node_keys::Pin::Replaced => {
                eprintln!("accepted a new encryption key for {id} (--accept-new-key)")
            }
            hub::node_keys::Pin::Known => {}
        }
    }
    Ok(())
}

/// Each secret sealed to each node: name → node id → sealed value.
fn seal_secrets(
    secrets: &std::collections::BTreeMap<String, String>,
    nodes: &[(String, String)],
    kv_key: &str,
    publisher: &str,
) -> Result<SealedSecrets> {
    secrets
        .iter()
        .map(|(name, value)| {
            let per_node = nodes
                .iter()
                .map(|(id, key)| {
                    let sealed = shipping::secrets::seal(key, kv_key, publisher, name, value)?;
                    Ok((id.clone(), sealed))
                })
                .collect::<Result<_>>()?;
            Ok((name.clone(), per_node))
        })
        .collect()
}

/// The highest version deployed for `agent` under any target, or ever written
/// under one of `kv_keys` (undeployed ones included: nodes refuse a version they
/// accepted there before), 0 if none. Only envelopes whose signature verifies
/// count (unsigned ones too for an unsigned deploy): whoever can write the bucket
/// must not be able to push the next version to `u64::MAX`.
pub(crate) async fn highest_version(
    bucket: &kv::Store,
    agent: &str,
    kv_keys: &[String],
    unsigned_too: bool,
) -> Result<u64> {
    let version = |raw: &[u8]| SignedDeployment::verified_version(raw, unsigned_too);
    let mut highest = 0;
    for kv_key in kv_keys {
        let mut history = crate::hub::patiently(|| bucket.history(kv_key))
            .await
            .with_context(|| format!("cannot read the history of {kv_key}"))?;
        while let Some(entry) = history.next().await {
            if let Some(v) = version(&entry?.value) {
                highest = highest.max(v);
            }
        }
    }
    let mut keys = crate::hub::patiently(|| bucket.keys())
        .await
        .context("cannot list deployments")?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if Target::parse_key(&key).is_none_or(|(_, name)| name != agent) {
            continue;
        }
        if let Some(raw) = bucket.get(&key).await?
            && let Some(v) = version(&raw)
        {
            highest = highest.max(v);
        }
    }
    Ok(highest)
}

/// Waits until every online node the targets select reports on this version.
pub(crate) async fn wait_for_nodes(
    js: &async_nats::jetstream::Context,
    conn: &ConnOpts,
    targets: &[Target],
    agent: &str,
    version: u64,
    written: &BTreeSet<String>,
    wait: Duration,
) -> Result<Vec<NodeOutcome>> {
    let rows = hub::fleet::nodes(js, &conn.subjects())
        .await
        .unwrap_or_default();
    let selected = |r: &&crate::protocol::NodeRow| {
        targets
            .iter()
            .any(|t| t.selects(&r.node_id, &r.heartbeat.tags))
    };
    let (online, offline): (Vec<_>, Vec<_>) = rows
        .iter()
        .filter(selected)
        .partition(|r| r.status == NodeStatus::Online);
    let outcome = |node_id: &str, state: &str| NodeOutcome {
        node_id: node_id.to_owned(),
        state: state.to_owned(),
        version: Some(version),
        running_version: None,
        error: None,
    };
    let mut done: Vec<NodeOutcome> = offline
        .iter()
        .map(|r| outcome(&r.node_id, "pending"))
        .collect();
    if online.is_empty() {
        return Ok(done);
    }
    let status = js
        .get_key_value(STATUS_BUCKET)
        .await
        .context("no status bucket on the hub")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending: BTreeSet<String> = online.iter().map(|r| r.node_id.clone()).collect();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        for node in pending.clone() {
            let Some(raw) = status.get(format!("{node}.{agent}")).await? else {
                continue;
            };
            let Ok(s) = serde_json::from_slice::<DeployStatus>(&raw) else {
                continue;
            };
            // Another envelope may claim the same version (an unsigned one is not
            // counted when a signed deploy picks its version).
            let ours = s
                .envelope_sha256
                .as_ref()
                .is_none_or(|h| written.contains(h));
            if s.version != Some(version) || !ours {
                continue;
            }
            pending.remove(&node);
            done.push(NodeOutcome {
                node_id: node,
                state: s.state,
                version: s.version,
                running_version: s.running_version,
                error: s.error,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.extend(pending.iter().map(|n| outcome(n, "no_report")));
    done.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(done)
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
