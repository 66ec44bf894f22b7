//! Node configuration: a TOML file, overridden by `EDGELEAF_<SECTION>_<KEY>`
//! environment variables, validated with errors that name the key and where it came from.
//!
//! Unknown keys are errors, not silently ignored: a typo in `hub_url` on a device in a
//! field is better caught at start than after a week of a node that never links.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::protocol::{self, AgentLimits, AgentSpec, DEFAULT_HUB_DOMAIN, DEFAULT_PREFIX};

/// Why a configuration could not be used. Each variant names the file (or the
/// environment variable) and, where one is to blame, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("refusing to start: {} {message}", .path.display())]
    Insecure { path: PathBuf, message: String },
    #[error(
        "config {origin}: key `{key}`{}: {message}",
        .env.as_ref().map(|v| format!(" (from {v})")).unwrap_or_default()
    )]
    Key {
        origin: String,
        key: String,
        /// The environment variable that set the key, when one did.
        env: Option<String>,
        message: String,
    },
}

/// The whole node configuration. `Default` is a valid config for a node that
/// connects to a NATS server on 127.0.0.1:4222.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub nats: NatsSection,
    pub leaf: LeafSection,
    pub heartbeat: HeartbeatSection,
    pub limits: LimitsSection,
    pub store: StoreSection,
    pub outbox: OutboxSection,
    /// Agent log lines and the node's own warnings, kept and forwarded to the hub.
    pub logs: LogsSection,
    pub security: SecuritySection,
    /// What agents may be granted on this device: the ceiling of every grant.
    pub devices: DevicesSection,
    /// Agent cards, capability discovery and workloads.
    pub discovery: DiscoverySection,
    /// Self-update (`edgeleaf upgrade`).
    pub upgrade: UpgradeSection,
    /// Statically provisioned agents: how a device is set up offline.
    pub agents: Vec<StaticAgent>,
}

/// Store-and-forward of results and events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Most bytes buffered while the hub is unreachable.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// Entries older than this are dropped (and counted).
    #[serde(deserialize_with = "de_duration")]
    pub ttl: Duration,
    /// What a full outbox does: drop the oldest entries or refuse new ones.
    pub overflow: Overflow,
    /// `batch`: flushed at least every flush_interval (a power cut loses at most that
    /// window); `sync`: a reply is sent only once its result is on disk.
    pub durability: Durability,
    #[serde(deserialize_with = "de_duration")]
    pub flush_interval: Duration,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            ttl: Duration::from_secs(7 * 24 * 3600),
            overflow: Overflow::DropOldest,
            durability: Durability::Batch,
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// Log lines kept on the node until the hub's `EDGELEAF_LOGS` stream has them:
/// bounded, oldest dropped first (and counted), written behind like `batch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSection {
    /// Most bytes of lines kept while the hub is unreachable.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// Lines older than this are dropped (and counted).
    #[serde(deserialize_with = "de_duration")]
    pub ttl: Duration,
    /// The node's own lines at or above this level are kept too, as agent
    /// `_node`: `error`, `warn` or `info`.
    pub node_level: NodeLogLevel,
}

impl Default for LogsSection {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            ttl: Duration::from_secs(7 * 24 * 3600),
            node_level: NodeLogLevel::Warn,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLogLevel {
    Error,
    Warn,
    Info,
}

impl NodeLogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    DropOldest,
    RejectNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Batch,
    Sync,
}

/// Who may ship agents to this node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Publisher public keys (`ed25519:<hex>`, as `edgeleaf keys gen` prints them)
    /// whose signed deployments the node accepts.
    pub trusted_publishers: Vec<String>,
    /// Accept unsigned deployments too. For labs only.
    #[serde(deserialize_with = "de_bool")]
    pub allow_unsigned: bool,
    /// Keys whose deployments are refused even if listed as trusted.
    pub revoked_publishers: Vec<String>,
}

/// The ceiling of what agents may be granted on this device. Empty by default:
/// nothing is granted unless the device's operator allows it here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    /// Directories agents may be granted to read (at or below these).
    pub read: Vec<PathBuf>,
    /// Directories agents may be granted to read and write (at or below these).
    pub write: Vec<PathBuf>,
    /// Outbound TCP agents may be granted: `IP:PORT`, `CIDR:PORT`, `[IPv6]:PORT`.
    pub connect: Vec<String>,
    /// Serial device paths agents may be granted.
    pub serial: Vec<PathBuf>,
}

/// Where discovery and workloads live on NATS: the first token of each subject
/// family, so a fleet can move them (defaults as in the design edgeleaf follows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    /// Answer capability queries, announce cards and take workloads.
    #[serde(deserialize_with = "de_bool")]
    pub enabled: bool,
    /// `<discovery_prefix>.query.capability.<cap>`, `<discovery_prefix>.agents.…`.
    pub discovery_prefix: String,
    /// `<workloads_prefix>.<location>.workloads`.
    pub workloads_prefix: String,
    /// `<results_prefix>.<task_id>`.
    pub results_prefix: String,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        Self {
            enabled: true,
            discovery_prefix: "discovery".into(),
            workloads_prefix: "edge".into(),
            results_prefix: "results".into(),
        }
    }
}

