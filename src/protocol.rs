//! Subjects and wire types shared by the node and the CLI.
//!
//! This module imports nothing else of the crate: it is the one truth about what
//! travels over NATS, so the daemon and the operator CLI cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::runtime::precompiled::EngineProfile;

/// Version of the subject layout and payloads below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default subject prefix (`<prefix>.hb.<node>` …).
pub const DEFAULT_PREFIX: &str = "edgeleaf";

/// Default JetStream domain of the hub.
pub const DEFAULT_HUB_DOMAIN: &str = "hub";

/// Hub stream that captures results and events.
pub const TELEMETRY_STREAM: &str = "EDGELEAF_TELEMETRY";
/// Hub stream that keeps agent log lines and nodes' own warnings, from every
/// node's log store.
pub const LOGS_STREAM: &str = "EDGELEAF_LOGS";
/// The agent name under which a node's own log lines go (`<prefix>.log.<node>._node`).
pub const NODE_LOG_AGENT: &str = "_node";
/// Hub stream that keeps the last few heartbeats of each node.
pub const HEARTBEAT_STREAM: &str = "EDGELEAF_HEARTBEATS";
/// Hub object store holding agent modules by digest.
pub const MODULES_BUCKET: &str = "EDGELEAF_MODULES";
/// Hub KV bucket with the desired state (signed deployment specs).
pub const DEPLOYMENTS_BUCKET: &str = "EDGELEAF_DEPLOYMENTS";
/// Hub KV bucket with what each node runs.
pub const STATUS_BUCKET: &str = "EDGELEAF_STATUS";
/// Hub KV bucket with each node's encryption key as first seen by `deploy --secret`
/// (node id → key): written by hub users only, never by nodes.
pub const NODE_KEYS_BUCKET: &str = "EDGELEAF_NODE_KEYS";
/// Hub KV bucket: staged rollouts (`deploy --waves`), one key per agent name.
pub const ROLLOUTS_BUCKET: &str = "EDGELEAF_ROLLOUTS";
/// Hub KV bucket: signed announcements of edgeleaf binaries (`edgeleaf upgrade`),
/// by target and architecture (`all.x86_64`, `node.<id>.aarch64` …).
pub const UPGRADES_BUCKET: &str = "EDGELEAF_UPGRADES";

/// A node is shown offline after this many heartbeat intervals without one.
pub const OFFLINE_AFTER_MISSED: u64 = 3;

/// Header carrying the short error code of a failed request.
pub const ERROR_HEADER: &str = "edgeleaf-error";

/// Is `s` a single NATS token as node ids and agent names must be (`[A-Za-z0-9_-]+`)?
///
/// # Examples
/// ```
/// use edgeleaf::protocol::is_token;
/// assert!(is_token("gw-01_a"));
/// assert!(!is_token("gw.01"));
/// assert!(!is_token(""));
/// ```
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Turns any name (e.g. a hostname) into a valid token: every other character
/// becomes `-`; an empty result becomes `node`.
///
/// # Examples
/// ```
/// use edgeleaf::protocol::tokenize;
/// assert_eq!(tokenize("pi.local"), "pi-local");
/// assert_eq!(tokenize(""), "node");
/// ```
pub fn tokenize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if t.is_empty() { "node".to_owned() } else { t }
}

/// The subjects of one deployment, built from its prefix.
///
/// # Examples
/// ```
/// use edgeleaf::protocol::Subjects;
/// let s = Subjects::default();
/// assert_eq!(s.heartbeat("gw1"), "edgeleaf.hb.gw1");
/// assert_eq!(s.info("gw1"), "edgeleaf.ctl.gw1.info");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// Lets two fleets (or a test and a real fleet) share one NATS system.
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn heartbeat(&self, node: &str) -> String {
        format!("{}.hb.{node}", self.prefix)
    }

    /// Wildcard over every node's heartbeat.
    pub fn heartbeats(&self) -> String {
        format!("{}.hb.*", self.prefix)
    }

    pub fn ping(&self) -> String {
        format!("{}.ctl.ping", self.prefix)
    }

    /// Where the hub republishes the changes of a KV bucket's keys (headers only:
    /// `<prefix>.kv.<bucket>.<key>`), so that nodes hear of them with plain
    /// subscriptions instead of a JetStream consumer each (`hub init` sets it up on
    /// the buckets nodes follow; see `hub::key_changes`).
    pub fn kv_changes(&self, bucket: &str) -> String {
        format!("{}.kv.{bucket}.>", self.prefix)
    }

    pub fn info(&self, node: &str) -> String {
        format!("{}.ctl.{node}.info", self.prefix)
    }

    /// Wildcard over one node's control subjects.
    pub fn control(&self, node: &str) -> String {
        format!("{}.ctl.{node}.*", self.prefix)
    }

    pub fn outbox(&self, node: &str) -> String {
        format!("{}.ctl.{node}.outbox", self.prefix)
    }

    pub fn agents(&self, node: &str) -> String {
        format!("{}.ctl.{node}.agents", self.prefix)
    }

    pub fn result(&self, node: &str, agent: &str) -> String {
        format!("{}.res.{node}.{agent}", self.prefix)
    }

    pub fn event(&self, node: &str, kind: &str) -> String {
        format!("{}.evt.{node}.{kind}", self.prefix)
    }

    pub fn log(&self, node: &str, agent: &str) -> String {
        format!("{}.log.{node}.{agent}", self.prefix)
    }

    pub fn invoke(&self, node: &str, agent: &str) -> String {
        format!("{}.inv.{node}.{agent}", self.prefix)
    }

    /// The subject of an agent's timer runs (never published: it names the
    /// invocation in the agent and in its result record).
    pub fn timer(&self, node: &str, agent: &str) -> String {
        format!("{}.timer.{node}.{agent}", self.prefix)
    }

    /// The queue group an agent's trigger subscriptions join, fleet-wide.
    pub fn queue_group(&self, agent: &str) -> String {
        format!("{}.{agent}", self.prefix)
    }

    pub fn results(&self) -> String {
        format!("{}.res.>", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// Wildcard over every node's log lines.
    pub fn logs(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    /// The node id in a heartbeat subject, if `subject` is one.
    pub fn node_of_heartbeat<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".hb.")
            .filter(|id| is_token(id))
    }
}

