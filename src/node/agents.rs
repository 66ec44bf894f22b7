//! The agents a node runs: loading them under the node's ceilings, feeding them the
//! messages of their trigger subjects (queue group `<prefix>.<agent>`, fleet-wide)
//! and of their direct subject `<prefix>.inv.<node>.<agent>`, replying, and
//! recording one result per invocation and an event per failure.
//!
//! Used by the node daemon and by `edgeleaf run-agent`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::{Client, HeaderMap, Message};
use base64::Engine as _;
use futures::StreamExt;
use serde::Serialize;

use super::telemetry::Telemetry;
use super::timer::{self, Tick, TimerState};
use crate::config::{DevicesSection, LimitsSection};
use crate::host::{
    Capabilities, fs,
    log::{AgentLog, LogSink},
    messaging::Publisher,
    net, serial,
};
use crate::protocol::{
    AgentCard, AgentCounts, AgentInfo, AgentSpec, CacheCounters, ERROR_HEADER, ErrorBody,
    EventRecord, LoadMetrics, ResultRecord, Subjects, Workload, WorkloadResult,
};
use crate::runtime::{Agent, AgentError, Invocation, Runtime};
use crate::store::Store;
use crate::store::agent_kv::AgentKv;

/// Room left in a message for its subject and headers (message id, sequence)
/// besides a result record.
const RECORD_MARGIN: usize = 8 * 1024;

/// Consecutive faults (traps, timeouts, …) after which an agent is backed off.
const FAULTS_BEFORE_BACKOFF: u32 = 5;
/// Longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Messages admitted into the node per instance an agent may run (see `serve`).
const DISPATCH_PER_INSTANCE: usize = 64;
/// Longest a stopping agent's invocations may take to finish, whatever their
/// deadline (an agent may wait minutes for a device): a node stops within
/// systemd's stop timeout, an undeploy does not hold up the reconciler.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Counters of one agent, shared by its invocations.
#[derive(Default)]
struct AgentStats {
    invocations: AtomicU64,
    failures: AtomicU64,
    /// Faults since the last success; drives the back-off.
    consecutive_faults: AtomicU32,
    /// While set and in the future, messages get `busy` without running.
    backoff_until: Mutex<Option<Instant>>,
    /// Messages turned away because the agent held `max_queued` messages or
    /// `max_pending_bytes` already.
    refused_busy: AtomicU64,
    /// The last [`RECENT`] invocations: duration in ms, and whether it was a fault.
    recent: Mutex<std::collections::VecDeque<(f64, bool)>>,
    /// Time spent in invocations, all told (ns).
    busy_nanos: AtomicU64,
    /// The last failure: `code: message`.
    last_error: Mutex<Option<String>>,
}

/// Invocations an agent's card summarises (health, median duration).
const RECENT: usize = 64;

impl AgentStats {
    fn backed_off(&self) -> bool {
        self.backoff_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t > Instant::now())
    }

    /// `backed_off`, `degraded` (a fault among the recent invocations), `healthy`.
    fn health(&self) -> &'static str {
        if self.backed_off() {
            return "backed_off";
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.iter().any(|(_, fault)| *fault) {
            "degraded"
        } else {
            "healthy"
        }
    }

    fn p50_ms(&self) -> Option<f64> {
        let mut ms: Vec<f64> = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.iter().map(|(ms, _)| *ms).collect()
        };
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        Some((ms[ms.len() / 2] * 1000.0).round() / 1000.0)
    }
}

struct Running {
    agent: Arc<Agent>,
    stats: Arc<AgentStats>,
    /// How workloads run it.
    dispatch: Dispatch,
    /// The deployment's version (0: static or `run-agent`).
    version: u64,
    /// The task that receives the agent's messages and owns its invocation tasks.
    serve: tokio::task::JoinHandle<()>,
    /// Tells `serve` to stop: unsubscribe, answer what waits with `agent_stopped`,
    /// let what runs finish within its deadline.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The agent's timer, when its spec has a schedule; aborting it stops the
    /// ticks (a run in progress completes).
    timer: Option<TimerTask>,
}

/// A running timer: its state (for `agents`) and its task.
type TimerTask = (Arc<TimerState>, tokio::task::JoinHandle<()>);

impl Running {
    /// Stops the agent; the handle ends once its last invocation and its timer run
    /// in progress have (within the agent's deadline).
    fn stop(self) -> tokio::task::JoinHandle<()> {
        let _ = self.stop.send(());
        let Some((state, timer)) = self.timer else {
            return self.serve;
        };
        // No more ticks; a run in progress finishes like an invocation in flight,
        // within the same grace, and is recorded before the agent counts as stopped.
        timer.abort();
        let (serve, agent) = (self.serve, self.agent);
        tokio::spawn(async move {
            let run = async {
                let _ = timer.await;
                let Some(run) = state.take_run() else { return };
                let (abort, grace) = (run.abort_handle(), stop_grace(&agent.spec));
                if tokio::time::timeout(grace, run).await.is_err() {
                    tracing::warn!(agent = %agent.spec.name, ?grace, "timer run still running after the agent stopped; cut");
                    abort.abort();
                }
            };
            let _ = tokio::join!(serve, run);
        })
    }
}

