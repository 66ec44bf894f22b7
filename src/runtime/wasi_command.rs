//! WASI preview1 command modules, the NEX function model: the payload on stdin, the
//! reply on stdout, stderr lines as log lines, the subject as argv[1], the agent's
//! config as its environment. `proc_exit(0)` (or returning from `_start`) is
//! success; any other exit code is an `exit` error carrying it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::{InstancePre, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use super::agent::{
    AgentError, Invocation, Limiter, RunLimits, arm_store, check_output, classify, within_deadline,
};
use crate::host::Capabilities;
use crate::host::fs::DirGrant;
use crate::host::log::InvocationLog;
use crate::protocol::AgentSpec;

/// Stderr kept per invocation; beyond this the guest's writes fail.
const STDERR_CAPACITY: usize = 64 << 10;

/// A command module linked against WASI preview1, ready to instantiate.
pub type Pre = InstancePre<CommandState>;

pub struct CommandState {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

pub fn add_to_linker(linker: &mut Linker<CommandState>) -> anyhow::Result<()> {
    wasmtime_wasi::p1::add_to_linker_async(linker, |s| &mut s.wasi)?;
    Ok(())
}

/// Links a compiled core module; it must be a WASI command (export `_start`, import
/// nothing but `wasi_snapshot_preview1`).
pub fn prepare(linker: &Linker<CommandState>, module: &Module) -> Result<Pre, AgentError> {
    if !matches!(
        module.get_export("_start"),
        Some(wasmtime::ExternType::Func(_))
    ) {
        return Err(AgentError::invalid_module(
            "core module is not a WASI command: it exports no `_start` function",
        ));
    }
    linker.instantiate_pre(module).map_err(|e| {
        AgentError::invalid_module(format!(
            "core module imports something other than WASI preview1: {e:#}"
        ))
    })
}

/// What one run of a command gets: its spec and grants (`None` for the load-time
/// check, which runs nothing), its stdio and its subject.
struct Run<'a> {
    spec: Option<(&'a AgentSpec, &'a [DirGrant])>,
    stdin: MemoryInputPipe,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    subject: &'a str,
}

fn new_store(
    engine: &wasmtime::Engine,
    limits: &RunLimits,
    run: Run<'_>,
) -> Result<Store<CommandState>, AgentError> {
    let mut b = WasiCtxBuilder::new();
    b.stdin(run.stdin)
        .stdout(run.stdout)
        .stderr(run.stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let subject = run.subject;
    if let Some((spec, dirs)) = run.spec {
        // The first grant is fd 3, as preview1 numbers preopens.
        crate::host::fs::preopen(&mut b, dirs)?;
        b.args(&[spec.name.as_str(), subject]);
        let env: Vec<(&str, &str)> = spec
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        b.envs(&env);
    }
    let mut store = Store::new(
        engine,
        CommandState {
            wasi: b.build_p1(),
            limiter: Limiter::new(limits.memory),
        },
    );
    store.limiter(|s| &mut s.limiter);
    arm_store(&mut store, limits);
    Ok(store)
}

/// Instantiates once without running `_start` (a load-time check).
pub(crate) async fn instantiate_only(pre: &Pre, limits: &RunLimits) -> Result<(), AgentError> {
    let mut store = new_store(
        pre.module().engine(),
        limits,
        Run {
            spec: None,
            stdin: MemoryInputPipe::new(bytes::Bytes::new()),
            stdout: MemoryOutputPipe::new(0),
            stderr: MemoryOutputPipe::new(0),
            subject: "",
        },
    )?;
    let hit = store.data().limiter.hit.clone();
    within_deadline(limits, pre.instantiate_async(&mut store))
        .await
        .map(drop)
        .map_err(|e| classify(e, hit.load(Ordering::Relaxed), limits))
}

pub(crate) async fn invoke(
    pre: &Pre,
    caps: &Arc<Capabilities>,
    spec: &AgentSpec,
    limits: &RunLimits,
    inv: Invocation,
) -> Result<Vec<u8>, AgentError> {
    // One byte over the limit tells "exactly at the limit" from "too large".
    let stdout = MemoryOutputPipe::new(limits.max_output.saturating_add(1));
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let mut store = new_store(
        pre.module().engine(),
        limits,
        Run {
            spec: Some((spec, &caps.dirs)),
            stdin: MemoryInputPipe::new(inv.payload),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            subject: &inv.subject,
        },
    )?;
    let hit = store.data().limiter.hit.clone();
    let outcome = within_deadline(limits, async {
        let instance = pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    })
    .await;
    let err_text = stderr.contents();
    let mut log = InvocationLog::default();
    caps.log.stderr(&mut log, "info", &err_text).await;
    caps.log.finish(log).await;
    let exit = match outcome {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(code) => code.0,
            None => return Err(classify(e, hit.load(Ordering::Relaxed), limits)),
        },
    };
    if exit != 0 {
        let tail = String::from_utf8_lossy(&err_text);
        let tail = tail.trim().lines().last().unwrap_or_default();
        return Err(AgentError::new(
            "exit",
            if tail.is_empty() {
                format!("exited with code {exit}")
            } else {
                format!("exited with code {exit}: {tail}")
            },
        ));
    }
    check_output(stdout.contents().to_vec(), limits)
}