/// Whether the hub (not only the local leaf) answers, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubLink {
    /// `up` or `down`.
    pub state: LinkState,
    /// When the state last changed, by the node's clock (RFC 3339).
    pub since: String,
    /// While down, the last error the node's own leaf server logged about its link
    /// (e.g. a TLS or authorization refusal by the hub), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
}

/// Counts of agents by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    pub running: u64,
    pub failed: u64,
    /// Messages answered `busy` without running since the node started, all agents
    /// together: a burst beyond `[limits] max_queued` or `max_pending_bytes`.
    #[serde(default)]
    pub refused_busy: u64,
    /// Messages the node's NATS client dropped since it started because a
    /// subscription's buffer was full (a slow consumer; at least this many).
    #[serde(default)]
    pub slow_consumer_dropped: u64,
    /// The node's own log lines (agent `_node`) dropped by the log budget since it
    /// started.
    #[serde(default)]
    pub node_log_dropped: u64,
}

/// Store-and-forward backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStats {
    pub depth: u64,
    pub oldest_age_s: u64,
    pub dropped: u64,
    /// Bytes buffered.
    #[serde(default)]
    pub bytes: u64,
    /// Appended since the node started.
    #[serde(default)]
    pub appended: u64,
    /// Acknowledged by the hub (and removed) since the node started.
    #[serde(default)]
    pub forwarded: u64,
    /// Refused by the hub for good (above its size limit) and moved out of the
    /// way, since the state dir was new; each one is also an `outbox_set_aside`
    /// event.
    #[serde(default)]
    pub set_aside: u64,
}

/// Published on `<prefix>.hb.<node>` every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    pub name: String,
    pub version: String,
    pub os: String,
    pub arch: String,
    pub tags: BTreeMap<String, String>,
    /// RFC 3339, by the node's clock (which may be wrong on boards without an RTC).
    pub started_at: String,
    pub uptime_s: u64,
    /// Grows by one per heartbeat of this process; a reset means a restart.
    pub seq: u64,
    /// What the hub uses to judge the node offline.
    pub interval_s: f64,
    pub cpu_pct: f32,
    pub load1: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    /// Free bytes on the file system of the state directory.
    pub disk_free: u64,
    pub agents: AgentCounts,
    pub invocations: u64,
    pub outbox: OutboxStats,
    /// The log store (`[logs]`): lines waiting for the hub, and lines dropped.
    #[serde(default)]
    pub logs: OutboxStats,
    pub hub_link: HubLink,
    /// `cranelift`, `pulley` (compiles for wasmtime's interpreter, e.g. armv7), or
    /// `none` (a runtime-only build: runs precompiled artifacts only).
    pub wasm_compiler: String,
    /// What precompiled code must be made for to run here; `deploy` precompiles
    /// for the nodes with `wasm_compiler: none` by it.
    #[serde(default)]
    pub engine: EngineProfile,
    /// Where workloads reach this node (`edge.<location>.workloads`).
    #[serde(default)]
    pub location: String,
    /// The node's x25519 public key (`x25519:<hex>`): `deploy --secret` seals values
    /// to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<String>,
    /// Self-update state (see [`UpgradeInfo`]).
    #[serde(default)]
    pub upgrade: UpgradeInfo,
}

/// On a `ctl.<node>.agents` reply with more agents after it: the last agent name on
/// it. The next page is asked for with the body `{"after": "<that name>"}`.
pub const AGENTS_NEXT_HEADER: &str = "Edgeleaf-Next";

