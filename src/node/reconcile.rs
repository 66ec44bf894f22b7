//! Desired state → running agents. The node reads the deployments that concern it
//! (its id, each of its tags, `all`) from the hub's `EDGELEAF_DEPLOYMENTS` bucket
//! through its leaf, verifies each, and converges: deploy, upgrade, remove. It does
//! so at start (from its own sled copy first, so agents return with no network), when
//! the hub becomes reachable, on every change, and every [`RESYNC`] as a safety net.
//! Each outcome is reported in `EDGELEAF_STATUS` (`<node>.<agent>`) and as an event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use async_nats::Client;
use async_nats::jetstream::kv;
use futures::StreamExt;

use super::agents::{AgentPool, publish_event};
use crate::config::Config;
use crate::hub;
use crate::protocol::{
    AgentSpec, DEPLOYMENTS_BUCKET, DeployStatus, ErrorBody, MODULES_BUCKET, STATUS_BUCKET, Subjects,
};
use crate::runtime::precompiled::Artifact;
use crate::shipping::secrets::NodeKey;
use crate::shipping::{self, DeploymentSpec, Rejection, SignedDeployment, Target, TrustPolicy};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::agent_kv::AgentKv;
use crate::store::deployments::{DeployRecord, Deployments};

/// Full re-read of the desired state even without a change notification.
const RESYNC: Duration = Duration::from_secs(30);
/// Wait between attempts to reach the hub's buckets.
const RETRY: Duration = Duration::from_secs(2);

/// One deployment aimed at this node, as read from the hub.
struct Desired {
    key: String,
    target: Target,
    raw: Vec<u8>,
    /// Its KV revision.
    revision: u64,
}

pub struct Reconciler {
    pool: Arc<AgentPool>,
    store: Store,
    deployments: Deployments,
    client: Client,
    subjects: Subjects,
    node_id: String,
    tags: BTreeMap<String, String>,
    domain: String,
    policy: TrustPolicy,
    max_module_size: u64,
    /// Opens the secrets sealed to this node.
    node_key: Arc<NodeKey>,
    /// The raw envelope last refused or failed per agent, so an unchanged bad
    /// deployment is not retried (and re-reported) at every resync.
    settled_bad: HashMap<String, Vec<u8>>,
    /// Module downloads by digest: under way, or failed and waiting to be tried
    /// again. A download never holds up the loop (an object whose chunks never
    /// arrive froze every later deploy and undeploy), and a failing one backs off.
    fetches: HashMap<String, Fetch>,
    /// Download outcomes (and the ends of backoffs: no outcome), each followed by
    /// a reconcile pass.
    fetched_tx: tokio::sync::mpsc::UnboundedSender<Fetched>,
    fetched_rx: tokio::sync::mpsc::UnboundedReceiver<Fetched>,
}

/// First wait before a failed module download is tried again; doubles up to
/// [`FETCH_BACKOFF_MAX`].
const FETCH_BACKOFF: Duration = Duration::from_secs(2);
/// Precompiled code is larger than its module (3x for a small Rust component on x86_64, 7x on aarch64):
/// it may be this many times `limits.max_module_size`.
const ARTIFACT_SIZE_FACTOR: u64 = 8;
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(300);

enum Fetch {
    /// `backoff`: how long to wait if this attempt fails.
    Running {
        task: tokio::task::AbortHandle,
        backoff: Duration,
    },
    /// Finished, not yet picked up by the deployment that wants it.
    Done {
        outcome: Result<Vec<u8>>,
        backoff: Duration,
    },
    Failed {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// A message from a download task or a backoff timer.
struct Fetched {
    digest: String,
    outcome: Option<Result<Vec<u8>>>,
}

/// Where a deployment's module is.
enum ModuleState {
    Ready(Vec<u8>),
    /// Downloading, or waiting to try again after a failure already reported.
    Pending,
    /// The download just failed (report it once).
    Failed(anyhow::Error),
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        for fetch in self.fetches.values() {
            if let Fetch::Running { task, .. } = fetch {
                task.abort();
            }
        }
    }
}

impl Reconciler {
    pub fn new(
        pool: Arc<AgentPool>,
        store: Store,
        client: Client,
        node_key: Arc<NodeKey>,
        config: &Config,
    ) -> Result<Self> {
        let (fetched_tx, fetched_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Self {
            deployments: Deployments::open(&store)?,
            pool,
            store,
            client,
            subjects: Subjects::new(config.prefix()),
            node_id: config.node.id.clone(),
            tags: config.node.tags.clone(),
            domain: config.leaf.domain.clone(),
            policy: TrustPolicy::from_config(&config.security),
            max_module_size: config.limits.max_module_size,
            node_key,
            settled_bad: HashMap::new(),
            fetches: HashMap::new(),
            fetched_tx,
            fetched_rx,
        })
    }

