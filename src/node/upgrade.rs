//! Self-update: a node follows `EDGELEAF_UPGRADES` for its own architecture and
//! replaces its binary when told, with a way back at every step.
//!
//! 1. [`follow`] (a node task) verifies an announcement, downloads the binary to
//!    `<state_dir>/upgrade/edgeleaf-<version>`, checks that it runs and prints
//!    `edgeleaf <version>`, and asks the node to stop for it.
//! 2. The node stops as on SIGTERM: agents drained, outbox flushed, leaf stopped.
//! 3. [`try_binary`], in the same process, records the trial in `state.json`, starts
//!    the new binary as a child (same arguments, [`TRIAL_ENV`] set) and waits until
//!    it is healthy (it sent a heartbeat and runs as many agents as the node ran),
//!    exits, or `[upgrade] health_timeout` passes.
//! 4. Healthy: the child is stopped, the binary recorded as current, and exec'd in
//!    place: the same pid, so systemd (`Type=notify`) and whoever started the node
//!    keep it. Otherwise the child is stopped, the binary remembered as refused (it
//!    is not tried again), and the previous binary exec'd afresh.
//! 5. At start, [`launch`]: the installed binary (systemd's `ExecStart`) that finds an
//!    accepted upgrade execs it, unless the installed binary changed since (a
//!    package upgrade), which then wins and the staged one is dropped.
//!
//! `state.json` is a file, not sled: the launcher and the trial read it while no
//! node holds the database.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use async_nats::Client;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::NodeState;
use super::agents::publish_event;
use super::telemetry::Telemetry;
use crate::protocol::{MODULES_BUCKET, UPGRADES_BUCKET, UpgradeInfo, UpgradeOutcome};
use crate::shipping::upgrade::UpgradeSpec;
use crate::shipping::{Target, TrustPolicy};
use crate::shutdown::Shutdown;

/// Set (to `1`) in the environment of a binary on trial. Not `EDGELEAF_UPGRADE_…`:
/// that would address the config's `[upgrade]` section.
pub const TRIAL_ENV: &str = "EDGELEAF_ON_TRIAL";
/// Largest binary a node downloads.
const MAX_BINARY: u64 = 256 << 20;
/// Full re-read of the announcements even without a change notification.
const RESYNC: Duration = Duration::from_secs(30);
/// How long a stopped child gets before SIGKILL.
const CHILD_STOP: Duration = Duration::from_secs(30);

/// One binary: its version and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    pub version: String,
    pub path: PathBuf,
    /// sha256 of a downloaded binary; `None` for the installed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Binary {
    /// The binary this process runs.
    fn this() -> Result<Self> {
        Ok(Self {
            version: crate::version::version().to_owned(),
            path: current_exe()?,
            digest: None,
        })
    }
}

/// A switch to another binary, decided by [`follow`] and carried out by
/// [`try_binary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub to: Binary,
    pub from: Binary,
    /// `upgrade --rollback`: back to the kept binary.
    pub rollback: bool,
    /// Agents running before: the new binary must run as many to be healthy.
    pub expect_agents: u64,
    pub started: String,
    /// The process running the trial (0: not started yet).
    #[serde(default)]
    pub pid: u32,
}

/// `<state_dir>/upgrade/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpgradeState {
    /// The binary the last upgrade accepted, run instead of the installed one.
    pub current: Option<Binary>,
    /// What ran before it: where `upgrade --rollback` goes.
    pub previous: Option<Binary>,
    /// The installed binary when `current` was accepted. Another one at start (a
    /// package upgrade) wins over `current`.
    pub installed: Option<Binary>,
    /// Written before a trial starts and cleared after: found at start, the trial
    /// was cut short (power loss) and counts as failed.
    pub trial: Option<Trial>,
    pub last: Option<UpgradeOutcome>,
    /// Whether `last` went out as an event.
    pub reported: bool,
    /// Digests of binaries that failed here: not tried again.
    pub refused: Vec<String>,
    /// Nonces of the rollback announcements already carried out.
    pub rollbacks: Vec<String>,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade")
}

