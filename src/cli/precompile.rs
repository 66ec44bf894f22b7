//! Precompiling for nodes: `deploy` compiles the module for the engine of every
//! targeted node that cannot compile itself (a runtime-only build reports
//! `wasm_compiler: none` and its engine profile in its heartbeat), and for each
//! `--precompile TARGET`, uploads the artifacts next to the module and lists them in
//! the signed spec. `edgeleaf precompile` makes one artifact as a file, for agents a
//! runtime-only node runs from its own config.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::protocol::{AgentSpec, NodeRow};
use crate::runtime::precompiled::EngineProfile;
use crate::shipping::{ModuleRef, Target};

/// What `deploy` precompiles for, besides the compiler-less nodes it targets.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrecompileOpts {
    /// Also precompile for nodes of this Rust target that have not reported yet
    /// (repeat): e.g. aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf. For
    /// 32-bit targets the code assumes the default limits.max_memory (32 MiB).
    #[arg(long = "precompile", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Precompile nothing: targeted nodes without a compiler refuse the deployment
    /// (`no_artifact`).
    #[arg(long, conflicts_with = "targets")]
    pub no_precompile: bool,
}

/// The engines to precompile for: each distinct profile among the reported nodes
/// the targets select that cannot compile, then those of `--precompile`. Profiles
/// this edgeleaf cannot build for (another wasmtime) are warned about and left out.
pub fn engines(
    opts: &PrecompileOpts,
    targets: &[Target],
    fleet: &[NodeRow],
    signed: bool,
) -> Result<Vec<EngineProfile>> {
    if opts.no_precompile {
        return Ok(Vec::new());
    }
    let mut wanted: BTreeMap<String, (EngineProfile, Vec<&str>)> = BTreeMap::new();
    for row in fleet {
        let hb = &row.heartbeat;
        if hb.wasm_compiler != "none" || !targets.iter().any(|t| t.selects(&row.node_id, &hb.tags))
        {
            continue;
        }
        if let Err(why) = hb.engine.compatible_with_this_build() {
            eprintln!(
                "warning: node {} has no compiler and this edgeleaf cannot precompile for it \
                 ({why}): it will refuse the deployment; deploy with the edgeleaf version it runs",
                row.node_id
            );
            continue;
        }
        wanted
            .entry(hb.engine.fingerprint.clone())
            .or_insert_with(|| (hb.engine.clone(), Vec::new()))
            .1
            .push(&row.node_id);
    }
    if !signed && !wanted.is_empty() {
        let ids: Vec<&str> = wanted
            .values()
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        eprintln!(
            "warning: {} have no compiler and load precompiled code from signed deployments \
             only: they will refuse this unsigned one",
            ids.join(", ")
        );
        return Ok(Vec::new());
    }
    let mut out: Vec<EngineProfile> = wanted.into_values().map(|(p, _)| p).collect();
    for target in &opts.targets {
        if !signed {
            bail!(
                "--precompile needs a signed deployment (--key): nodes load precompiled code only from those"
            );
        }
        let profile =
            EngineProfile::for_rust_target(target, crate::config::DEFAULT_MAX_MEMORY_32_BIT)
                .with_context(|| format!("--precompile {target}"))?;
        if !out.iter().any(|p| p.fingerprint == profile.fingerprint) {
            out.push(profile);
        }
    }
    Ok(out)
}

/// Compiles `wasm` for each engine and uploads the artifacts; returns what the
/// spec lists (engine key → object).
pub async fn build_and_upload(
    js: &async_nats::jetstream::Context,
    engines: &[EngineProfile],
    agent: &AgentSpec,
    wasm: &[u8],
) -> Result<BTreeMap<String, ModuleRef>> {
    let fuel = agent.limits.fuel.is_some();
    let mut out = BTreeMap::new();
    for profile in engines {
        let bytes = compile(profile, fuel, wasm)?;
        let digest = super::deploy::upload_object(js, "artifact", &bytes).await?;
        eprintln!(
            "  precompiled for {} (engine {})",
            profile.target,
            profile.artifact_key(fuel)
        );
        out.insert(
            profile.artifact_key(fuel),
            ModuleRef {
                digest,
                size: bytes.len() as u64,
            },
        );
    }
    Ok(out)
}

#[cfg(feature = "compiler")]
fn compile(profile: &EngineProfile, fuel: bool, wasm: &[u8]) -> Result<Vec<u8>> {
    crate::runtime::precompiled::precompile(profile, fuel, wasm)
}

#[cfg(not(feature = "compiler"))]
fn compile(profile: &EngineProfile, _fuel: bool, _wasm: &[u8]) -> Result<Vec<u8>> {
    bail!(
        "cannot precompile for {}: this edgeleaf is a runtime-only build (no compiler); \
         deploy from a full build, or give --no-precompile",
        profile.target
    )
}

#[derive(Debug, clap::Args)]
pub struct PrecompileArgs {
    /// The agent module (.wasm).
    file: PathBuf,
    /// The Rust target of the node that runs it (e.g. aarch64-unknown-linux-gnu).
    #[arg(long)]
    target: String,
    /// The node's limits.max_memory (e.g. 32MiB), for 32-bit targets, which compile
    /// it in. Default: the default limit there, 32 MiB.
    #[arg(long, value_parser = crate::config::parse_size)]
    max_memory: Option<u64>,
    /// For an agent with a fuel limit (its code counts fuel).
    #[arg(long)]
    fuel: bool,
    /// Where to write the artifact. Default: FILE with the extension .cwasm.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// `edgeleaf precompile`: one artifact as a file, for a node's `[[agents]] module`.
pub fn run(args: PrecompileArgs) -> Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let max_memory = args
        .max_memory
        .unwrap_or(crate::config::DEFAULT_MAX_MEMORY_32_BIT);
    let profile = EngineProfile::for_rust_target(&args.target, max_memory)?;
    let bytes = compile(&profile, args.fuel, &wasm)?;
    let out = args
        .out
        .unwrap_or_else(|| args.file.with_extension("cwasm"));
    std::fs::write(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: {} bytes for {} (engine {})",
        out.display(),
        bytes.len(),
        profile.target,
        profile.artifact_key(args.fuel)
    );
    Ok(())
}