impl DiscoverySection {
    pub fn subjects(&self) -> protocol::DiscoverySubjects {
        protocol::DiscoverySubjects::new(
            &self.discovery_prefix,
            &self.workloads_prefix,
            &self.results_prefix,
        )
    }
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAgent {
    pub name: String,
    /// The module; a relative path is relative to the config file.
    pub wasm: PathBuf,
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Timer entries: `"@every 10s"`, cron expressions.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// IANA time zone for cron entries (default UTC).
    pub timezone: Option<String>,
    /// `"30s"` or `"10%"`.
    pub jitter: Option<String>,
    #[serde(default)]
    pub allow_publish: Vec<String>,
    /// Directories preopened read-only (absolute paths, within `[devices]`).
    #[serde(default)]
    pub read: Vec<String>,
    /// Directories preopened read-write (absolute paths, within `[devices] write`).
    #[serde(default)]
    pub write: Vec<String>,
    /// Outbound TCP and HTTP (within `[devices] connect`).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Serial ports, `PATH[@BAUD]` (listed in `[devices] serial`).
    #[serde(default)]
    pub serial: Vec<String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: AgentLimitsConfig,
    /// What it can do, for discovery and workloads (NATS tokens).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Its type on its card (default: its name).
    #[serde(rename = "type")]
    pub agent_type: Option<String>,
    /// `"fresh"` (default): a new instance per message. `"warm"`: instances kept
    /// between messages (components only).
    #[serde(default)]
    pub instances: protocol::Instances,
    /// Warm only: messages one instance serves before it is replaced (default
    /// 10,000).
    pub max_invocations: Option<u64>,
}

/// An agent's limits as written in TOML (sizes and durations with units).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentLimitsConfig {
    #[serde(deserialize_with = "de_size")]
    pub memory: u64,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "de_count")]
    pub max_concurrency: u32,
    pub fuel: Option<u64>,
    #[serde(deserialize_with = "de_size")]
    pub max_output: u64,
    #[serde(deserialize_with = "de_size")]
    pub kv_quota: u64,
}

impl Default for AgentLimitsConfig {
    fn default() -> Self {
        let d = AgentLimits::default();
        Self {
            memory: d.memory,
            timeout: Duration::from_millis(d.timeout_ms),
            max_concurrency: d.max_concurrency,
            fuel: d.fuel,
            max_output: d.max_output,
            kv_quota: d.kv_quota,
        }
    }
}

impl AgentLimitsConfig {
    pub fn to_limits(&self) -> AgentLimits {
        AgentLimits {
            memory: self.memory,
            timeout_ms: self.timeout.as_millis() as u64,
            max_concurrency: self.max_concurrency,
            fuel: self.fuel,
            max_output: self.max_output,
            kv_quota: self.kv_quota,
        }
    }
}

impl StaticAgent {
    pub fn spec(&self) -> AgentSpec {
        AgentSpec {
            name: self.name.clone(),
            triggers: self.triggers.clone(),
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone(),
            jitter: self.jitter.clone(),
            read: self.read.clone(),
            write: self.write.clone(),
            connect: self.connect.clone(),
            serial: self.serial.clone(),
            limits: self.limits.to_limits(),
            allow_publish: self.allow_publish.clone(),
            config: self.config.clone(),
            capabilities: self.capabilities.clone(),
            agent_type: self.agent_type.clone(),
            instances: self.instances,
            max_invocations: self.max_invocations,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Identity on every subject; a single NATS token. Defaults to the hostname.
    pub id: String,
    /// For people; defaults to the id.
    pub name: String,
    /// Selects the node for `ping --tag` and tag-targeted deploys.
    pub tags: BTreeMap<String, String>,
    /// Holds sled, the spawned leaf server's files and its pidfile.
    pub state_dir: PathBuf,
    /// Where workloads reach the node (`edge.<location>.workloads`), a NATS token.
    /// Default: the `site` tag, else the node id.
    pub location: Option<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: default_node_id(),
            name: String::new(),
            tags: BTreeMap::new(),
            state_dir: PathBuf::from("/var/lib/edgeleaf"),
            location: None,
        }
    }
}

/// The node's own NATS connection (to its leaf server). `Debug` hides the secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// Defaults to `nats://<leaf.listen>` (the leaf the node runs, or the usual local one).
    /// Several servers: an array, or one string separated by commas.
    #[serde(deserialize_with = "de_url_list")]
    pub url: Option<String>,
    pub creds: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Path to an nkey seed file.
    pub nkey: Option<PathBuf>,
    pub tls: TlsFiles,
    /// First token of every edgeleaf subject.
    pub prefix: Option<String>,
    /// Messages the NATS client buffers per subscription before it drops (a slow
    /// consumer). Default: the client's (65536).
    pub subscription_capacity: Option<usize>,
}

impl std::fmt::Debug for NatsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSection")
            .field("url", &self.url.as_deref().map(crate::connect::redact_url))
            .field("creds", &self.creds)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey", &self.nkey)
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("subscription_capacity", &self.subscription_capacity)
            .finish()
    }
}

/// Keys whose values are secrets: errors about them never quote the value.
const SECRET_KEYS: &[&str] = &["nats.password", "nats.token", "leaf.local_password"];