/// The answer to `ctl.ping` and (inside `{"ok": …}`) to `ctl.<node>.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub name: String,
    pub version: String,
    pub os: String,
    pub arch: String,
    pub tags: BTreeMap<String, String>,
    pub started_at: String,
    pub uptime_s: u64,
    pub interval_s: f64,
    pub hub_link: HubLink,
    /// The local nats-server this node talks through.
    pub leaf: LeafInfo,
    /// How agents run here: `cranelift` (compiled), `pulley` (interpreted, e.g.
    /// armv7) or `none` (precompiled artifacts only).
    pub wasm_compiler: String,
    /// What precompiled code must be made for to run here.
    #[serde(default)]
    pub engine: EngineProfile,
    pub agents: AgentCounts,
    /// Compiled-code cache counters since start.
    pub compiled_cache: CacheCounters,
    /// Where workloads reach this node (`edge.<location>.workloads`).
    #[serde(default)]
    pub location: String,
    /// The node's x25519 public key, for sealing secrets to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<String>,
    /// Self-update: the staged and kept binaries, and how the last upgrade went.
    #[serde(default)]
    pub upgrade: UpgradeInfo,
}

/// A node's self-update state (`edgeleaf upgrade`), in its heartbeats and info.
/// `version` beside it is the binary that runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeInfo {
    /// A binary downloaded and checked, on trial or about to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// The version kept for `edgeleaf upgrade --rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<UpgradeOutcome>,
}

/// How the last upgrade (or rollback) of a node ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOutcome {
    /// The version it tried to run.
    pub version: String,
    /// The sha256 of that binary, when it was downloaded (not for a rollback to,
    /// or a start of, the installed binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The version it ran before.
    pub from: String,
    /// `succeeded`, `failed` (the previous binary runs again), `rolled_back`
    /// (`upgrade --rollback`), or `superseded` (the installed binary changed, e.g.
    /// by apt, and now runs instead of the staged one).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339, the node's clock.
    pub at: String,
}

/// What the compiled-code cache did since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    /// Entries refused (bad checksum, unloadable) and recompiled.
    pub rejected: u64,
    /// Agents loaded from precompiled artifacts (`deploy` made them for this node's
    /// engine): no compile on the node at all.
    #[serde(default)]
    pub precompiled: u64,
}

/// What the node knows of its leaf server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafInfo {
    /// The URL the node connects to.
    pub url: String,
    /// True when the node supervises the server as its child.
    pub spawned: bool,
    /// Pid of the spawned server, when it runs.
    pub pid: Option<u32>,
    /// How often the supervisor had to restart it.
    pub restarts: u64,
}

/// Body of a `ctl.ping` request. An empty body means "every node".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    /// Only nodes carrying all of these tags answer.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl PingRequest {
    /// Parses a request body; empty (or whitespace) means no filter.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
    }

    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

/// A control reply: `{"ok": …}` or `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlReply<T> {
    Ok(T),
    Error(ErrorBody),
}

/// A failed request: a short machine code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// One row of `edgeleaf nodes --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node_id: String,
    /// `online` or `offline`, judged from the hub's receive time.
    pub status: NodeStatus,
    /// When the hub stored the last heartbeat (RFC 3339, hub clock).
    pub last_seen: String,
    /// Seconds since `last_seen`, by the reader's clock.
    pub age_s: f64,
    pub heartbeat: Heartbeat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Online,
    Offline,
}

impl NodeStatus {
    /// Offline after [`OFFLINE_AFTER_MISSED`] intervals without a heartbeat.
    ///
    /// # Examples
    /// ```
    /// use edgeleaf::protocol::NodeStatus;
    /// assert_eq!(NodeStatus::judge(25.0, 10.0), NodeStatus::Online);
    /// assert_eq!(NodeStatus::judge(31.0, 10.0), NodeStatus::Offline);
    /// ```
    pub fn judge(age_s: f64, interval_s: f64) -> Self {
        if age_s > interval_s * OFFLINE_AFTER_MISSED as f64 {
            Self::Offline
        } else {
            Self::Online
        }
    }
}

/// What an agent may use, per invocation unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentLimits {
    /// Linear memory of one instance, bytes.
    pub memory: u64,
    /// Deadline of one invocation, milliseconds.
    pub timeout_ms: u64,
    /// Instances of this agent running at once; more requests wait briefly, then
    /// get a `busy` error.
    pub max_concurrency: u32,
    /// Wasm fuel per invocation (roughly, instructions), when set.
    pub fuel: Option<u64>,
    /// Largest reply an invocation may produce, bytes.
    pub max_output: u64,
    /// Bytes (keys + values) the agent may keep in its kv store.
    pub kv_quota: u64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            memory: 16 << 20,
            timeout_ms: 5_000,
            max_concurrency: 4,
            fuel: None,
            max_output: 1 << 20,
            kv_quota: 1 << 20,
        }
    }
}

/// How an agent's instances live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instances {
    /// A new instance per message: nothing an invocation leaves behind reaches the
    /// next one.
    #[default]
    Fresh,
    /// Instances are kept between messages, so caches and connections survive;
    /// each is replaced after `max_invocations` messages and at once after a trap
    /// or a timeout. Components only.
    Warm,
}

impl Instances {
    pub fn is_fresh(&self) -> bool {
        *self == Self::Fresh
    }
}

impl std::str::FromStr for Instances {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fresh" => Ok(Self::Fresh),
            "warm" => Ok(Self::Warm),
            _ => Err(format!("{s:?} is neither fresh nor warm")),
        }
    }
}

/// Messages a warm instance serves before it is replaced, unless the spec says.
pub const DEFAULT_MAX_INVOCATIONS: u64 = 10_000;

