//! The daemon: its leaf server, its NATS connection, and the tasks that report and
//! answer for it. [`run`] supervises them and shuts them down in order.

pub mod agents;
mod control;
mod discovery;
mod forwarder;
mod heartbeat;
mod hub_link;
pub mod leaf;
pub mod reconcile;
mod services;
mod supervise;
pub use services::SERVICE_NAME;
pub mod systemd;
pub mod telemetry;
mod timer;
pub mod upgrade;

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::connect::{NatsTarget, Persistence};
use crate::natsd::ServerStatus;
use crate::protocol::{HubLink, LeafInfo, LinkState, NodeInfo, Subjects};
use crate::runtime::{AgentError, EngineOptions, Runtime};
use crate::shipping::secrets::NodeKey;
use crate::shutdown::ShutdownGroup;
use crate::store::outbox::{Outbox, OutboxOptions};
use crate::store::{Store, StoreOptions};
use agents::AgentPool;
use forwarder::{Carries, Forwarder};
use reconcile::Reconciler;
use telemetry::Telemetry;

/// What the node's tasks share.
pub(crate) struct NodeState {
    config: Config,
    subjects: Subjects,
    /// Wall-clock start, reported as is (boards without an RTC may say 1970).
    started_at: SystemTime,
    /// Monotonic start, for uptime that does not jump with the clock.
    started: Instant,
    /// Last probed reachability of the hub; written by the heartbeat task.
    hub_link: Mutex<HubLink>,
    /// The spawned leaf's pid and restart count, when the node runs one.
    leaf: Option<Arc<Mutex<ServerStatus>>>,
    agents: Arc<AgentPool>,
    /// Store-and-forward backlog, for heartbeats and `ctl.<node>.outbox`.
    outbox: Arc<Outbox>,
    /// Log lines waiting for the hub (`[logs]`), for heartbeats.
    log_store: Arc<Outbox>,
    /// Opens the secrets sealed to this node.
    node_key: Arc<NodeKey>,
    /// Requests to the control endpoints, for the services API.
    control_counters: services::ControlCounters,
    /// Heartbeats published by this process (a binary on trial is healthy after one).
    heartbeats_sent: std::sync::atomic::AtomicU64,
    /// Self-update state, for heartbeats.
    upgrade: Mutex<crate::protocol::UpgradeInfo>,
}