/// PEM files for a TLS connection; all optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// The local nats-server leaf, optionally supervised by the node. `Debug` hides
/// a password in `hub_url`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeafSection {
    /// Run and supervise a nats-server leaf as a child of the node.
    #[serde(deserialize_with = "de_bool")]
    pub spawn: bool,
    /// The nats-server binary; default: PATH, then /usr/sbin.
    pub nats_server: Option<PathBuf>,
    /// Client address of the leaf server (loopback: it serves local clients only).
    pub listen: String,
    /// The hub's leafnode URL the spawned leaf dials out to (`nats-leaf://host:7422`).
    /// Several servers of a hub cluster: a TOML array, or one string with the URLs
    /// separated by commas (kept here in that form; see [`LeafSection::hub_urls`]).
    #[serde(deserialize_with = "de_url_list")]
    pub hub_url: Option<String>,
    /// JetStream domain of the hub, used to reach it through the leaf.
    pub domain: String,
    /// Credentials for the leaf→hub link.
    pub creds: Option<PathBuf>,
    /// TLS for the leaf→hub link.
    pub tls: TlsFiles,
    /// The user local applications (sensors, `run-agent`) log in to the spawned leaf
    /// as. The node logs in as a user of its own; see README "Local clients".
    pub local_user: String,
    /// The local user's password. Default: generated once and kept in
    /// `<state_dir>/leaf-users.json`.
    pub local_password: Option<String>,
    /// Subjects the local user may publish to (an allow-list; the node's own
    /// subjects, JetStream and `$SYS` stay denied whatever it says).
    pub local_publish: Vec<String>,
    /// Subjects the local user may subscribe to (same rule).
    pub local_subscribe: Vec<String>,
}

impl LeafSection {
    /// Each server of `hub_url`, in order: one, or several of a hub cluster.
    pub fn hub_urls(&self) -> Vec<String> {
        self.hub_url.as_deref().map(split_urls).unwrap_or_default()
    }
}

/// The servers of a comma-separated URL list, trimmed, empty items dropped.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

impl std::fmt::Debug for LeafSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafSection")
            .field("spawn", &self.spawn)
            .field("nats_server", &self.nats_server)
            .field("listen", &self.listen)
            .field(
                "hub_url",
                &self.hub_url.as_deref().map(crate::connect::redact_url),
            )
            .field("domain", &self.domain)
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .field("local_user", &self.local_user)
            .field(
                "local_password",
                &self.local_password.as_ref().map(|_| "***"),
            )
            .field("local_publish", &self.local_publish)
            .field("local_subscribe", &self.local_subscribe)
            .finish()
    }
}

impl Default for LeafSection {
    fn default() -> Self {
        Self {
            spawn: false,
            nats_server: None,
            listen: "127.0.0.1:4222".to_owned(),
            hub_url: None,
            domain: DEFAULT_HUB_DOMAIN.to_owned(),
            creds: None,
            tls: TlsFiles::default(),
            local_user: "local".to_owned(),
            local_password: None,
            local_publish: vec![">".to_owned()],
            local_subscribe: vec![">".to_owned()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
        }
    }
}

/// Node-wide ceilings; an agent's own limits are capped by these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    #[serde(deserialize_with = "de_count")]
    pub max_agents: u32,
    /// Linear memory of one agent instance, bytes.
    #[serde(deserialize_with = "de_size")]
    pub max_memory: u64,
    #[serde(deserialize_with = "de_duration")]
    pub max_timeout: Duration,
    /// Concurrent instances of one agent.
    #[serde(deserialize_with = "de_count")]
    pub max_concurrency: u32,
    #[serde(deserialize_with = "de_size")]
    pub max_module_size: u64,
    /// Instances the pooling allocator reserves room for, across all agents.
    #[serde(deserialize_with = "de_count")]
    pub pool_slots: u32,
    /// Largest kv quota one agent may ask for.
    #[serde(deserialize_with = "de_size")]
    pub max_kv_quota: u64,
    /// Sum of the kv quotas of all agents: what agents may keep on this disk.
    #[serde(deserialize_with = "de_size")]
    pub kv_budget: u64,
    /// Largest output one invocation may return.
    #[serde(deserialize_with = "de_size")]
    pub max_output: u64,
    /// Most fuel one invocation may ask for (none: any, as long as the deadline
    /// holds).
    pub max_fuel: Option<u64>,
    /// Bytes of trigger messages one agent may hold in the node (running or waiting
    /// for an instance); beyond it a message is refused with `busy`.
    #[serde(deserialize_with = "de_size")]
    pub max_pending_bytes: u64,
    /// Trigger messages of one agent that may wait in the node for an instance;
    /// beyond it (or `max_pending_bytes`) a message is refused with `busy` and
    /// counted.
    pub max_queued: u64,
}

/// A 32-bit process (armv7) has 3 GiB of address space, and the pooling allocator
/// reserves `pool_slots x MEMORIES_PER_COMPONENT (2) x max_memory` of it up front:
/// smaller defaults there.
const IS_32_BIT: bool = cfg!(target_pointer_width = "32");

