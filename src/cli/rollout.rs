//! Staged rollouts: `edgeleaf deploy … --waves 1,10%,100% --bake 60s` moves the online
//! nodes its targets select to a new version wave by wave, and `edgeleaf rollout
//! status|resume|abort NAME` looks after one from anywhere.
//!
//! While rolling, each node of a wave gets the new version under its own key
//! `node.<id>.<agent>` (the most specific deployment wins on a node), and the
//! targets' broad keys (`tag.…`, `all.…`) keep the old version for everyone else.
//! A wave passes when every node in it runs the new version and stays healthy for
//! the bake time: still running, no more than `--max-failures` failed invocations
//! among them. Then the next wave starts. Once every wave passed, the broad keys get
//! the new version and the per-node keys the rollout wrote are removed, so nodes
//! that were offline converge to it when they return. A wave that fails halts the
//! rollout: its nodes go back to what they ran (their per-node key removed, or put
//! back as it was, re-signed with a newer version), every other node is left as it
//! is. The rollout's state is kept in the hub's `EDGELEAF_ROLLOUTS` bucket under the
//! agent's name, so another machine can follow, resume or abort it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::ConnOpts;
use super::deploy::wait_for_nodes;
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{
    AgentSpec, DEPLOYMENTS_BUCKET, DeployStatus, NodeStatus, ROLLOUTS_BUCKET, STATUS_BUCKET,
};
use crate::shipping::{DeploymentSpec, ModuleRef, SecretKey, SignedDeployment, Target};

/// How often a bake looks at its nodes.
const BAKE_POLL: Duration = Duration::from_secs(1);

/// A rollout, as kept on the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub agent: String,
    pub version: u64,
    /// `running`, `completed`, `halted` or `aborted`.
    pub outcome: String,
    /// Why it halted or was aborted.
    pub reason: Option<String>,
    pub waves: Vec<Wave>,
    /// The deployment's targets, as bucket keys: written once every wave passed.
    pub targets: Vec<String>,
    pub spec: AgentSpec,
    pub module: ModuleRef,
    /// The module precompiled, by engine (see `DeploymentSpec::artifacts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, ModuleRef>,
    pub keep_kv: bool,
    pub bake_ms: u64,
    pub max_failures: u64,
    /// Per-node keys this rollout found in place, by node: put back on a rollback.
    #[serde(default)]
    pub prior: BTreeMap<String, Vec<u8>>,
    /// `undeploy --waves`: each wave's nodes get a tombstone under their own key, and
    /// the targets' keys are deleted once every wave passed.
    #[serde(default)]
    pub undeploy: bool,
    pub started_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wave {
    pub nodes: Vec<String>,
    /// `pending`, `rolling`, `baking`, `passed`, `rolled_back`.
    pub outcome: String,
}