/// Everything that defines one agent apart from its module bytes: statically
/// provisioned in the node config, or (signed) in a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// A single NATS token, unique on the node.
    pub name: String,
    /// Subjects (wildcards allowed) the agent serves, as queue group `<prefix>.<name>`.
    /// May be empty when the agent has a `schedule`.
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Timers: `@every <duration>` (at least 100ms) and cron expressions (see
    /// [`crate::schedule`]). Each tick is one invocation on
    /// `<prefix>.timer.<node>.<agent>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<String>,
    /// IANA time zone for cron entries. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Moves this node's runs after each tick by a steady amount up to this: a
    /// duration (`30s`) or a share of the period (`10%`), to spread a fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Directories preopened read-only at the same absolute path in the guest, in
    /// this order (a WASI command's first grant is fd 3), each within the node's
    /// `[devices]` ceiling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// Directories preopened read-write, after the `read` ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
    /// Outbound TCP the agent may open (`IP:PORT`, `CIDR:PORT`, `[IPv6]:PORT`),
    /// each within the node's `[devices] connect`. Components only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<String>,
    /// Serial ports the agent may open (`PATH[@BAUD]`), each listed in the node's
    /// `[devices] serial`. Components only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial: Vec<String>,
    #[serde(default)]
    pub limits: AgentLimits,
    /// Subjects (wildcards allowed) the agent may publish to.
    #[serde(default)]
    pub allow_publish: Vec<String>,
    /// Handed to the agent through its `config` import (WASI commands: as env).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What the agent can do, as NATS tokens (`reverse`, `ocr`, `temperature`):
    /// discovery finds it by these, workloads are routed by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// The agent's type on its card and its announcement subject. Default: its name.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// `fresh` (default) or `warm`. Left out when fresh, so a spec signed before
    /// warm instances existed reads the same.
    #[serde(default, skip_serializing_if = "Instances::is_fresh")]
    pub instances: Instances,
    /// Warm only: messages one instance serves before it is replaced (default
    /// [`DEFAULT_MAX_INVOCATIONS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations: Option<u64>,
}

/// Why a spec was refused: `invalid_spec` (malformed) or `forbidden` (a subject it
/// may not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
}

impl AgentSpec {
    /// The agent's type: `type`, or its name.
    pub fn kind_name(&self) -> &str {
        self.agent_type.as_deref().unwrap_or(&self.name)
    }

    /// Checks names and subject patterns (not limits: those are the node's call).
    pub fn check(&self, prefix: &str) -> Result<(), SpecError> {
        let invalid = |message: String| SpecError {
            code: "invalid_spec",
            message,
        };
        if !is_token(&self.name) {
            return Err(invalid(format!(
                "agent name {:?} is not a single NATS token (letters, digits, '-', '_')",
                self.name
            )));
        }
        if self.triggers.is_empty() && self.schedule.is_empty() && self.capabilities.is_empty() {
            return Err(invalid(format!(
                "agent {}: no trigger subjects, no schedule and no capabilities (give triggers, a schedule of @every/cron entries, or capabilities to be found and sent workloads by)",
                self.name
            )));
        }
        for capability in &self.capabilities {
            if !is_token(capability) {
                return Err(invalid(format!(
                    "agent {}: capability {capability:?} is not a single NATS token (letters, digits, '-', '_')",
                    self.name
                )));
            }
        }
        if let Some(t) = &self.agent_type
            && !is_token(t)
        {
            return Err(invalid(format!(
                "agent {}: type {t:?} is not a single NATS token (letters, digits, '-', '_')",
                self.name
            )));
        }
        match (self.instances, self.max_invocations) {
            (Instances::Fresh, Some(_)) => {
                return Err(invalid(format!(
                    "agent {}: max_invocations needs instances = \"warm\" (a fresh instance serves one message)",
                    self.name
                )));
            }
            (_, Some(0)) => {
                return Err(invalid(format!(
                    "agent {}: max_invocations must be at least 1",
                    self.name
                )));
            }
            _ => {}
        }
        if !self.schedule.is_empty() {
            crate::schedule::Schedule::parse(&self.schedule, self.timezone.as_deref())
                .map_err(|e| invalid(format!("agent {}: {e}", self.name)))?;
        } else if self.timezone.is_some() || self.jitter.is_some() {
            return Err(invalid(format!(
                "agent {}: timezone and jitter need a schedule",
                self.name
            )));
        }
        for (what, dirs) in [("read", &self.read), ("write", &self.write)] {
            for dir in dirs {
                check_grant_dir(dir).map_err(|why| {
                    invalid(format!("agent {}: {what} grant {dir:?} {why}", self.name))
                })?;
            }
        }
        for entry in &self.serial {
            SerialGrant::parse(entry).map_err(|e| invalid(format!("agent {}: {e}", self.name)))?;
        }
        for entry in &self.connect {
            ConnectRule::parse(entry).map_err(|e| invalid(format!("agent {}: {e}", self.name)))?;
        }
        if let Some(jitter) = &self.jitter {
            crate::schedule::Jitter::parse(jitter)
                .map_err(|e| invalid(format!("agent {}: {e}", self.name)))?;
        }
        let patterns = self.triggers.iter().map(|t| ("trigger", t));
        let publish = self
            .allow_publish
            .iter()
            .map(|p| ("allowed publish subject", p));
        for (what, pattern) in patterns.chain(publish) {
            check_agent_pattern(pattern, prefix).map_err(|e| SpecError {
                code: "forbidden",
                message: format!("agent {}: {what} {e}", self.name),
            })?;
        }
        Ok(())
    }
}