/// `limits.max_memory` by default on 32-bit hosts (it is 64 MiB on 64-bit ones).
pub const DEFAULT_MAX_MEMORY_32_BIT: u64 = 32 << 20;

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_agents: 32,
            max_memory: if IS_32_BIT {
                DEFAULT_MAX_MEMORY_32_BIT
            } else {
                64 << 20
            },
            max_timeout: Duration::from_secs(30),
            max_concurrency: 16,
            max_module_size: 32 << 20,
            pool_slots: if IS_32_BIT { 8 } else { 64 },
            max_kv_quota: 64 << 20,
            kv_budget: 1 << 30,
            max_output: 16 << 20,
            max_fuel: None,
            max_pending_bytes: 16 << 20,
            max_queued: 65_536,
        }
    }
}

/// sled tuning. Its own defaults (1 GiB cache, flush every 500 ms) are wrong for
/// a board with 512 MiB of RAM and an SD card.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    #[serde(deserialize_with = "de_size")]
    pub cache_capacity: u64,
    #[serde(deserialize_with = "de_duration")]
    pub flush_every: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            cache_capacity: 16 << 20,
            flush_every: Duration::from_millis(500),
        }
    }
}

/// Self-update: whether the node follows `edgeleaf upgrade` announcements, and how
/// long a new binary has to come up healthy before the previous one is restored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeSection {
    /// Off: the node ignores announcements (a device upgraded by its package
    /// manager only).
    #[serde(deserialize_with = "de_bool")]
    pub enabled: bool,
    /// From starting the new binary to its first heartbeat with all its agents
    /// running again.
    #[serde(deserialize_with = "de_duration")]
    pub health_timeout: Duration,
}

impl Default for UpgradeSection {
    fn default() -> Self {
        Self {
            enabled: true,
            health_timeout: Duration::from_secs(60),
        }
    }
}

/// Sections a `EDGELEAF_<SECTION>_<KEY>` variable may address.
const SECTIONS: &[&str] = &[
    "node",
    "nats",
    "leaf",
    "heartbeat",
    "limits",
    "store",
    "outbox",
    "logs",
    "security",
    "devices",
    "discovery",
    "upgrade",
];

