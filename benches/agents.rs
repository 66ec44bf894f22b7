//! What an agent invocation costs, in process and through NATS.
//!
//! ```sh
//! cargo bench --bench agents               # from the repository root
//! cargo bench --bench agents -- --quick    # smaller counts, a smoke test
//! EDGELEAF_BENCH_DURABILITY=sync cargo bench --bench agents  # the node with sync durability
//! EDGELEAF_BENCH_SOURCED=1 cargo bench --bench agents  # also (g): records on a leaf stream the hub sources
//! cargo bench --bench agents -- --no-nats  # sections 1 and 2 only
//! cargo bench --bench agents -- --no-nats --no-cache  # section 1 only (under qemu-user,
//!                                          # whose memory the ten engines of 2 exhaust)
//! ```
//!
//! Needs the example agents (`bash wasm-agents/build.sh` builds `wasm-agents/dist/`)
//! and `nats-server` (`$NATS_SERVER`, else `/usr/sbin/nats-server`, else `PATH`).
//! Progress goes to stderr, the Markdown tables to stdout. Measures, in one run:
//!
//! 1. **In process, no NATS**: `Agent::invoke` of `echo.wasm` (a component; once
//!    more with `fuel` set, which runs it on the fuel-metered engine) and of
//!    `upper-c.wasm` (a WASI preview1 command) — a fresh instance and one call each
//!    time — sequentially after a warm-up: mean, p50 and p99; then calls/s and CPU
//!    per call with 16 tasks invoking at once on the tokio worker threads.
//! 2. **Compiled-code cache**: `Runtime::prepare` of `threshold.wasm` (the largest
//!    example) with an empty cache directory (compile and store) against a second
//!    `prepare` from a fresh `Runtime` on the same directory (a cache hit, as after a
//!    restart): median of 5 each.
//! 3. **Through NATS, on loopback**: a hub nats-server (JetStream, domain `hub`) and a
//!    leaf linked to it, started here. The client is on the hub, the responder on the
//!    leaf: (a) a plain async-nats echo responder, (b) an `AgentPool` serving
//!    `echo.wasm`, its result records published straight to NATS (as `run-agent`
//!    does; a node's outbox and forwarder are not part of this), and (c) the
//!    `edgeleaf` binary as users run it: `edgeleaf node -c` on the leaf (after
//!    `edgeleaf hub init`), default settings, `echo.wasm` as a static agent, every
//!    result going through the outbox (batch durability) to the hub's stream, and (d)
//!    the same echo on the same node with `instances = "warm"`; after the runs the
//!    node's outbox counters are checked against its invocations. Two more plain
//!    responders are the floor for what the node promises: (e) also sends a
//!    result-sized record per request to the hub's stream the way the node's
//!    forwarder does (JetStream publish with `Nats-Msg-Id`, acks in flight), and (f)
//!    sends it with a core publish nothing acknowledges; with
//!    `EDGELEAF_BENCH_SOURCED=1` the leaf runs JetStream too and (g) records on a
//!    stream of the leaf that a hub stream sources. Sequential request
//!    latency with a 16-byte payload, then throughput
//!    with K requests kept in flight for a fixed time, and the CPU time the hub, the
//!    leaf and this process spent per request meanwhile.
//!
//! Every loop is bounded in count and in time. The servers are killed by pid when
//! the run ends (also on error or panic), and get `PR_SET_PDEATHSIG` so that they
//! die with this process even if it is killed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use async_nats::{Client, ConnectOptions, Request};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tempfile::TempDir;

use edgeleaf::config::LimitsSection;
use edgeleaf::host::Capabilities;
use edgeleaf::host::log::AgentLog;
use edgeleaf::host::messaging::Publisher;
use edgeleaf::node::agents::AgentPool;
use edgeleaf::node::telemetry::Telemetry;
use edgeleaf::protocol::{AgentLimits, AgentSpec, ERROR_HEADER, Subjects};
use edgeleaf::runtime::engine::EngineOptions;
use edgeleaf::runtime::{Agent, Invocation, Runtime};
use edgeleaf::store::agent_kv::AgentKv;
use edgeleaf::store::{Store, StoreOptions};

/// The request payload everywhere: 16 bytes.
const PAYLOAD: &[u8; 16] = b"edgeleaf-bench16";
const PLAIN_SUBJECT: &str = "bench.plain";
const AGENT_SUBJECT: &str = "bench.agent";
const NODE_SUBJECT: &str = "bench.node";
/// The same echo on the same node, with `instances = "warm"`.
const NODE_WARM_SUBJECT: &str = "bench.nodewarm";
/// (e) and (f): the plain responder that also records each request on the hub's
/// stream, with and without a JetStream ack per record.
const ACKED_SUBJECT: &str = "bench.acked";
const UNACKED_SUBJECT: &str = "bench.unacked";
/// Where (e) and (f) record: a subject the hub's `EDGELEAF_TELEMETRY` stream captures,
/// as a node's results are (`<prefix>.res.<node>.<agent>`).
const RECORD_SUBJECT: &str = "edgeleaf.res.benchplain.echo";
/// (g), with `EDGELEAF_BENCH_SOURCED=1`: the plain responder that records each request
/// on a stream of the leaf's own JetStream, which a hub stream sources.
const SOURCED_SUBJECT: &str = "bench.sourced";
const LEAF_RECORD_SUBJECT: &str = "bench.rec.leaf.echo";
const LEAF_STREAM: &str = "BENCH_LEAF";
const HUB_SOURCED_STREAM: &str = "BENCH_SOURCED";
/// Acks (e) keeps in flight, as the node's forwarder does.
const RECORD_ACKS_IN_FLIGHT: usize = 256;
/// The node process's id (a different one from the in-process pool's).
const NODE_PROCESS_ID: &str = "benchnode";
const NODE_ID: &str = "bench";
/// Instances the pooling allocator reserves, and an agent's concurrency: the node's
/// defaults.
/// On 32-bit boards the node's defaults are smaller (`config.rs`: the pool must fit
/// in the address space), and so are these.
const IS_32_BIT: bool = cfg!(target_pointer_width = "32");
const POOL_SLOTS: u32 = if IS_32_BIT { 8 } else { 64 };
const MAX_CONCURRENCY: u32 = if IS_32_BIT { 8 } else { 16 };
const MAX_MEMORY: u64 = if IS_32_BIT { 32 << 20 } else { 64 << 20 };
/// Timeout of one request through NATS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to accept clients, and the leaf to link.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts and durations of one run.
struct Settings {
    /// Skip section 3 (`--no-nats`).
    nats: bool,
    /// Skip section 2 (`--no-cache`).
    cache: bool,
    in_process_warmup: usize,
    in_process_calls: usize,
    cache_runs: usize,
    latency_warmup: usize,
    latency_requests: usize,
    in_flight: &'static [usize],
    window: Duration,
    /// Upper bound for any one sequential series, whatever its count.
    series_cap: Duration,
}