/// The file a trial binary creates once healthy.
fn healthy_mark(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("trial-healthy")
}

impl UpgradeState {
    /// The state in `state_dir` (empty if there is none; an unreadable file is
    /// reported and treated as empty: the node runs the binary it is).
    pub fn load(state_dir: &Path) -> Self {
        let path = dir(state_dir).join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(
                    "{} is unreadable ({e}); starting without upgrade state",
                    path.display()
                );
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::error!("cannot read {}: {e}", path.display());
                Self::default()
            }
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let dir = dir(state_dir);
        super::private_dir(&dir, "node.state_dir/upgrade")?;
        crate::natsd::replace_private(
            &dir.join("state.json"),
            &serde_json::to_string_pretty(self)?,
        )
    }

    /// For heartbeats and `ctl.<node>.info`.
    pub fn info(&self) -> UpgradeInfo {
        UpgradeInfo {
            staged: self.trial.as_ref().map(|t| t.to.version.clone()),
            previous: self.previous.as_ref().map(|b| b.version.clone()),
            last: self.last.clone(),
        }
    }

    fn finish(&mut self, trial: &Trial, outcome: &str, reason: Option<String>) {
        self.trial = None;
        self.last = Some(UpgradeOutcome {
            version: trial.to.version.clone(),
            digest: trial.to.digest.clone(),
            from: trial.from.version.clone(),
            outcome: outcome.to_owned(),
            reason,
            at: super::rfc3339(SystemTime::now()),
        });
        self.reported = false;
    }

    /// Removes downloaded binaries (and partial downloads) that neither `current`
    /// nor `previous` names. By file name: the state dir may be reached through
    /// another path than the one recorded.
    fn prune(&self, state_dir: &Path) {
        let keep: Vec<&std::ffi::OsStr> = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .filter_map(|b| b.path.file_name())
            .collect();
        let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("edgeleaf-") && !keep.contains(&name.as_os_str())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// This process's binary. A binary replaced on disk while it runs (a package
/// upgrade) reads as `<path> (deleted)`: the path is what counts.
fn current_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this process's binary")?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// Replaces this process with `binary`, same arguments. Returns only on failure.
fn exec(binary: &Path) -> anyhow::Error {
    let err = std::process::Command::new(binary)
        .args(std::env::args_os().skip(1))
        .env_remove(TRIAL_ENV)
        .exec();
    anyhow::anyhow!("cannot run {}: {err}", binary.display())
}

/// Is this process a binary on trial?
pub fn on_trial() -> bool {
    std::env::var_os(TRIAL_ENV).is_some()
}

/// At start, before the node opens anything: settles a trial that was cut short,
/// and hands over to the accepted upgrade when this is the installed binary.
/// Returns only if this binary is the one to run.
pub fn launch(state_dir: &Path) -> Result<()> {
    if on_trial() || !dir(state_dir).exists() {
        return Ok(());
    }
    let mut state = UpgradeState::load(state_dir);
    // A trial another process runs right now (a second node started on this state
    // dir by mistake): not ours to settle; the sled lock stops this one anyway.
    if let Some(t) = &state.trial
        && t.pid != 0
        && t.pid != std::process::id()
        && alive(t.pid)
    {
        return Ok(());
    }
    let before = state.clone();
    let start = state.on_start(&Binary::this()?, SystemTime::now());
    if state != before {
        state.save(state_dir)?;
        state.prune(state_dir);
    }
    let Start::Exec(path) = start else {
        return Ok(());
    };
    tracing::info!("running the upgraded binary {}", path.display());
    let e = exec(&path);
    // It cannot run any more (deleted, a noexec mount): this binary runs instead,
    // rather than a service that fails at every start.
    tracing::error!(
        "{e:#}; running {} instead, and dropping the upgrade",
        crate::version::version()
    );
    if let Some(current) = state.current.take()
        && let Some(digest) = current.digest
    {
        state.refused.push(digest);
    }
    state.previous = None;
    state.installed = None;
    state.save(state_dir)?;
    Ok(())
}

/// Does a process with this pid exist?
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists and may be signalled.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// What a starting binary does: run, or hand over to the accepted upgrade.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    Run,
    Exec(PathBuf),
}

