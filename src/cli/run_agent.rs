//! `edgeleaf run-agent`: run one agent against a NATS server, for local development.
//! It embeds the agent runtime on purpose (no node, no heartbeats).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::ConnOpts;
use crate::config::{AgentLimitsConfig, DevicesSection, LimitsSection, parse_duration, parse_size};
use crate::connect::Persistence;
use crate::node::agents::AgentPool;
use crate::node::telemetry::Telemetry;
use crate::protocol::{AgentSpec, SerialGrant, tokenize};
use crate::runtime::{EngineOptions, Runtime};
use crate::store::{Store, StoreOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent module (.wasm): a component or a WASI preview1 command.
    file: PathBuf,
    #[command(flatten)]
    agent: AgentOpts,
    /// Keep kv data and compiled code here. Default: a fresh temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Node id used in result, event and log subjects. Default: `<hostname>-dev`,
    /// never the device's own node id (whose results a local leaf user may not
    /// publish).
    #[arg(long)]
    node_id: Option<String>,
}

/// What `run-agent` and `deploy` both take to describe an agent.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentOpts {
    /// Subject to serve (repeat for several; wildcards allowed). Optional with
    /// --every or --cron.
    #[arg(long = "trigger", required_unless_present_any = ["every", "cron"])]
    pub triggers: Vec<String>,
    /// Run on a timer, every DURATION (at least 100ms; ticks at multiples of it
    /// since the epoch). Repeatable; each run is one invocation on
    /// <prefix>.timer.<node>.<agent> with a JSON payload.
    #[arg(long, value_name = "DURATION")]
    pub every: Vec<String>,
    /// Run on a cron schedule: 5 fields (minute hour day month weekday) or 6
    /// (seconds first), or @hourly, @daily, @weekly, @monthly, @yearly. Repeatable.
    #[arg(long, value_name = "EXPR")]
    pub cron: Vec<String>,
    /// Time zone of the --cron entries (IANA name, e.g. Europe/Berlin). Default: UTC.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Moves each node's timer runs by a steady amount up to this, to spread a
    /// fleet: a duration (30s) or a share of the period (10%).
    #[arg(long)]
    pub jitter: Option<String>,
    /// Agent name. Default: the file name.
    #[arg(long)]
    pub name: Option<String>,
    /// Linear memory per instance. The default fits every node's default ceiling
    /// (`limits.max_memory`: 64MiB, 32MiB on 32-bit boards), like an `[[agents]]`
    /// entry's.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Deadline per invocation.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Instances running at once.
    #[arg(long, default_value_t = 4)]
    pub max_concurrency: u32,
    /// Fuel per invocation (roughly, wasm instructions). Default: unlimited.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Largest output per invocation.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_output: u64,
    /// Bytes the agent may keep in kv.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub kv_quota: u64,
    /// Directory the agent may read, preopened at the same path (repeat). Must be
    /// within the node's [devices] read or write ceiling.
    #[arg(long, value_name = "DIR")]
    pub read: Vec<String>,
    /// Directory the agent may read and write (repeat). Must be within the node's
    /// [devices] write ceiling.
    #[arg(long, value_name = "DIR")]
    pub write: Vec<String>,
    /// Outbound TCP (and HTTP) the agent may open: IP:PORT, CIDR:PORT, [IPv6]:PORT or NAME:PORT
    /// (repeat; components only). Must be within the node's [devices] connect.
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Vec<String>,
    /// Serial port the agent may open, PATH[@BAUD] (repeat; components only). Must
    /// be listed in the node's [devices] serial.
    #[arg(long, value_name = "PATH[@BAUD]")]
    pub serial: Vec<String>,
    /// Subject the agent may publish to (repeat; wildcards allowed).
    #[arg(long = "allow-publish")]
    pub allow_publish: Vec<String>,
    /// Config entry for the agent, key=value (repeat).
    #[arg(long = "config", value_parser = parse_kv)]
    pub config: Vec<(String, String)>,
    /// What the agent can do, a NATS token (repeat): discovery finds it by these
    /// (`discovery.query.capability.<CAP>`) and workloads are routed by them.
    #[arg(long = "capability", value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// The agent's type on its card (default: its name).
    #[arg(long = "type", value_name = "TYPE")]
    pub agent_type: Option<String>,
    /// fresh: a new instance per message (nothing carries over). warm: instances
    /// are kept between messages, so caches and connections survive; one is
    /// replaced after --max-invocations messages and at once after a trap or a
    /// timeout. Components only.
    #[arg(long, default_value = "fresh", value_name = "fresh|warm")]
    pub instances: crate::protocol::Instances,
    /// With --instances warm: messages one instance serves before it is replaced.
    /// Default: 10000.
    #[arg(long, value_name = "N")]
    pub max_invocations: Option<u64>,
}

