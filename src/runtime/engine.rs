//! The wasmtime engines, set up in one place: epoch interruption with a ticker
//! thread that ends with the engine, a pooling allocator sized from the node's
//! limits with copy-on-write memory images, and the linkers for both agent kinds.
//! Fuel metering only on a second engine, for the agents that ask for fuel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::ModuleKind;
use super::agent::AgentError;
use super::cache::CompiledCache;
use super::component::{self, ComponentState};
use super::precompiled::{Artifact, EngineProfile};
use super::wasi_command::{self, CommandState};

/// How often the epoch advances: the granularity of deadlines, and how often a
/// running agent yields its thread to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances, memories and tables one component may hold. A Rust component
/// for wasm32-wasip2 has a handful of core instances (the module and its shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;

/// Bytes of linear memory a warm pool slot keeps resident between invocations.
const KEEP_RESIDENT: usize = 2 << 20;

/// What the engine is sized for.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest linear memory of any instance (the node's `limits.max_memory`).
    pub max_memory: u64,
    /// Instances that can exist at once, across all agents (`limits.pool_slots`).
    pub pool_slots: u32,
    /// Where compiled code is cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

/// A module or component compiled and linked, ready to instantiate per invocation.
/// Shared by every agent of the same module on the same engine.
pub enum Prepared {
    Component(component::Pre),
    Command(wasi_command::Pre),
}

/// What [`Runtime::prepare`] hands back.
pub struct Loaded {
    pub kind: ModuleKind,
    /// sha256 of the module bytes, hex.
    pub digest: String,
    pub prepared: Arc<Prepared>,
    /// True when the compiled code came from the cache.
    pub cache_hit: bool,
}

/// One engine with its linkers: the node has one without fuel metering, and one
/// with it for the agents whose spec sets `fuel`, made on first use. Fuel checks
/// are compiled into the code (a counter decremented in every loop and call), so
/// agents that do not ask for fuel must not pay for them.
struct Flavor {
    engine: Engine,
    component_linker: wasmtime::component::Linker<ComponentState>,
    command_linker: wasmtime::Linker<CommandState>,
    /// Names this engine's entries in the compiled-code cache.
    key: String,
}