impl Config {
    /// Reads `path`, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        refuse_world_writable(path, "config")?;
        let mut config = Self::from_toml(&text, &path.display().to_string(), std::env::vars())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for agent in &mut config.agents {
            if agent.wasm.is_relative() {
                agent.wasm = base.join(&agent.wasm);
            }
        }
        config.check_secret_files()?;
        Ok(config)
    }

    /// Defaults plus the environment, for a node started without a file.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self::from_toml("", "(defaults)", std::env::vars())?;
        config.check_secret_files()?;
        Ok(config)
    }

    /// The files that hold secrets (credentials, nkey seeds, TLS keys), with the
    /// key that names each.
    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("nats.creds", &self.nats.creds),
            ("nats.nkey", &self.nats.nkey),
            ("nats.tls.key", &self.nats.tls.key),
            ("leaf.creds", &self.leaf.creds),
            ("leaf.tls.key", &self.leaf.tls.key),
        ]
        .into_iter()
        .filter_map(|(key, path)| Some((key, path.as_deref()?)))
        .collect()
    }

    /// Refuses a secret file that anyone may write: whoever can replace a key or a
    /// credentials file can make the node talk to their server as someone else;
    /// whoever can replace a CA can put their own server in the hub's place.
    pub(crate) fn check_secret_files(&self) -> Result<(), ConfigError> {
        let cas = [
            ("nats.tls.ca", &self.nats.tls.ca),
            ("leaf.tls.ca", &self.leaf.tls.ca),
        ]
        .into_iter()
        .filter_map(|(key, path)| Some((key, path.as_deref()?)));
        for (key, path) in self.secret_files().into_iter().chain(cas) {
            refuse_world_writable(path, key)?;
        }
        Ok(())
    }

    /// What is allowed but unwise, for the log at start and `node --check`:
    /// plain text off this machine, secrets that other users can read.
    pub fn warnings(&self, config_path: Option<&Path>) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        out.extend(crate::connect::plaintext_warning(
            "nats.url",
            &self.nats_url(),
            &self.nats.tls,
        ));
        if let Some(url) = &self.leaf.hub_url {
            out.extend(crate::connect::plaintext_warning(
                "leaf.hub_url",
                url,
                &self.leaf.tls,
            ));
        }
        if self.leaf.spawn {
            let listen = self.leaf.listen.parse::<std::net::SocketAddr>();
            if listen.is_ok_and(|a| !a.ip().is_loopback()) {
                out.push(format!(
                    "leaf.listen {} is not a loopback address: other machines can try the \
                     local user's password on the leaf (use 127.0.0.1)",
                    self.leaf.listen
                ));
            }
            let n = &self.nats;
            if n.user.is_some()
                || n.password.is_some()
                || n.token.is_some()
                || n.creds.is_some()
                || n.nkey.is_some()
            {
                out.push(
                    "[nats] credentials are not used with leaf.spawn = true: the node logs in \
                     to its own leaf with generated ones"
                        .to_owned(),
                );
            }
        }
        let world_readable =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        for (key, path) in self.secret_files() {
            if world_readable(path) {
                out.push(format!(
                    "{key} {} is readable by every user; chmod o-r it",
                    path.display()
                ));
            }
        }
        let has_secrets = self.nats.password.is_some()
            || self.nats.token.is_some()
            || self
                .leaf
                .hub_url
                .as_deref()
                .is_some_and(|u| u.contains('@'));
        if let Some(path) = config_path.filter(|p| has_secrets && world_readable(p)) {
            out.push(format!(
                "config {} holds a password or token and is readable by every user; chmod o-r it",
                path.display()
            ));
        }
        out
    }

    /// Parses `text` (its `origin` names it in errors), overlays `env`, validates.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            ConfigError::Syntax {
                origin: origin.to_owned(),
                message: format!("{}{}", at.unwrap_or_default(), e.message()),
            }
        })?;
        let from_env = overlay_env(&mut table, env);
        let key_error = |key: String, message: String| ConfigError::Key {
            origin: origin.to_owned(),
            env: from_env.get(&key).cloned(),
            message: match SECRET_KEYS.contains(&key.as_str()) {
                // serde quotes the offending value; this one must not be printed.
                true => "must be a string (value not shown: it is a secret)".to_owned(),
                false => message,
            },
            key,
        };
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| key_error(e.path().to_string(), e.into_inner().message().to_owned()))?;
        config
            .validated()
            .map_err(|(key, message)| key_error(key.to_owned(), message))
    }

    /// Validates a config built in code (`edgeleaf up`); `origin` names it in errors.
    pub fn validate(self, origin: &str) -> Result<Self, ConfigError> {
        self.validated().map_err(|(key, message)| ConfigError::Key {
            origin: origin.to_owned(),
            key: key.to_owned(),
            env: None,
            message,
        })
    }

    /// Checks what types alone cannot, and fills derived defaults.
    fn validated(mut self) -> Result<Self, (&'static str, String)> {
        if !protocol::is_token(&self.node.id) {
            return Err((
                "node.id",
                format!(
                    "{:?} is not a single NATS token (use letters, digits, '-' and '_')",
                    self.node.id
                ),
            ));
        }
        if self.node.name.is_empty() {
            self.node.name = self.node.id.clone();
        }
        for (k, v) in &self.node.tags {
            if !protocol::is_token(k) || !protocol::is_token(v) {
                return Err((
                    "node.tags",
                    format!("tag {k:?} = {v:?}: keys and values must be single NATS tokens"),
                ));
            }
        }
        if let Some(l) = &self.node.location
            && !protocol::is_token(l)
        {
            return Err((
                "node.location",
                format!("{l:?} is not a single NATS token (use letters, digits, '-' and '_')"),
            ));
        }
        let d = &self.discovery;
        for (key, value) in [
            ("discovery.discovery_prefix", &d.discovery_prefix),
            ("discovery.workloads_prefix", &d.workloads_prefix),
            ("discovery.results_prefix", &d.results_prefix),
        ] {
            if !protocol::is_discovery_prefix(value) {
                return Err((
                    key,
                    format!("{value:?} must be a single NATS token not starting with '_' or '$'"),
                ));
            }
        }
        if self.node.state_dir.as_os_str().is_empty() {
            return Err(("node.state_dir", "must not be empty".into()));
        }
        if let Some(p) = &self.nats.prefix
            && !protocol::is_token(p)
        {
            return Err(("nats.prefix", format!("{p:?} is not a single NATS token")));
        }
        if let Some(url) = &self.nats.url {
            check_url(url, &["nats", "tls", "ws", "wss"]).map_err(|m| ("nats.url", m))?;
        }
        if self.nats.subscription_capacity == Some(0) {
            return Err((
                "nats.subscription_capacity",
                "must be greater than 0".into(),
            ));
        }
        if self.nats.tls.key.is_some() != self.nats.tls.cert.is_some() {
            return Err(("nats.tls", "cert and key must be given together".into()));
        }
        if self.leaf.tls.key.is_some() != self.leaf.tls.cert.is_some() {
            return Err(("leaf.tls", "cert and key must be given together".into()));
        }
        self.leaf
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                (
                    "leaf.listen",
                    format!("{:?}: {e} (want IP:PORT)", self.leaf.listen),
                )
            })?;
        if !protocol::is_token(&self.leaf.domain) {
            return Err((
                "leaf.domain",
                format!("{:?} is not a single NATS token", self.leaf.domain),
            ));
        }
        match (&self.leaf.hub_url, self.leaf.spawn) {
            (Some(url), _) => check_url(url, &["nats-leaf", "nats", "tls", "ws", "wss"])
                .map_err(|m| ("leaf.hub_url", m))?,
            (None, true) => {
                return Err((
                    "leaf.hub_url",
                    "required when leaf.spawn = true (the hub's leafnode URL, e.g. nats-leaf://hub.example:7422)".into(),
                ));
            }
            (None, false) => {}
        }
        self.check_local_user()?;
        for (key, dirs) in [
            ("devices.read", &self.devices.read),
            ("devices.write", &self.devices.write),
            ("devices.serial", &self.devices.serial),
        ] {
            if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
                return Err((key, format!("{} is not an absolute path", d.display())));
            }
        }
        for entry in &self.devices.connect {
            protocol::ConnectRule::parse(entry).map_err(|e| ("devices.connect", e))?;
        }
        for key in self
            .security
            .trusted_publishers
            .iter()
            .chain(&self.security.revoked_publishers)
        {
            crate::shipping::PublicKey::parse(key)
                .map_err(|e| ("security.trusted_publishers", e))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for agent in &self.agents {
            agent
                .spec()
                .check(self.prefix())
                .map_err(|e| ("agents", e.message))?;
            if !names.insert(agent.name.as_str()) {
                return Err(("agents", format!("two agents are named {:?}", agent.name)));
            }
        }
        if self.outbox.max_bytes < 4096 {
            return Err(("outbox.max_bytes", "must be at least 4KiB".into()));
        }
        if self.logs.max_bytes < 4096 {
            return Err(("logs.max_bytes", "must be at least 4KiB".into()));
        }
        if self.logs.ttl.is_zero() {
            return Err(("logs.ttl", "must be above 0".into()));
        }
        if self.outbox.flush_interval.is_zero() || self.outbox.ttl.is_zero() {
            return Err(("outbox", "ttl and flush_interval must be above 0".into()));
        }
        if self.heartbeat.interval < Duration::from_millis(100) {
            return Err(("heartbeat.interval", "must be at least 100ms".into()));
        }
        if self.upgrade.health_timeout <= self.heartbeat.interval {
            return Err((
                "upgrade.health_timeout",
                format!(
                    "must be above heartbeat.interval ({:?}): a new binary is healthy once it sent a heartbeat",
                    self.heartbeat.interval
                ),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_agents", l.max_agents as u64),
            ("limits.max_memory", l.max_memory),
            ("limits.max_concurrency", l.max_concurrency as u64),
            ("limits.max_module_size", l.max_module_size),
            ("limits.pool_slots", l.pool_slots as u64),
            ("limits.max_kv_quota", l.max_kv_quota),
            ("limits.kv_budget", l.kv_budget),
            ("limits.max_output", l.max_output),
            ("limits.max_pending_bytes", l.max_pending_bytes),
            ("limits.max_queued", l.max_queued),
        ] {
            if v == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if l.max_timeout.is_zero() {
            return Err(("limits.max_timeout", "must be greater than 0".into()));
        }
        let memories = u64::from(crate::runtime::engine::MEMORIES_PER_COMPONENT);
        let reserved = u64::from(l.pool_slots) * memories * l.max_memory;
        if IS_32_BIT && reserved > 1 << 30 {
            return Err((
                "limits.pool_slots",
                format!(
                    "pool_slots x 2 x max_memory = {} MiB of address space, more than a 32-bit \
                     process can spare (at most 1024 MiB): lower pool_slots or max_memory",
                    reserved >> 20
                ),
            ));
        }
        Ok(self)
    }

    /// The URL the node connects to.
    pub fn nats_url(&self) -> String {
        self.nats
            .url
            .clone()
            .unwrap_or_else(|| format!("nats://{}", self.leaf.listen))
    }

    pub fn prefix(&self) -> &str {
        self.nats.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// Where workloads reach the node: `[node] location`, else its `site` tag,
    /// else its id.
    pub fn location(&self) -> &str {
        self.node
            .location
            .as_deref()
            .or(self.node.tags.get("site").map(String::as_str))
            .unwrap_or(&self.node.id)
    }

    /// The spawned leaf's local user: a name that is not the node's, and
    /// allow-lists of well-formed subjects.
    fn check_local_user(&self) -> Result<(), (&'static str, String)> {
        let l = &self.leaf;
        if !protocol::is_token(&l.local_user) || l.local_user == NODE_LEAF_USER {
            return Err((
                "leaf.local_user",
                format!(
                    "{:?} must be a single NATS token other than {NODE_LEAF_USER:?}",
                    l.local_user
                ),
            ));
        }
        if l.local_password.as_deref().is_some_and(|p| p.len() < 12) {
            return Err((
                "leaf.local_password",
                "must be at least 12 characters".into(),
            ));
        }
        for (key, list) in [
            ("leaf.local_publish", &l.local_publish),
            ("leaf.local_subscribe", &l.local_subscribe),
        ] {
            if let Some(bad) = list.iter().find(|s| !protocol::is_valid_pattern(s)) {
                return Err((key, format!("{bad:?} is not a NATS subject")));
            }
        }
        Ok(())
    }
}

/// The user the node logs in to its own spawned leaf as (local applications use
/// `leaf.local_user`).
pub const NODE_LEAF_USER: &str = "edgeleaf-node";

/// A file that every user may write is refused: `what` names it in the error.
fn refuse_world_writable(path: &Path, what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => Err(ConfigError::Insecure {
            path: path.to_owned(),
            message: format!(
                "{what} is writable by every user (mode {:o}); chmod o-w it",
                meta.permissions().mode() & 0o7777
            ),
        }),
        // A missing file is reported by whoever needs it, with its own context.
        _ => Ok(()),
    }
}

/// The hostname as a token, so a fresh device has a usable, stable id.
pub fn default_node_id() -> String {
    protocol::tokenize(&sysinfo::System::host_name().unwrap_or_default())
}

/// Checks every server of a URL list (`a,b,c`) for one of `schemes`.
fn check_url(list: &str, schemes: &[&str]) -> Result<(), String> {
    if list.split(',').any(|u| u.trim().is_empty()) {
        return Err(format!(
            "{:?} has an empty server in its list (separate URLs with single commas)",
            crate::connect::redact_url(list)
        ));
    }
    for url in split_urls(list) {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some(s) if schemes.contains(&s) => {}
            _ => {
                return Err(format!(
                    "{:?} is not a URL with scheme {}",
                    crate::connect::redact_url(&url),
                    schemes.join("://, ") + "://"
                ));
            }
        }
    }
    Ok(())
}

/// Writes every `EDGELEAF_<SECTION>_<KEY>` variable into `table` and returns which
/// dotted key came from which variable. Variables of no config section
/// (`EDGELEAF_LOG`, `EDGELEAF_CONFIG`) are left alone.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let mut origins = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("EDGELEAF_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = section_table.as_table_mut() else {
            continue; // a non-table section fails deserialization with its own message
        };
        let (target, leaf_key) = match key.strip_prefix("tls_") {
            Some(k) => (
                section_table
                    .entry("tls")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut(),
                k.to_owned(),
            ),
            None => (Some(section_table), key.to_owned()),
        };
        let Some(target) = target else { continue };
        let value = if section == "node" && leaf_key == "tags" {
            toml::Value::Table(parse_tags(&value))
        } else if (section == "security" && leaf_key.ends_with("_publishers"))
            || section == "devices"
        {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| toml::Value::String(k.to_owned()))
                    .collect(),
            )
        } else {
            toml::Value::String(value)
        };
        target.insert(leaf_key.clone(), value);
        let dotted = if key.starts_with("tls_") {
            format!("{section}.tls.{leaf_key}")
        } else {
            format!("{section}.{leaf_key}")
        };
        origins.insert(dotted, var);
    }
    origins
}