/// Everything an invocation task needs, cheap to clone.
#[derive(Clone)]
struct Dispatch {
    client: Client,
    telemetry: Telemetry,
    subjects: Subjects,
    node_id: String,
    agent: Arc<Agent>,
    stats: Arc<AgentStats>,
    total: Arc<AtomicU64>,
    /// Messages refused `busy` without running, across agents.
    total_refused: Arc<AtomicU64>,
    changed: tokio::sync::watch::Sender<u64>,
    /// `<prefix>.res.<node>.<agent>`, built once.
    result_subject: String,
    /// The largest result record the hub takes (the leaf's `max_payload` less a
    /// margin for headers), read once.
    record_limit: usize,
}

/// What a card says about the node it is on.
pub struct CardContext {
    pub location: String,
    pub tags: BTreeMap<String, String>,
    /// Seconds a card stays valid: three heartbeat intervals.
    pub ttl_s: u64,
}

/// One agent's endpoint as the NATS services API shows it.
pub struct EndpointStats {
    pub name: String,
    /// Its direct subject.
    pub subject: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    /// Invocations of the agent, however triggered, and failed ones.
    pub requests: u64,
    pub errors: u64,
    pub busy: Duration,
    pub last_error: Option<String>,
}

/// The header that carries a workload's task id into its invocation.
pub const TASK_ID_HEADER: &str = "edgeleaf-task-id";

/// The node's agents.
pub struct AgentPool {
    runtime: Arc<Runtime>,
    store: Store,
    client: Client,
    /// Where results and events go (the outbox, on a node).
    telemetry: Telemetry,
    subjects: Subjects,
    node_id: String,
    /// The node's ceilings; a spec above them is refused.
    limits: LimitsSection,
    running: Mutex<BTreeMap<String, Running>>,
    /// Agents that could not be loaded, with the reason.
    failed: Mutex<BTreeMap<String, String>>,
    /// Invocations across all agents, for heartbeats.
    total: Arc<AtomicU64>,
    /// Messages refused `busy` without running, across agents (heartbeats).
    total_refused: Arc<AtomicU64>,
    /// What agents may be granted here (`[devices]`).
    devices: DevicesSection,
    /// Where agents' log lines are kept (the node's log store); `None`: straight
    /// to NATS.
    log_store: Option<Arc<crate::store::outbox::Outbox>>,
    /// Bumped when an agent starts, stops or turns unhealthy: cards are announced
    /// again.
    changed: tokio::sync::watch::Sender<u64>,
}