/// The options of `deploy` that make it a rollout.
#[derive(Debug, Clone, clap::Args)]
pub struct WaveOpts {
    /// Roll out in waves over the online targeted nodes (sorted by id): each entry is
    /// how many nodes have the new version once that wave passed, a count or a share
    /// (`1,10%,100%`: one canary, then up to a tenth, then all). Nodes beyond the last
    /// entry form one more wave.
    #[arg(long, value_name = "WAVES")]
    pub waves: Option<String>,
    /// How long each wave must stay healthy before the next starts.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "waves")]
    pub bake: Duration,
    /// Failed invocations a wave may have during its bake (summed over its nodes).
    #[arg(long, default_value_t = 0, requires = "waves")]
    pub max_failures: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Show a rollout: its waves, their nodes and outcomes.
    Status {
        /// The agent's name.
        name: String,
        /// Print the rollout as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Go on with a rollout that was interrupted (the CLI stopped mid-wave).
    Resume {
        name: String,
        /// Publisher secret key (the one the rollout signs with).
        #[arg(long, env = "EDGELEAF_KEY")]
        key: std::path::PathBuf,
        /// How long each wave's nodes have to report the new version running.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        wait: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Stop a rollout and put every node it moved back on what it ran.
    Abort {
        name: String,
        #[arg(long, env = "EDGELEAF_KEY")]
        key: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `1,10%,100%` over `total` nodes → cumulative counts, empty waves dropped, the
/// rest of the nodes as a last wave.
pub fn wave_sizes(spec: &str, total: usize) -> Result<Vec<usize>> {
    let mut cumulative = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        let reach = match entry.strip_suffix('%') {
            Some(pct) => {
                let pct: f64 = pct
                    .parse()
                    .ok()
                    .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                    .with_context(|| {
                        format!("--waves: {entry:?} is not a share from 1% to 100%")
                    })?;
                (total as f64 * pct / 100.0).ceil() as usize
            }
            None => entry
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--waves: {entry:?} is not a node count or a share"))?,
        };
        cumulative.push(reach.min(total));
    }
    cumulative.push(total);
    let mut sizes = Vec::new();
    let mut done = 0;
    for reach in cumulative {
        if reach > done {
            sizes.push(reach - done);
            done = reach;
        }
    }
    Ok(sizes)
}

/// `items` (sorted) cut into the waves of `spec` (see [`wave_sizes`]).
pub fn split_waves<T: Clone>(spec: &str, items: &[T]) -> Result<Vec<Vec<T>>> {
    let mut rest = items;
    let mut waves = Vec::new();
    for size in wave_sizes(spec, items.len())? {
        let (wave, after) = rest.split_at(size);
        waves.push(wave.to_vec());
        rest = after;
    }
    Ok(waves)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Where a rollout's state lives, and the hub it acts on.
struct Hub<'a> {
    js: jetstream::Context,
    client: async_nats::Client,
    conn: &'a ConnOpts,
    rollouts: kv::Store,
    deployments: kv::Store,
}

impl<'a> Hub<'a> {
    async fn connect(conn: &'a ConnOpts) -> Result<Self> {
        let client = conn.connect().await?;
        let js = hub::jetstream(client.clone(), conn.domain.as_deref());
        let rollouts = js.get_key_value(ROLLOUTS_BUCKET).await.with_context(|| {
            format!("no {ROLLOUTS_BUCKET} bucket on the hub; run `edgeleaf hub init` (again) first")
        })?;
        let deployments = js
            .get_key_value(DEPLOYMENTS_BUCKET)
            .await
            .map_err(|e| hub::opening("deployments bucket", e))?;
        Ok(Self {
            js,
            client,
            conn,
            rollouts,
            deployments,
        })
    }

    async fn load(&self, name: &str) -> Result<Option<Rollout>> {
        match self.rollouts.get(name).await? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw).with_context(|| {
                format!("the rollout of {name} on the hub is unreadable")
            })?)),
            None => Ok(None),
        }
    }

    async fn save(&self, rollout: &mut Rollout) -> Result<()> {
        rollout.updated_at = now();
        self.rollouts
            .put(&rollout.agent, serde_json::to_vec(rollout)?.into())
            .await
            .with_context(|| format!("cannot save the rollout of {}", rollout.agent))?;
        Ok(())
    }

    async fn status(&self) -> Result<kv::Store> {
        self.js
            .get_key_value(STATUS_BUCKET)
            .await
            .context("no status bucket on the hub")
    }

    /// Deletes a deployment key, if it holds one.
    async fn delete_deployment(&self, kv_key: &str) -> Result<()> {
        if self.deployments.get(kv_key).await?.is_some() {
            self.deployments
                .delete(kv_key)
                .await
                .with_context(|| format!("cannot delete {kv_key}"))?;
        }
        Ok(())
    }

    /// Someone else ended the rollout (`rollout abort`)?
    async fn ended_elsewhere(&self, name: &str) -> Option<Rollout> {
        self.load(name)
            .await
            .ok()
            .flatten()
            .filter(|r| r.outcome != "running")
    }
}