impl Flavor {
    /// `memory_reservation`: see [`plain_engine`].
    fn new(opts: &EngineOptions, fuel: bool, memory_reservation: Option<u64>) -> Result<Self> {
        let slots = opts.pool_slots.max(1);
        let max_memory = usize::try_from(opts.max_memory).unwrap_or(usize::MAX);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots * MEMORIES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(slots * TABLES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_stacks(slots)
            .max_memory_size(max_memory)
            // Reset a slot by overwriting its first pages instead of returning them
            // to the kernel (madvise) and faulting them back in on the next call: in
            // a VM each of those costs a cross-CPU TLB shootdown. Measured with
            // benches/agents.rs: about 2x the invocations/s. Costs up to this much
            // resident memory per warm slot (so at most pool_slots x 2 MiB). The
            // memory is still reset to the module's initial image every time.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = compile_config(memory_reservation, fuel);
        config.memory_init_cow(true);
        if fuel && cfg!(target_pointer_width = "32") {
            // A second pool would double the address space reserved up front, which
            // a 32-bit process has little of: fuel-metered agents allocate on demand.
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        } else {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot set up the wasm engine (pool too large for this host? lower limits.pool_slots or limits.max_memory)")?;
        start_epoch_ticker(&engine);
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        component::add_to_linker(&mut component_linker)?;
        let mut command_linker = wasmtime::Linker::new(&engine);
        wasi_command::add_to_linker(&mut command_linker)?;
        Ok(Self {
            key: engine_key(&engine, fuel, memory_reservation),
            engine,
            component_linker,
            command_linker,
        })
    }
}

/// Code some agent uses (see `Runtime::in_use`).
struct InUse {
    kind: ModuleKind,
    digest: String,
    prepared: std::sync::Weak<Prepared>,
}

/// The engines and what every agent shares.
pub struct Runtime {
    /// Without fuel metering: every agent whose spec does not set `fuel`.
    plain: Flavor,
    /// With fuel metering, made when the first agent with `fuel` loads.
    fueled: std::sync::OnceLock<Flavor>,
    /// Serialises making `fueled` (an engine reserves its pool up front).
    making_fueled: std::sync::Mutex<()>,
    /// Code in use, by engine and sha256 of the bytes it was made from: agents of
    /// the same module share it (a thousand copies of one agent hold its code once).
    /// Entries die with their last agent.
    in_use: std::sync::Mutex<std::collections::HashMap<(String, String), InUse>>,
    opts: EngineOptions,
    cache: Option<CompiledCache>,
    /// "cranelift", "pulley" (the interpreter used where Cranelift has no backend),
    /// or "none" (a `--runtime-only` build: precompiled artifacts only).
    compiler: &'static str,
    /// What precompiled code must match to load here.
    profile: EngineProfile,
}

impl Runtime {
    pub fn new(opts: &EngineOptions) -> Result<Arc<Self>> {
        let (plain, memory_reservation) = plain_engine(opts)?;
        let compiler = match (cfg!(feature = "compiler"), plain.engine.is_pulley()) {
            (false, _) => "none",
            (true, true) => "pulley",
            (true, false) => "cranelift",
        };
        let profile = EngineProfile::new(&host_code_target(&plain.engine), memory_reservation);
        Ok(Arc::new(Self {
            plain,
            fueled: std::sync::OnceLock::new(),
            making_fueled: std::sync::Mutex::new(()),
            in_use: Default::default(),
            cache: opts.cache_dir.clone().map(CompiledCache::new),
            opts: opts.clone(),
            compiler,
            profile,
        }))
    }

    /// The engine of agents without fuel.
    pub fn engine(&self) -> &Engine {
        &self.plain.engine
    }

    pub fn compiler(&self) -> &'static str {
        self.compiler
    }

    /// What precompiled code must have been made for to load here.
    pub fn profile(&self) -> &EngineProfile {
        &self.profile
    }

    pub fn cache(&self) -> Option<&CompiledCache> {
        self.cache.as_ref()
    }

    /// The engine for agents with (`fuel`) or without fuel metering.
    fn flavor(&self, fuel: bool) -> Result<&Flavor, AgentError> {
        if !fuel {
            return Ok(&self.plain);
        }
        if let Some(f) = self.fueled.get() {
            return Ok(f);
        }
        let _making = self.making_fueled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = self.fueled.get() {
            return Ok(f);
        }
        let made = Flavor::new(&self.opts, true, self.profile.memory_reservation).map_err(|e| {
            AgentError::new(
                "engine",
                format!("cannot set up the fuel-metered wasm engine: {e:#}"),
            )
        })?;
        Ok(self.fueled.get_or_init(|| made))
    }

    /// Validates, compiles (or loads from the cache) and links module bytes, or
    /// loads a precompiled [`Artifact`] made for this engine. With `fuel`, on the
    /// engine that meters it.
    ///
    /// An artifact is native code that wasmtime cannot check: callers hand over
    /// only artifacts from a trusted source (a signed deployment's listed digest,
    /// the node's own state, a local file the operator configured).
    pub fn prepare(&self, bytes: &[u8], fuel: bool) -> Result<Loaded, AgentError> {
        let flavor = self.flavor(fuel)?;
        let key = (flavor.key.clone(), hex::encode(Sha256::digest(bytes)));
        let lock = || self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(used) = lock().get(&key)
            && let Some(prepared) = used.prepared.upgrade()
        {
            return Ok(Loaded {
                kind: used.kind,
                digest: used.digest.clone(),
                prepared,
                // Not compiled for this agent: as good as a cache hit.
                cache_hit: true,
            });
        }
        let loaded = self.prepare_anew(flavor, bytes, fuel, &key.1)?;
        let mut in_use = lock();
        in_use.retain(|_, used| used.prepared.strong_count() > 0);
        in_use.insert(
            key,
            InUse {
                kind: loaded.kind,
                digest: loaded.digest.clone(),
                prepared: Arc::downgrade(&loaded.prepared),
            },
        );
        Ok(loaded)
    }

    /// Compiles (or loads) and links `bytes`, whose sha256 is `digest`.
    fn prepare_anew(
        &self,
        flavor: &Flavor,
        bytes: &[u8],
        fuel: bool,
        digest: &str,
    ) -> Result<Loaded, AgentError> {
        if Artifact::is_artifact(bytes) {
            return self.load_artifact(flavor, bytes, fuel);
        }
        if !cfg!(feature = "compiler") {
            return Err(AgentError::new(
                "no_compiler",
                "this node is built without a compiler (runtime-only) and runs precompiled \
                 artifacts only: a signed `edgeleaf deploy` precompiles for it",
            ));
        }
        let kind = ModuleKind::detect(bytes).ok_or_else(|| {
            AgentError::invalid_module(format!(
                "not a WebAssembly module or component ({} bytes, starting {:02x?})",
                bytes.len(),
                &bytes[..bytes.len().min(8)]
            ))
        })?;
        let digest = digest.to_owned();
        let (prepared, cache_hit) = match kind {
            ModuleKind::Component => {
                let (c, hit) = self.compiled(
                    &digest,
                    &flavor.key,
                    || compile_component(&flavor.engine, bytes),
                    |c| c.serialize(),
                    // SAFETY: the cache hands back only bytes whose checksum matches
                    // what we wrote from `serialize` (see cache.rs).
                    |bytes| unsafe {
                        wasmtime::component::Component::deserialize(&flavor.engine, bytes)
                    },
                )?;
                (
                    Prepared::Component(component::prepare(&flavor.component_linker, &c)?),
                    hit,
                )
            }
            ModuleKind::WasiCommand => {
                let (m, hit) = self.compiled(
                    &digest,
                    &flavor.key,
                    || compile_module(&flavor.engine, bytes),
                    serialize_module,
                    // SAFETY: as above.
                    |bytes| unsafe { wasmtime::Module::deserialize(&flavor.engine, bytes) },
                )?;
                (
                    Prepared::Command(wasi_command::prepare(&flavor.command_linker, &m)?),
                    hit,
                )
            }
        };
        Ok(Loaded {
            kind,
            digest,
            prepared: Arc::new(prepared),
            cache_hit,
        })
    }

    /// Loads and links a precompiled artifact made for this engine.
    fn load_artifact(
        &self,
        flavor: &Flavor,
        bytes: &[u8],
        fuel: bool,
    ) -> Result<Loaded, AgentError> {
        let artifact = Artifact::parse(bytes)
            .map_err(|e| AgentError::new("invalid_artifact", format!("{e:#}")))?;
        let want = self.profile.artifact_key(fuel);
        if artifact.header.engine != want {
            return Err(AgentError::new(
                "artifact_mismatch",
                format!(
                    "precompiled for engine {} ({}), this node's is {want} ({})",
                    artifact.header.engine, artifact.header.target, self.profile.target
                ),
            ));
        }
        let mismatch = |e: wasmtime::Error| {
            AgentError::new(
                "artifact_mismatch",
                format!("precompiled code does not load on this engine: {e:#}"),
            )
        };
        let prepared = match artifact.kind {
            // SAFETY: wasmtime checks the code was made for this engine's target and
            // settings; that the code is what the compiler made is the caller's
            // trust (see `prepare`).
            ModuleKind::Component => {
                let c = unsafe {
                    wasmtime::component::Component::deserialize(&flavor.engine, artifact.code)
                }
                .map_err(mismatch)?;
                Prepared::Component(component::prepare(&flavor.component_linker, &c)?)
            }
            ModuleKind::WasiCommand => {
                // SAFETY: as above.
                let m = unsafe { wasmtime::Module::deserialize(&flavor.engine, artifact.code) }
                    .map_err(mismatch)?;
                Prepared::Command(wasi_command::prepare(&flavor.command_linker, &m)?)
            }
        };
        if let Some(cache) = &self.cache {
            cache
                .stats
                .precompiled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Loaded {
            kind: artifact.kind,
            digest: artifact.header.module,
            prepared: Arc::new(prepared),
            cache_hit: false,
        })
    }

    /// Compiled code for `digest`: from the cache when a verified entry loads,
    /// otherwise compiled and stored.
    fn compiled<T>(
        &self,
        digest: &str,
        engine_key: &str,
        compile: impl FnOnce() -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
        deserialize: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
    ) -> Result<(T, bool), AgentError> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(cache) = &self.cache
            && let Some(bytes) = cache.lookup(digest, engine_key)
        {
            match deserialize(&bytes) {
                Ok(t) => {
                    cache.stats.hits.fetch_add(1, Relaxed);
                    tracing::debug!(%digest, "compiled cache hit");
                    return Ok((t, true));
                }
                Err(e) => {
                    cache.stats.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(%digest, "compiled cache entry unusable ({e}); recompiling");
                    cache.remove_entry(digest, engine_key);
                }
            }
        }
        tracing::debug!(%digest, "compiling");
        let started = std::time::Instant::now();
        let t = compile()
            .map_err(|e| AgentError::invalid_module(format!("does not compile: {e:#}")))?;
        tracing::debug!(%digest, elapsed = ?started.elapsed(), "compiled");
        if let Some(cache) = &self.cache {
            cache.stats.misses.fetch_add(1, Relaxed);
            match serialize(&t) {
                Ok(bytes) => {
                    if let Err(e) = cache.store(digest, engine_key, &bytes) {
                        tracing::warn!(dir = %cache.dir().display(), "cannot write the compiled cache: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot serialize compiled code: {e}"),
            }
        }
        Ok((t, false))
    }
}

/// The settings that decide compiled code, shared by the node's engines and by
/// `deploy`'s precompiling for other nodes (so they must stay equal on both sides;
/// a change here bumps [`precompiled::ENGINE_SETTINGS`]). `memory_reservation`:
/// the compact layout (see [`plain_engine`]).
pub(crate) fn compile_config(memory_reservation: Option<u64>, fuel: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(fuel);
    if let Some(bytes) = memory_reservation {
        config
            .memory_reservation(bytes)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
    }
    config
}

/// The plain engine, and how much address space each linear memory reserves:
/// `None` for wasmtime's default on 64-bit hosts (4 GiB plus guards, so that no
/// access needs a bounds check), or the node's `limits.max_memory`, with bounds
/// checks compiled into the code. The latter on 32-bit hosts, which have no such
/// address space, and on 64-bit hosts where the default layout's pool cannot be
/// reserved: many aarch64 boards (Raspberry Pi OS among them) run kernels with
/// 39-bit addresses, 512 GiB a process, less than 64 slots of 2 memories of 4 GiB
/// take. (Trying is cheap where it fails; a probe of its own cost half a minute
/// under qemu-user, which keeps flags for every page of a reservation.)
fn plain_engine(opts: &EngineOptions) -> Result<(Flavor, Option<u64>)> {
    if cfg!(target_pointer_width = "32") {
        let compact = Some(opts.max_memory);
        return Ok((Flavor::new(opts, false, compact)?, compact));
    }
    match Flavor::new(opts, false, None) {
        Ok(plain) => Ok((plain, None)),
        Err(e) => {
            tracing::warn!(
                "this host cannot reserve the address space of the default memory layout \
                 ({e:#}: a kernel with 39-bit addresses, or a ulimit -v); agents' memories \
                 reserve limits.max_memory each and are bounds-checked (slower). Lower \
                 limits.pool_slots to keep the default layout"
            );
            let compact = Some(opts.max_memory);
            Ok((Flavor::new(opts, false, compact)?, compact))
        }
    }
}

/// The code target of `engine` on this host, as [`EngineProfile::target`] names it.
fn host_code_target(engine: &Engine) -> String {
    match (engine.is_pulley(), cfg!(target_pointer_width = "32")) {
        (true, true) => "pulley32".to_owned(),
        (true, false) => "pulley64".to_owned(),
        (false, _) => format!(
            "{}-unknown-{}",
            std::env::consts::ARCH,
            std::env::consts::OS
        ),
    }
}

#[cfg(feature = "compiler")]
fn compile_component(
    engine: &Engine,
    wasm: &[u8],
) -> wasmtime::Result<wasmtime::component::Component> {
    wasmtime::component::Component::new(engine, wasm)
}

#[cfg(feature = "compiler")]
fn compile_module(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    wasmtime::Module::new(engine, wasm)
}

#[cfg(feature = "compiler")]
fn serialize_module(module: &wasmtime::Module) -> wasmtime::Result<Vec<u8>> {
    module.serialize()
}

// A runtime-only build never gets here (`prepare` refuses plain wasm first).
#[cfg(not(feature = "compiler"))]
fn compile_component(_: &Engine, _: &[u8]) -> wasmtime::Result<wasmtime::component::Component> {
    Err(wasmtime::Error::msg("this build has no compiler"))
}

#[cfg(not(feature = "compiler"))]
fn compile_module(_: &Engine, _: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    Err(wasmtime::Error::msg("this build has no compiler"))
}

#[cfg(not(feature = "compiler"))]
fn serialize_module(_: &wasmtime::Module) -> wasmtime::Result<Vec<u8>> {
    Err(wasmtime::Error::msg("this build has no compiler"))
}

/// Names compiled code by the engine that made it: wasmtime version, settings and
/// target all feed its compatibility hash. (A build without a compiler caches
/// nothing; its engines are named by their profile.)
#[cfg(not(feature = "compiler"))]
fn engine_key(engine: &Engine, fuel: bool, memory_reservation: Option<u64>) -> String {
    EngineProfile::new(&host_code_target(engine), memory_reservation).artifact_key(fuel)
}

/// Names compiled code by the engine that made it: wasmtime version, settings and
/// target all feed its compatibility hash.
#[cfg(feature = "compiler")]
fn engine_key(engine: &Engine, _fuel: bool, _memory_reservation: Option<u64>) -> String {
    struct ShaHasher(Sha256);
    impl std::hash::Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0 // unused: the digest is read below
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    hex::encode(&h.0.finalize()[..8])
}

/// Advances the epoch every [`EPOCH_TICK`] for as long as the engine lives: the
/// thread holds only a weak reference and ends when the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("edgeleaf-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the ticker deadlines never fire; say so loudly.
        tracing::error!("cannot start the epoch ticker thread: {e}; agent deadlines will not work");
    }
}