impl AgentPool {
    pub fn new(
        runtime: Arc<Runtime>,
        store: Store,
        client: Client,
        telemetry: Telemetry,
        subjects: Subjects,
        node_id: &str,
        limits: LimitsSection,
    ) -> Self {
        Self {
            runtime,
            store,
            client,
            telemetry,
            subjects,
            node_id: node_id.to_owned(),
            limits,
            running: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            total: Arc::new(AtomicU64::new(0)),
            total_refused: Arc::new(AtomicU64::new(0)),
            devices: DevicesSection::default(),
            log_store: None,
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Keeps agents' log lines in `store` (forwarded to the hub) instead of
    /// publishing them straight to NATS.
    pub fn with_log_store(mut self, store: Arc<crate::store::outbox::Outbox>) -> Self {
        self.log_store = Some(store);
        self
    }

    /// Sets the ceiling of directory grants (default: nothing may be granted).
    pub fn with_devices(mut self, devices: DevicesSection) -> Self {
        self.devices = devices;
        self
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Checks a spec against the node's rules and ceilings.
    fn check(&self, spec: &AgentSpec) -> Result<(), AgentError> {
        spec.check(self.subjects.prefix())
            .map_err(|e| AgentError::new(e.code, e.message))?;
        let l = &spec.limits;
        let n = &self.limits;
        // `what` is the spec's limit; the node's ceiling is `[limits] max_<what>`.
        let over = |what: &str, got: String, max: String| {
            let key = what.strip_prefix("max_").unwrap_or(what);
            Err(AgentError::new(
                "invalid_spec",
                format!(
                    "agent {}: {what} {got} is above this node's maximum of {max} \
                     ([limits] max_{key})",
                    spec.name
                ),
            ))
        };
        if l.memory > n.max_memory {
            return over("memory", l.memory.to_string(), n.max_memory.to_string());
        }
        if Duration::from_millis(l.timeout_ms) > n.max_timeout {
            return over(
                "timeout",
                format!("{}ms", l.timeout_ms),
                format!("{:?}", n.max_timeout),
            );
        }
        if l.max_concurrency > n.max_concurrency {
            return over(
                "max_concurrency",
                l.max_concurrency.to_string(),
                n.max_concurrency.to_string(),
            );
        }
        if l.kv_quota > n.max_kv_quota {
            return over(
                "kv_quota",
                l.kv_quota.to_string(),
                n.max_kv_quota.to_string(),
            );
        }
        if l.max_output > n.max_output {
            return over(
                "max_output",
                l.max_output.to_string(),
                n.max_output.to_string(),
            );
        }
        if let (Some(max), fuel) = (n.max_fuel, l.fuel)
            && fuel.is_none_or(|f| f > max)
        {
            return over(
                "fuel",
                fuel.map_or("unlimited".to_owned(), |f| f.to_string()),
                max.to_string(),
            );
        }
        if l.memory == 0 || l.timeout_ms == 0 || l.max_concurrency == 0 {
            return Err(AgentError::new(
                "invalid_spec",
                format!(
                    "agent {}: memory, timeout and max_concurrency must be above 0",
                    spec.name
                ),
            ));
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.contains_key(&spec.name) && running.len() >= n.max_agents as usize {
            return Err(AgentError::new(
                "invalid_spec",
                format!("this node runs its maximum of {} agents", n.max_agents),
            ));
        }
        // The kv quotas of the others (an upgrade replaces its own), plus this one.
        let others: u64 = running
            .iter()
            .filter(|(name, _)| **name != spec.name)
            .map(|(_, r)| r.agent.spec.limits.kv_quota)
            .fold(0, u64::saturating_add);
        if others.saturating_add(l.kv_quota) > n.kv_budget {
            return Err(AgentError::new(
                "invalid_spec",
                format!(
                    "agent {}: kv_quota {} with the {others} bytes of the running agents is \
                     above this node's kv_budget of {}",
                    spec.name, l.kv_quota, n.kv_budget
                ),
            ));
        }
        Ok(())
    }

    /// Loads an agent and starts serving it. An agent of the same name keeps
    /// serving until the new one has compiled and instantiated; then it is
    /// replaced (its in-flight invocations complete). On failure nothing running
    /// is touched, and the failure is recorded and reported as an event.
    pub async fn start(&self, spec: AgentSpec, wasm: &[u8]) -> Result<Arc<Agent>, AgentError> {
        self.start_version(spec, wasm, 0).await
    }

    /// [`Self::start`] for version `version` of a deployment (shown on its card).
    pub async fn start_version(
        &self,
        spec: AgentSpec,
        wasm: &[u8],
        version: u64,
    ) -> Result<Arc<Agent>, AgentError> {
        let name = spec.name.clone();
        let result = self.load(spec, wasm, version).await;
        match &result {
            Ok(agent) => {
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
                self.event(
                    "agent_started",
                    Some(&name),
                    None,
                    format!(
                        "agent {name} started ({}, sha256 {}, compiled code {})",
                        agent.kind.as_str(),
                        agent.digest,
                        if agent.cache_hit {
                            "from cache"
                        } else {
                            "compiled"
                        }
                    ),
                )
                .await;
            }
            Err(e) => self.record_failure(&name, e).await,
        }
        result
    }

    /// Whether `name` runs this version of this module already (a reconciler
    /// started again after a panic finds its agents running).
    pub fn runs(&self, name: &str, version: u64, digest: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_some_and(|r| r.version == version && r.agent.digest == digest)
    }

    /// Records that an agent could not be started (unless an older version of it
    /// keeps running) and reports it as an event.
    pub async fn record_failure(&self, name: &str, e: &AgentError) {
        tracing::warn!(agent = %name, "agent not started: {e}");
        if !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
        {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_owned(), e.to_string());
        }
        self.event("agent_failed", Some(name), Some(e.code), e.message.clone())
            .await;
    }

    /// The compiled-code cache counters.
    pub fn cache_counters(&self) -> CacheCounters {
        self.runtime
            .cache()
            .map(|c| CacheCounters {
                hits: c.stats.hits.load(Relaxed),
                misses: c.stats.misses.load(Relaxed),
                rejected: c.stats.rejected.load(Relaxed),
                precompiled: c.stats.precompiled.load(Relaxed),
            })
            .unwrap_or_default()
    }

    async fn load(
        &self,
        spec: AgentSpec,
        wasm: &[u8],
        version: u64,
    ) -> Result<Arc<Agent>, AgentError> {
        self.check(&spec)?;
        if wasm.len() as u64 > self.limits.max_module_size {
            return Err(AgentError::invalid_module(format!(
                "module of {} bytes is above this node's maximum of {} bytes",
                wasm.len(),
                self.limits.max_module_size
            )));
        }
        let name = spec.name.clone();
        let dirs = fs::resolve(&name, &spec.read, &spec.write, &self.devices)?;
        let connect = net::resolve(&name, &spec.connect, &self.devices.connect)?.into();
        let serial_ports = serial::resolve(&name, &spec.serial, &self.devices.serial)?;
        let kv = AgentKv::open(&self.store, &name, spec.limits.kv_quota)
            .map_err(|e| AgentError::new("store", format!("cannot open the agent's kv: {e}")))?;
        let caps = Arc::new(Capabilities {
            kv,
            messaging: Publisher::new(Some(self.client.clone()), spec.allow_publish.clone(), &name),
            log: AgentLog::new(
                Some(match &self.log_store {
                    Some(store) => LogSink::Store(store.clone()),
                    None => LogSink::Direct(self.client.clone()),
                }),
                self.subjects.log(&self.node_id, &name),
                &self.node_id,
                &name,
            ),
            config: spec.config.clone(),
            dirs,
            connect,
            serial: serial_ports,
        });
        let agent = Arc::new(Agent::load(self.runtime.clone(), spec, wasm, caps).await?);
        let stats = Arc::new(AgentStats::default());
        let dispatch = Dispatch {
            client: self.client.clone(),
            telemetry: self.telemetry.clone(),
            subjects: self.subjects.clone(),
            node_id: self.node_id.clone(),
            agent: agent.clone(),
            stats: stats.clone(),
            total: self.total.clone(),
            total_refused: self.total_refused.clone(),
            changed: self.changed.clone(),
            result_subject: self.subjects.result(&self.node_id, &name),
            record_limit: record_limit(&self.client),
        };
        let subscriptions = self.subscribe(&agent).await?;
        let timer = self.start_timer(&dispatch)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serve = tokio::spawn(serve(
            subscriptions,
            dispatch.clone(),
            Room {
                max_bytes: self.limits.max_pending_bytes,
                max_queued: self.limits.max_queued.max(1) as usize,
            },
            stopped,
        ));
        let old = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.clone(),
                Running {
                    agent: agent.clone(),
                    stats,
                    dispatch,
                    version,
                    serve,
                    stop,
                    timer,
                },
            );
        if let Some(old) = old {
            tracing::info!(agent = %name, old = %old.agent.digest, new = %agent.digest, "agent replaced");
            // The new version serves already; the old one finishes what it runs.
            drop(old.stop());
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(agent)
    }

    /// Starts the agent's timer, if its spec has a schedule.
    fn start_timer(&self, dispatch: &Dispatch) -> Result<Option<TimerTask>, AgentError> {
        let spec = &dispatch.agent.spec;
        let Some(state) = TimerState::new(
            &spec.schedule,
            spec.timezone.as_deref(),
            spec.jitter.as_deref(),
        )
        .map_err(|e| AgentError::new("invalid_spec", format!("agent {}: {e}", spec.name)))?
        else {
            return Ok(None);
        };
        let state = Arc::new(state);
        let d = dispatch.clone();
        let task = tokio::spawn(timer::run(
            spec.name.clone(),
            format!("{}.{}", self.node_id, spec.name),
            state.clone(),
            self.store.clone(),
            move |tick| tokio::spawn(d.clone().run_tick(tick)),
        ));
        Ok(Some((state, task)))
    }

    async fn subscribe(&self, agent: &Agent) -> Result<Vec<async_nats::Subscriber>, AgentError> {
        let name = &agent.spec.name;
        let group = self.subjects.queue_group(name);
        let mut subs = Vec::new();
        for trigger in &agent.spec.triggers {
            let sub = self
                .client
                .queue_subscribe(trigger.clone(), group.clone())
                .await
                .map_err(|e| {
                    AgentError::new("nats", format!("cannot subscribe to {trigger}: {e}"))
                })?;
            subs.push(sub);
        }
        let direct = self.subjects.invoke(&self.node_id, name);
        let sub =
            self.client.subscribe(direct.clone()).await.map_err(|e| {
                AgentError::new("nats", format!("cannot subscribe to {direct}: {e}"))
            })?;
        subs.push(sub);
        Ok(subs)
    }

    /// Stops serving an agent. Returns once its invocations in flight have
    /// completed (or were cut at their deadline); messages that waited for an
    /// instance are answered `agent_stopped`.
    pub async fn stop(&self, name: &str) -> bool {
        let removed = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        match removed {
            Some(r) => {
                let _ = r.stop().await;
                self.changed.send_modify(|n| *n += 1);
                self.event(
                    "agent_stopped",
                    Some(name),
                    None,
                    format!("agent {name} stopped"),
                )
                .await;
                true
            }
            None => false,
        }
    }

    /// Stops every agent (node shutdown).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        // At once: each waits for its agent's invocations in flight.
        futures::future::join_all(names.iter().map(|name| self.stop(name))).await;
    }

    pub fn counts(&self) -> AgentCounts {
        AgentCounts {
            running: self.running.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            failed: self.failed.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            refused_busy: self.total_refused.load(Relaxed),
            slow_consumer_dropped: crate::connect::slow_consumer_drops(),
            node_log_dropped: crate::host::log::NodeLogLayer::dropped(),
        }
    }

    pub fn invocations(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Changes when an agent starts, stops or turns unhealthy.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The cards of the running agents (those with `capability` only, if given).
    pub fn cards(&self, node: &CardContext, capability: Option<&str>) -> Vec<AgentCard> {
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| capability.is_none_or(|c| r.agent.spec.capabilities.iter().any(|x| x == c)))
            .map(|r| {
                let spec = &r.agent.spec;
                AgentCard {
                    id: format!("{}.{}", self.node_id, spec.name),
                    name: spec.name.clone(),
                    agent_type: spec.kind_name().to_owned(),
                    capabilities: spec.capabilities.clone(),
                    endpoint: self.subjects.invoke(&self.node_id, &spec.name),
                    node: self.node_id.clone(),
                    location: node.location.clone(),
                    tags: node.tags.clone(),
                    version: r.version,
                    digest: r.agent.digest.clone(),
                    health_status: r.stats.health().to_owned(),
                    load_metrics: LoadMetrics {
                        in_flight: r.agent.in_flight(),
                        max_concurrency: spec.limits.max_concurrency,
                        invocations: r.stats.invocations.load(Relaxed),
                        failures: r.stats.failures.load(Relaxed),
                        p50_ms: r.stats.p50_ms(),
                    },
                    ttl: node.ttl_s,
                    at: at.clone(),
                }
            })
            .collect()
    }

    /// Runs a workload on the agent with its capability that is healthy and has
    /// the most free instances (or on the agent it names), and says what happened.
    pub async fn run_workload(&self, subject: String, w: &Workload) -> WorkloadResult {
        let started = Instant::now();
        let mut result = WorkloadResult {
            task_id: w.task_id.clone(),
            node: self.node_id.clone(),
            ..Default::default()
        };
        let fail = |mut result: WorkloadResult, code: &str, message: String| {
            result.error = Some(ErrorBody::new(code, message));
            result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            result
        };
        let payload = match (&w.payload, &w.payload_b64) {
            (Some(_), Some(_)) => {
                return fail(
                    result,
                    "invalid_request",
                    "give payload or payload_b64, not both".into(),
                );
            }
            (Some(text), None) => bytes::Bytes::from(text.clone()),
            (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => bytes.into(),
                Err(e) => {
                    return fail(
                        result,
                        "invalid_request",
                        format!("payload_b64 is not base64: {e}"),
                    );
                }
            },
            (None, None) => bytes::Bytes::new(),
        };
        let Some(dispatch) = self.pick(&w.capability, w.agent.as_deref()) else {
            let which = match &w.agent {
                Some(agent) => format!("agent {agent} with capability {}", w.capability),
                None => format!("agent with capability {}", w.capability),
            };
            return fail(
                result,
                "no_agent",
                format!("node {} runs no healthy {which}", self.node_id),
            );
        };
        result.agent = Some(dispatch.agent.spec.name.clone());
        let inv = Invocation {
            subject,
            payload,
            headers: vec![(TASK_ID_HEADER.to_owned(), w.task_id.clone())],
            reply_expected: true,
            deadline: w.timeout_ms.map(Duration::from_millis),
        };
        match dispatch.invoke_and_record(inv, Some(&w.task_id)).await {
            Ok(output) => {
                result.ok = true;
                match String::from_utf8(output) {
                    Ok(text) => result.output = Some(text),
                    Err(e) => {
                        result.output_b64 =
                            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
                    }
                }
                result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                result
            }
            Err(e) => fail(result, e.code, e.message),
        }
    }

    /// Per running agent, what the NATS services API reports of its endpoint.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| EndpointStats {
                name: r.agent.spec.name.clone(),
                subject: self.subjects.invoke(&self.node_id, &r.agent.spec.name),
                agent_type: r.agent.spec.kind_name().to_owned(),
                capabilities: r.agent.spec.capabilities.clone(),
                requests: r.stats.invocations.load(Relaxed),
                errors: r.stats.failures.load(Relaxed),
                busy: Duration::from_nanos(r.stats.busy_nanos.load(Relaxed)),
                last_error: r
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect()
    }

    /// The running agent for a workload: with `capability` (and named `agent`, if
    /// given), not backed off; healthy ones first, then the most free instances.
    fn pick(&self, capability: &str, agent: Option<&str>) -> Option<Dispatch> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values()
            .filter(|r| agent.is_none_or(|a| r.agent.spec.name == a))
            .filter(|r| r.agent.spec.capabilities.iter().any(|c| c == capability))
            .filter(|r| !r.stats.backed_off())
            .max_by_key(|r| {
                let free = r.agent.spec.limits.max_concurrency.max(1) as i64
                    - i64::from(r.agent.in_flight());
                (r.stats.health() == "healthy", free)
            })
            .map(|r| r.dispatch.clone())
    }