/// One `connect` entry of a spec or of a node's `[devices]`: outbound TCP on `port`
/// to the addresses of `host`: one address, a CIDR block, or a DNS name that the
/// node resolves (agents resolve no other names).
///
/// # Examples
/// ```
/// use edgeleaf::protocol::ConnectRule;
/// let plc = ConnectRule::parse("10.0.0.0/24:502").unwrap();
/// assert!(plc.allows("10.0.0.17:502".parse().unwrap()));
/// assert!(!plc.allows("10.0.1.17:502".parse().unwrap()));
/// assert!(ConnectRule::parse("[fd00::1]:80").is_ok());
/// let named = ConnectRule::parse("PLC.local:502").unwrap();
/// assert_eq!(named.name(), Some("plc.local"));
/// assert!(ConnectRule::parse("plc_local:502").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    pub host: ConnectHost,
    pub port: u16,
}

/// What a `connect` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectHost {
    Net(ipnet::IpNet),
    /// A DNS name, lower case.
    Name(String),
}

impl std::fmt::Display for ConnectRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            ConnectHost::Net(net) if net.addr().is_ipv6() => write!(f, "[{net}]:{}", self.port),
            ConnectHost::Net(net) => write!(f, "{net}:{}", self.port),
            ConnectHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl ConnectRule {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("connect {entry:?}: {why}");
        let (host, port) = match entry.strip_prefix('[') {
            Some(rest) => rest
                .split_once("]:")
                .ok_or_else(|| bad("want [IPv6]:PORT"))?,
            None => entry.rsplit_once(':').ok_or_else(|| {
                bad("want HOST:PORT (an address, a CIDR block or a DNS name, and a port)")
            })?,
        };
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        };
        let host = if host.contains('/') {
            ConnectHost::Net(
                host.parse::<ipnet::IpNet>()
                    .map_err(|e| bad(&e.to_string()))?
                    .trunc(),
            )
        } else if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            ConnectHost::Net(ipnet::IpNet::from(ip))
        } else if is_dns_name(host) {
            ConnectHost::Name(host.to_ascii_lowercase())
        } else {
            return Err(bad(
                "the host is neither an IP address, a CIDR block nor a DNS name",
            ));
        };
        Ok(Self { host, port })
    }

    /// The DNS name this rule names, if it names one.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            ConnectHost::Name(name) => Some(name),
            ConnectHost::Net(_) => None,
        }
    }

    /// Does this rule, by address, let a socket connect to `addr`? (A named rule
    /// needs its name resolved: see [`ConnectRule::name`].)
    pub fn allows(&self, addr: std::net::SocketAddr) -> bool {
        addr.port() == self.port
            && matches!(&self.host, ConnectHost::Net(net) if net.contains(&addr.ip()))
    }

    /// Is everything `other` allows also allowed by this rule? A name is covered
    /// only by the same name: what it resolves to can change.
    pub fn covers(&self, other: &ConnectRule) -> bool {
        self.port == other.port
            && match (&self.host, &other.host) {
                (ConnectHost::Net(a), ConnectHost::Net(b)) => a.contains(b),
                (ConnectHost::Name(a), ConnectHost::Name(b)) => a == b,
                _ => false,
            }
    }
}

/// Letters, digits and hyphens in dot-separated labels of 1 to 63 characters, at
/// most 253 in all; not all digits (that would be a malformed address).
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// One `serial` grant of a spec, `PATH[@BAUD]`: the device path the agent may open,
/// and the one baud rate it may use, when the grant names one.
///
/// # Examples
/// ```
/// use edgeleaf::protocol::SerialGrant;
/// let g = SerialGrant::parse("/dev/ttyUSB0@9600").unwrap();
/// assert_eq!((g.path.as_str(), g.baud), ("/dev/ttyUSB0", Some(9600)));
/// assert!(SerialGrant::parse("ttyUSB0").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialGrant {
    pub path: String,
    pub baud: Option<u32>,
}

impl SerialGrant {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (path, baud) = match entry.rsplit_once('@') {
            Some((path, baud)) => {
                let baud = baud
                    .parse::<u32>()
                    .ok()
                    .filter(|b| *b > 0)
                    .ok_or_else(|| format!("serial {entry:?}: {baud:?} is not a baud rate"))?;
                (path, Some(baud))
            }
            None => (entry, None),
        };
        check_grant_dir(path).map_err(|why| format!("serial {entry:?}: the path {why}"))?;
        Ok(Self {
            path: path.to_owned(),
            baud,
        })
    }
}

/// A directory grant must be an absolute path in plain form: no `.` or `..`
/// components, no empty ones.
fn check_grant_dir(dir: &str) -> Result<(), &'static str> {
    let Some(rest) = dir.strip_prefix('/') else {
        return Err("is not an absolute path");
    };
    if rest.is_empty() {
        return Err("is the root directory");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err("must not contain '.', '..' or empty components");
    }
    Ok(())
}