impl UpgradeState {
    /// Settles what a binary `me` starting at `now` finds (see [`launch`]).
    fn on_start(&mut self, me: &Binary, now: SystemTime) -> Start {
        if let Some(trial) = self.trial.clone() {
            // The process that ran the trial is gone before it ended it.
            tracing::warn!(version = %trial.to.version, "an upgrade trial was cut short; it counts as failed");
            if let Some(digest) = &trial.to.digest {
                self.refused.push(digest.clone());
            }
            self.finish(
                &trial,
                "failed",
                Some("the node stopped during the trial".into()),
            );
        }
        let Some(current) = self.current.clone() else {
            return Start::Run;
        };
        if current.path == me.path {
            return Start::Run;
        }
        let installed = self.installed.as_ref();
        if installed.is_some_and(|i| i.path == me.path && i.version == me.version)
            && current.path.exists()
        {
            return Start::Exec(current.path);
        }
        // Another binary than the one upgraded from: a package upgrade, or an
        // operator who runs a binary of their choice. It wins, and is what runs
        // from now on.
        tracing::warn!(
            staged = %current.version,
            running = %me.version,
            "{} is not the binary upgraded from; it runs, and the staged upgrade is dropped",
            me.path.display()
        );
        // Not to be downloaded again from the announcement that still names it.
        if let Some(digest) = &current.digest {
            self.refused.push(digest.clone());
        }
        let trial = Trial {
            to: me.clone(),
            from: current,
            rollback: false,
            expect_agents: 0,
            started: super::rfc3339(now),
            pid: 0,
        };
        self.finish(
            &trial,
            "superseded",
            Some(format!("{} was started instead", me.path.display())),
        );
        self.current = None;
        self.previous = None;
        self.installed = None;
        Start::Run
    }
}

/// What the node task passes to the node's end: the binary to try.
pub type Plan = tokio::sync::mpsc::Sender<Trial>;

/// Follows the announcements for this node until shutdown or until it asks the
/// node to stop for a binary (through `plan`).
pub(super) async fn follow(
    state: Arc<NodeState>,
    client: Client,
    plan: Plan,
    mut shutdown: Shutdown,
) {
    let mut follower = Follower {
        policy: TrustPolicy::from_config(&state.config.security),
        settled: BTreeMap::new(),
        state,
    };
    // A hub without the bucket (not `hub init`ed since) is asked again less and
    // less often: a fleet's worth of nodes must not poll it every 2 s.
    let mut backoff = Duration::from_secs(2);
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.recv() => return,
            r = follower.watch(&client) => r,
        };
        match outcome {
            Ok(trial) => {
                let _ = plan.send(trial).await;
                // The node stops; nothing more to follow.
                let _ = shutdown.recv().await;
                return;
            }
            Err(e) => tracing::debug!("upgrades not reachable: {e:#}"),
        }
        if started.elapsed() > RESYNC {
            backoff = Duration::from_secs(2);
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(120));
    }
}

struct Follower {
    state: Arc<NodeState>,
    policy: TrustPolicy,
    /// Envelopes judged and not acted on (refused, already run, failed), by key, so
    /// that each is reported once, not at every resync.
    settled: BTreeMap<String, Vec<u8>>,
}

impl Follower {
    /// The keys that can select this node for its architecture.
    fn keys(&self) -> Vec<String> {
        let c = &self.state.config.node;
        let arch = std::env::consts::ARCH;
        let mut keys = vec![Target::Node(c.id.clone()).key(arch)];
        keys.extend(
            c.tags
                .iter()
                .filter(|(k, v)| crate::protocol::is_token(k) && crate::protocol::is_token(v))
                .map(|(k, v)| Target::Tag(k.clone(), v.clone()).key(arch)),
        );
        keys.push(Target::All.key(arch));
        keys
    }