    /// One row per agent, running or failed, by name.
    pub fn infos(&self) -> Vec<AgentInfo> {
        let mut rows: Vec<AgentInfo> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| {
                let backoff = r.stats.backed_off();
                AgentInfo {
                    name: r.agent.spec.name.clone(),
                    state: if backoff { "backoff" } else { "running" }.to_owned(),
                    kind: Some(r.agent.kind.as_str().to_owned()),
                    digest: Some(r.agent.digest.clone()),
                    triggers: r.agent.spec.triggers.clone(),
                    invocations: r.stats.invocations.load(Relaxed),
                    failures: r.stats.failures.load(Relaxed),
                    refused_busy: r.stats.refused_busy.load(Relaxed),
                    log_dropped: r.agent.log_dropped(),
                    schedule: r.agent.spec.schedule.clone(),
                    next_run: r.timer.as_ref().and_then(|(t, _)| t.next_run()),
                    last_run: r.timer.as_ref().and_then(|(t, _)| t.last_run()),
                    skipped_ticks: r.timer.as_ref().map_or(0, |(t, _)| t.skipped.load(Relaxed)),
                    read: r.agent.spec.read.clone(),
                    write: r.agent.spec.write.clone(),
                    connect: r.agent.spec.connect.clone(),
                    serial: r.agent.spec.serial.clone(),
                    capabilities: r.agent.spec.capabilities.clone(),
                    agent_type: r.agent.spec.agent_type.clone(),
                    compiled_from_cache: Some(r.agent.cache_hit),
                    instances: r.agent.spec.instances,
                    warm_started: r.agent.warm_started(),
                    error: None,
                }
            })
            .collect();
        rows.extend(
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(name, error)| AgentInfo {
                    name: name.clone(),
                    state: "failed".to_owned(),
                    error: Some(error.clone()),
                    ..Default::default()
                }),
        );
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    async fn event(&self, kind: &str, agent: Option<&str>, code: Option<&str>, message: String) {
        publish_event(
            &self.telemetry,
            &self.subjects,
            &self.node_id,
            kind,
            agent,
            code,
            message,
        )
        .await;
    }
}