/// Is `s` a valid subject or pattern: non-empty tokens, no spaces, `>` only last?
pub fn is_valid_pattern(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(|c| c.is_whitespace())
            && (*t != ">" || i == tokens.len() - 1)
            && (t.len() == 1 || !t.contains(['*', '>']))
    })
}

/// Refuses a trigger or allowed-publish pattern that could reach system, JetStream,
/// inbox or edgeleaf's own subjects: its first token must be a literal that is none
/// of `$…`, `_…` (`_INBOX`, the `_R_` replies of service imports, node inboxes) or
/// the prefix. (A leading wildcard could match all of them.)
///
/// # Examples
/// ```
/// use edgeleaf::protocol::check_agent_pattern;
/// assert!(check_agent_pattern("sensors.*.temp", "edgeleaf").is_ok());
/// assert!(check_agent_pattern(">", "edgeleaf").is_err());
/// assert!(check_agent_pattern("$SYS.>", "edgeleaf").is_err());
/// assert!(check_agent_pattern("edgeleaf.ctl.x.info", "edgeleaf").is_err());
/// ```
pub fn check_agent_pattern(pattern: &str, prefix: &str) -> Result<(), String> {
    if !is_valid_pattern(pattern) {
        return Err(format!("{pattern:?} is not a valid NATS subject"));
    }
    let first = pattern.split('.').next().unwrap_or_default();
    let why = if first == "*" || first == ">" {
        Some("starts with a wildcard, which would match reserved subjects")
    } else if first.starts_with('$') {
        Some("is in a reserved $ namespace ($SYS, $JS, $KV, $O …)")
    } else if first.starts_with('_') {
        Some("starts with '_', reserved for NATS inboxes and service replies (_INBOX, _R_ …)")
    } else if first == prefix {
        Some("is in edgeleaf's own namespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("{pattern:?} {why}")),
        None => Ok(()),
    }
}

/// Does the literal `subject` match `pattern` (`*` one token, `>` the rest)?
///
/// # Examples
/// ```
/// use edgeleaf::protocol::subject_matches;
/// assert!(subject_matches("alerts.>", "alerts.t1.high"));
/// assert!(subject_matches("alerts.*.high", "alerts.t1.high"));
/// assert!(!subject_matches("alerts.*", "alerts.t1.high"));
/// assert!(!subject_matches("alerts.>", "alerts"));
/// ```
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One record per invocation on `<prefix>.res.<node>.<agent>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub node_id: String,
    pub agent: String,
    /// The subject that triggered the invocation.
    pub subject: String,
    /// RFC 3339, node clock.
    pub at: String,
    pub duration_us: u64,
    pub ok: bool,
    pub output_size: u64,
    /// The output, when it is UTF-8.
    pub output: Option<String>,
    /// The output in base64, when it is not UTF-8.
    pub output_base64: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<ErrorBody>,
    /// The output was cut to keep the record under the server's message size;
    /// `output_size` is the whole output's.
    #[serde(default)]
    pub output_truncated: bool,
    /// The workload this run was for (`<discovery>.…`/`edge.<location>.workloads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// Longest error message a record carries.
pub const MAX_RECORD_ERROR: usize = 4096;

impl ResultRecord {
    /// The record as JSON of at most `limit` bytes: the error message is capped at
    /// [`MAX_RECORD_ERROR`], and the output is cut (with `output_truncated`) until
    /// the record fits, whatever JSON escaping makes of it.
    pub fn to_capped_json(mut self, limit: usize) -> Vec<u8> {
        if let Some(e) = &mut self.error {
            truncate_utf8(&mut e.message, MAX_RECORD_ERROR);
        }
        loop {
            let json = serde_json::to_vec(&self).unwrap_or_default();
            if json.len() <= limit {
                return json;
            }
            // Cut what is left of the output by how far over the limit it is.
            let cut = |len: usize| {
                let proportional = (len as u128 * limit as u128 / json.len() as u128) as usize;
                proportional.min(len.saturating_sub(1))
            };
            match (&mut self.output, &mut self.output_base64) {
                (Some(text), _) if !text.is_empty() => truncate_utf8(text, cut(text.len())),
                (_, Some(b64)) if !b64.is_empty() => {
                    let keep = cut(b64.len()) / 4 * 4;
                    b64.truncate(keep)
                }
                // Nothing left to cut: the rest is small, fixed fields.
                _ => return json,
            }
            self.output_truncated = true;
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// One record per event on `<prefix>.evt.<node>.<kind>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub node_id: String,
    /// `agent_started`, `agent_stopped`, `agent_failed`, `invocation_failed`, …
    pub kind: String,
    pub agent: Option<String>,
    pub at: String,
    /// Short machine code, for failures.
    pub code: Option<String>,
    pub message: String,
}

/// A line an agent logged, on `<prefix>.log.<node>.<agent>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub node_id: String,
    pub agent: String,
    pub level: String,
    pub at: String,
    pub message: String,
}

/// A node's report on one deployed agent, in the hub KV bucket `EDGELEAF_STATUS`
/// under `<node>.<agent>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStatus {
    pub node_id: String,
    pub agent: String,
    /// `running`, `failed` (accepted but could not start; an older version may keep
    /// serving) or `rejected` (refused: signature, version, limits, subjects …).
    pub state: String,
    /// The version this status is about (the one just tried), when known.
    pub version: Option<u64>,
    /// The version that serves now, if any.
    pub running_version: Option<u64>,
    pub digest: Option<String>,
    /// The deployment key it came from.
    pub key: String,
    pub error: Option<ErrorBody>,
    /// RFC 3339, node clock.
    pub since: String,
    /// sha256 of the deployment envelope this status is about: `deploy` waits for
    /// its own envelope, not another one that claims the same version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_sha256: Option<String>,
}

/// The subjects of discovery and workloads, under their configurable first
/// tokens (`discovery`, `edge`, `results` by default; see `[discovery]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySubjects {
    discovery: String,
    workloads: String,
    results: String,
}

