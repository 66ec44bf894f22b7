//! One agent: its prepared module, its limits and capabilities, and `invoke`, which
//! runs one message in a fresh instance (or, for `instances = "warm"`, a kept one)
//! and classifies whatever goes wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::ModuleKind;
use super::engine::{Prepared, Runtime};
use super::{component, wasi_command};
use crate::host::Capabilities;
use crate::protocol::{AgentSpec, DEFAULT_MAX_INVOCATIONS, ErrorBody, Instances};

/// How long a message waits for a free instance before it gets a `busy` error.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// A failed load or invocation: a short code (the `edgeleaf-error` header) and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AgentError {
    pub code: &'static str,
    pub message: String,
}

impl AgentError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_module(message: impl Into<String>) -> Self {
        Self::new("invalid_module", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }

    /// Does this failure count towards backing the agent off? The agent's own
    /// `Err` answers and a busy node do not: they are not the agent misbehaving.
    pub fn is_fault(&self) -> bool {
        !matches!(self.code, "agent_error" | "busy" | "agent_stopped")
    }
}

/// One message for an agent.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    pub reply_expected: bool,
    /// A deadline shorter than the agent's own (a workload's `timeout_ms`).
    pub deadline: Option<Duration>,
}

/// A loaded agent. Cheap to share; every invocation gets its own instance, or a
/// kept one no other invocation is using (warm).
pub struct Agent {
    pub spec: AgentSpec,
    pub kind: ModuleKind,
    /// sha256 of the module, hex.
    pub digest: String,
    /// Whether the compiled code came from the cache when this agent was loaded.
    pub cache_hit: bool,
    prepared: Arc<Prepared>,
    caps: Arc<Capabilities>,
    /// Bounds concurrent instances to `limits.max_concurrency`.
    permits: Arc<Semaphore>,
    /// `instances = "warm"`: idle instances waiting for the next message (at most
    /// `max_concurrency`: only an invocation holding a permit takes or returns one).
    kept: std::sync::Mutex<Vec<component::Kept>>,
    /// Warm instances started so far (the first ones and every replacement).
    warm_started: std::sync::atomic::AtomicU64,
}

impl Agent {
    /// Compiles (or loads from the cache) and links the module, then instantiates
    /// it once under the agent's limits, so a module that cannot even start is
    /// refused here rather than on its first message.
    ///
    /// Compiling takes seconds for a large module on a small board: it runs on
    /// tokio's blocking pool, so the node's runtime workers (heartbeats, the
    /// watchdog, other agents) keep running meanwhile.
    pub async fn load(
        runtime: Arc<Runtime>,
        spec: AgentSpec,
        wasm: &[u8],
        caps: Arc<Capabilities>,
    ) -> Result<Self, AgentError> {
        let (rt, wasm) = (runtime, wasm.to_vec());
        let fuel = spec.limits.fuel.is_some();
        let loaded = tokio::task::spawn_blocking(move || rt.prepare(&wasm, fuel))
            .await
            .map_err(|e| {
                AgentError::invalid_module(format!("compilation did not finish: {e}"))
            })??;
        if loaded.kind == ModuleKind::WasiCommand && spec.instances == Instances::Warm {
            return Err(AgentError::new(
                "invalid_spec",
                format!(
                    "agent {}: warm instances need a component; a WASI preview1 command runs its main once per instance",
                    spec.name
                ),
            ));
        }
        if loaded.kind == ModuleKind::WasiCommand
            && (!caps.connect.is_empty() || !caps.serial.is_empty())
        {
            return Err(AgentError::new(
                "invalid_spec",
                format!(
                    "agent {}: connect and serial grants need a component; a WASI preview1 command has no sockets and no serial import",
                    spec.name
                ),
            ));
        }
        let agent = Self {
            permits: Arc::new(Semaphore::new(spec.limits.max_concurrency.max(1) as usize)),
            kind: loaded.kind,
            digest: loaded.digest,
            cache_hit: loaded.cache_hit,
            prepared: loaded.prepared,
            spec,
            caps,
            kept: Default::default(),
            warm_started: Default::default(),
        };
        agent.try_instantiate().await?;
        Ok(agent)
    }

    async fn try_instantiate(&self) -> Result<(), AgentError> {
        let limits = self.limits();
        let result = match &*self.prepared {
            Prepared::Component(pre) => component::instantiate_only(pre, &self.caps, &limits).await,
            Prepared::Command(pre) => wasi_command::instantiate_only(pre, &limits).await,
        };
        result.map_err(|e| {
            AgentError::new(
                "invalid_module",
                format!("does not instantiate: {}", e.message),
            )
        })
    }

    fn limits(&self) -> RunLimits {
        let l = &self.spec.limits;
        RunLimits {
            memory: usize::try_from(l.memory).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(l.timeout_ms),
            fuel: l.fuel,
            max_output: usize::try_from(l.max_output).unwrap_or(usize::MAX),
        }
    }