/// Receives the agent's messages and runs each in its own task (the agent's
/// semaphore bounds how many run at once).
///
/// At most [`DISPATCH_PER_INSTANCE`] × max_concurrency messages have a task at once
/// (running, or waiting up to `QUEUE_WAIT` for an instance): a burst does not become
/// an unbounded number of tasks (measured: 100k at once took 290 MiB). The rest wait
/// in this loop's own queue of at most `max_queued` messages, so the loop never stops
/// reading: the client's subscription buffer, which drops what overflows it with
/// no more than a log line, stays empty.
///
/// Beyond the queue, or beyond `max_pending_bytes` of messages held (measured: 300
/// messages of 0.9 MB took the node from 67 to 181 MiB), a message is refused with
/// `busy` at once and counted (`refused_busy` in `agents` and heartbeats): a burst
/// loses nothing silently.
///
/// Its invocation tasks are its own: when told to stop (or when its subscriptions
/// end) it unsubscribes, answers every queued message `agent_stopped`, and waits for
/// what runs to finish, at most the agent's deadline and a second (and never more
/// than [`STOP_GRACE`]), before it cuts the rest. Nothing of an agent outlives its
/// `serve`.
async fn serve(
    subscriptions: Vec<async_nats::Subscriber>,
    dispatch: Dispatch,
    room: Room,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = dispatch.agent.spec.limits.max_concurrency.max(1) as usize * DISPATCH_PER_INSTANCE;
    let slots = Arc::new(tokio::sync::Semaphore::new(slots));
    let pending = Arc::new(AtomicU64::new(0));
    let dispatch = Arc::new(dispatch);
    let mut queue = std::collections::VecDeque::new();
    let mut messages = futures::stream::select_all(subscriptions);
    let mut tasks = tokio::task::JoinSet::new();
    let run = |tasks: &mut tokio::task::JoinSet<()>,
               msg: Message,
               slot: tokio::sync::OwnedSemaphorePermit| {
        let (d, pending) = (dispatch.clone(), pending.clone());
        let size = msg.payload.len() as u64;
        tasks.spawn(async move {
            d.handle(msg).await;
            pending.fetch_sub(size, Relaxed);
            drop(slot);
        });
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            slot = slots.clone().acquire_owned(), if !queue.is_empty() => {
                let (Ok(slot), Some(msg)) = (slot, queue.pop_front()) else {
                    break;
                };
                run(&mut tasks, msg, slot);
            }
            msg = messages.next() => {
                let Some(msg) = msg else { break };
                let size = msg.payload.len() as u64;
                if queue.len() >= room.max_queued {
                    let why = format!("{} messages wait for an instance already (limits.max_queued)", room.max_queued);
                    dispatch.refuse_busy(msg, &why).await;
                    continue;
                }
                if pending.load(Relaxed).saturating_add(size) > room.max_bytes {
                    let why = format!("it holds its maximum of {} bytes of messages (limits.max_pending_bytes)", room.max_bytes);
                    dispatch.refuse_busy(msg, &why).await;
                    continue;
                }
                pending.fetch_add(size, Relaxed);
                match slots.clone().try_acquire_owned() {
                    Ok(slot) if queue.is_empty() => run(&mut tasks, msg, slot),
                    _ => queue.push_back(msg),
                }
            }
        }
    }
    // Messages waiting for an instance are answered `agent_stopped` at once.
    dispatch.agent.close();
    // Unsubscribe first: what the server still has for the queue group goes to the
    // agent's other instances in the fleet, not to this stopping one. What was
    // delivered already, and what waited for an instance, is answered.
    for sub in messages.iter_mut() {
        let _ = sub.unsubscribe().await;
    }
    for msg in queue.drain(..) {
        dispatch.refuse_stopped(msg).await;
    }
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), messages.next()).await
    {
        dispatch.refuse_stopped(msg).await;
    }
    drop(messages);
    let name = dispatch.agent.spec.name.clone();
    let grace = stop_grace(&dispatch.agent.spec);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(agent = %name, left = tasks.len(), ?grace, "invocations still running after the agent stopped; cut");
        tasks.shutdown().await;
    }
}