impl Default for DiscoverySubjects {
    fn default() -> Self {
        Self::new("discovery", "edge", "results")
    }
}

impl DiscoverySubjects {
    pub fn new(discovery: &str, workloads: &str, results: &str) -> Self {
        Self {
            discovery: discovery.to_owned(),
            workloads: workloads.to_owned(),
            results: results.to_owned(),
        }
    }

    /// `discovery.query.capability.<cap>`: answered with the cards of the agents
    /// that have `cap`.
    pub fn query(&self, capability: &str) -> String {
        format!("{}.query.capability.{capability}", self.discovery)
    }

    /// Every capability query.
    pub fn queries(&self) -> String {
        self.query("*")
    }

    /// `discovery.agents.<type>.<node>.<agent>`: an agent's announced card.
    pub fn card(&self, agent_type: &str, node: &str, agent: &str) -> String {
        format!("{}.agents.{agent_type}.{node}.{agent}", self.discovery)
    }

    /// Every card of every node.
    pub fn all_cards(&self) -> String {
        format!("{}.agents.>", self.discovery)
    }

    /// `edge.<location>.workloads`.
    pub fn workloads(&self, location: &str) -> String {
        format!("{}.{location}.workloads", self.workloads)
    }

    /// The queue group of a location's nodes: each workload runs once there.
    pub fn workload_group(&self, location: &str) -> String {
        format!("{}.{location}", self.workloads)
    }

    /// `results.<task_id>`.
    pub fn result(&self, task_id: &str) -> String {
        format!("{}.{task_id}", self.results)
    }
}

/// Whether `s` can be the first token of a discovery, workload or result subject:
/// a single token, not one of the reserved `_…` (or `$…`) ones.
pub fn is_discovery_prefix(s: &str) -> bool {
    is_token(s) && !s.starts_with('_')
}

/// Whether `task_id` can name a result subject: dot-separated NATS tokens.
pub fn is_task_id(task_id: &str) -> bool {
    task_id.len() <= 256 && task_id.split('.').all(is_token)
}

/// What a running agent says about itself: the answer to
/// `discovery.query.capability.<cap>` (a list of these) and the body of
/// `discovery.agents.<type>.<node>.<agent>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCard {
    /// `<node>.<agent>`.
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: String,
    pub capabilities: Vec<String>,
    /// The agent's direct subject: a request there runs it on this node.
    pub endpoint: String,
    pub node: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    /// The deployment's version (0 for a static or `run-agent` agent).
    pub version: u64,
    /// sha256 of the module, hex.
    pub digest: String,
    /// `healthy`, `degraded` (a fault among its recent invocations) or
    /// `backed_off` (refusing work after repeated faults).
    pub health_status: String,
    pub load_metrics: LoadMetrics,
    /// Seconds the card is valid without a newer one: three heartbeat intervals.
    pub ttl: u64,
    /// RFC 3339, node clock.
    pub at: String,
}

/// How busy an agent is, on its card.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadMetrics {
    pub in_flight: u32,
    pub max_concurrency: u32,
    pub invocations: u64,
    pub failures: u64,
    /// Median duration of its recent invocations (up to the last 64), ms.
    pub p50_ms: Option<f64>,
}

/// A unit of work sent to a location (`edge.<location>.workloads`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Names the result subject `results.<task_id>`: NATS tokens separated by dots.
    pub task_id: String,
    pub capability: String,
    /// UTF-8 input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Binary input, base64 (instead of `payload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// Run this agent (it must have the capability) rather than the freest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A deadline shorter than the agent's own, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What a workload did, on `results.<task_id>` and as the reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub task_id: String,
    /// The node that ran it: check it against the node you expect (any node of
    /// the location may publish on `results.>`).
    pub node: String,
    /// The agent that ran it (absent when none could).
    pub agent: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    pub duration_ms: f64,
}