/// `k=v,k2=v2` → a table (entries without `=` keep an empty value, which
/// validation then rejects by name).
fn parse_tags(s: &str) -> toml::Table {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.trim().to_owned(),
                toml::Value::String(v.trim().to_owned()),
            )
        })
        .collect()
}

/// A number, or (from the environment) a string holding one.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let v = match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => i,
        IntOrString::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("{s:?} is not a whole number")))?,
    };
    u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
}

fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        Str(String),
    }
    match BoolOrString::deserialize(d)? {
        BoolOrString::Bool(b) => Ok(b),
        BoolOrString::Str(s) => match s.trim() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(D::Error::custom(format!(
                "{other:?} is not a boolean (true or false)"
            ))),
        },
    }
}

/// One URL, several in one string separated by commas, or an array of URLs; kept
/// as one comma-separated string (the form NATS clients and `-s` take).
fn de_url_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d).map_err(|_| {
        D::Error::custom("want a URL, or an array of URLs (the servers of a hub cluster)")
    })? {
        OneOrMany::One(s) => Ok(Some(s)),
        OneOrMany::Many(v) if v.is_empty() => Err(D::Error::custom("the array of URLs is empty")),
        OneOrMany::Many(v) => Ok(Some(v.join(","))),
    }
}

/// `"10s"`, `"250ms"`, `"1m 30s"`, or a number of seconds.
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    use serde::de::Error;
    match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => u64::try_from(i)
            .map(Duration::from_secs)
            .map_err(|_| D::Error::custom(format!("{i} is not a duration"))),
        IntOrString::Str(s) => parse_duration(&s).map_err(D::Error::custom),
    }
}