/// How long a stopping agent's invocations (and timer run) may take to finish:
/// their deadline and a second, never more than [`STOP_GRACE`].
fn stop_grace(spec: &AgentSpec) -> Duration {
    (Duration::from_millis(spec.limits.timeout_ms) + Duration::from_secs(1)).min(STOP_GRACE)
}

/// How much of an agent's traffic the node holds before it says `busy`.
#[derive(Debug, Clone, Copy)]
struct Room {
    /// `[limits] max_pending_bytes`.
    max_bytes: u64,
    /// `[limits] max_queued`.
    max_queued: usize,
}

impl Dispatch {
    /// Runs one invocation (unless the agent is backed off), counts it and
    /// records its result.
    async fn invoke_and_record(
        &self,
        inv: Invocation,
        task_id: Option<&str>,
    ) -> Result<Vec<u8>, AgentError> {
        let started = Instant::now();
        let at = SystemTime::now();
        let subject = inv.subject.clone();
        let outcome = match self.backed_off() {
            Some(e) => Err(e),
            None => self.agent.invoke(inv).await,
        };
        self.total.fetch_add(1, Relaxed);
        self.stats.invocations.fetch_add(1, Relaxed);
        let took = started.elapsed();
        self.account(&outcome, took);
        self.record(subject, at, took, &outcome, task_id).await;
        outcome
    }