    /// Watches the announcements; returns a trial to run, or an error when the hub
    /// can no longer be followed.
    async fn watch(&mut self, client: &Client) -> Result<Trial> {
        let js = crate::hub::jetstream(client.clone(), Some(&self.state.config.leaf.domain));
        let bucket = js
            .get_key_value(UPGRADES_BUCKET)
            .await
            .context("upgrades bucket")?;
        let mut changes = crate::hub::key_changes(client, &bucket, &self.keys())
            .await
            .context("follow upgrades")?;
        loop {
            if let Some(trial) = self.judge(&js, &bucket).await? {
                return Ok(trial);
            }
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(())) => crate::hub::drain_ready(&mut changes).context("upgrades changes")?,
                    Some(Err(e)) => return Err(e).context("upgrades changes"),
                    None => anyhow::bail!("upgrades changes ended"),
                },
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// Reads the most specific announcement for this node and decides.
    async fn judge(
        &mut self,
        js: &async_nats::jetstream::Context,
        bucket: &async_nats::jetstream::kv::Store,
    ) -> Result<Option<Trial>> {
        // Most specific first: the node's key, its tags' (in key order), all.
        let mut found = None;
        for key in self.keys() {
            if let Some(raw) = bucket.get(&key).await.context("read upgrades")? {
                found = Some((key, raw.to_vec()));
                break;
            }
        }
        let Some((key, raw)) = found else {
            return Ok(None);
        };
        if self.settled.get(&key) == Some(&raw) {
            return Ok(None);
        }
        let decided = self.decide(js, &key, &raw).await;
        match decided {
            Ok(Some(trial)) => Ok(Some(trial)),
            Ok(None) => {
                self.settled.insert(key, raw);
                Ok(None)
            }
            Err(Refusal::Now(code, message)) => {
                self.settled.insert(key.clone(), raw);
                tracing::warn!(%key, "upgrade refused: {code}: {message}");
                self.event("upgrade_refused", Some(code), message).await;
                Ok(None)
            }
            // A download that failed: tried again at the next change or resync.
            Err(Refusal::Later(e)) => {
                tracing::warn!(%key, "upgrade download failed: {e:#}");
                Ok(None)
            }
        }
    }

    async fn decide(
        &mut self,
        js: &async_nats::jetstream::Context,
        key: &str,
        raw: &[u8],
    ) -> Result<Option<Trial>, Refusal> {
        let spec = UpgradeSpec::open(raw, key, &self.policy)
            .map_err(|r| Refusal::Now(r.code, r.message))?;
        let state_dir = self.state.config.node.state_dir.clone();
        let mut state = UpgradeState::load(&state_dir);
        let me = Binary::this().map_err(Refusal::Later)?;
        let expect_agents = self.state.agents.counts().running;
        let started = super::rfc3339(SystemTime::now());
        if spec.rollback {
            // A rollback of one version only concerns the nodes that run it.
            if state.rollbacks.contains(&spec.nonce)
                || (!spec.version.is_empty() && spec.version != me.version)
            {
                return Ok(None);
            }
            state.rollbacks.push(spec.nonce.clone());
            self.state.save_upgrade(&state);
            let Some(previous) = state.previous.clone().filter(|p| p.path.exists()) else {
                return Err(Refusal::Now(
                    "no_previous",
                    "nothing to roll back to: no binary kept from an upgrade".into(),
                ));
            };
            return Ok(Some(Trial {
                to: previous,
                from: me,
                rollback: true,
                expect_agents,
                started,
                pid: 0,
            }));
        }
        let Some(module) = spec.binary else {
            return Ok(None);
        };
        if spec.version == me.version || state.refused.contains(&module.digest) {
            return Ok(None);
        }
        tracing::info!(version = %spec.version, "downloading edgeleaf {}", spec.version);
        let store = js
            .get_object_store(MODULES_BUCKET)
            .await
            .map_err(|e| Refusal::Later(anyhow::anyhow!("modules bucket: {e}")))?;
        let bytes =
            crate::shipping::modules::fetch(&store, &module.digest, MAX_BINARY.min(module.size))
                .await
                .map_err(Refusal::Later)?;
        // Named by version and digest, so that a re-announced version never lands on
        // the binary kept for a rollback; in the directory's real path, which is
        // what this process's own path reads as once it runs from there.
        let staging = dir(&state_dir);
        super::private_dir(&staging, "node.state_dir/upgrade").map_err(Refusal::Later)?;
        let staging = std::fs::canonicalize(&staging).unwrap_or(staging);
        let path = staging.join(format!(
            "edgeleaf-{}-{}",
            spec.version,
            module.digest.get(..12).unwrap_or(&module.digest)
        ));
        let trial = Trial {
            to: Binary {
                version: spec.version.clone(),
                path: path.clone(),
                digest: Some(module.digest.clone()),
            },
            from: me,
            rollback: false,
            expect_agents,
            started,
            pid: 0,
        };
        if let Err(e) = stage(&path, &bytes, &spec.version).await {
            let _ = std::fs::remove_file(&path);
            state.refused.push(module.digest.clone());
            state.finish(&trial, "failed", Some(format!("{e:#}")));
            state.reported = true;
            self.state.save_upgrade(&state);
            return Err(Refusal::Now("bad_binary", format!("{e:#}")));
        }
        Ok(Some(trial))
    }

