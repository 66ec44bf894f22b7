//! Component agents of the `edgeleaf:agent` world: the crate's one `bindgen!`, the
//! per-instance state, and one invocation. The capability imports are implemented
//! in `crate::host`, one file each.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::agent::{
    AgentError, Invocation, Limiter, RunLimits, arm_store, check_output, classify, within_deadline,
};
use crate::host::Capabilities;
use crate::host::log::InvocationLog;

wasmtime::component::bindgen!({
    path: "wasm-agents/wit",
    world: "agent",
    imports: { default: async },
    exports: { default: async },
});

/// A component linked against the world, ready to instantiate.
pub type Pre = AgentPre<ComponentState>;

/// Everything one component instance can reach. Built fresh per invocation.
pub struct ComponentState {
    /// WASI for what std pulls in: the granted directories and connects only, no
    /// env.
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// `wasi:http` under the agent's connect grants.
    pub(crate) http: crate::host::http::HttpState,
    limiter: Limiter,
    /// The agent's own kv, publisher, logger and config.
    pub(crate) caps: Arc<Capabilities>,
    /// The last capability refusal (kv quota, forbidden publish) in this
    /// invocation: if the agent then fails, this is why.
    pub(crate) refused: Option<AgentError>,
    /// What this invocation has logged (bounded, see `crate::host::log`).
    pub(crate) log: InvocationLog,
    /// The serial ports this invocation opened; closed with the store.
    pub(crate) serial: crate::host::serial::OpenPorts,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl edgeleaf::agent::types::Host for ComponentState {}

/// Adds WASI (preview2) and the agent world's imports to the linker, once.
pub fn add_to_linker(linker: &mut Linker<ComponentState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Agent::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Links a compiled component; fails when it is not of the `edgeleaf:agent` world.
pub fn prepare(linker: &Linker<ComponentState>, component: &Component) -> Result<Pre, AgentError> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        AgentError::invalid_module(format!(
            "component imports something edgeleaf does not provide: {e:#}"
        ))
    })?;
    AgentPre::new(pre).map_err(|e| {
        AgentError::invalid_module(format!(
            "component is not an edgeleaf:agent (export `handle: func(msg: message) -> result<list<u8>, string>` is missing or differs): {e:#}"
        ))
    })
}

/// Stderr kept per invocation (a Rust guest's panic message lands there).
const STDERR_CAPACITY: usize = 16 << 10;

fn new_store(
    engine: &wasmtime::Engine,
    caps: &Arc<Capabilities>,
    limits: &RunLimits,
    stderr: Option<MemoryOutputPipe>,
) -> Result<Store<ComponentState>, AgentError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    crate::host::fs::preopen(&mut builder, &caps.dirs)?;
    crate::host::net::apply(&mut builder, &caps.connect);
    if let Some(stderr) = stderr {
        builder.stderr(stderr);
    }
    let wasi = builder.build();
    let mut store = Store::new(
        engine,
        ComponentState {
            wasi,
            table: ResourceTable::new(),
            http: crate::host::http::HttpState::new(caps),
            limiter: Limiter::new(limits.memory),
            caps: caps.clone(),
            refused: None,
            log: InvocationLog::default(),
            serial: Default::default(),
        },
    );
    store.limiter(|s| &mut s.limiter);
    arm_store(&mut store, limits);
    Ok(store)
}

/// Instantiates once without calling anything (a load-time check).
pub(crate) async fn instantiate_only(
    pre: &Pre,
    caps: &Arc<Capabilities>,
    limits: &RunLimits,
) -> Result<(), AgentError> {
    let mut store = new_store(pre.instance_pre().engine(), caps, limits, None)?;
    let hit = store.data().limiter.hit.clone();
    within_deadline(limits, pre.instantiate_async(&mut store))
        .await
        .map(drop)
        .map_err(|e| classify(e, hit.load(Relaxed), limits))
}