    /// One timer run: an invocation on `<prefix>.timer.<node>.<agent>` whose
    /// payload says which tick it is; nobody waits for a reply, the result record
    /// is what remains.
    async fn run_tick(self, tick: Tick) {
        let payload = serde_json::json!({
            "scheduled_at": timer::rfc3339(tick.scheduled_at),
            "fired_at": timer::rfc3339(tick.fired_at),
            "tick": tick.tick,
        });
        let inv = Invocation {
            subject: self.subjects.timer(&self.node_id, &self.agent.spec.name),
            payload: payload.to_string().into(),
            headers: Vec::new(),
            reply_expected: false,
            deadline: None,
        };
        let _ = self.invoke_and_record(inv, None).await;
    }

    async fn handle(&self, msg: Message) {
        let subject = msg.subject.to_string();
        let headers = msg
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let inv = Invocation {
            subject,
            payload: msg.payload.clone(),
            headers,
            reply_expected: msg.reply.is_some(),
            deadline: None,
        };
        // Recorded before the reply: with `sync` durability, a requester never gets
        // a reply whose result a power cut could still lose.
        let outcome = self.invoke_and_record(inv, None).await;
        if let Some(reply) = msg.reply.clone() {
            self.reply(reply, &outcome).await;
        }
    }

    /// Sends an outcome as the reply: the output, or the error's message with its
    /// code in the `edgeleaf-error` header.
    async fn reply(&self, reply: async_nats::Subject, outcome: &Result<Vec<u8>, AgentError>) {
        let sent = match outcome {
            Ok(output) => self.client.publish(reply, output.clone().into()).await,
            Err(e) => {
                let mut headers = HeaderMap::new();
                headers.insert(ERROR_HEADER, e.code);
                self.client
                    .publish_with_headers(reply, headers, e.message.clone().into())
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(agent = %self.agent.spec.name, "reply not sent: {e}");
        }
    }

    /// Turns a message away because the agent holds too many messages or bytes
    /// already (`why` says which): a `busy` reply when one is expected, a count
    /// either way.
    /// Answers a message that waited in the queue when its agent stopped.
    async fn refuse_stopped(&self, msg: Message) {
        let Some(reply) = msg.reply else { return };
        let stopped = AgentError::new(
            "agent_stopped",
            format!(
                "agent {} stopped before it ran this message",
                self.agent.spec.name
            ),
        );
        self.reply(reply, &Err(stopped)).await;
    }

    async fn refuse_busy(&self, msg: Message, why: &str) {
        self.stats.refused_busy.fetch_add(1, Relaxed);
        self.total_refused.fetch_add(1, Relaxed);
        let Some(reply) = msg.reply else { return };
        let busy = AgentError::new(
            "busy",
            format!("agent {}: {why}; try again", self.agent.spec.name),
        );
        self.reply(reply, &Err(busy)).await;
    }

    /// `Some(busy)` while the agent is backed off.
    fn backed_off(&self) -> Option<AgentError> {
        let until = *self
            .stats
            .backoff_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let left = until?.checked_duration_since(Instant::now())?;
        Some(AgentError::new(
            "busy",
            format!(
                "agent {} is backed off for {:.1}s after {} consecutive failures",
                self.agent.spec.name,
                left.as_secs_f64(),
                self.stats.consecutive_faults.load(Relaxed)
            ),
        ))
    }

    /// Counts failures and backs the agent off after repeated faults.
    fn account(&self, outcome: &Result<Vec<u8>, AgentError>, took: Duration) {
        let fault = outcome.as_ref().is_err_and(AgentError::is_fault);
        let newly_degraded = {
            let mut recent = self.stats.recent.lock().unwrap_or_else(|e| e.into_inner());
            let was_degraded = recent.iter().any(|(_, f)| *f);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back((took.as_secs_f64() * 1000.0, fault));
            fault && !was_degraded
        };
        if newly_degraded {
            self.changed.send_modify(|n| *n += 1);
        }
        self.stats
            .busy_nanos
            .fetch_add(took.as_nanos() as u64, Relaxed);
        match outcome {
            Ok(_) => self.stats.consecutive_faults.store(0, Relaxed),
            Err(e) => {
                self.stats.failures.fetch_add(1, Relaxed);
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                if e.is_fault() {
                    let n = self.stats.consecutive_faults.fetch_add(1, Relaxed) + 1;
                    if n >= FAULTS_BEFORE_BACKOFF {
                        let exp = (n - FAULTS_BEFORE_BACKOFF).min(6);
                        let pause = Duration::from_secs(1 << exp).min(MAX_BACKOFF);
                        *self
                            .stats
                            .backoff_until
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + pause);
                        tracing::warn!(agent = %self.agent.spec.name, faults = n, ?pause, "agent backed off");
                        self.changed.send_modify(|n| *n += 1);
                    }
                }
            }
        }
    }