    /// Restores what sled holds, then follows the hub until shutdown.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        self.restore().await;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.recv() => return,
                r = self.follow_hub() => r,
            };
            if let Err(e) = outcome {
                tracing::debug!("deployments not reachable: {e:#}");
            }
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Starts every locally recorded deployment (re-verified against today's
    /// policy) from the local module copy.
    async fn restore(&mut self) {
        let records = match self.deployments.all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read local deployments: {e}");
                return;
            }
        };
        for (name, record) in records {
            let opened = SignedDeployment::open(&record.envelope, &record.key, &self.policy)
                .and_then(|spec| Ok((self.agent_spec(&spec)?, spec)));
            let (agent, spec) = match opened {
                Ok(both) => both,
                Err(rej) => {
                    // Not trusted any more (a revoked publisher, a lost node key):
                    // dropped, so that the hub's copy is judged afresh and the
                    // refusal reported, instead of a stale "running".
                    tracing::warn!(agent = %name, "local deployment no longer accepted, dropped: {rej}");
                    if let Err(e) = self.deployments.remove(&name) {
                        tracing::error!(agent = %name, "cannot drop the local deployment record: {e}");
                    }
                    continue;
                }
            };
            // Records from before the accepted-versions tree existed seed it.
            if let Ok(None) = self.deployments.accepted(&record.key) {
                let _ =
                    self.deployments
                        .set_accepted(&record.key, record.version, &record.envelope, 0);
            }
            if self.pool.runs(&name, record.version, &record.digest) {
                continue;
            }
            match self.deployments.module(&record.digest) {
                Ok(Some(bytes)) if let Err(why) = self.runnable(&spec, &bytes) => {
                    // Code precompiled for the engine this node had before an
                    // upgrade: dropped, so that the hub's deployment is judged afresh
                    // (and its artifact for today's engine fetched).
                    tracing::warn!(agent = %name, "local copy cannot run here any more ({why}); dropped, the hub's deployment is applied again");
                    if let Err(e) = self.deployments.remove(&name) {
                        tracing::error!(agent = %name, "cannot drop the local deployment record: {e}");
                    }
                }
                Ok(Some(bytes)) => {
                    if self
                        .pool
                        .start_version(agent, &bytes, record.version)
                        .await
                        .is_ok()
                    {
                        tracing::info!(agent = %name, version = record.version, "deployment restored from local state");
                    }
                }
                _ => {
                    tracing::warn!(agent = %name, "local module copy missing; waiting for the hub")
                }
            }
        }
    }

    /// Watches the deployments bucket and reconciles on every change; returns when
    /// the hub can no longer be followed.
    async fn follow_hub(&mut self) -> Result<()> {
        let js = hub::jetstream(self.client.clone(), Some(&self.domain));
        let bucket = js
            .get_key_value(DEPLOYMENTS_BUCKET)
            .await
            .context("deployments bucket")?;
        let status = js
            .get_key_value(STATUS_BUCKET)
            .await
            .context("status bucket")?;
        let modules = js
            .get_object_store(MODULES_BUCKET)
            .await
            .context("modules bucket")?;
        // Only the keys that can target this node: a deploy to another node (or
        // tag) costs this one nothing, however large the fleet.
        let mut changes = crate::hub::key_changes(&self.client, &bucket, &self.key_filters())
            .await
            .context("follow deployments")?;
        let hub = Hub {
            bucket,
            status,
            modules,
        };
        self.reconcile(&hub).await?;
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(())) => {
                        // Let a burst of changes (a fleet-wide deploy) settle, and
                        // take it in one pass.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        crate::hub::drain_ready(&mut changes).context("deployments changes")?;
                        self.reconcile(&hub).await?;
                    }
                    Some(Err(e)) => return Err(e).context("deployments changes"),
                    None => anyhow::bail!("deployments changes ended"),
                },
                _ = tokio::time::sleep(RESYNC) => self.reconcile(&hub).await?,
                Some(fetched) = self.fetched_rx.recv() => {
                    self.record_fetch(fetched);
                    self.reconcile(&hub).await?
                }
            }
        }
    }

    /// The deployment keys that can select this node: its own, each of its tags',
    /// and `all`.
    fn key_filters(&self) -> Vec<String> {
        let mut filters = vec![format!("node.{}.*", self.node_id), "all.*".to_owned()];
        filters.extend(
            self.tags
                .iter()
                .filter(|(k, v)| crate::protocol::is_token(k) && crate::protocol::is_token(v))
                .map(|(k, v)| format!("tag.{k}.{v}.*")),
        );
        filters
    }

    /// The latest value of every live key under the filters of [`Self::key_filters`],
    /// read straight from the bucket's stream, so the rest of the bucket is never
    /// read: the stream's leader names the keys (stream info with a subject filter),
    /// and any server of the stream gives each one's last value (direct get). No
    /// consumer is made for it: on a clustered hub a consumer is a decision of the
    /// whole cluster, and each node reconciles often.
    async fn targeting_entries(&self, hub: &Hub) -> Result<Vec<(String, Vec<u8>, u64)>> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = &hub.bucket.stream;
        let mut out = Vec::new();
        for filter in self.key_filters() {
            let mut subjects = stream
                .info_with_subjects(format!("{}{filter}", hub.bucket.prefix))
                .await
                .context("list deployments")?;
            let mut keys = Vec::new();
            while let Some(subject) = subjects.next().await {
                keys.push(subject.context("list deployments")?.0);
            }
            for subject in keys {
                let msg = match stream.direct_get_last_for_subject(subject.as_str()).await {
                    Ok(msg) => msg,
                    // Gone since it was listed (a purge, the bucket's age limit).
                    Err(e) if e.kind() == DirectGetErrorKind::NotFound => continue,
                    Err(e) => return Err(e).with_context(|| format!("read {subject}")),
                };
                let deleted = msg
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                let Some(key) = subject.strip_prefix(hub.bucket.prefix.as_str()) else {
                    continue;
                };
                if !deleted {
                    out.push((key.to_owned(), msg.payload.to_vec(), msg.sequence));
                }
            }
        }
        Ok(out)
    }

    /// Reads the deployments aimed at this node; the most specific wins per agent.
    /// Also returns every key aimed at this node, winner or not.
    async fn desired(&self, hub: &Hub) -> Result<(BTreeMap<String, Desired>, BTreeSet<String>)> {
        let mut out: BTreeMap<String, Desired> = BTreeMap::new();
        let mut present = BTreeSet::new();
        for (key, value, revision) in self.targeting_entries(hub).await? {
            let Some((target, agent)) = Target::parse_key(&key) else {
                continue;
            };
            if !target.selects(&self.node_id, &self.tags) {
                continue;
            }
            present.insert(key.clone());
            let better = match out.get(&agent) {
                None => true,
                Some(d) => {
                    (target.specificity(), std::cmp::Reverse(&key))
                        > (d.target.specificity(), std::cmp::Reverse(&d.key))
                }
            };
            if better {
                out.insert(
                    agent,
                    Desired {
                        key,
                        target,
                        raw: value,
                        revision,
                    },
                );
            }
        }
        Ok((out, present))
    }

    /// Keys deleted from the hub (undeployed) since something was accepted under
    /// them: what was accepted there must never come back, even byte for byte.
    fn retire_deleted_keys(&self, present: &BTreeSet<String>) -> Result<()> {
        for key in self.deployments.live_accepted_keys()? {
            // A key that no longer selects this node (its tags changed) was not
            // deleted; leave it.
            let selects = Target::parse_key(&key)
                .is_some_and(|(target, _)| target.selects(&self.node_id, &self.tags));
            if selects && !present.contains(&key) && self.deployments.retire(&key)? {
                tracing::info!(%key, "deployment key deleted; what it held will not be accepted again");
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self, hub: &Hub) -> Result<()> {
        let (desired, present) = self.desired(hub).await?;
        self.retire_deleted_keys(&present)?;
        for (name, want) in &desired {
            self.converge(hub, name, want).await;
        }
        for (name, record) in self.deployments.all()? {
            if !desired.contains_key(&name) {
                self.remove(hub, &name, &record).await;
            }
        }
        self.settled_bad
            .retain(|name, _| desired.contains_key(name));
        // A download no deployment picked up in this pass is no longer wanted.
        self.fetches.retain(|_, f| !matches!(f, Fetch::Done { .. }));
        Ok(())
    }

    /// Brings one agent to its desired deployment.
    async fn converge(&mut self, hub: &Hub, name: &str, want: &Desired) {
        let current = self.deployments.get(name).ok().flatten();
        if self.settled_bad.get(name) == Some(&want.raw) {
            return;
        }
        if let Some(cur) = current.as_ref().filter(|c| c.envelope == want.raw) {
            // What runs, unless these bytes were written again since: then the
            // key was deleted (an undeploy this node missed) and put back.
            if let Some(rej) = self.replayed(want, None) {
                self.settled_bad.insert(name.to_owned(), want.raw.clone());
                self.remove(hub, name, cur).await;
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "rejected",
                    Some(cur.version),
                    None,
                    Some(rej),
                )
                .await;
                return;
            }
            // A deployment refused since (its status says so) is gone, and this
            // node is back on what it runs: say so, or the status stays stale.
            if self.settled_bad.remove(name).is_some() {
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "running",
                    Some(cur.version),
                    Some(cur),
                    None,
                )
                .await;
            }
            return;
        }
        let accepted = self
            .accept(name, want, current.as_ref())
            .and_then(|spec| Ok((self.agent_spec(&spec)?, spec)));
        let (agent, spec) = match accepted {
            Ok(both) => both,
            Err(rej) => {
                self.settled_bad.insert(name.to_owned(), want.raw.clone());
                // The version it claims, so the publisher's CLI can match the report.
                let claimed = SignedDeployment::peek_version(&want.raw);
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "rejected",
                    claimed,
                    current.as_ref(),
                    Some(rej),
                )
                .await;
                return;
            }
        };
        if spec.absent {
            // A tombstone: the agent goes (or stays away) on this node.
            match current.as_ref() {
                Some(cur) => self.remove(hub, name, cur).await,
                None => {
                    let _ = hub.status.delete(self.status_key(name)).await;
                }
            }
            if let Err(e) =
                self.deployments
                    .set_accepted(&want.key, spec.version, &want.raw, want.revision)
            {
                tracing::error!(agent = %name, "cannot record the accepted version: {e}");
            }
            // Nothing more to do for these bytes.
            self.settled_bad.insert(name.to_owned(), want.raw.clone());
            return;
        }
        let version = Some(spec.version);
        let module = match self.module(hub, &spec).await {
            ModuleState::Ready(m) => m,
            ModuleState::Pending => return,
            ModuleState::Failed(e) => {
                // Possibly transient (the hub went away mid-download): retried
                // after a backoff.
                let rej = Rejection::new("fetch_failed", format!("{e:#}"));
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "failed",
                    version,
                    current.as_ref(),
                    Some(rej),
                )
                .await;
                return;
            }
        };
        let publisher = spec.publisher.clone().unwrap_or_default();
        self.keep_kv_to_its_publisher(name, &publisher);
        match self.pool.start_version(agent, &module, spec.version).await {
            Ok(_) => {
                if let Err(e) = self.deployments.set_kv_owner(name, &publisher) {
                    tracing::error!(agent = %name, "cannot record who owns the agent's kv data: {e}");
                }
                let record = DeployRecord {
                    key: want.key.clone(),
                    envelope: want.raw.clone(),
                    version: spec.version,
                    digest: spec.module.digest.clone(),
                };
                if let Err(e) = self.deployments.put(name, &record, &module) {
                    tracing::error!(agent = %name, "deployment runs but could not be saved locally: {e}");
                }
                if let Err(e) =
                    self.deployments
                        .set_accepted(&want.key, spec.version, &want.raw, want.revision)
                {
                    tracing::error!(agent = %name, "cannot record the accepted version: {e}");
                }
                self.settled_bad.remove(name);
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "running",
                    version,
                    Some(&record),
                    None,
                )
                .await;
            }
            Err(e) => {
                // Invalid module, limits above the node's, forbidden subjects: the
                // same bytes will fail again, so this is a rejection, not a retry.
                self.settled_bad.insert(name.to_owned(), want.raw.clone());
                let rej = Rejection::new(e.code, e.message);
                self.report(
                    hub,
                    name,
                    &want.key,
                    &want.raw,
                    "rejected",
                    version,
                    current.as_ref(),
                    Some(rej),
                )
                .await;
            }
        }
    }

    /// Verifies a deployment and its version against what runs.
    fn accept(
        &self,
        name: &str,
        want: &Desired,
        current: Option<&DeployRecord>,
    ) -> Result<DeploymentSpec, Rejection> {
        let spec = SignedDeployment::open(&want.raw, &want.key, &self.policy)?;
        if spec.agent.name != name {
            return Err(Rejection::new(
                "wrong_target",
                format!("spec names agent {:?}, key names {name:?}", spec.agent.name),
            ));
        }
        // Escaping subjects and the like: refused before the module is fetched.
        if !spec.absent {
            spec.agent
                .check(self.subjects.prefix())
                .map_err(|e| Rejection::new(e.code, e.message))?;
        }
        if spec.module.size > self.max_module_size {
            return Err(Rejection::new(
                "module_too_large",
                format!(
                    "module of {} bytes is above this node's maximum of {} bytes",
                    spec.module.size, self.max_module_size
                ),
            ));
        }
        if !spec.absent {
            let code = self.code_ref(&spec)?;
            if code.size > self.max_module_size.saturating_mul(ARTIFACT_SIZE_FACTOR) {
                return Err(Rejection::new(
                    "module_too_large",
                    format!(
                        "precompiled code of {} bytes is above this node's maximum of {} bytes \
                         ({ARTIFACT_SIZE_FACTOR} x limits.max_module_size)",
                        code.size,
                        self.max_module_size.saturating_mul(ARTIFACT_SIZE_FACTOR)
                    ),
                ));
            }
        }
        // Versions only compare within one key: when a more specific deployment is
        // removed, the node falls back to the broader one whatever its version.
        if let Some(cur) = current
            && cur.key == want.key
            && spec.version <= cur.version
        {
            return Err(Rejection::new(
                "stale_version",
                format!(
                    "version {} is not newer than the running version {}",
                    spec.version, cur.version
                ),
            ));
        }
        if let Some(rej) = self.replayed(want, Some(spec.version)) {
            return Err(rej);
        }
        Ok(spec)
    }

    /// Replay protection: `want` against what this node accepted under its key
    /// before. Refused: the very bytes accepted, at a newer KV revision (written
    /// back after a delete: `deploy` never writes the same bytes twice, each spec
    /// has a nonce); and, given the spec's `version` once opened, a version older
    /// than the accepted one, or the same version in other bytes or after the key
    /// was deleted.
    fn replayed(&self, want: &Desired, version: Option<u64>) -> Option<Rejection> {
        // Fail closed: a record that cannot be read may be the one that refuses this.
        let seen = match self.deployments.accepted(&want.key) {
            Ok(seen) => seen?,
            Err(e) => {
                return Some(Rejection::new(
                    "replay_check_failed",
                    format!(
                        "cannot read what this node accepted under {} before ({e}); \
                         refused until it can",
                        want.key
                    ),
                ));
            }
        };
        let same = seen.holds(&want.raw);
        if same && seen.revision != 0 && seen.revision != want.revision {
            return Some(Rejection::new(
                "replayed",
                format!(
                    "version {} under {} was written again (revision {}, accepted at {}): \
                     an undeployed deployment put back? A new deployment needs \
                     --set-version {} or higher",
                    seen.version,
                    want.key,
                    want.revision,
                    seen.revision,
                    seen.version + 1
                ),
            ));
        }
        let version = version?;
        (version < seen.version || (version == seen.version && (!same || seen.retired))).then(
            || {
                Rejection::new(
                    "replayed",
                    format!(
                        "version {version} under {} is not newer than version {} accepted there \
                         before{} (an old deployment written back?); a new deployment needs \
                         --set-version {} or higher",
                        want.key,
                        seen.version,
                        if seen.retired {
                            " and undeployed since"
                        } else {
                            ""
                        },
                        seen.version + 1
                    ),
                )
            },
        )
    }

    /// The agent as it runs here: its config plus the secrets sealed to this node,
    /// opened in memory only.
    fn agent_spec(&self, spec: &DeploymentSpec) -> Result<AgentSpec, Rejection> {
        let mut agent = spec.agent.clone();
        let publisher = match (&spec.publisher, spec.secrets.is_empty()) {
            (Some(p), _) => p.as_str(),
            (None, true) => "",
            // Anyone who can write the bucket could put sealed values copied from a
            // signed deployment into an unsigned one.
            (None, false) => {
                return Err(Rejection::new(
                    "invalid_spec",
                    "an unsigned deployment cannot carry secrets",
                ));
            }
        };
        for (name, per_node) in &spec.secrets {
            let sealed = per_node.get(&self.node_id).ok_or_else(|| {
                Rejection::new(
                    "secret_unavailable",
                    format!(
                        "secret {name:?} is not sealed to this node (it had not reported its \
                         key when this was deployed): deploy again"
                    ),
                )
            })?;
            let value = self
                .node_key
                .open(sealed, &spec.target, publisher, name)
                .map_err(|why| {
                    Rejection::new(
                        "secret_unavailable",
                        format!("secret {name:?} cannot be opened: {why}"),
                    )
                })?;
            if agent.config.insert(name.clone(), value).is_some() {
                return Err(Rejection::new(
                    "invalid_spec",
                    format!("{name:?} is both a config value and a secret"),
                ));
            }
        }
        Ok(agent)
    }

    /// What this node runs of a deployment: the code precompiled for its engine
    /// when the (signed) spec lists some, else the module. A node without a
    /// compiler needs the former.
    fn code_ref<'s>(&self, spec: &'s DeploymentSpec) -> Result<&'s shipping::ModuleRef, Rejection> {
        let runtime = self.pool.runtime();
        let profile = runtime.profile();
        let key = profile.artifact_key(spec.agent.limits.fuel.is_some());
        if spec.publisher.is_some()
            && let Some(artifact) = spec.artifacts.get(&key)
        {
            return Ok(artifact);
        }
        if runtime.compiler() != "none" {
            return Ok(&spec.module);
        }
        let why = if spec.publisher.is_none() && !spec.artifacts.is_empty() {
            "it is unsigned, and precompiled code is loaded from signed deployments only".to_owned()
        } else if spec.artifacts.is_empty() {
            "it holds no precompiled code".to_owned()
        } else {
            let engines: Vec<&str> = spec.artifacts.keys().map(String::as_str).collect();
            format!(
                "it has code for other engines only ({})",
                engines.join(", ")
            )
        };
        Err(Rejection::new(
            "no_artifact",
            format!(
                "this node has no compiler (a runtime-only build) and needs the module \
                 precompiled for its engine {key} ({} wasmtime {}), but {why}: deploy it again \
                 signed while the node is online, or with --precompile for its target",
                profile.target, profile.wasmtime
            ),
        ))
    }

    /// Whether `bytes` (a local copy, or a download) can run `spec` here: an artifact
    /// must be of this module and for this node's engine, plain wasm needs a compiler.
    fn runnable(&self, spec: &DeploymentSpec, bytes: &[u8]) -> Result<(), String> {
        let runtime = self.pool.runtime();
        if !Artifact::is_artifact(bytes) {
            return match runtime.compiler() {
                "none" => Err("plain wasm, and this node has no compiler".into()),
                _ => Ok(()),
            };
        }
        let header = Artifact::parse(bytes).map_err(|e| format!("{e:#}"))?.header;
        let key = runtime
            .profile()
            .artifact_key(spec.agent.limits.fuel.is_some());
        if header.module != spec.module.digest {
            return Err(format!(
                "precompiled from module {}, the deployment runs {}",
                header.module, spec.module.digest
            ));
        }
        if header.engine != key {
            return Err(format!(
                "precompiled for engine {}, this node's is {key}",
                header.engine
            ));
        }
        Ok(())
    }

    /// The code to run: the local copy if there is a usable one, else a download
    /// from the hub (the module, or the artifact for this node's engine), started in
    /// the background; its end wakes the loop.
    async fn module(&mut self, hub: &Hub, spec: &DeploymentSpec) -> ModuleState {
        if let Ok(Some(bytes)) = self.deployments.module(&spec.module.digest) {
            match self.runnable(spec, &bytes) {
                Ok(()) => return ModuleState::Ready(bytes),
                Err(why) => {
                    tracing::info!(agent = %spec.agent.name, "local copy not used ({why}); fetching from the hub")
                }
            }
        }
        let code = match self.code_ref(spec) {
            Ok(code) => code.clone(),
            Err(rej) => return ModuleState::Failed(anyhow::anyhow!("{rej}")),
        };
        let digest = &code.digest;
        let backoff = match self.fetches.remove(digest) {
            None => FETCH_BACKOFF,
            Some(Fetch::Done { outcome, backoff }) => match outcome.and_then(|bytes| {
                self.runnable(spec, &bytes)
                    .map(|()| bytes)
                    .map_err(anyhow::Error::msg)
            }) {
                Ok(bytes) => return ModuleState::Ready(bytes),
                Err(e) => {
                    self.fetch_failed(digest, backoff);
                    return ModuleState::Failed(e);
                }
            },
            Some(Fetch::Failed { retry_at, backoff }) if Instant::now() < retry_at => {
                self.fetches
                    .insert(digest.clone(), Fetch::Failed { retry_at, backoff });
                return ModuleState::Pending;
            }
            Some(Fetch::Failed { backoff, .. }) => backoff,
            Some(running @ Fetch::Running { .. }) => {
                self.fetches.insert(digest.clone(), running);
                return ModuleState::Pending;
            }
        };
        let (store, done) = (hub.modules.clone(), self.fetched_tx.clone());
        let (name, size) = (digest.clone(), code.size);
        let task = tokio::spawn(async move {
            let outcome = shipping::modules::fetch(&store, &name, size).await;
            let _ = done.send(Fetched {
                digest: name,
                outcome: Some(outcome),
            });
        });
        self.fetches.insert(
            digest.clone(),
            Fetch::Running {
                task: task.abort_handle(),
                backoff,
            },
        );
        ModuleState::Pending
    }

    /// Keeps a finished download for the deployment that wants it.
    fn record_fetch(&mut self, fetched: Fetched) {
        let Some(outcome) = fetched.outcome else {
            return; // a backoff ended: the pass that follows tries again
        };
        if let Some(Fetch::Running { backoff, .. }) = self.fetches.remove(&fetched.digest) {
            self.fetches
                .insert(fetched.digest, Fetch::Done { outcome, backoff });
        }
    }

    /// Records a failed download and wakes the loop when it may be tried again.
    fn fetch_failed(&mut self, digest: &str, backoff: Duration) {
        self.fetches.insert(
            digest.to_owned(),
            Fetch::Failed {
                retry_at: Instant::now() + backoff,
                backoff: (backoff * 2).min(FETCH_BACKOFF_MAX),
            },
        );
        let (wake, digest) = (self.fetched_tx.clone(), digest.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = wake.send(Fetched {
                digest,
                outcome: None,
            });
        });
    }

    /// An agent's kv data belongs to the publisher whose deployment wrote it: a
    /// deployment of the same name by another publisher starts with none (it would
    /// read what the other's agent kept, `--keep-kv` or an upgrade in place).
    fn keep_kv_to_its_publisher(&self, name: &str, publisher: &str) {
        let other = match self.deployments.kv_owner(name) {
            Ok(owner) => owner.is_some_and(|o| o != publisher),
            // Fail closed: whose data it is cannot be told.
            Err(e) => {
                tracing::warn!(agent = %name, "cannot read who owns the agent's kv data: {e}");
                true
            }
        };
        if other {
            tracing::info!(agent = %name, "another publisher's agent of this name: its kv data is dropped");
            if let Err(e) = AgentKv::destroy(&self.store, name) {
                tracing::warn!(agent = %name, "cannot drop the agent's kv data: {e}");
            }
        }
    }

    /// Undeploys an agent: stops it, then drops its record, module (once unused),
    /// compiled code and kv data (unless the spec said `keep_kv`).
    async fn remove(&mut self, hub: &Hub, name: &str, record: &DeployRecord) {
        tracing::info!(agent = %name, key = %record.key, "deployment removed; undeploying");
        self.pool.stop(name).await;
        match self.deployments.remove(name) {
            Ok(Some(digest)) => {
                if let Some(cache) = self.pool.runtime().cache() {
                    cache.remove(&digest);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(agent = %name, "cannot remove the local deployment record: {e}")
            }
        }
        let keep_kv = SignedDeployment::peek_spec(&record.envelope).is_some_and(|s| s.keep_kv);
        if !keep_kv && let Err(e) = AgentKv::destroy(&self.store, name) {
            tracing::warn!(agent = %name, "cannot drop the agent's kv data: {e}");
        }
        let _ = hub.status.delete(self.status_key(name)).await;
        publish_event(
            self.pool.telemetry(),
            &self.subjects,
            &self.node_id,
            "undeployed",
            Some(name),
            None,
            format!(
                "agent {name} undeployed (was version {} from {})",
                record.version, record.key
            ),
        )
        .await;
    }

    fn status_key(&self, name: &str) -> String {
        format!("{}.{name}", self.node_id)
    }

    /// Writes the status to the hub and publishes the matching event.
    #[allow(clippy::too_many_arguments)]
    async fn report(
        &self,
        hub: &Hub,
        name: &str,
        key: &str,
        envelope: &[u8],
        state: &str,
        version: Option<u64>,
        running: Option<&DeployRecord>,
        error: Option<Rejection>,
    ) {
        let status = DeployStatus {
            node_id: self.node_id.clone(),
            agent: name.to_owned(),
            state: state.to_owned(),
            version: version.or(running.map(|r| r.version)),
            running_version: running.map(|r| r.version),
            digest: running.map(|r| r.digest.clone()),
            key: key.to_owned(),
            error: error
                .as_ref()
                .map(|e| ErrorBody::new(e.code, e.message.clone())),
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            envelope_sha256: Some(shipping::modules::digest(envelope)),
        };
        match &error {
            Some(e) => tracing::warn!(agent = %name, %key, %state, "deployment {state}: {e}"),
            None => tracing::info!(agent = %name, %key, version = ?version, "deployment running"),
        }
        if let Ok(body) = serde_json::to_vec(&status)
            && let Err(e) = hub.status.put(self.status_key(name), body.into()).await
        {
            tracing::warn!(agent = %name, "status not written: {e}");
        }
        let (kind, message) = match &error {
            None => (
                "deployed",
                format!(
                    "agent {name} version {} running",
                    version.unwrap_or_default()
                ),
            ),
            Some(e) if state == "rejected" => ("deploy_rejected", e.message.clone()),
            Some(e) => ("deploy_failed", e.message.clone()),
        };
        let code = error.as_ref().map(|e| e.code);
        publish_event(
            self.pool.telemetry(),
            &self.subjects,
            &self.node_id,
            kind,
            Some(name),
            code,
            message,
        )
        .await;
    }
}

/// The hub-side handles one reconcile pass uses.
struct Hub {
    bucket: kv::Store,
    status: kv::Store,
    modules: async_nats::jetstream::object_store::ObjectStore,
}