/// One row of `ctl.<node>.agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    /// `running`, `backoff` or `failed`.
    pub state: String,
    /// `component` or `wasi-command`.
    pub kind: Option<String>,
    /// sha256 of the module, hex.
    pub digest: Option<String>,
    pub triggers: Vec<String>,
    pub invocations: u64,
    pub failures: u64,
    /// Messages answered `busy` without running because the agent already held
    /// `[limits] max_queued` messages or `max_pending_bytes` of them.
    #[serde(default)]
    pub refused_busy: u64,
    /// Log lines dropped because the agent logged more than its budget.
    #[serde(default)]
    pub log_dropped: u64,
    /// The agent's timer entries (empty: no timer).
    #[serde(default)]
    pub schedule: Vec<String>,
    /// When the timer fires next (RFC 3339, jitter included).
    #[serde(default)]
    pub next_run: Option<String>,
    /// When the timer last started a run (RFC 3339).
    #[serde(default)]
    pub last_run: Option<String>,
    /// Ticks skipped because the previous run of the agent still ran.
    #[serde(default)]
    pub skipped_ticks: u64,
    /// Directories granted read-only, and read-write.
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    /// Outbound TCP granted (`connect` entries).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Serial ports granted.
    #[serde(default)]
    pub serial: Vec<String>,
    /// What it can do (discovery, workloads).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Its type (default: its name).
    #[serde(default, rename = "type")]
    pub agent_type: Option<String>,
    /// Whether its compiled code came from the node's cache when it was loaded.
    pub compiled_from_cache: Option<bool>,
    /// `fresh` or `warm`.
    #[serde(default)]
    pub instances: Instances,
    /// Warm: instances started since the agent was loaded (the first ones and each
    /// replacement after `max_invocations`, a trap or a timeout).
    #[serde(default)]
    pub warm_started: u64,
    /// Why the agent is not running, when it is not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_records_are_capped_whatever_the_escaping() {
        let record = |output: Option<String>, error: Option<ErrorBody>| ResultRecord {
            node_id: "n".into(),
            agent: "a".into(),
            subject: "s".into(),
            at: "t".into(),
            duration_us: 1,
            ok: error.is_none(),
            output_size: output.as_ref().map_or(0, |o| o.len() as u64),
            output,
            output_base64: None,
            error,
            output_truncated: false,
            task_id: None,
        };
        for (text, limit) in [
            ("\"".repeat(700_000), 1 << 20),
            ("\u{1}é".repeat(50_000), 10_000),
        ] {
            let json = record(Some(text.clone()), None).to_capped_json(limit);
            assert!(json.len() <= limit, "{} > {limit}", json.len());
            let back: ResultRecord = serde_json::from_slice(&json).unwrap();
            assert!(back.output_truncated);
            assert!(text.starts_with(back.output.as_deref().unwrap()));
            assert!(
                back.output.unwrap().len() > limit / 8,
                "cut far more than needed"
            );
        }
        let small = record(Some("ok".into()), None).to_capped_json(1 << 20);
        assert!(
            !serde_json::from_slice::<ResultRecord>(&small)
                .unwrap()
                .output_truncated
        );
        let err = record(None, Some(ErrorBody::new("trap", "e".repeat(100_000))));
        let back: ResultRecord = serde_json::from_slice(&err.to_capped_json(1 << 20)).unwrap();
        assert_eq!(back.error.unwrap().message.len(), MAX_RECORD_ERROR);
    }

    #[test]
    fn ping_request_filters_on_every_tag() {
        let tags: BTreeMap<_, _> = [("site".to_owned(), "a".to_owned())].into();
        assert!(PingRequest::parse(b"").unwrap().matches(&tags));
        assert!(
            PingRequest::parse(br#"{"tags":{"site":"a"}}"#)
                .unwrap()
                .matches(&tags)
        );
        assert!(
            !PingRequest::parse(br#"{"tags":{"site":"b"}}"#)
                .unwrap()
                .matches(&tags)
        );
        assert!(PingRequest::parse(b"{nope").is_err());
    }

    #[test]
    fn control_reply_shape() {
        let ok: ControlReply<u32> = ControlReply::Ok(3);
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":3}"#);
        let err: ControlReply<u32> = ControlReply::Error(ErrorBody::new("bad_request", "x"));
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":"bad_request","message":"x"}}"#
        );
    }

    #[test]
    fn agent_patterns() {
        for bad in [
            ">",
            "*",
            "*.x",
            "$SYS.>",
            "$JS.API.>",
            "$KV.b.k",
            "$O.x",
            "_INBOX.>",
            "_R_.>",
            "_INBOX_n1.x",
            "_anything",
            "edgeleaf.hb.x",
            "a..b",
            "a.>.b",
            "a b",
            "",
        ] {
            assert!(
                check_agent_pattern(bad, "edgeleaf").is_err(),
                "{bad} accepted"
            );
        }
        for good in ["sensors.>", "a.*.c", "a", "alerts.t1"] {
            assert!(
                check_agent_pattern(good, "edgeleaf").is_ok(),
                "{good} refused"
            );
        }
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a"));
        assert!(subject_matches("a", "a"));
        assert!(!subject_matches("a", "a.b"));
    }

    #[test]
    fn heartbeat_subject_round_trip() {
        let s = Subjects::new("fleet");
        assert_eq!(s.node_of_heartbeat(&s.heartbeat("n-1")), Some("n-1"));
        assert_eq!(s.node_of_heartbeat("edgeleaf.hb.n-1"), None);
    }
}