/// Parses a duration such as `10s`, `250ms` or `1m 30s`; a bare number is seconds.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// assert_eq!(edgeleaf::config::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(edgeleaf::config::parse_duration("3"), Ok(Duration::from_secs(3)));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. \"10s\" or \"250ms\""))
}

/// `"64MiB"`, `"512k"`, or a number of bytes.
fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => {
            u64::try_from(i).map_err(|_| D::Error::custom(format!("{i} is not a size")))
        }
        IntOrString::Str(s) => parse_size(&s).map_err(D::Error::custom),
    }
}

/// Parses a byte size: a number with an optional unit (`k`/`KiB` = 1024,
/// `KB` = 1000, likewise M and G).
///
/// # Examples
/// ```
/// assert_eq!(edgeleaf::config::parse_size("64MiB"), Ok(64 << 20));
/// assert_eq!(edgeleaf::config::parse_size("2 GB"), Ok(2_000_000_000));
/// assert_eq!(edgeleaf::config::parse_size("100"), Ok(100));
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("{s:?} is not a size; write e.g. \"64MiB\", \"512KiB\" or a number of bytes");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", Vec::new())
    }

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, "test.toml", env)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse("").unwrap();
        assert_eq!(c.heartbeat.interval, Duration::from_secs(10));
        assert_eq!(c.nats_url(), "nats://127.0.0.1:4222");
        assert_eq!(c.node.name, c.node.id);
        assert!(protocol::is_token(&c.node.id));
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../config/edgeleaf.toml");
        let c = parse(text).expect("config/edgeleaf.toml must stay valid");
        assert!(c.leaf.spawn);
    }

    #[test]
    fn hub_url_takes_the_servers_of_a_hub_cluster() {
        let one = "[leaf]\nspawn = true\nhub_url = \"nats-leaf://a:7422\"\n";
        assert_eq!(parse(one).unwrap().leaf.hub_urls(), ["nats-leaf://a:7422"]);
        let three = "[leaf]\nspawn = true\nhub_url = [\"nats-leaf://a:7422\", \"tls://b:7422\", \"nats-leaf://c:7422\"]\n";
        let c = parse(three).unwrap();
        assert_eq!(
            c.leaf.hub_urls(),
            ["nats-leaf://a:7422", "tls://b:7422", "nats-leaf://c:7422"]
        );
        let listed = "[leaf]\nspawn = true\nhub_url = \"nats-leaf://a:7422, nats-leaf://b:7422\"\n";
        assert_eq!(parse(listed).unwrap().leaf.hub_urls().len(), 2);
        let e = err("[leaf]\nspawn = true\nhub_url = [\"nats-leaf://a:7422\", \"b:7422\"]\n");
        assert!(
            e.contains("leaf.hub_url") && e.contains("\"b:7422\""),
            "{e}"
        );
        let e = err("[leaf]\nspawn = true\nhub_url = \"nats-leaf://a:7422,,nats-leaf://b:7422\"\n");
        assert!(
            e.contains("leaf.hub_url") && e.contains("empty server"),
            "{e}"
        );
        let e = err("[leaf]\nspawn = true\nhub_url = []\n");
        assert!(e.contains("leaf.hub_url") && e.contains("empty"), "{e}");
        let e = err("[leaf]\nspawn = true\nhub_url = 7422\n");
        assert!(
            e.contains("leaf.hub_url") && e.contains("array of URLs"),
            "{e}"
        );
        let c = parse("[nats]\nurl = [\"nats://a:4222\", \"nats://b:4222\"]\n").unwrap();
        assert_eq!(c.nats_url(), "nats://a:4222,nats://b:4222");
        let servers = crate::connect::server_addrs(&c.nats_url()).unwrap();
        assert_eq!(servers.len(), 2);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[leaf]\nhub_ulr = \"nats-leaf://x:7422\"\n");
        assert!(e.contains("test.toml") && e.contains("hub_ulr"), "{e}");
        let e = err("[nope]\n");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn wrong_type_and_value_are_named() {
        let e = err("[heartbeat]\ninterval = \"ten\"\n");
        assert!(
            e.contains("heartbeat.interval") && e.contains("\"ten\""),
            "{e}"
        );
        let e = err("[limits]\nmax_memory = \"lots\"\n");
        assert!(e.contains("limits.max_memory"), "{e}");
        let e = err("[node]\nid = \"a.b\"\n");
        assert!(e.contains("node.id"), "{e}");
        let e = err("[leaf]\nspawn = true\n");
        assert!(e.contains("leaf.hub_url"), "{e}");
        let e = err("[leaf]\nlisten = \"localhost\"\n");
        assert!(e.contains("leaf.listen"), "{e}");
        let e = err("[node]\ntags = 3\n");
        assert!(e.contains("node.tags"), "{e}");
        let e = err("[node\n");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn environment_overrides_file() {
        let c = parse_env(
            "[heartbeat]\ninterval = \"10s\"\n",
            &[
                ("EDGELEAF_HEARTBEAT_INTERVAL", "2s"),
                ("EDGELEAF_NODE_ID", "gw-7"),
                ("EDGELEAF_NODE_TAGS", "site=lab, role=gw"),
                ("EDGELEAF_LEAF_SPAWN", "true"),
                ("EDGELEAF_LEAF_HUB_URL", "nats-leaf://127.0.0.1:7422"),
                ("EDGELEAF_NATS_TLS_CA", "/etc/ca.pem"),
                ("EDGELEAF_LIMITS_POOL_SLOTS", "8"),
                ("EDGELEAF_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.heartbeat.interval, Duration::from_secs(2));
        assert_eq!(c.node.id, "gw-7");
        assert_eq!(c.node.tags.get("role").map(String::as_str), Some("gw"));
        assert!(c.leaf.spawn);
        assert_eq!(c.nats.tls.ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(c.limits.pool_slots, 8);
    }

    #[test]
    fn devices_take_lists_from_the_environment_and_check_them() {
        let c = parse_env(
            "[devices]\nread = [\"/srv/in-file\"]\n",
            &[
                ("EDGELEAF_DEVICES_READ", "/sys/class/thermal, /run/sensors"),
                (
                    "EDGELEAF_DEVICES_CONNECT",
                    "10.0.0.0/24:502,192.168.1.20:80",
                ),
                ("EDGELEAF_DEVICES_SERIAL", "/dev/ttyUSB0"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.devices.read,
            [Path::new("/sys/class/thermal"), Path::new("/run/sensors")]
        );
        assert_eq!(c.devices.connect, ["10.0.0.0/24:502", "192.168.1.20:80"]);
        assert_eq!(c.devices.serial, [Path::new("/dev/ttyUSB0")]);
        assert!(c.devices.write.is_empty());
        for (text, needle) in [
            ("[devices]\nread = [\"relative\"]\n", "devices.read"),
            ("[devices]\nconnect = [\"plc_local:502\"]\n", "DNS name"),
            ("[devices]\nconnect = [\"10.0.0.1\"]\n", "devices.connect"),
            ("[devices]\nserial = [\"ttyUSB0\"]\n", "devices.serial"),
        ] {
            let e = err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let e = parse_env("", &[("EDGELEAF_HEARTBEAT_INTERVAL", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("EDGELEAF_HEARTBEAT_INTERVAL") && e.contains("heartbeat.interval"),
            "{e}"
        );
        let e = parse_env("", &[("EDGELEAF_NODE_COLOUR", "red")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("").is_err());
    }
}