    async fn event(&self, kind: &str, code: Option<&str>, message: String) {
        let s = &self.state;
        publish_event(
            &Telemetry::Outbox(s.outbox.clone()),
            &s.subjects,
            &s.config.node.id,
            kind,
            None,
            code,
            message,
        )
        .await;
    }
}

enum Refusal {
    /// Not to be tried again until the announcement changes.
    Now(&'static str, String),
    /// A download that may work next time.
    Later(anyhow::Error),
}

/// Writes the binary, executable by its owner only, and checks that it runs and
/// prints `edgeleaf <version>`.
async fn stage(path: &Path, bytes: &[u8], version: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    crate::shipping::upgrade::check_runs(path, version).await
}

/// How a trial ended without a healthy binary.
enum TrialEnd {
    Failed(anyhow::Error),
    /// SIGTERM or SIGINT during the trial: the node stops, and tries again when
    /// it starts.
    Stopped,
}

/// Tries `trial.to` (see the module's text). `stop` turns true on SIGTERM or
/// SIGINT, whenever it came since the node started. Returns `Ok` when the node
/// was asked to stop (the outcome so far is recorded; the next start goes on from
/// it), and an error when no binary could be exec'd.
pub async fn try_binary(
    config: &crate::config::Config,
    mut trial: Trial,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let state_dir = &config.node.state_dir;
    if *stop.borrow() {
        tracing::info!(
            "stopped before the trial of edgeleaf {}; tried again at the next start",
            trial.to.version
        );
        return Ok(());
    }
    trial.pid = std::process::id();
    let mut state = UpgradeState::load(state_dir);
    state.trial = Some(trial.clone());
    if let Err(e) = state.save(state_dir) {
        tracing::error!(
            "cannot record the upgrade trial ({e:#}); staying on {}",
            trial.from.version
        );
        return Err(exec(&trial.from.path));
    }
    super::systemd::notify(&format!(
        "RELOADING=1\nSTATUS=trying edgeleaf {}",
        trial.to.version
    ));
    tracing::info!(from = %trial.from.version, to = %trial.to.version, "trying edgeleaf {}", trial.to.version);
    // Nothing else writes the state meanwhile: the node has stopped, and a binary
    // on trial only reads it.
    let outcome = run_trial(config, &trial, &mut stop).await;
    let next = match outcome {
        Ok(()) => {
            if state.current.is_none() {
                // Upgrading from the installed binary: remember it, so that a
                // package upgrade is recognised at the next start.
                state.installed = Some(trial.from.clone());
            }
            let installed = state
                .installed
                .as_ref()
                .is_some_and(|i| i.path == trial.to.path);
            state.current = (!installed).then(|| trial.to.clone());
            state.previous = (!trial.rollback).then(|| trial.from.clone());
            if state.current.is_none() {
                state.installed = None;
            }
            let outcome = if trial.rollback {
                "rolled_back"
            } else {
                "succeeded"
            };
            state.finish(&trial, outcome, None);
            tracing::info!(version = %trial.to.version, "edgeleaf {} is healthy; running it", trial.to.version);
            trial.to.path.clone()
        }
        Err(TrialEnd::Stopped) => {
            state.trial = None;
            if let Err(e) = state.save(state_dir) {
                tracing::error!("cannot record the upgrade's outcome: {e:#}");
            }
            super::systemd::notify("STOPPING=1");
            tracing::info!(
                "stopped during the trial of edgeleaf {}; tried again at the next start",
                trial.to.version
            );
            return Ok(());
        }
        Err(TrialEnd::Failed(e)) => {
            tracing::error!(version = %trial.to.version, "edgeleaf {} failed: {e:#}; back to {}", trial.to.version, trial.from.version);
            if let Some(digest) = &trial.to.digest {
                state.refused.push(digest.clone());
            }
            state.finish(&trial, "failed", Some(format!("{e:#}")));
            trial.from.path.clone()
        }
    };
    if let Err(e) = state.save(state_dir) {
        tracing::error!("cannot record the upgrade's outcome: {e:#}");
    }
    state.prune(state_dir);
    if *stop.borrow() {
        // Asked to stop meanwhile: the outcome is recorded, and the next start
        // runs the binary it chose.
        super::systemd::notify("STOPPING=1");
        return Ok(());
    }
    Err(exec(&next))
}

/// Runs `trial.to` as a child until it is healthy (`Ok`), exits or runs out of
/// time (`Failed`, with why), or this process is asked to stop. The child is
/// stopped either way.
async fn run_trial(
    config: &crate::config::Config,
    trial: &Trial,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), TrialEnd> {
    use tokio::io::AsyncBufReadExt as _;
    let mark = healthy_mark(&config.node.state_dir);
    let _ = std::fs::remove_file(&mark);
    let stop = stop.wait_for(|stopped| *stopped);
    tokio::pin!(stop);
    let mut command = tokio::process::Command::new(&trial.to.path);
    crate::natsd::die_with_parent(&mut command);
    let mut child = command
        .args(std::env::args_os().skip(1))
        .env(TRIAL_ENV, "1")
        // The child is not the service's main process: its notifications would be
        // refused, and the watchdog is ours to pet meanwhile.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", trial.to.path.display()))
        .map_err(TrialEnd::Failed)?;
    // The child's log lines go on to ours; the last few explain a failure.
    let tail = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 3 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    let timeout = config.upgrade.health_timeout;
    let deadline = Instant::now() + timeout;
    let watchdog = super::systemd::watchdog_interval();
    let mut last_pet = Instant::now();
    let result = loop {
        if mark.exists() {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(TrialEnd::Failed(anyhow::anyhow!(
                "not healthy within {timeout:?}"
            )));
        }
        if watchdog.is_some_and(|every| last_pet.elapsed() >= every) {
            super::systemd::notify("WATCHDOG=1");
            last_pet = Instant::now();
        }
        tokio::select! {
            status = child.wait() => {
                // Give the stderr reader a moment to take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let said = tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join(" | ");
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                break Err(TrialEnd::Failed(anyhow::anyhow!("it stopped ({status}) before it was healthy{}", if said.is_empty() { String::new() } else { format!(": {said}") })));
            }
            _ = &mut stop => break Err(TrialEnd::Stopped),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    crate::natsd::stop_child(&mut child, CHILD_STOP).await;
    let _ = std::fs::remove_file(&mark);
    result
}

/// In a binary on trial: creates the healthy mark once the node sent a heartbeat
/// and runs at least as many agents as the node it replaces.
pub(super) async fn report_health(state: Arc<NodeState>, mut shutdown: Shutdown) {
    let expect = UpgradeState::load(&state.config.node.state_dir)
        .trial
        .map(|t| t.expect_agents)
        .unwrap_or(0);
    loop {
        let beat = state
            .heartbeats_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0;
        if beat && state.agents.counts().running >= expect {
            let mark = healthy_mark(&state.config.node.state_dir);
            if let Err(e) = std::fs::write(&mark, b"") {
                tracing::error!("cannot write {}: {e}", mark.display());
            }
            tracing::info!("on trial and healthy");
            let _ = shutdown.recv().await;
            return;
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Reports the last outcome as an event once (the node that starts after it).
pub(super) async fn report_outcome(state: &NodeState) {
    let state_dir = &state.config.node.state_dir;
    let mut upgrade = UpgradeState::load(state_dir);
    let Some(last) = upgrade.last.clone().filter(|_| !upgrade.reported) else {
        return;
    };
    let kind = match last.outcome.as_str() {
        "failed" => "upgrade_failed",
        "rolled_back" => "upgrade_rolled_back",
        "superseded" => "upgrade_superseded",
        _ => "upgrade_succeeded",
    };
    let message = format!(
        "edgeleaf {} → {}: {}{}",
        last.from,
        last.version,
        last.outcome,
        last.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    publish_event(
        &Telemetry::Outbox(state.outbox.clone()),
        &state.subjects,
        &state.config.node.id,
        kind,
        None,
        (last.outcome == "failed").then_some("upgrade_failed"),
        message,
    )
    .await;
    upgrade.reported = true;
    state.save_upgrade(&upgrade);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(version: &str, path: &Path) -> Binary {
        Binary {
            version: version.into(),
            path: path.to_owned(),
            digest: None,
        }
    }

    /// The installed binary, a staged upgrade accepted over it, and the state
    /// that says so.
    fn upgraded(dir: &Path) -> (Binary, Binary, UpgradeState) {
        let installed = binary("1.0.0", Path::new("/usr/bin/edgeleaf"));
        let staged = Binary {
            digest: Some("d11".into()),
            ..binary("1.1.0", &dir.join("edgeleaf-1.1.0"))
        };
        std::fs::write(&staged.path, b"").unwrap();
        let state = UpgradeState {
            current: Some(staged.clone()),
            previous: Some(installed.clone()),
            installed: Some(installed.clone()),
            ..Default::default()
        };
        (installed, staged, state)
    }

    #[test]
    fn the_installed_binary_hands_over_to_the_accepted_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let (installed, staged, mut state) = upgraded(dir.path());
        let before = state.clone();
        assert_eq!(
            state.on_start(&installed, SystemTime::now()),
            Start::Exec(staged.path.clone())
        );
        assert_eq!(state.on_start(&staged, SystemTime::now()), Start::Run);
        assert_eq!(state, before, "nothing to record");
    }

    #[test]
    fn a_package_upgrade_wins_over_the_staged_binary() {
        let dir = tempfile::tempdir().unwrap();
        let (installed, _, mut state) = upgraded(dir.path());
        let apt = binary("1.2.0", &installed.path);
        assert_eq!(state.on_start(&apt, SystemTime::now()), Start::Run);
        assert_eq!(state.current, None);
        assert_eq!(state.previous, None);
        assert_eq!(state.refused, ["d11"], "not downloaded again");
        let last = state.last.unwrap();
        assert_eq!(
            (
                last.outcome.as_str(),
                last.version.as_str(),
                last.from.as_str()
            ),
            ("superseded", "1.2.0", "1.1.0")
        );
    }

    #[test]
    fn a_missing_staged_binary_or_a_cut_short_trial_leaves_the_installed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (installed, staged, mut state) = upgraded(dir.path());
        std::fs::remove_file(&staged.path).unwrap();
        assert_eq!(state.on_start(&installed, SystemTime::now()), Start::Run);
        assert_eq!(state.current, None);

        let mut state = UpgradeState {
            trial: Some(Trial {
                to: Binary {
                    digest: Some("d1".into()),
                    ..binary("2.0.0", &dir.path().join("edgeleaf-2.0.0"))
                },
                from: installed.clone(),
                rollback: false,
                expect_agents: 1,
                started: "2026-12-04T08:00:00Z".into(),
                pid: 0,
            }),
            ..Default::default()
        };
        assert_eq!(state.on_start(&installed, SystemTime::now()), Start::Run);
        assert_eq!(state.trial, None);
        assert_eq!(state.refused, ["d1"]);
        assert_eq!(state.last.unwrap().outcome, "failed");
    }
}