impl Settings {
    fn from_args() -> Self {
        // `cargo bench` passes `--bench`; only `--quick` and `--no-nats` mean
        // anything here.
        let nats = !std::env::args().any(|a| a == "--no-nats");
        let cache = !std::env::args().any(|a| a == "--no-cache");
        if std::env::args().any(|a| a == "--quick") {
            Self {
                nats,
                cache,
                in_process_warmup: 100,
                in_process_calls: 1_000,
                cache_runs: 2,
                latency_warmup: 50,
                latency_requests: 300,
                in_flight: &[16, 256],
                window: Duration::from_secs(1),
                series_cap: Duration::from_secs(30),
            }
        } else {
            Self {
                nats,
                cache,
                in_process_warmup: 1_000,
                in_process_calls: 20_000,
                cache_runs: 5,
                latency_warmup: 500,
                latency_requests: 5_000,
                in_flight: &[16, 64, 256],
                window: Duration::from_secs(5),
                series_cap: Duration::from_secs(120),
            }
        }
    }
}

fn main() -> ExitCode {
    let settings = Settings::from_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `block_on` runs `run` on this (the main) thread: the nats-server children are
    // spawned from it, and PR_SET_PDEATHSIG follows the thread that spawned them.
    let result = runtime.block_on(run(&settings));
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[agents bench] {msg}");
}