/// Starts a rollout (from `deploy --waves`). The module is on the hub already.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    conn: &ConnOpts,
    opts: &WaveOpts,
    spec: AgentSpec,
    (module, artifacts): (ModuleRef, BTreeMap<String, ModuleRef>),
    targets: &[Target],
    key: &SecretKey,
    set_version: Option<u64>,
    keep_kv: bool,
    wait: Duration,
    json: bool,
    undeploy: bool,
) -> Result<()> {
    let waves = opts.waves.as_deref().unwrap_or("100%");
    let hub = Hub::connect(conn).await?;
    if let Some(r) = hub.load(&spec.name).await?
        && r.outcome == "running"
    {
        bail!(
            "a rollout of {} (version {}) is under way; `edgeleaf rollout status|resume|abort {}`",
            spec.name,
            r.version,
            spec.name
        );
    }
    let fleet = hub::fleet::nodes(&hub.js, &conn.subjects()).await?;
    let online: Vec<String> = fleet
        .iter()
        .filter(|r| r.status == NodeStatus::Online)
        .filter(|r| {
            targets
                .iter()
                .any(|t| t.selects(&r.node_id, &r.heartbeat.tags))
        })
        .map(|r| r.node_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if online.is_empty() {
        bail!(
            "no online node is targeted: a rollout needs nodes to watch (deploy without --waves writes for offline ones)"
        );
    }
    let planned: Vec<Wave> = split_waves(waves, &online)?
        .into_iter()
        .map(|nodes| Wave {
            nodes,
            outcome: "pending".into(),
        })
        .collect();
    let agent = spec.name.clone();
    let version = match set_version {
        Some(v) => v,
        None => {
            let mut keys: Vec<String> = targets.iter().map(|t| t.key(&agent)).collect();
            keys.extend(online.iter().map(|n| Target::Node(n.clone()).key(&agent)));
            super::deploy::highest_version(&hub.deployments, &agent, &keys, false)
                .await?
                .checked_add(1)
                .context("no version above the highest deployed: give --set-version")?
        }
    };
    let mut prior = BTreeMap::new();
    for node in &online {
        if let Some(raw) = hub
            .deployments
            .get(Target::Node(node.clone()).key(&agent))
            .await?
        {
            prior.insert(node.clone(), raw.to_vec());
        }
    }
    let mut rollout = Rollout {
        agent,
        version,
        outcome: "running".into(),
        reason: None,
        waves: planned,
        targets: targets.iter().map(|t| t.key(&spec.name)).collect(),
        spec,
        module,
        artifacts,
        keep_kv,
        bake_ms: opts.bake.as_millis() as u64,
        max_failures: opts.max_failures,
        prior,
        undeploy,
        started_at: now(),
        updated_at: String::new(),
    };
    if undeploy {
        for key in &rollout.targets {
            if hub.deployments.get(key).await?.is_none() {
                bail!("nothing is deployed under {key}");
            }
        }
    }
    hub.save(&mut rollout).await?;
    if !json {
        let sizes: Vec<String> = rollout
            .waves
            .iter()
            .map(|w| w.nodes.len().to_string())
            .collect();
        eprintln!(
            "{} {} version {} to {} node(s) in waves of {}, baking {:?} each",
            if undeploy {
                "undeploying"
            } else {
                "rolling out"
            },
            rollout.agent,
            version,
            online.len(),
            sizes.join(", "),
            opts.bake
        );
    }
    drive(&hub, &mut rollout, key, wait, json).await
}

pub async fn run(cmd: RolloutCommand, conn: &ConnOpts) -> Result<()> {
    let hub = Hub::connect(conn).await?;
    let found = |name: &str, r: Option<Rollout>| {
        r.with_context(|| format!("no rollout of {name} on the hub"))
    };
    // A rollout that has not ended, for `verb`.
    let under_way = |name: &str, r: Option<Rollout>, verb: &str| {
        let r = found(name, r)?;
        if r.outcome != "running" {
            bail!(
                "the rollout of {name} has ended ({}); nothing to {verb}",
                r.outcome
            );
        }
        Ok(r)
    };
    match cmd {
        RolloutCommand::Status { name, json } => {
            let r = found(&name, hub.load(&name).await?)?;
            report(&r, json);
            Ok(())
        }
        RolloutCommand::Resume {
            name,
            key,
            wait,
            json,
        } => {
            let key = SecretKey::load(&key)?;
            let mut r = under_way(&name, hub.load(&name).await?, "resume")?;
            drive(&hub, &mut r, &key, wait, json).await
        }
        RolloutCommand::Abort { name, key, json } => {
            let key = SecretKey::load(&key)?;
            let mut r = under_way(&name, hub.load(&name).await?, "abort")?;
            // Mark it first, so a CLI driving it stops before it writes more.
            r.outcome = "aborted".into();
            r.reason = Some("aborted by `edgeleaf rollout abort`".into());
            hub.save(&mut r).await?;
            for i in 0..r.waves.len() {
                if r.waves[i].outcome != "pending" {
                    roll_back(&hub, &mut r, i, &key).await?;
                }
            }
            hub.save(&mut r).await?;
            report(&r, json);
            Ok(())
        }
    }
}

/// Runs the waves that have not passed, then completes the rollout; halts on the
/// first wave that fails.
async fn drive(
    hub: &Hub<'_>,
    rollout: &mut Rollout,
    key: &SecretKey,
    wait: Duration,
    json: bool,
) -> Result<()> {
    for i in 0..rollout.waves.len() {
        if rollout.waves[i].outcome == "passed" {
            continue;
        }
        match run_wave(hub, rollout, i, key, wait, json).await? {
            WaveEnd::Passed => {
                rollout.waves[i].outcome = "passed".into();
                hub.save(rollout).await?;
            }
            WaveEnd::Failed(reason) => {
                rollout.outcome = "halted".into();
                rollout.reason = Some(format!("wave {}: {reason}", i + 1));
                roll_back(hub, rollout, i, key).await?;
                hub.save(rollout).await?;
                report(rollout, json);
                bail!("rollout of {} halted: {reason}", rollout.agent);
            }
            WaveEnd::EndedElsewhere(other) => {
                *rollout = *other;
                report(rollout, json);
                bail!(
                    "rollout of {} was {} elsewhere",
                    rollout.agent,
                    rollout.outcome
                );
            }
        }
    }
    if let Some(other) = hub.ended_elsewhere(&rollout.agent).await {
        *rollout = other;
        report(rollout, json);
        bail!(
            "rollout of {} was {} elsewhere",
            rollout.agent,
            rollout.outcome
        );
    }
    complete(hub, rollout, key).await?;
    report(rollout, json);
    Ok(())
}

enum WaveEnd {
    Passed,
    Failed(String),
    EndedElsewhere(Box<Rollout>),
}

/// The signed spec of this rollout's version under `target`'s key.
fn envelope(rollout: &Rollout, target: &Target, version: u64, key: &SecretKey) -> Vec<u8> {
    if rollout.undeploy {
        let spec =
            DeploymentSpec::tombstone(&rollout.agent, version, target.key(&rollout.agent), key);
        return SignedDeployment::seal(&spec, Some(key)).to_bytes();
    }
    let spec = DeploymentSpec {
        artifacts: rollout.artifacts.clone(),
        ..DeploymentSpec::new(
            rollout.spec.clone(),
            rollout.module.clone(),
            version,
            target.key(&rollout.agent),
            Some(key),
            rollout.keep_kv,
            Default::default(),
        )
    };
    SignedDeployment::seal(&spec, Some(key)).to_bytes()
}

async fn run_wave(
    hub: &Hub<'_>,
    rollout: &mut Rollout,
    i: usize,
    key: &SecretKey,
    wait: Duration,
    json: bool,
) -> Result<WaveEnd> {
    let nodes = rollout.waves[i].nodes.clone();
    let agent = rollout.agent.clone();
    let version = rollout.version;
    rollout.waves[i].outcome = "rolling".into();
    hub.save(rollout).await?;
    if !json {
        eprintln!("wave {}: {}", i + 1, nodes.join(", "));
    }
    let targets: Vec<Target> = nodes.iter().map(|n| Target::Node(n.clone())).collect();
    let mut envelopes = BTreeSet::new();
    for target in &targets {
        let kv_key = target.key(&agent);
        // Resumed mid-wave: a key holding this version already stays as it is.
        if let Some(raw) = hub.deployments.get(&kv_key).await?
            && SignedDeployment::peek_version(&raw) == Some(version)
        {
            envelopes.insert(crate::shipping::modules::digest(&raw));
            continue;
        }
        let raw = envelope(rollout, target, version, key);
        envelopes.insert(crate::shipping::modules::digest(&raw));
        hub.deployments
            .put(&kv_key, raw.into())
            .await
            .with_context(|| format!("cannot write {kv_key}"))?;
    }
    // Aborted while these were written: the abort may have rolled back before them.
    if let Some(other) = hub.ended_elsewhere(&agent).await {
        roll_back(hub, rollout, i, key).await?;
        return Ok(WaveEnd::EndedElsewhere(Box::new(other)));
    }
    if rollout.undeploy {
        if let Some(why) = wait_removed(hub, &nodes, &agent, version, wait).await? {
            return Ok(WaveEnd::Failed(why));
        }
    } else {
        let outcomes = wait_for_nodes(
            &hub.js, hub.conn, &targets, &agent, version, &envelopes, wait,
        )
        .await?;
        for o in &outcomes {
            if o.state != "running" {
                let why = match &o.error {
                    Some(e) => format!("{} {}: {}: {}", o.node_id, o.state, e.code, e.message),
                    None => format!("{} {}", o.node_id, o.state),
                };
                return Ok(WaveEnd::Failed(why));
            }
        }
    }

    rollout.waves[i].outcome = "baking".into();
    hub.save(rollout).await?;
    let digest = rollout.module.digest.clone();
    let bake = Duration::from_millis(rollout.bake_ms);
    let started = tokio::time::Instant::now();
    // Nothing runs to fail in an undeploy: its bake watches that the agent stays away.
    let baseline = match rollout.undeploy {
        true => BTreeMap::new(),
        false => failures(hub, &nodes, &agent, &digest).await,
    };
    loop {
        if let Some(other) = hub.ended_elsewhere(&agent).await {
            return Ok(WaveEnd::EndedElsewhere(Box::new(other)));
        }
        if let Some(why) = unhealthy(hub, &nodes, &agent, version, rollout.undeploy).await? {
            return Ok(WaveEnd::Failed(why));
        }
        if !rollout.undeploy {
            let now = failures(hub, &nodes, &agent, &digest).await;
            let failed: u64 = nodes
                .iter()
                .map(|n| {
                    now.get(n)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(baseline.get(n).copied().unwrap_or(0))
                })
                .sum();
            if failed > rollout.max_failures {
                return Ok(WaveEnd::Failed(format!(
                    "{failed} failed invocation(s) during the bake (at most {} allowed)",
                    rollout.max_failures
                )));
            }
        }
        if started.elapsed() >= bake {
            return Ok(WaveEnd::Passed);
        }
        tokio::time::sleep(BAKE_POLL.min(bake.saturating_sub(started.elapsed()))).await;
    }
}

/// A node of the wave that no longer runs this version (an undeploy: that runs the
/// agent again), if any.
async fn unhealthy(
    hub: &Hub<'_>,
    nodes: &[String],
    agent: &str,
    version: u64,
    undeploy: bool,
) -> Result<Option<String>> {
    let status = hub.status().await?;
    for node in nodes {
        let raw = status.get(format!("{node}.{agent}")).await?;
        if undeploy {
            if let Some(s) = raw.and_then(|r| serde_json::from_slice::<DeployStatus>(&r).ok())
                && s.state == "running"
            {
                return Ok(Some(format!("{node} runs {agent} again")));
            }
            continue;
        }
        let Some(raw) = raw else {
            return Ok(Some(format!("{node} reports no status for {agent}")));
        };
        let Ok(s) = serde_json::from_slice::<DeployStatus>(&raw) else {
            continue;
        };
        if s.state != "running" || s.running_version != Some(version) {
            let why = s
                .error
                .map(|e| format!(": {}: {}", e.code, e.message))
                .unwrap_or_default();
            return Ok(Some(format!("{node} {}{why}", s.state)));
        }
    }
    Ok(None)
}

/// Each node's failed invocations of the agent running `digest` (nodes that do
/// not answer within 2 s are left out).
async fn failures(
    hub: &Hub<'_>,
    nodes: &[String],
    agent: &str,
    digest: &str,
) -> BTreeMap<String, u64> {
    let subjects = hub.conn.subjects();
    let asks = nodes.iter().map(|node| {
        let subjects = &subjects;
        async move {
            hub::fleet::live_agents(&hub.client, subjects, node)
                .await?
                .into_iter()
                .find(|a| a.name == agent && a.digest.as_deref() == Some(digest))
                .map(|a| (node.clone(), a.failures))
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Waits until every node of an undeploy wave dropped the agent (its status key
/// gone); the first that refused the tombstone, or did not report within `wait`,
/// fails the wave.
async fn wait_removed(
    hub: &Hub<'_>,
    nodes: &[String],
    agent: &str,
    version: u64,
    wait: Duration,
) -> Result<Option<String>> {
    let status = hub.status().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut pending = None;
        for node in nodes {
            let Some(raw) = status.get(format!("{node}.{agent}")).await? else {
                continue;
            };
            match serde_json::from_slice::<DeployStatus>(&raw) {
                Ok(s) if s.version == Some(version) && s.state != "running" => {
                    let why = s
                        .error
                        .map(|e| format!(": {}: {}", e.code, e.message))
                        .unwrap_or_default();
                    return Ok(Some(format!("{node} {}{why}", s.state)));
                }
                _ => pending = Some(node),
            }
        }
        let Some(node) = pending else {
            return Ok(None);
        };
        if tokio::time::Instant::now() >= deadline {
            return Ok(Some(format!("{node} still runs {agent} after {wait:?}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Puts a node's own key for the rollout's agent back as it was before the
/// rollout: its prior deployment re-signed newer than the rollout's version, or
/// no key at all (it follows a broader one again).
async fn restore_node_key(
    hub: &Hub<'_>,
    rollout: &Rollout,
    node: &str,
    key: &SecretKey,
) -> Result<()> {
    let kv_key = Target::Node(node.to_owned()).key(&rollout.agent);
    match rollout
        .prior
        .get(node)
        .and_then(|raw| SignedDeployment::peek_spec(raw))
    {
        Some(prior) => {
            let spec = DeploymentSpec {
                artifacts: prior.artifacts,
                ..DeploymentSpec::new(
                    prior.agent,
                    prior.module,
                    rollout.version + 1,
                    prior.target,
                    Some(key),
                    prior.keep_kv,
                    prior.secrets,
                )
            };
            let raw = SignedDeployment::seal(&spec, Some(key)).to_bytes();
            hub.deployments
                .put(&kv_key, raw.into())
                .await
                .with_context(|| format!("cannot put {kv_key} back"))?;
        }
        None => hub.delete_deployment(&kv_key).await?,
    }
    Ok(())
}

/// Puts wave `i`'s nodes back on what they ran before the rollout.
async fn roll_back(hub: &Hub<'_>, rollout: &mut Rollout, i: usize, key: &SecretKey) -> Result<()> {
    for node in rollout.waves[i].nodes.clone() {
        restore_node_key(hub, rollout, &node, key).await?;
    }
    rollout.waves[i].outcome = "rolled_back".into();
    Ok(())
}

/// Every wave passed: the broad keys get the new version, the per-node keys the
/// rollout wrote go.
async fn complete(hub: &Hub<'_>, rollout: &mut Rollout, key: &SecretKey) -> Result<()> {
    if rollout.undeploy {
        return complete_undeploy(hub, rollout, key).await;
    }
    let agent = rollout.agent.clone();
    let mut node_keys = BTreeSet::new();
    for kv_key in rollout.targets.clone() {
        let (target, _) = Target::parse_key(&kv_key)
            .with_context(|| format!("{kv_key} is not a deployment key"))?;
        if let Target::Node(_) = target {
            node_keys.insert(kv_key.clone());
            if hub
                .deployments
                .get(&kv_key)
                .await?
                .and_then(|raw| SignedDeployment::peek_version(&raw))
                == Some(rollout.version)
            {
                continue; // a wave wrote it
            }
        }
        let raw = envelope(rollout, &target, rollout.version, key);
        hub.deployments
            .put(&kv_key, raw.into())
            .await
            .with_context(|| format!("cannot write {kv_key}"))?;
    }
    for wave in &rollout.waves {
        for node in &wave.nodes {
            let kv_key = Target::Node(node.clone()).key(&agent);
            if !node_keys.contains(&kv_key) && !rollout.prior.contains_key(node) {
                hub.deployments
                    .delete(&kv_key)
                    .await
                    .with_context(|| format!("cannot delete {kv_key}"))?;
            }
        }
    }
    rollout.outcome = "completed".into();
    hub.save(rollout).await
}

/// Every undeploy wave passed: the targets' keys go, then the waves' tombstones
/// (a node's own prior deployment, not targeted, comes back).
async fn complete_undeploy(hub: &Hub<'_>, rollout: &mut Rollout, key: &SecretKey) -> Result<()> {
    for kv_key in &rollout.targets {
        hub.delete_deployment(kv_key).await?;
    }
    for wave in &rollout.waves {
        for node in &wave.nodes {
            let kv_key = Target::Node(node.clone()).key(&rollout.agent);
            if rollout.targets.contains(&kv_key) {
                continue; // deleted above
            }
            restore_node_key(hub, rollout, node, key).await?;
        }
    }
    rollout.outcome = "completed".into();
    hub.save(rollout).await
}

/// The report: one JSON object with `--json` (`outcome`, `reason`, `waves`), else
/// a few lines.
fn report(r: &Rollout, json: bool) {
    if json {
        let out = serde_json::json!({
            "agent": r.agent,
            "undeploy": r.undeploy,
            "version": r.version,
            "outcome": r.outcome,
            "reason": r.reason,
            "waves": r.waves,
            "bake_ms": r.bake_ms,
            "max_failures": r.max_failures,
            "started_at": r.started_at,
            "updated_at": r.updated_at,
        });
        println!("{out}");
        return;
    }
    println!(
        "{} of {} version {}: {}{}",
        if r.undeploy { "undeploy" } else { "rollout" },
        r.agent,
        r.version,
        r.outcome,
        r.reason
            .as_ref()
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    );
    for (i, w) in r.waves.iter().enumerate() {
        println!("  wave {} {:<12} {}", i + 1, w.outcome, w.nodes.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::wave_sizes;

    #[test]
    fn waves_are_cumulative_and_cover_every_node() {
        assert_eq!(wave_sizes("1,10%,100%", 30).unwrap(), [1, 2, 27]);
        assert_eq!(wave_sizes("1,10%,100%", 3).unwrap(), [1, 2]);
        assert_eq!(wave_sizes("1,50%", 3).unwrap(), [1, 1, 1]);
        assert_eq!(wave_sizes("5", 3).unwrap(), [3]);
        assert_eq!(wave_sizes("100%", 4).unwrap(), [4]);
        assert!(wave_sizes("0", 3).is_err());
        assert!(wave_sizes("150%", 3).is_err());
        assert!(wave_sizes("x", 3).is_err());
    }
}