impl NodeState {
    fn hub_link(&self) -> HubLink {
        self.hub_link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records why the link is down; returns true when the reason is new. The
    /// reason stays until the link is up again.
    fn set_hub_link_reason(&self, reason: String) -> bool {
        let mut link = self.hub_link.lock().unwrap_or_else(|e| e.into_inner());
        if link.state != LinkState::Down || link.reason.as_ref() == Some(&reason) {
            return false;
        }
        link.reason = Some(reason);
        true
    }

    /// Records a probe result; returns the new state when it changed.
    fn set_hub_link(&self, state: LinkState) -> Option<HubLink> {
        let mut link = self.hub_link.lock().unwrap_or_else(|e| e.into_inner());
        if link.state == state {
            return None;
        }
        *link = HubLink {
            state,
            since: rfc3339(SystemTime::now()),
            reason: None,
        };
        Some(link.clone())
    }

    /// Saves the self-update state and shows it in the next heartbeat.
    fn save_upgrade(&self, state: &upgrade::UpgradeState) {
        if let Err(e) = state.save(&self.config.node.state_dir) {
            tracing::error!("cannot save the upgrade state: {e:#}");
        }
        *self.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = state.info();
    }

    fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn info(&self) -> NodeInfo {
        let c = &self.config;
        let leaf = self
            .leaf
            .as_ref()
            .map(|s| *s.lock().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default();
        NodeInfo {
            node_id: c.node.id.clone(),
            name: c.node.name.clone(),
            version: crate::version::version().to_owned(),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            tags: c.node.tags.clone(),
            started_at: rfc3339(self.started_at),
            uptime_s: self.uptime_s(),
            interval_s: c.heartbeat.interval.as_secs_f64(),
            hub_link: self.hub_link(),
            leaf: LeafInfo {
                url: crate::connect::redact_url(&c.nats_url()),
                spawned: self.leaf.is_some(),
                pid: leaf.pid,
                restarts: leaf.restarts,
            },
            wasm_compiler: self.agents.runtime().compiler().to_owned(),
            engine: self.agents.runtime().profile().clone(),
            agents: self.agents.counts(),
            compiled_cache: self.agents.cache_counters(),
            location: c.location().to_owned(),
            enc_key: Some(self.node_key.public()),
            upgrade: self
                .upgrade
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// RFC 3339 with seconds, UTC.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The prefix of the node's reply subjects: hub accounts and the spawned leaf's
/// local user keep others away from it. Its first token is the node's own
/// (`_INBOX_<id>`, not `_INBOX.<id>`): under `hub accounts` every node may answer
/// hub requests on `_INBOX.>`, which would let one node publish into another's
/// inbox if the two shared that first token.
pub fn inbox_prefix(node_id: &str) -> String {
    format!("_INBOX_{node_id}")
}

/// The node's connection settings, from its config. With a spawned leaf, the node
/// logs in to it as its own user (`logins`) and `[nats]` credentials are not used.
pub fn nats_target(config: &Config, logins: Option<&leaf::LeafLogins>) -> NatsTarget {
    let n = &config.nats;
    let target = NatsTarget {
        url: config.nats_url(),
        creds: n.creds.clone(),
        user: n.user.clone(),
        password: n.password.clone(),
        token: n.token.clone(),
        nkey: n.nkey.clone(),
        tls: n.tls.clone(),
        inbox_prefix: Some(inbox_prefix(&config.node.id)),
        subscription_capacity: n.subscription_capacity,
    };
    match logins {
        Some(logins) => NatsTarget {
            user: Some(crate::config::NODE_LEAF_USER.to_owned()),
            password: Some(logins.node_password.clone()),
            creds: None,
            token: None,
            nkey: None,
            ..target
        },
        None => target,
    }
}

/// `<state_dir>/node.json`: how to reach the node that runs on a state dir, for
/// commands that find its database locked (`edgeleaf outbox`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeFile {
    pub node_id: String,
    pub nats_url: String,
    pub prefix: String,
    pub pid: u32,
}

impl NodeFile {
    fn write(config: &Config) -> Result<()> {
        // Owner-only, and without a password: `edgeleaf outbox` takes credentials
        // from its own flags.
        let file = NodeFile {
            node_id: config.node.id.clone(),
            nats_url: crate::connect::redact_url(&config.nats_url()),
            prefix: config.prefix().to_owned(),
            pid: std::process::id(),
        };
        let path = config.node.state_dir.join("node.json");
        crate::natsd::write_private(&path, &serde_json::to_string_pretty(&file)?)
    }

    pub fn read(state_dir: &std::path::Path) -> Result<Self> {
        let path = state_dir.join("node.json");
        let text = std::fs::read(&path)
            .with_context(|| format!("the node is running but {} is unreadable", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// Creates the state directory owner-only (it will hold keys and agent data).
pub(crate) fn prepare_state_dir(config: &Config) -> Result<()> {
    private_dir(&config.node.state_dir, "node.state_dir")
}

/// Creates `dir` if needed and makes it 0700, refusing one that belongs to another
/// user: a state dir holds compiled code the node maps and runs as native code,
/// keys and credentials, so nobody else may be able to write it. `what` names the
/// setting or flag that chose it.
pub(crate) fn private_dir(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state dir {} ({what})", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read state dir {} ({what})", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        anyhow::bail!(
            "state dir {} ({what}) belongs to uid {}, not to this user (uid {me}): refusing it, \
             since its owner could plant compiled code that would run here; use a directory of your own",
            dir.display(),
            meta.uid()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict state dir {} to its owner", dir.display()))?;
    Ok(())
}

/// Starts the `[[agents]]` of the config. One that fails is reported and skipped;
/// the node and the other agents carry on.
async fn start_static_agents(pool: &AgentPool, config: &Config) {
    for agent in &config.agents {
        match std::fs::read(&agent.wasm) {
            Ok(wasm) => {
                let _ = pool.start(agent.spec(), &wasm).await;
            }
            Err(e) => {
                let e = AgentError::new(
                    "not_found",
                    format!("cannot read {}: {e}", agent.wasm.display()),
                );
                pool.record_failure(&agent.name, &e).await;
            }
        }
    }
}

/// Reports a supervised task's panic as a `task_panicked` event (through the
/// outbox: it reaches the hub once the forwarder runs again).
fn panic_event(
    state: Arc<NodeState>,
) -> impl FnMut(String) -> futures::future::BoxFuture<'static, ()> {
    move |message| {
        let state = state.clone();
        Box::pin(async move {
            agents::publish_event(
                &Telemetry::Outbox(state.outbox.clone()),
                &state.subjects,
                &state.config.node.id,
                "task_panicked",
                None,
                Some("panic"),
                message,
            )
            .await
        })
    }
}

/// Runs a node until `shutdown` resolves, then stops its tasks and its leaf server.
/// It does not follow `edgeleaf upgrade` (see [`run_upgradable`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_node(config, shutdown, false).await.map(|_| ())
}

/// Like [`run`], and follows `edgeleaf upgrade` announcements (unless `[upgrade]
/// enabled = false`): returns the binary to try when one asked the node to stop
/// for it ([`upgrade::try_binary`] goes on from there).
pub async fn run_upgradable(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<upgrade::Trial>> {
    run_node(config, shutdown, true).await
}

async fn run_node(
    config: Config,
    shutdown: impl Future<Output = ()>,
    upgrades: bool,
) -> Result<Option<upgrade::Trial>> {
    prepare_state_dir(&config)?;
    // The sled lock comes first: a second node on the same state dir must fail
    // before it touches the first one's leaf server.
    let open = || {
        Store::open(
            &config.node.state_dir,
            StoreOptions {
                cache_capacity: config.store.cache_capacity,
                flush_every: config.store.flush_every,
            },
        )
    };
    let mut store = open();
    // A binary on trial starts right after the node it replaces stopped; a task of
    // that one may let go of the database a moment late.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while store.is_err() && upgrade::on_trial() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store = open();
    }
    let store = store?;
    let incarnation = store.incarnation()?;
    let node_key = Arc::new(NodeKey::load_or_create(&config.node.state_dir)?);
    NodeFile::write(&config)?;
    let o = &config.outbox;
    let outbox = Arc::new(Outbox::open(
        &store,
        OutboxOptions {
            max_bytes: o.max_bytes,
            ttl: o.ttl,
            overflow: o.overflow,
            durability: o.durability,
        },
    )?);
    // Log lines: bounded, oldest dropped first, always written behind (a lost
    // line is not a lost result).
    let log_store = Arc::new(Outbox::open_named(
        &store,
        "logs",
        OutboxOptions {
            max_bytes: config.logs.max_bytes,
            ttl: config.logs.ttl,
            overflow: crate::config::Overflow::DropOldest,
            durability: crate::config::Durability::Batch,
        },
    )?);
    let runtime = Runtime::new(&EngineOptions {
        max_memory: config.limits.max_memory,
        pool_slots: config.limits.pool_slots,
        cache_dir: Some(config.node.state_dir.join("compiled")),
    })?;
    let logins = match config.leaf.spawn {
        true => Some(leaf::LeafLogins::load_or_create(&config)?),
        false => None,
    };
    let leaf = match &logins {
        Some(logins) => Some(
            leaf::start(&config, logins)
                .await
                .context("cannot start the leaf server")?,
        ),
        None => None,
    };
    let client = nats_target(&config, logins.as_ref())
        .connect(
            &format!("edgeleaf-node-{}", config.node.id),
            Persistence::Forever,
        )
        .await?;
    let subjects = Subjects::new(config.prefix());
    let agents = Arc::new(
        AgentPool::new(
            runtime,
            store.clone(),
            client.clone(),
            Telemetry::Outbox(outbox.clone()),
            subjects.clone(),
            &config.node.id,
            config.limits.clone(),
        )
        .with_devices(config.devices.clone())
        .with_log_store(log_store.clone()),
    );
    crate::host::log::NodeLogLayer::attach(
        log_store.clone(),
        subjects.log(&config.node.id, crate::protocol::NODE_LOG_AGENT),
        &config.node.id,
        config.logs.node_level.as_tracing(),
    );
    let forwarder = Forwarder {
        carries: Carries::Telemetry,
        events: Telemetry::Outbox(outbox.clone()),
        outbox: outbox.clone(),
        client: client.clone(),
        subjects: subjects.clone(),
        node_id: config.node.id.clone(),
        incarnation: incarnation.clone(),
        domain: config.leaf.domain.clone(),
        flush_interval: config.outbox.flush_interval,
    };
    let log_forwarder = Forwarder {
        carries: Carries::Logs,
        outbox: log_store.clone(),
        ..forwarder.clone()
    };
    let state = Arc::new(NodeState {
        subjects,
        agents: agents.clone(),
        outbox: outbox.clone(),
        log_store: log_store.clone(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        hub_link: Mutex::new(HubLink {
            state: LinkState::Down,
            since: rfc3339(SystemTime::now()),
            reason: None,
        }),
        leaf: leaf.as_ref().map(|l| l.status_handle()),
        node_key: node_key.clone(),
        control_counters: Default::default(),
        heartbeats_sent: Default::default(),
        upgrade: Mutex::new(upgrade::UpgradeState::load(&config.node.state_dir).info()),
        config,
    });
    tracing::info!(
        node_id = %state.config.node.id,
        %incarnation,
        url = %crate::connect::redact_url(&state.config.nats_url()),
        leaf_spawned = leaf.is_some(),
        "node running"
    );

    let group = ShutdownGroup::new();
    let tasks = [
        tokio::spawn(heartbeat::run(
            state.clone(),
            client.clone(),
            group.handle(),
        )),
        tokio::spawn(control::run(state.clone(), client.clone(), group.handle())),
        tokio::spawn(hub_link::run(state.clone(), client.clone(), group.handle())),
        tokio::spawn(services::run(state.clone(), client.clone(), group.handle())),
        tokio::spawn(forwarder::keep_flushed(
            vec![outbox.clone(), log_store.clone()],
            state.config.outbox.flush_interval,
            group.handle(),
        )),
        // Off: a task that only waits for shutdown.
        if state.config.discovery.enabled {
            tokio::spawn(discovery::run(
                state.clone(),
                client.clone(),
                group.handle(),
            ))
        } else {
            let mut handle = group.handle();
            tokio::spawn(async move { handle.recv().await })
        },
    ];
    // Both loops are started again if they panic: without them deployments or
    // results would stop while heartbeats went on saying all is well.
    let mut reconciler = Some(Reconciler::new(
        agents.clone(),
        store.clone(),
        client.clone(),
        node_key.clone(),
        &state.config,
    )?);
    let reconciling = tokio::spawn(supervise::supervise(
        "reconciler",
        group.handle(),
        {
            let (agents, store, client, state) =
                (agents.clone(), store.clone(), client.clone(), state.clone());
            move |shutdown| {
                let next = reconciler.take().map(Ok).unwrap_or_else(|| {
                    Reconciler::new(
                        agents.clone(),
                        store.clone(),
                        client.clone(),
                        node_key.clone(),
                        &state.config,
                    )
                });
                async move {
                    match next {
                        Ok(reconciler) => reconciler.run(shutdown).await,
                        Err(e) => tracing::error!("cannot start the reconciler again: {e:#}"),
                    }
                }
            }
        },
        panic_event(state.clone()),
    ));
    let forwarding = tokio::spawn(supervise::supervise(
        "forwarder",
        group.handle(),
        move |shutdown| forwarder.clone().run(shutdown),
        panic_event(state.clone()),
    ));
    let forwarding_logs = tokio::spawn(supervise::supervise(
        "log forwarder",
        group.handle(),
        move |shutdown| log_forwarder.clone().run(shutdown),
        panic_event(state.clone()),
    ));
    // Agents load while the node already reports and answers: compiling a large
    // module on a slow board can take seconds.
    let provisioning = tokio::spawn({
        let (agents, state) = (agents.clone(), state.clone());
        async move { start_static_agents(&agents, &state.config).await }
    });
    let watchdog = systemd::watchdog_interval()
        .map(|every| tokio::spawn(systemd::watchdog(state.clone(), every, group.handle())));
    // Self-update: a binary on trial says when it is healthy; any other follows
    // the announcements, and reports how the last upgrade went.
    let (plan_tx, mut plan_rx) = tokio::sync::mpsc::channel(1);
    let upgrading = if upgrade::on_trial() {
        Some(tokio::spawn(upgrade::report_health(
            state.clone(),
            group.handle(),
        )))
    } else if upgrades && state.config.upgrade.enabled {
        upgrade::report_outcome(&state).await;
        Some(tokio::spawn(upgrade::follow(
            state.clone(),
            client.clone(),
            plan_tx,
            group.handle(),
        )))
    } else {
        None
    };
    systemd::notify("READY=1");
    let trial = tokio::select! {
        _ = shutdown => None,
        Some(trial) = plan_rx.recv() => Some(trial),
        // A task that ends on its own is a bug or a lost subscription: stop
        // cleanly rather than run half a node; the service manager restarts us.
        _ = futures::future::select_all(tasks) => {
            tracing::error!("a node task ended unexpectedly; stopping");
            None
        }
    };
    match &trial {
        Some(t) => {
            tracing::info!(version = %t.to.version, "stopping to try edgeleaf {}", t.to.version)
        }
        None => systemd::notify("STOPPING=1"),
    }
    provisioning.abort();
    group.shutdown().await;
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    if let Some(upgrading) = upgrading {
        let _ = upgrading.await;
    }
    let _ = reconciling.await;
    let _ = forwarding.await;
    let _ = forwarding_logs.await;
    agents.stop_all().await;
    // Drain before the leaf stops, so the client does not see (and warn about) its
    // server going away.
    let _ = client.flush().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.drain()).await;
    drop(client);
    if let Some(leaf) = leaf {
        leaf.stop().await;
    }
    crate::host::log::NodeLogLayer::detach();
    // Events of the agents that just stopped included.
    Outbox::flush_all(&[&outbox, &log_store])?;
    store.flush()?;
    tracing::info!("node stopped");
    Ok(trial)
}