/// Hands what the invocation logged, and what it wrote to stderr after byte `seen`,
/// to the agent's log; returns how much of stderr has been passed on now.
async fn pass_on_log(
    caps: &Capabilities,
    store: &mut Store<ComponentState>,
    stderr: &MemoryOutputPipe,
    seen: usize,
) -> usize {
    // Components log through `log`; stderr output is unusual (a panic, say): warn.
    let mut log = std::mem::take(&mut store.data_mut().log);
    let written = stderr.contents();
    let new = written.get(seen..).unwrap_or_default();
    caps.log.stderr(&mut log, "warn", new).await;
    caps.log.finish(log).await;
    written.len()
}

/// A component instance kept between invocations (`instances = "warm"`).
pub(crate) struct Kept {
    store: Store<ComponentState>,
    bindings: Agent,
    stderr: MemoryOutputPipe,
    /// Bytes of `stderr` already passed to the log.
    stderr_seen: usize,
    /// Invocations it has served.
    served: u64,
}

/// One invocation: in `kept` if given, else in a new instance; call `handle`,
/// classify the outcome. Hands the instance back when it may serve again: it
/// answered (`Ok` or the agent's own `Err`), has served fewer than `max_served`
/// messages, and has stderr room left. A trap, a timeout or a refused memory grow
/// ends it: its state is not to be trusted after that.
pub(crate) async fn invoke(
    pre: &Pre,
    caps: &Arc<Capabilities>,
    limits: &RunLimits,
    inv: Invocation,
    kept: Option<Kept>,
    max_served: u64,
) -> (Result<Vec<u8>, AgentError>, Option<Kept>) {
    let msg = Message {
        subject: inv.subject,
        payload: inv.payload.to_vec(),
        headers: inv.headers,
        reply_expected: inv.reply_expected,
    };
    let (mut k, outcome) = match kept {
        Some(mut k) => {
            arm_store(&mut k.store, limits);
            k.store.data_mut().refused = None;
            let outcome = within_deadline(limits, k.bindings.call_handle(&mut k.store, &msg)).await;
            (k, outcome)
        }
        None => {
            let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
            let mut store = match new_store(
                pre.instance_pre().engine(),
                caps,
                limits,
                Some(stderr.clone()),
            ) {
                Ok(store) => store,
                Err(e) => return (Err(e), None),
            };
            let hit = store.data().limiter.hit.clone();
            let started = std::time::Instant::now();
            let bindings = match within_deadline(limits, pre.instantiate_async(&mut store)).await {
                Ok(bindings) => bindings,
                Err(e) => {
                    pass_on_log(caps, &mut store, &stderr, 0).await;
                    return (Err(classify(e, hit.load(Relaxed), limits)), None);
                }
            };
            // One deadline for both steps.
            let rest = RunLimits {
                timeout: limits.timeout.saturating_sub(started.elapsed()),
                ..*limits
            };
            let outcome = within_deadline(&rest, bindings.call_handle(&mut store, &msg)).await;
            let k = Kept {
                store,
                bindings,
                stderr,
                stderr_seen: 0,
                served: 0,
            };
            (k, outcome)
        }
    };
    k.served += 1;
    k.stderr_seen = pass_on_log(caps, &mut k.store, &k.stderr, k.stderr_seen).await;
    let hit = k.store.data().limiter.hit.load(Relaxed);
    let (result, answered) = match outcome {
        Ok(Ok(output)) => (check_output(output, limits), true),
        Ok(Err(message)) => {
            let e = k.store.data_mut().refused.take();
            (
                Err(e.unwrap_or_else(|| AgentError::new("agent_error", message))),
                true,
            )
        }
        Err(e) => (Err(classify(e, hit, limits)), false),
    };
    let again = answered && !hit && k.served < max_served && k.stderr_seen < STDERR_CAPACITY / 2;
    (result, again.then_some(k))
}