    /// Invocations running now (each holds one of its `max_concurrency` instances).
    pub fn in_flight(&self) -> u32 {
        let max = self.spec.limits.max_concurrency.max(1) as usize;
        max.saturating_sub(self.permits.available_permits()) as u32
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<component::Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `instances = "warm"`: instances started since the agent was loaded (the
    /// first ones, and each replacement after `max_invocations`, a trap or a
    /// timeout); 0 for fresh agents.
    pub fn warm_started(&self) -> u64 {
        self.warm_started.load(Ordering::Relaxed)
    }

    /// Log lines dropped since the agent was loaded (it logged too much).
    pub fn log_dropped(&self) -> u64 {
        self.caps.log.dropped()
    }

    /// Stops taking messages: those waiting for an instance (and any later ones) are
    /// answered `agent_stopped` at once; invocations running go on to their end.
    pub fn close(&self) {
        self.permits.close();
    }

    /// Runs one message in a fresh instance, or a kept one (warm).
    pub async fn invoke(&self, inv: Invocation) -> Result<Vec<u8>, AgentError> {
        // A free instance is the common case: no timer for it.
        let free = self.permits.clone().try_acquire_owned().ok();
        let _permit = match free {
            Some(p) => p,
            None => {
                match tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_closed)) => {
                        return Err(AgentError::new(
                            "agent_stopped",
                            format!(
                                "agent {} stopped before it ran this message",
                                self.spec.name
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(AgentError::new(
                            "busy",
                            format!(
                                "all {} instances of agent {} are busy",
                                self.spec.limits.max_concurrency, self.spec.name
                            ),
                        ));
                    }
                }
            }
        };
        let mut limits = self.limits();
        if let Some(deadline) = inv.deadline {
            limits.timeout = limits.timeout.min(deadline);
        }
        match &*self.prepared {
            Prepared::Component(pre) if self.spec.instances == Instances::Warm => {
                let kept = self.kept().pop();
                if kept.is_none() {
                    self.warm_started.fetch_add(1, Ordering::Relaxed);
                }
                let max = self.spec.max_invocations.unwrap_or(DEFAULT_MAX_INVOCATIONS);
                let (result, again) =
                    component::invoke(pre, &self.caps, &limits, inv, kept, max).await;
                if let Some(k) = again {
                    self.kept().push(k);
                }
                result
            }
            Prepared::Component(pre) => {
                component::invoke(pre, &self.caps, &limits, inv, None, 1)
                    .await
                    .0
            }
            Prepared::Command(pre) => {
                wasi_command::invoke(pre, &self.caps, &self.spec, &limits, inv).await
            }
        }
    }
}

/// The limits of one invocation, in the units wasmtime wants.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    pub memory: usize,
    pub timeout: Duration,
    pub fuel: Option<u64>,
    pub max_output: usize,
}

/// Caps linear memory and tables, and remembers that it said no, so a trap caused by
/// a refused grow is reported as `memory`, not as a generic trap.
pub(crate) struct Limiter {
    memory: usize,
    /// Set when a grow was refused.
    pub hit: Arc<AtomicBool>,
}

/// The error a refused memory grow raises inside the guest.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes reached (wanted {desired})")]
pub(crate) struct MemoryLimitHit {
    limit: usize,
    desired: usize,
}

impl Limiter {
    pub fn new(memory: usize) -> Self {
        Self {
            memory,
            hit: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit.store(true, Ordering::Relaxed);
            return Err(MemoryLimitHit {
                limit: self.memory,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Applies fuel and the wall-clock deadline to a fresh store. The epoch callback
/// yields the thread every tick (a busy agent does not starve the node's other
/// tasks) and traps with `Interrupt` once the deadline has passed.
///
/// Fuel is set only for an agent that has it, which runs on the fuel-metering
/// engine: on the other engine `set_fuel` fails, and building that error (with a
/// backtrace when RUST_BACKTRACE is set) would cost more than the call itself.
pub(crate) fn arm_store<T: Send + 'static>(store: &mut Store<T>, limits: &RunLimits) {
    if let Some(fuel) = limits.fuel
        && let Err(e) = store.set_fuel(fuel)
    {
        // Cannot happen: agents with fuel are prepared on the fuel-metering engine.
        tracing::error!("cannot set the fuel of an instance: {e}");
    }
    let deadline = Instant::now() + limits.timeout;
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
}

/// Runs instantiation or a call under the wall-clock deadline, wherever the guest
/// is. The epoch check in [`arm_store`] stops wasm code, but not a guest blocked in
/// a host call (a `wasi:io/poll` wait, `poll_oneoff`): there the future is dropped at
/// the deadline, which ends the call, and the caller drops the store, which frees
/// the instance's pool slot. Both report `Trap::Interrupt`, so [`classify`] calls
/// either a `timeout`.
pub(crate) async fn within_deadline<T>(
    limits: &RunLimits,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    tokio::time::timeout(limits.timeout, call)
        .await
        .unwrap_or_else(|_| Err(Trap::Interrupt.into()))
}

/// Turns a wasmtime error from instantiation or a call into a classified failure.
pub(crate) fn classify(e: wasmtime::Error, memory_hit: bool, limits: &RunLimits) -> AgentError {
    if memory_hit || e.is::<MemoryLimitHit>() {
        return AgentError::new(
            "memory",
            format!("memory limit of {} bytes reached", limits.memory),
        );
    }
    if e.is::<wasmtime::PoolConcurrencyLimitError>() {
        return AgentError::new("busy", format!("no free instance slot on this node: {e}"));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => AgentError::new(
            "timeout",
            format!("deadline of {:?} exceeded", limits.timeout),
        ),
        Some(Trap::OutOfFuel) => AgentError::new(
            "fuel",
            format!(
                "ran out of fuel ({} units)",
                limits.fuel.unwrap_or(u64::MAX)
            ),
        ),
        Some(trap) => AgentError::new("trap", format!("{trap}: {}", first_line(&format!("{e:#}")))),
        None => AgentError::new("trap", first_line(&format!("{e:#}"))),
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(500).collect()
}

/// The `output_too_large` check shared by both kinds.
pub(crate) fn check_output(output: Vec<u8>, limits: &RunLimits) -> Result<Vec<u8>, AgentError> {
    if output.len() > limits.max_output {
        return Err(AgentError::new(
            "output_too_large",
            format!(
                "output of {} bytes exceeds the limit of {} bytes",
                output.len(),
                limits.max_output
            ),
        ));
    }
    Ok(output)
}