impl AgentOpts {
    /// The spec these flags describe, for the module at `file`.
    pub fn spec(&self, file: &std::path::Path) -> AgentSpec {
        let name = self.name.clone().unwrap_or_else(|| {
            tokenize(
                &file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        });
        AgentSpec {
            name,
            triggers: self.triggers.clone(),
            schedule: self
                .every
                .iter()
                .map(|d| format!("@every {d}"))
                .chain(self.cron.iter().cloned())
                .collect(),
            timezone: self.timezone.clone(),
            jitter: self.jitter.clone(),
            read: self.read.clone(),
            write: self.write.clone(),
            connect: self.connect.clone(),
            serial: self.serial.clone(),
            limits: AgentLimitsConfig {
                memory: self.memory,
                timeout: self.timeout,
                max_concurrency: self.max_concurrency,
                fuel: self.fuel,
                max_output: self.max_output,
                kv_quota: self.kv_quota,
            }
            .to_limits(),
            allow_publish: self.allow_publish.clone(),
            config: self.config.iter().cloned().collect::<BTreeMap<_, _>>(),
            capabilities: self.capabilities.clone(),
            agent_type: self.agent_type.clone(),
            instances: self.instances,
            max_invocations: self.max_invocations,
        }
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let stop = crate::shutdown::signal();
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let spec = args.agent.spec(&args.file);
    // The temp dir lives until we return, so several run-agents can run side by side.
    let temp;
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary state dir")?;
            temp.path().to_owned()
        }
    };
    crate::node::private_dir(&state_dir, "--state-dir")?;
    let store = Store::open(
        &state_dir,
        StoreOptions {
            cache_capacity: 8 << 20,
            flush_every: Duration::from_millis(500),
        },
    )?;
    // The node's ceilings are this command's own flags: nothing above them.
    let a = &args.agent;
    let limits = LimitsSection {
        max_agents: 1,
        max_memory: a.memory,
        max_timeout: a.timeout,
        max_concurrency: a.max_concurrency,
        max_module_size: wasm.len() as u64,
        pool_slots: a.max_concurrency + 1,
        max_kv_quota: a.kv_quota,
        kv_budget: a.kv_quota,
        max_output: a.max_output,
        max_fuel: a.fuel,
        ..LimitsSection::default()
    };
    let runtime = Runtime::new(&EngineOptions {
        max_memory: a.memory,
        pool_slots: limits.pool_slots,
        cache_dir: Some(state_dir.join("compiled")),
    })?;
    let client = conn
        .target()
        .connect("edgeleaf-run-agent", Persistence::Once)
        .await?;
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}-dev", crate::config::default_node_id()));
    let pool = Arc::new(
        AgentPool::new(
            runtime,
            store.clone(),
            client.clone(),
            Telemetry::Direct(client.clone()),
            conn.subjects(),
            &node_id,
            limits,
        )
        // The grants on the command line are the ceiling: whoever runs this owns
        // the device.
        .with_devices(DevicesSection {
            read: args.agent.read.iter().map(PathBuf::from).collect(),
            write: args.agent.write.iter().map(PathBuf::from).collect(),
            connect: args.agent.connect.clone(),
            // Malformed entries are refused by the spec check when the agent starts.
            serial: args
                .agent
                .serial
                .iter()
                .filter_map(|s| SerialGrant::parse(s).ok())
                .map(|g| PathBuf::from(g.path))
                .collect(),
        }),
    );
    let agent = pool
        .start(spec, &wasm)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "agent {} ({}, sha256 {}) serving {} on {}; Ctrl-C stops it",
        agent.spec.name,
        agent.kind.as_str(),
        &agent.digest[..12],
        agent.spec.triggers.join(", "),
        conn.url()
    );
    stop.await;
    pool.stop_all().await;
    let _ = client.flush().await;
    store.flush()?;
    Ok(())
}