/// Runs every section and renders the report.
async fn run(settings: &Settings) -> Result<String> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-agents/dist");
    let echo = read_wasm(&dist, "echo.wasm")?;
    let upper = read_wasm(&dist, "upper-c.wasm")?;
    let threshold = read_wasm(&dist, "threshold.wasm")?;
    let nats_server = match settings.nats {
        true => Some(nats_server_bin()?),
        false => None,
    };
    let load_start = load_average();
    let started = Instant::now();

    let state = TempDir::new().context("cannot make a temporary directory")?;
    let store = Store::open(
        state.path(),
        StoreOptions {
            cache_capacity: 16 << 20,
            flush_every: Duration::from_millis(500),
        },
    )
    .context("cannot open the sled store")?;

    progress("1/3 in process: echo.wasm, upper-c.wasm");
    let wasm_runtime = Runtime::new(&engine_options(None))?;
    let compiler = wasm_runtime.compiler();
    let in_process = vec![
        (
            "echo.wasm (component)",
            bench_in_process(
                &wasm_runtime,
                &store,
                ("echo", &echo, None),
                PAYLOAD.to_vec(),
                settings,
            )
            .await?,
        ),
        (
            "echo.wasm, `fuel` set (fuel-metered engine)",
            bench_in_process(
                &wasm_runtime,
                &store,
                ("echo-fuel", &echo, Some(1_000_000_000)),
                PAYLOAD.to_vec(),
                settings,
            )
            .await?,
        ),
        (
            "upper-c.wasm (WASI command)",
            bench_in_process(
                &wasm_runtime,
                &store,
                ("upper", &upper, None),
                PAYLOAD.to_ascii_uppercase(),
                settings,
            )
            .await?,
        ),
    ];
    drop(wasm_runtime);

    let cache = match settings.cache {
        true => {
            progress("2/3 compile vs cache load: threshold.wasm");
            Some(bench_cache(&threshold, settings.cache_runs)?)
        }
        false => None,
    };

    let nats = match &nats_server {
        Some(nats_server) => {
            progress("3/3 through NATS: hub + leaf nats-server on loopback");
            Some(bench_nats(nats_server, &store, &echo, settings).await?)
        }
        None => None,
    };

    let mut out = String::new();
    write_header(
        &mut out,
        nats_server.as_deref(),
        compiler,
        &load_start,
        started.elapsed(),
    );
    write_in_process(&mut out, &in_process, settings);
    if let Some(cache) = &cache {
        write_cache(&mut out, cache, threshold.len());
    }
    if let Some(nats) = &nats {
        write_nats(&mut out, nats, settings);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Statistics

/// Latency of a series of calls or requests.
struct Summary {
    count: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    let count = samples.len();
    Summary {
        count,
        mean_us: micros(total) / count.max(1) as f64,
        p50_us: micros(percentile(&samples, 50.0)),
        p99_us: micros(percentile(&samples, 99.0)),
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

// ---------------------------------------------------------------------------------
// 1. In process

fn engine_options(cache_dir: Option<PathBuf>) -> EngineOptions {
    EngineOptions {
        max_memory: MAX_MEMORY,
        pool_slots: POOL_SLOTS,
        cache_dir,
    }
}

fn agent_spec(name: &str, trigger: &str) -> AgentSpec {
    AgentSpec {
        name: name.to_owned(),
        triggers: vec![trigger.to_owned()],
        limits: AgentLimits {
            max_concurrency: MAX_CONCURRENCY,
            ..AgentLimits::default()
        },
        allow_publish: Vec::new(),
        config: BTreeMap::new(),
        ..Default::default()
    }
}

/// An agent with capabilities that reach no NATS.
async fn load_offline_agent(
    runtime: &Arc<Runtime>,
    store: &Store,
    name: &str,
    wasm: &[u8],
    fuel: Option<u64>,
) -> Result<Agent> {
    let mut spec = agent_spec(name, &format!("bench.{name}"));
    spec.limits.fuel = fuel;
    let kv = AgentKv::open(store, name, spec.limits.kv_quota)
        .with_context(|| format!("cannot open the kv of agent {name}"))?;
    let caps = Arc::new(Capabilities {
        kv,
        messaging: Publisher::new(None, Vec::new(), name),
        log: AgentLog::new(None, format!("bench.log.{name}"), NODE_ID, name),
        config: BTreeMap::new(),
        dirs: Vec::new(),
        connect: Vec::new().into(),
        serial: Vec::new(),
    });
    Agent::load(runtime.clone(), spec, wasm, caps)
        .await
        .with_context(|| format!("cannot load agent {name}"))
}

async fn invoke_checked(agent: &Agent, inv: Invocation, expected: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    let output = agent.invoke(inv).await;
    let took = t.elapsed();
    let output = output.with_context(|| format!("agent {} failed", agent.spec.name))?;
    ensure!(
        output == expected,
        "agent {} answered {:?}, expected {:?}",
        agent.spec.name,
        String::from_utf8_lossy(&output),
        String::from_utf8_lossy(expected)
    );
    Ok(took)
}

/// One module in process: sequential calls, then concurrent ones.
struct InProcess {
    sequential: Summary,
    concurrent: Concurrent,
}

/// Calls made by [`MAX_CONCURRENCY`] tasks invoking back to back.
struct Concurrent {
    calls: u64,
    elapsed: Duration,
    /// CPU time this process used meanwhile.
    cpu: Duration,
}

/// `Agent::invoke` calls, each a fresh instance: sequential on this thread, then
/// from [`MAX_CONCURRENCY`] tokio tasks on the runtime's worker threads.
async fn bench_in_process(
    runtime: &Arc<Runtime>,
    store: &Store,
    (name, wasm, fuel): (&str, &[u8], Option<u64>),
    expected: Vec<u8>,
    settings: &Settings,
) -> Result<InProcess> {
    let agent = Arc::new(load_offline_agent(runtime, store, name, wasm, fuel).await?);
    let inv = Invocation {
        subject: format!("bench.{name}"),
        payload: Bytes::from_static(PAYLOAD),
        headers: Vec::new(),
        reply_expected: true,
        deadline: None,
    };
    for _ in 0..settings.in_process_warmup {
        invoke_checked(&agent, inv.clone(), &expected).await?;
    }
    let deadline = Instant::now() + settings.series_cap;
    let mut samples = Vec::with_capacity(settings.in_process_calls);
    while samples.len() < settings.in_process_calls && Instant::now() < deadline {
        samples.push(invoke_checked(&agent, inv.clone(), &expected).await?);
    }
    let concurrent = concurrent_calls(&agent, &inv, &expected, settings.window).await?;
    Ok(InProcess {
        sequential: summarize(samples),
        concurrent,
    })
}

/// [`MAX_CONCURRENCY`] tasks invoke the agent back to back for `window`.
async fn concurrent_calls(
    agent: &Arc<Agent>,
    inv: &Invocation,
    expected: &[u8],
    window: Duration,
) -> Result<Concurrent> {
    let cpu_before = cpu_time(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    let end = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..MAX_CONCURRENCY {
        let (agent, inv, expected) = (agent.clone(), inv.clone(), expected.to_vec());
        tasks.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < end {
                invoke_checked(&agent, inv.clone(), &expected).await?;
                calls += 1;
            }
            anyhow::Ok(calls)
        });
    }
    let mut calls = 0;
    while let Some(joined) = tasks.join_next().await {
        calls += joined.context("an invoking task panicked")??;
    }
    Ok(Concurrent {
        calls,
        elapsed: started.elapsed(),
        cpu: cpu_time(std::process::id())
            .unwrap_or_default()
            .saturating_sub(cpu_before),
    })
}

// ---------------------------------------------------------------------------------
// 2. Compiled-code cache

struct CacheResult {
    compile: Vec<Duration>,
    load: Vec<Duration>,
}

/// `prepare` with an empty cache dir, then from a fresh `Runtime` on the same dir.
fn bench_cache(wasm: &[u8], runs: usize) -> Result<CacheResult> {
    let dir = TempDir::new().context("cannot make a temporary directory")?;
    let cache_dir = dir.path().join("compiled");
    let mut result = CacheResult {
        compile: Vec::new(),
        load: Vec::new(),
    };
    for _ in 0..runs {
        empty_dir(&cache_dir)?;
        let (took, hit) = timed_prepare(&cache_dir, wasm)?;
        ensure!(!hit, "an emptied cache dir gave a cache hit");
        result.compile.push(took);
        let (took, hit) = timed_prepare(&cache_dir, wasm)?;
        ensure!(hit, "the second prepare did not hit the cache");
        result.load.push(took);
    }
    Ok(result)
}

/// Times `prepare` on a fresh `Runtime` (its set-up is not timed).
fn timed_prepare(cache_dir: &Path, wasm: &[u8]) -> Result<(Duration, bool)> {
    let runtime = Runtime::new(&engine_options(Some(cache_dir.to_owned())))?;
    let t = Instant::now();
    let loaded = runtime.prepare(wasm, false).context("prepare failed")?;
    Ok((t.elapsed(), loaded.cache_hit))
}

fn empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

// ---------------------------------------------------------------------------------
// 3. Through NATS: servers

/// The hub and leaf nats-server children; killed by pid when dropped.
struct Servers {
    dir: TempDir,
    children: Vec<(&'static str, Child)>,
    hub_port: u16,
    leaf_port: u16,
}

impl Servers {
    fn start(bin: &Path) -> Result<Self> {
        let [hub_port, hub_leafnode_port, leaf_port] = free_ports()?;
        let mut servers = Self {
            dir: TempDir::new().context("cannot make a temporary directory")?,
            children: Vec::new(),
            hub_port,
            leaf_port,
        };
        let js = servers.dir.path().join("hub-js");
        let hub = format!(
            "listen: 127.0.0.1:{hub_port}\nserver_name: bench-hub\n\
             jetstream {{\n  store_dir: \"{}\"\n  domain: hub\n}}\n\
             leafnodes {{\n  listen: 127.0.0.1:{hub_leafnode_port}\n}}\n",
            js.display()
        );
        servers.spawn(bin, "hub", &hub)?;
        let mut leaf = format!(
            "listen: 127.0.0.1:{leaf_port}\nserver_name: bench-leaf\n\
             leafnodes {{\n  remotes = [ {{ url: \"nats-leaf://127.0.0.1:{hub_leafnode_port}\" }} ]\n}}\n"
        );
        if sourced() {
            leaf.push_str(&format!(
                "jetstream {{\n  store_dir: \"{}\"\n  domain: leaf\n}}\n",
                servers.dir.path().join("leaf-js").display()
            ));
        }
        servers.spawn(bin, "leaf", &leaf)?;
        Ok(servers)
    }

    fn spawn(&mut self, bin: &Path, name: &'static str, config: &str) -> Result<()> {
        let conf = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(&conf, config)
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate a log file handle")?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} for the {name}", bin.display()))?;
        progress(format!("{name} nats-server started, pid {}", child.id()));
        self.children.push((name, child));
        Ok(())
    }

    /// `edgeleaf hub init` on the hub, then `edgeleaf node -c` on the leaf with echo
    /// on [`NODE_SUBJECT`] and a warm echo on [`NODE_WARM_SUBJECT`] as static agents
    /// and otherwise default settings.
    async fn start_node(&mut self) -> Result<()> {
        let bin = Path::new(env!("CARGO_BIN_EXE_edgeleaf"));
        let hub_url = Self::url(self.hub_port);
        let init = Command::new(bin)
            .args(["hub", "init", "-s", &hub_url])
            .output()
            .context("cannot run edgeleaf hub init")?;
        ensure!(
            init.status.success(),
            "edgeleaf hub init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-agents/dist");
        let state = self.dir.path().join("node-state");
        let config = format!(
            "[node]\nid = \"{NODE_PROCESS_ID}\"\nstate_dir = \"{}\"\n\n\
             [nats]\nurl = \"{}\"\n\n[leaf]\nspawn = false\n\n\
             [outbox]\ndurability = \"{}\"\n\n\
             [[agents]]\nname = \"echo\"\nwasm = \"{echo}\"\ntriggers = [\"{NODE_SUBJECT}\"]\n\n\
             [[agents]]\nname = \"echo-warm\"\nwasm = \"{echo}\"\ntriggers = [\"{NODE_WARM_SUBJECT}\"]\n\
             instances = \"warm\"\n",
            state.display(),
            Self::url(self.leaf_port),
            node_durability(),
            echo = dist.join("echo.wasm").display()
        );
        let conf = self.dir.path().join("node.toml");
        std::fs::write(&conf, config).context("cannot write the node config")?;
        let log_path = self.dir.path().join("node.log");
        let log = File::create(&log_path).context("cannot create the node log")?;
        let mut cmd = Command::new(bin);
        cmd.args(["node", "-c"])
            .arg(&conf)
            .env("EDGELEAF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("cannot start edgeleaf node")?;
        progress(format!("edgeleaf node started, pid {}", child.id()));
        self.children.push(("node", child));
        Ok(())
    }

    /// The servers and this process, by name.
    fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids: Vec<_> = self.children.iter().map(|(n, c)| (*n, c.id())).collect();
        pids.push(("bench process", std::process::id()));
        pids
    }

    fn url(port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    /// Fails (with the tail of its log) if a server has exited.
    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait().context("cannot poll a nats-server")? {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!(
                    "the {name} nats-server exited ({status}); last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Connects to a server, retrying until it accepts clients.
    async fn connect(&mut self, port: u16) -> Result<Client> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.check_alive()?;
            let attempt = ConnectOptions::new()
                .request_timeout(Some(REQUEST_TIMEOUT))
                .connect(Self::url(port))
                .await;
            match attempt {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!(
                            "nothing accepted clients on {} within {STARTUP_TIMEOUT:?}",
                            Self::url(port)
                        )
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until a request from `client` (on the hub) to `subject` (served on the
    /// leaf) is answered: the leafnode link is up and the interest has propagated.
    async fn wait_served(&mut self, client: &Client, subject: &str) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + STARTUP_TIMEOUT;
        loop {
            self.check_alive()?;
            let request = Request::new()
                .payload(Bytes::from_static(PAYLOAD))
                .timeout(Some(Duration::from_millis(500)));
            match client.send_request(subject.to_owned(), request).await {
                Ok(_) => return Ok(started.elapsed()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!("no answer on {subject} through the hub within {STARTUP_TIMEOUT:?}")
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            let pid = child.id();
            if let Err(e) = child.kill() {
                progress(format!(
                    "cannot kill the {name} nats-server (pid {pid}): {e}"
                ));
            }
            match child.wait() {
                Ok(status) => progress(format!("{name} nats-server (pid {pid}) stopped: {status}")),
                Err(e) => progress(format!(
                    "cannot reap the {name} nats-server (pid {pid}): {e}"
                )),
            }
        }
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, may hold spaces) come fields 3, 4, …;
    // utime and stime are fields 14 and 15, in clock ticks.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Duration::from_secs_f64(ticks as f64 / hz))
}

fn cpu_times(pids: &[(&'static str, u32)]) -> Vec<Duration> {
    pids.iter()
        .map(|&(_, pid)| cpu_time(pid).unwrap_or_default())
        .collect()
}

fn cpu_since(pids: &[(&'static str, u32)], before: &[Duration]) -> Vec<(&'static str, Duration)> {
    pids.iter()
        .zip(before)
        .map(|(&(name, pid), &b)| (name, cpu_time(pid).unwrap_or_default().saturating_sub(b)))
        .collect()
}

/// The child gets SIGKILL when the thread that spawned it dies.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), which
    // is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Three distinct loopback ports nobody listens on right now.
fn free_ports() -> Result<[u16; 3]> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a loopback port")?;
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().context("no local address")?.port();
    }
    Ok(ports)
}

fn nats_server_bin() -> Result<PathBuf> {
    let from_env = std::env::var_os("NATS_SERVER").map(PathBuf::from);
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    from_env
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .chain(from_path)
        .find(|p| p.is_file())
        .context("nats-server not found (set NATS_SERVER, or apt-get install nats-server)")
}

// ---------------------------------------------------------------------------------
// 3. Through NATS: responders and load

/// Latency and throughput of one responder.
struct Responder {
    latency: Summary,
    latency_errors: BTreeMap<String, u64>,
    throughput: Vec<Throughput>,
}

struct Throughput {
    in_flight: usize,
    ok: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    /// CPU time each process (hub, leaf, this one) used during the run.
    cpu: Vec<(&'static str, Duration)>,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// CPU µs per answered request, of one process.
    fn cpu_per_request_us(&self, cpu: Duration) -> f64 {
        micros(cpu) / self.ok.max(1) as f64
    }
}

impl NatsResult {
    /// Every responder with its label, (a) first.
    fn responders(&self) -> Vec<(&'static str, &Responder)> {
        let mut all = vec![
            ("(a) plain", &self.plain),
            ("(b) edgeleaf pool", &self.edgeleaf),
            ("(c) edgeleaf node", &self.node),
            ("(d) node, warm", &self.warm),
            ("(e) plain + acked record", &self.acked),
            ("(f) plain + record, no ack", &self.unacked),
        ];
        if let Some(sourced) = &self.sourced {
            all.push(("(g) plain + record on a sourced leaf stream", sourced));
        }
        all
    }
}

struct NatsResult {
    plain: Responder,
    edgeleaf: Responder,
    node: Responder,
    /// (d) the node's warm echo.
    warm: Responder,
    /// (e) plain + a JetStream-acked record per request; (f) the record without ack.
    acked: Responder,
    unacked: Responder,
    /// Records (e) sent, and the acks it got back.
    acked_records: (u64, u64),
    /// (g), with `EDGELEAF_BENCH_SOURCED=1`; and its records sent, acknowledged by
    /// the leaf, and held by the hub's sourcing stream.
    sourced: Option<Responder>,
    sourced_records: Option<(u64, u64, u64)>,
    node_records: NodeRecords,
    link_wait: Duration,
}

async fn bench_nats(
    nats_server: &Path,
    store: &Store,
    echo: &[u8],
    settings: &Settings,
) -> Result<NatsResult> {
    // Declared first so that it is dropped last, after every client.
    let mut servers = Servers::start(nats_server)?;
    let hub = servers.connect(servers.hub_port).await.context("hub")?;
    let leaf_for_plain = servers.connect(servers.leaf_port).await.context("leaf")?;
    let leaf_for_pool = servers.connect(servers.leaf_port).await.context("leaf")?;

    let plain_task = tokio::spawn(plain_echo(
        leaf_for_plain
            .subscribe(PLAIN_SUBJECT)
            .await
            .context("cannot subscribe the plain responder")?,
        leaf_for_plain.clone(),
    ));
    let link_wait = servers.wait_served(&hub, PLAIN_SUBJECT).await?;
    progress(format!(
        "leaf linked; {PLAIN_SUBJECT} answered through the hub after {link_wait:?}"
    ));

    let pool = start_pool(store, leaf_for_pool, echo).await?;
    let agent_wait = servers.wait_served(&hub, AGENT_SUBJECT).await?;
    progress(format!(
        "{AGENT_SUBJECT} answered through the hub after {agent_wait:?}"
    ));

    servers.start_node().await?;
    let node_wait = servers.wait_served(&hub, NODE_SUBJECT).await?;
    servers.wait_served(&hub, NODE_WARM_SUBJECT).await?;
    progress(format!(
        "{NODE_SUBJECT} (node process) answered through the hub after {node_wait:?}"
    ));

    // (e) and (f) record on the stream `hub init` made for the node; (g) on the
    // leaf's own stream.
    let leaf_for_records = servers.connect(servers.leaf_port).await.context("leaf")?;
    let records = RecordCounts::default();
    let leaf_records = RecordCounts::default();
    let mut recorded = vec![
        (ACKED_SUBJECT, RECORD_SUBJECT, Some(records.clone())),
        (UNACKED_SUBJECT, RECORD_SUBJECT, None),
    ];
    if sourced() {
        make_sourced_streams(&hub, &leaf_for_records).await?;
        recorded.push((
            SOURCED_SUBJECT,
            LEAF_RECORD_SUBJECT,
            Some(leaf_records.clone()),
        ));
    }
    let mut recorded_tasks = Vec::new();
    for (subject, record_to, acks) in recorded {
        let subscriber = leaf_for_records
            .subscribe(subject)
            .await
            .context("cannot subscribe a recording responder")?;
        recorded_tasks.push(tokio::spawn(recorded_echo(
            subscriber,
            leaf_for_records.clone(),
            record_to,
            acks,
        )));
        servers.wait_served(&hub, subject).await?;
    }

    let plain = measure_responder(&mut servers, &hub, PLAIN_SUBJECT, "plain", settings).await?;
    let edgeleaf =
        measure_responder(&mut servers, &hub, AGENT_SUBJECT, "edgeleaf", settings).await?;
    let node = measure_responder(&mut servers, &hub, NODE_SUBJECT, "node", settings).await?;
    let warm =
        measure_responder(&mut servers, &hub, NODE_WARM_SUBJECT, "node warm", settings).await?;
    let acked = measure_responder(
        &mut servers,
        &hub,
        ACKED_SUBJECT,
        "plain + acked record",
        settings,
    )
    .await?;
    let unacked = measure_responder(
        &mut servers,
        &hub,
        UNACKED_SUBJECT,
        "plain + record, no ack",
        settings,
    )
    .await?;
    let sourced = match sourced() {
        true => Some(
            measure_responder(
                &mut servers,
                &hub,
                SOURCED_SUBJECT,
                "plain + record on a leaf stream the hub sources",
                settings,
            )
            .await?,
        ),
        false => None,
    };
    let node_records = node_records(&hub).await?;
    let acked_records = records.settled().await;
    let leaf_records = leaf_records.settled().await;
    let sourced_records = match &sourced {
        Some(_) => Some((
            leaf_records.0,
            leaf_records.1,
            sourced_on_hub(&hub, leaf_records.0).await?,
        )),
        None => None,
    };

    pool.stop_all().await;
    plain_task.abort();
    for task in recorded_tasks {
        task.abort();
    }
    Ok(NatsResult {
        plain,
        edgeleaf,
        node,
        warm,
        acked,
        unacked,
        acked_records,
        sourced,
        sourced_records,
        node_records,
        link_wait,
    })
}

/// Whether (g) runs: `EDGELEAF_BENCH_SOURCED=1` (the leaf then has JetStream).
fn sourced() -> bool {
    std::env::var("EDGELEAF_BENCH_SOURCED").is_ok_and(|v| v == "1")
}

/// (g)'s streams: one on the leaf's JetStream that captures its records, and one on
/// the hub that sources it across the leafnode link.
async fn make_sourced_streams(hub: &Client, leaf: &Client) -> Result<()> {
    use async_nats::jetstream::stream::{Config, External, Source};
    async_nats::jetstream::with_domain(leaf.clone(), "leaf")
        .create_stream(Config {
            name: LEAF_STREAM.to_owned(),
            subjects: vec![LEAF_RECORD_SUBJECT.to_owned()],
            max_bytes: 256 << 20,
            ..Default::default()
        })
        .await
        .context("cannot make the leaf's stream")?;
    async_nats::jetstream::with_domain(hub.clone(), "hub")
        .create_stream(Config {
            name: HUB_SOURCED_STREAM.to_owned(),
            sources: Some(vec![Source {
                name: LEAF_STREAM.to_owned(),
                external: Some(External {
                    api_prefix: "$JS.leaf.API".to_owned(),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await
        .context("cannot make the hub's sourcing stream")?;
    Ok(())
}

/// Messages the hub's sourcing stream holds, once it stops growing (at most 30 s).
async fn sourced_on_hub(hub: &Client, expected: u64) -> Result<u64> {
    let js = async_nats::jetstream::with_domain(hub.clone(), "hub");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = js.get_stream(HUB_SOURCED_STREAM).await?;
        let held = stream.info().await?.state.messages;
        if held >= expected || Instant::now() >= deadline {
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's `[outbox] durability`: `batch` (the default) unless
/// `EDGELEAF_BENCH_DURABILITY=sync`.
fn node_durability() -> &'static str {
    match std::env::var("EDGELEAF_BENCH_DURABILITY").as_deref() {
        Ok("sync") => "sync",
        _ => "batch",
    }
}

/// What became of the node's results, once its outbox has drained.
struct NodeRecords {
    /// Invocations of echo and echo-warm (`ctl.<node>.agents`).
    invocations: u64,
    /// Outbox counters (`ctl.<node>.outbox`): records appended (results and
    /// events), acknowledged by the hub's stream, dropped, and still waiting.
    appended: u64,
    forwarded: u64,
    dropped: u64,
    depth: u64,
}

/// Waits (up to 60 s) for the node's outbox to drain and reads its counters. The
/// hub's stream cannot be counted instead: it keeps a bounded number of records per
/// subject (`hub init --telemetry-per-subject`, default 10,000).
async fn node_records(hub: &Client) -> Result<NodeRecords> {
    let ask = |what: &'static str| async move {
        let subject = format!("edgeleaf.ctl.{NODE_PROCESS_ID}.{what}");
        let reply = hub
            .request(subject.clone(), Bytes::new())
            .await
            .with_context(|| format!("no answer on {subject}"))?;
        let value: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        anyhow::Ok(value["ok"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let outbox = ask("outbox").await?;
        let count = |k: &str| outbox[k].as_u64().unwrap_or_default();
        if count("depth") == 0 || Instant::now() >= deadline {
            let agents = ask("agents").await?;
            let invocations = agents
                .as_array()
                .context("the node lists no agents")?
                .iter()
                .filter(|r| r["name"] == "echo" || r["name"] == "echo-warm")
                .filter_map(|r| r["invocations"].as_u64())
                .sum();
            return Ok(NodeRecords {
                invocations,
                appended: count("appended"),
                forwarded: count("forwarded"),
                dropped: count("dropped"),
                depth: count("depth"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The baseline: replies with the payload, one message after the other.
async fn plain_echo(mut subscriber: async_nats::Subscriber, client: Client) {
    while let Some(msg) = subscriber.next().await {
        if let Some(reply) = msg.reply
            && let Err(e) = client.publish(reply, msg.payload).await
        {
            progress(format!("plain responder: reply not sent: {e}"));
        }
    }
}

/// What (e) sent and had acknowledged.
#[derive(Clone, Default)]
struct RecordCounts {
    sent: Arc<std::sync::atomic::AtomicU64>,
    acked: Arc<std::sync::atomic::AtomicU64>,
}

impl RecordCounts {
    /// (sent, acknowledged), once every ack has come back (at most 10 s).
    async fn settled(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.acked.load(Relaxed) < self.sent.load(Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (self.sent.load(Relaxed), self.acked.load(Relaxed))
    }
}

/// The floor for what a node promises, without wasm or an outbox: the plain echo,
/// and per request a result-sized record to `record_to`. With `acks` ((e), and (g) to
/// the leaf's stream) each record is a JetStream publish with `Nats-Msg-Id`, up to
/// [`RECORD_ACKS_IN_FLIGHT`] acks in flight on a task of their own, as the node's
/// forwarder sends; without (f) a core publish that nothing confirms.
async fn recorded_echo(
    mut subscriber: async_nats::Subscriber,
    client: Client,
    record_to: &'static str,
    acks: Option<RecordCounts>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let (records, mut to_forward) = tokio::sync::mpsc::unbounded_channel::<(u64, Bytes)>();
    if let Some(counts) = acks.clone() {
        let js = async_nats::jetstream::with_domain(client.clone(), "hub");
        tokio::spawn(async move {
            let mut in_flight = std::collections::VecDeque::new();
            let settle = |ack: async_nats::jetstream::context::PublishAckFuture| {
                let counts = counts.clone();
                async move {
                    match ack.await {
                        Ok(_) => _ = counts.acked.fetch_add(1, Relaxed),
                        Err(e) => progress(format!("acked record: no ack: {e}")),
                    }
                }
            };
            while let Some((seq, record)) = to_forward.recv().await {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("benchplain:1:{seq}").as_str());
                match js.publish_with_headers(record_to, headers, record).await {
                    Ok(ack) => in_flight.push_back(ack),
                    Err(e) => progress(format!("acked record: not sent: {e}")),
                }
                if in_flight.len() >= RECORD_ACKS_IN_FLIGHT
                    && let Some(ack) = in_flight.pop_front()
                {
                    settle(ack).await;
                }
                if to_forward.is_empty() {
                    while let Some(ack) = in_flight.pop_front() {
                        settle(ack).await;
                    }
                }
            }
        });
    }
    let mut seq = 0;
    while let Some(msg) = subscriber.next().await {
        if let Some(reply) = msg.reply
            && let Err(e) = client.publish(reply, msg.payload.clone()).await
        {
            progress(format!("recording responder: reply not sent: {e}"));
        }
        seq += 1;
        // The fields and size of a node's result record for echo.
        let record = Bytes::from(format!(
            "{{\"node_id\":\"benchplain\",\"agent\":\"echo\",\"subject\":\"{}\",\
             \"at\":\"{}\",\"duration_us\":12,\"ok\":true,\"output_size\":{},\
             \"output\":\"{}\",\"output_base64\":null,\"error\":null,\"output_truncated\":false}}",
            msg.subject,
            humantime::format_rfc3339_micros(SystemTime::now()),
            msg.payload.len(),
            String::from_utf8_lossy(&msg.payload)
        ));
        match &acks {
            Some(counts) => {
                counts.sent.fetch_add(1, Relaxed);
                let _ = records.send((seq, record));
            }
            None => {
                if let Err(e) = client.publish(record_to, record).await {
                    progress(format!("unacked record: not sent: {e}"));
                }
            }
        }
    }
}

/// An `AgentPool` on the leaf serving `echo.wasm` on [`AGENT_SUBJECT`]; results and
/// events are published directly (`Telemetry::Direct`), not through an outbox.
async fn start_pool(store: &Store, leaf: Client, echo: &[u8]) -> Result<AgentPool> {
    let runtime = Runtime::new(&engine_options(None))?;
    let limits = LimitsSection {
        max_agents: 32,
        max_memory: MAX_MEMORY,
        max_timeout: Duration::from_secs(30),
        max_concurrency: MAX_CONCURRENCY,
        max_module_size: 32 << 20,
        pool_slots: POOL_SLOTS,
        ..LimitsSection::default()
    };
    let pool = AgentPool::new(
        runtime,
        store.clone(),
        leaf.clone(),
        Telemetry::Direct(leaf),
        Subjects::default(),
        NODE_ID,
        limits,
    );
    pool.start(agent_spec("echo", AGENT_SUBJECT), echo)
        .await
        .context("the agent pool did not start echo.wasm")?;
    Ok(pool)
}

async fn measure_responder(
    servers: &mut Servers,
    hub: &Client,
    subject: &'static str,
    label: &str,
    settings: &Settings,
) -> Result<Responder> {
    progress(format!(
        "{label}: sequential latency, {} requests",
        settings.latency_requests
    ));
    let (latency, latency_errors) = sequential_latency(hub, subject, settings).await;
    servers.check_alive()?;
    let mut throughput = Vec::new();
    for &k in settings.in_flight {
        progress(format!("{label}: {k} in flight for {:?}", settings.window));
        let pids = servers.pids();
        let cpu_before = cpu_times(&pids);
        let mut t = saturate(hub, subject, k, settings.window).await;
        t.cpu = cpu_since(&pids, &cpu_before);
        progress(format!(
            "{label}: {k} in flight: {:.0} req/s, {} errors",
            t.per_second(),
            t.error_count()
        ));
        throughput.push(t);
        servers.check_alive()?;
    }
    Ok(Responder {
        latency,
        latency_errors,
        throughput,
    })
}

/// One request; `Err` names what went wrong (an `edgeleaf-error` code, a request
/// error kind, or `mismatch`).
async fn one_request(client: &Client, subject: &'static str) -> Result<Duration, String> {
    let t = Instant::now();
    let reply = client
        .request(subject, Bytes::from_static(PAYLOAD))
        .await
        .map_err(|e| format!("{:?}", e.kind()))?;
    let took = t.elapsed();
    if let Some(code) = reply.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
        return Err(code.as_str().to_owned());
    }
    if reply.payload.as_ref() != PAYLOAD {
        return Err("mismatch".to_owned());
    }
    Ok(took)
}

async fn sequential_latency(
    client: &Client,
    subject: &'static str,
    settings: &Settings,
) -> (Summary, BTreeMap<String, u64>) {
    let mut errors = BTreeMap::new();
    for _ in 0..settings.latency_warmup {
        let _ = one_request(client, subject).await;
    }
    let deadline = Instant::now() + settings.series_cap;
    let mut samples = Vec::with_capacity(settings.latency_requests);
    for _ in 0..settings.latency_requests {
        if Instant::now() >= deadline {
            *errors.entry("not_sent_series_cap".to_owned()).or_default() += 1;
            continue;
        }
        match one_request(client, subject).await {
            Ok(took) => samples.push(took),
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    (summarize(samples), errors)
}

/// Keeps `k` requests in flight for `window`, then waits for the last ones (each is
/// bounded by the request timeout).
async fn saturate(
    client: &Client,
    subject: &'static str,
    k: usize,
    window: Duration,
) -> Throughput {
    let started = Instant::now();
    let end = started + window;
    let mut in_flight: FuturesUnordered<_> = (0..k).map(|_| one_request(client, subject)).collect();
    let mut result = Throughput {
        in_flight: k,
        ok: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        cpu: Vec::new(),
    };
    while let Some(outcome) = in_flight.next().await {
        match outcome {
            Ok(_) => result.ok += 1,
            Err(kind) => *result.errors.entry(kind).or_default() += 1,
        }
        if Instant::now() < end {
            in_flight.push(one_request(client, subject));
        }
    }
    result.elapsed = started.elapsed();
    result
}

// ---------------------------------------------------------------------------------
// Report

fn read_wasm(dist: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dist.join(name);
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (build the agents: bash wasm-agents/build.sh)",
            path.display()
        )
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// First line of a command's stdout, if it runs.
fn command_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

fn write_header(
    out: &mut String,
    nats_server: Option<&Path>,
    compiler: &str,
    load_start: &str,
    took: Duration,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut commit = command_line(Path::new("git"), &["rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".to_owned());
    if command_line(
        Path::new("git"),
        &["status", "--porcelain", "--", "src", "Cargo.lock"],
    )
    .is_some()
    {
        commit.push_str(" plus uncommitted changes in src/ or Cargo.lock");
    }
    let _ = writeln!(
        out,
        "## Agents — {}\n",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    let _ = writeln!(
        out,
        "- edgeleaf {} (commit {commit}), `cargo bench --bench agents` (bench profile = release)",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(nats_server) = nats_server {
        let nats_version =
            command_line(nats_server, &["--version"]).unwrap_or_else(|| "unknown".to_owned());
        let _ = writeln!(
            out,
            "- nats-server: {nats_version} ({})",
            nats_server.display()
        );
    }
    let _ = writeln!(
        out,
        "- host: {cores} cores, {} {} (wasm: {compiler}); load average (1/5/15 min) at start {load_start}, at end {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        load_average()
    );
    let _ = writeln!(out, "- whole run: {:.0} s\n", took.as_secs_f64());
}

fn write_in_process(out: &mut String, rows: &[(&str, InProcess)], settings: &Settings) {
    let _ = writeln!(
        out,
        "### In process, no NATS: `Agent::invoke` (fresh instance + call)\n\n\
         Sequential, {} calls after {} warm-up calls, 16-byte payload.\n\n\
         | module | calls | mean µs | p50 µs | p99 µs | calls/s (1 / mean) |\n\
         |---|---:|---:|---:|---:|---:|",
        settings.in_process_calls, settings.in_process_warmup
    );
    for (name, r) in rows {
        let s = &r.sequential;
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            s.count,
            s.mean_us,
            s.p50_us,
            s.p99_us,
            1e6 / s.mean_us.max(1e-9)
        );
    }
    let _ = writeln!(
        out,
        "\n{MAX_CONCURRENCY} tokio tasks on the runtime's worker threads invoking back to \
         back for {:?} (CPU: user + system of this process, 10 ms ticks):\n\n\
         | module | calls/s | CPU µs per call | busy |\n|---|---:|---:|---:|",
        settings.window
    );
    for (name, r) in rows {
        let c = &r.concurrent;
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.1} | {:.2} cores |",
            c.calls as f64 / c.elapsed.as_secs_f64().max(1e-9),
            micros(c.cpu) / c.calls.max(1) as f64,
            c.cpu.as_secs_f64() / c.elapsed.as_secs_f64().max(1e-9)
        );
    }
    out.push('\n');
}

fn write_cache(out: &mut String, r: &CacheResult, size: usize) {
    let range = |v: &[Duration]| {
        let min = v.iter().min().copied().unwrap_or_default();
        let max = v.iter().max().copied().unwrap_or_default();
        format!("{:.1}–{:.1}", millis(min), millis(max))
    };
    let compile = median(r.compile.clone());
    let load = median(r.load.clone());
    let _ = writeln!(
        out,
        "### Compile vs cache load: `Runtime::prepare` of threshold.wasm ({size} bytes)\n\n\
         {} runs each, a fresh `Runtime` per `prepare` (its set-up not timed).\n\n\
         | prepare | median ms | min–max ms |\n|---|---:|---:|\n\
         | empty cache dir (validate, compile, serialize, store) | {:.1} | {} |\n\
         | cache hit (checksum, deserialize) | {:.1} | {} |\n\
         | ratio compile / cache hit | {:.0}× | |\n",
        r.compile.len(),
        millis(compile),
        range(&r.compile),
        millis(load),
        range(&r.load),
        compile.as_secs_f64() / load.as_secs_f64().max(1e-9)
    );
}

fn format_errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".to_owned();
    }
    let total: u64 = errors.values().sum();
    let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{total} ({})", kinds.join(", "))
}

fn write_nats(out: &mut String, r: &NatsResult, settings: &Settings) {
    let _ = writeln!(
        out,
        "### Through NATS on loopback: client on the hub, responder on the leaf\n\n\
         (a) plain async-nats echo responder on the leaf (`{PLAIN_SUBJECT}`); (b) `AgentPool` \
         on the leaf serving echo.wasm (`{AGENT_SUBJECT}`, max_concurrency {MAX_CONCURRENCY}, \
         pool_slots {POOL_SLOTS}; result records published directly, no outbox); (c) the \
         `edgeleaf node` process on the leaf, default settings but `[outbox] durability = \"{}\"`, echo.wasm as a static agent \
         (`{NODE_SUBJECT}`, max_concurrency 4), results through the outbox to the hub's stream; \
         (d) the same node's second static echo with `instances = \"warm\"` (`{NODE_WARM_SUBJECT}`); \
         (e) the plain responder that also sends a result-sized record per request to `{RECORD_SUBJECT}` \
         (captured by the hub's stream) as the node's forwarder does: a JetStream publish with \
         `Nats-Msg-Id`, up to {RECORD_ACKS_IN_FLIGHT} acks in flight, no outbox (`{ACKED_SUBJECT}`; \
         {} records sent, {} acknowledged); (f) the same with a core publish that nothing \
         acknowledges (`{UNACKED_SUBJECT}`). \
         (c) and (d): {} invocations; outbox: {} records appended (results and events), {} acknowledged by \
         the hub, {} dropped, {} waiting. 16-byte payload, request timeout {REQUEST_TIMEOUT:?}. \
         `{PLAIN_SUBJECT}` first answered through the hub (leafnode link up) {:.0} ms after the hub client connected.\n\n\
         Sequential request latency, {} requests after {} warm-up:\n\n\
         | responder | ok | errors | mean µs | p50 µs | p99 µs |\n|---|---:|---|---:|---:|---:|",
        node_durability(),
        r.acked_records.0,
        r.acked_records.1,
        r.node_records.invocations,
        r.node_records.appended,
        r.node_records.forwarded,
        r.node_records.dropped,
        r.node_records.depth,
        millis(r.link_wait),
        settings.latency_requests,
        settings.latency_warmup
    );
    for (name, resp) in r.responders() {
        let s = &resp.latency;
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} |",
            s.count,
            format_errors(&resp.latency_errors),
            s.mean_us,
            s.p50_us,
            s.p99_us
        );
    }
    for (name, resp) in r.responders().into_iter().skip(1) {
        let _ = writeln!(
            out,
            "| {} / plain | | | {:.2}× | {:.2}× | {:.2}× |",
            name.split_once(' ').map_or(name, |(_, n)| n),
            resp.latency.mean_us / r.plain.latency.mean_us.max(1e-9),
            resp.latency.p50_us / r.plain.latency.p50_us.max(1e-9),
            resp.latency.p99_us / r.plain.latency.p99_us.max(1e-9)
        );
    }
    out.push('\n');
    let ks: Vec<String> = settings
        .in_flight
        .iter()
        .map(|k| format!("K = {k}"))
        .collect();
    let _ = writeln!(
        out,
        "Throughput, K requests kept in flight for {:?} (then the last ones drained); \
         req/s, and in parentheses against (a) plain at the same K:\n\n\
         | responder | {} | errors |\n|---|{}---|",
        settings.window,
        ks.join(" | "),
        "---:|".repeat(ks.len())
    );
    for (name, resp) in r.responders() {
        let cells: Vec<String> = resp
            .throughput
            .iter()
            .zip(&r.plain.throughput)
            .map(|(t, p)| {
                format!(
                    "{:.0} ({:.2}×)",
                    t.per_second(),
                    t.per_second() / p.per_second().max(1e-9)
                )
            })
            .collect();
        let mut errors = BTreeMap::new();
        for t in &resp.throughput {
            for (kind, n) in &t.errors {
                *errors.entry(kind.clone()).or_default() += n;
            }
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            cells.join(" | "),
            format_errors(&errors)
        );
    }
    out.push('\n');
    if let Some((sent, acked, on_hub)) = r.sourced_records {
        let _ = writeln!(
            out,
            "(g) (`EDGELEAF_BENCH_SOURCED=1`): the leaf runs JetStream (domain `leaf`); the plain \
             responder sends each record to `{LEAF_RECORD_SUBJECT}`, captured by the leaf's stream \
             `{LEAF_STREAM}` (acks on loopback from the leaf, as (e) otherwise), and the hub's \
             `{HUB_SOURCED_STREAM}` sources that stream across the leafnode link: {sent} records \
             sent, {acked} acknowledged by the leaf, {on_hub} held by the hub's stream after the runs.\n"
        );
    }
    write_cpu(out, r);
}

/// Where the CPU went during the throughput runs, per answered request.
fn write_cpu(out: &mut String, r: &NatsResult) {
    let Some(first) = r.plain.throughput.first() else {
        return;
    };
    let names: Vec<&str> = first.cpu.iter().map(|(n, _)| *n).collect();
    let _ = writeln!(
        out,
        "CPU time per answered request during the throughput runs (µs; user + system from \
         /proc/<pid>/stat, 10 ms ticks; the bench process holds the client and the \
         responder; busy = CPU used by these processes / wall time, out of {} cores):\n\n\
         | responder | K | {} | total | busy |\n|---|---:|{}---:|---:|",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for (label, resp) in r.responders() {
        for t in &resp.throughput {
            let total: Duration = t.cpu.iter().map(|(_, d)| *d).sum();
            let per_process: Vec<String> = t
                .cpu
                .iter()
                .map(|(_, d)| format!("{:.1}", t.cpu_per_request_us(*d)))
                .collect();
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {:.1} | {:.2} cores |",
                t.in_flight,
                per_process.join(" | "),
                t.cpu_per_request_us(total),
                total.as_secs_f64() / t.elapsed.as_secs_f64().max(1e-9)
            );
        }
    }
    out.push('\n');
}