    /// One result record per invocation; an event for each fault.
    async fn record(
        &self,
        subject: String,
        at: SystemTime,
        took: Duration,
        outcome: &Result<Vec<u8>, AgentError>,
        task_id: Option<&str>,
    ) {
        let name = &self.agent.spec.name;
        let (output, output_base64, output_size, error) = match outcome {
            Ok(out) => match std::str::from_utf8(out) {
                Ok(text) => (Some(text.to_owned()), None, out.len(), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(out)),
                    out.len(),
                    None,
                ),
            },
            Err(e) => (None, None, 0, Some(e.body())),
        };
        let record = ResultRecord {
            node_id: self.node_id.clone(),
            agent: name.clone(),
            subject,
            at: humantime::format_rfc3339_millis(at).to_string(),
            duration_us: took.as_micros() as u64,
            ok: outcome.is_ok(),
            output_size: output_size as u64,
            output,
            output_base64,
            error,
            output_truncated: false,
            task_id: task_id.map(str::to_owned),
        };
        self.telemetry
            .emit(
                self.result_subject.clone(),
                record.to_capped_json(self.record_limit),
            )
            .await;
        if let Err(e) = outcome
            && e.is_fault()
        {
            publish_event(
                &self.telemetry,
                &self.subjects,
                &self.node_id,
                "invocation_failed",
                Some(name),
                Some(e.code),
                e.message.clone(),
            )
            .await;
        }
    }
}

/// A result record's largest size: under the server's message size, or the hub
/// refuses the record (and, before, every record queued behind it).
fn record_limit(client: &Client) -> usize {
    let max_payload = match client.server_info().max_payload {
        0 => 1 << 20,
        n => n,
    };
    max_payload.saturating_sub(RECORD_MARGIN).max(RECORD_MARGIN)
}

pub(crate) async fn publish_event(
    telemetry: &Telemetry,
    subjects: &Subjects,
    node_id: &str,
    kind: &str,
    agent: Option<&str>,
    code: Option<&str>,
    message: String,
) {
    let record = EventRecord {
        node_id: node_id.to_owned(),
        kind: kind.to_owned(),
        agent: agent.map(str::to_owned),
        at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        code: code.map(str::to_owned),
        message,
    };
    emit_json(telemetry, subjects.event(node_id, kind), &record).await;
}

async fn emit_json<T: Serialize>(telemetry: &Telemetry, subject: String, value: &T) {
    match serde_json::to_vec(value) {
        Ok(body) => telemetry.emit(subject, body).await,
        Err(e) => tracing::error!(%subject, "not serializable: {e}"),
    }
}
