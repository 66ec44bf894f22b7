//! Precompiled agents: code compiled ahead of time (by `edgeleaf deploy` on the
//! operator's machine) for a node's engine, so that a node needs no compiler at all
//! (`--runtime-only` builds, for small boards) and a node with one skips the compile.
//!
//! An engine is described by its [`EngineProfile`]: the settings wasmtime's own
//! compatibility check compares when it loads precompiled code (the code's target,
//! the wasmtime version, and edgeleaf's engine settings). Nodes report theirs in
//! every heartbeat; `deploy` builds an artifact per distinct profile. The artifact
//! ([`Artifact`]) is wasmtime's serialized code behind a small header that names the
//! module it was made from and the engine it is for, so that a node can tell a
//! foreign artifact apart before handing the bytes to wasmtime.
//!
//! Loading precompiled code trusts it as native code (wasmtime cannot check what
//! compiled code does): nodes take artifacts only from signed deployments, after
//! checking the digest the signed spec lists.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModuleKind;

/// The revision of edgeleaf's engine settings that decide compiled code (wasm
/// features, epoch interruption, fuel, memory layout; see `engine::compile_config`).
/// Bump it whenever one of them changes, so that artifacts made by another revision
/// are never offered to this one.
pub const ENGINE_SETTINGS: u32 = 1;

/// The wasmtime edgeleaf is built with (a unit test keeps it equal to Cargo.lock's).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// What compiled code must have been made for to run on an engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct EngineProfile {
    /// The code's target: `x86_64-unknown-linux`, `aarch64-unknown-linux`, or
    /// `pulley32`/`pulley64` for wasmtime's interpreter (armv7 and other hosts
    /// Cranelift has no backend for).
    pub target: String,
    /// The wasmtime version.
    pub wasmtime: String,
    /// [`ENGINE_SETTINGS`] of the edgeleaf that runs the engine.
    pub settings: u32,
    /// Address space reserved per linear memory, when it is not wasmtime's 64-bit
    /// default: the node's `limits.max_memory`, compiled into the code's bounds
    /// checks. Set on 32-bit hosts, and on 64-bit hosts with too little address
    /// space for the default layout (kernels with 39-bit addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,
    /// Names artifacts for this engine (agents without fuel; see
    /// [`Self::artifact_key`]).
    pub fingerprint: String,
}

impl EngineProfile {
    /// The profile of this edgeleaf's engines for `target`.
    pub fn new(target: &str, memory_reservation: Option<u64>) -> Self {
        let mut p = Self {
            target: target.to_owned(),
            wasmtime: WASMTIME_VERSION.to_owned(),
            settings: ENGINE_SETTINGS,
            memory_reservation,
            fingerprint: String::new(),
        };
        p.fingerprint = p.artifact_key(false);
        p
    }

    /// The profile of a node built for the Rust target `triple` (for example
    /// `aarch64-unknown-linux-gnu`) with `max_memory` as its `limits.max_memory`:
    /// what `deploy --precompile` builds for when the node has not reported yet.
    pub fn for_rust_target(triple: &str, max_memory: u64) -> Result<Self> {
        let arch = triple.split('-').next().unwrap_or_default();
        let os = if triple.contains("-linux") {
            "linux"
        } else {
            bail!(
                "{triple:?}: edgeleaf nodes run on Linux (a target such as aarch64-unknown-linux-gnu)"
            )
        };
        Ok(match arch {
            "x86_64" | "aarch64" | "riscv64" | "s390x" => {
                Self::new(&format!("{arch}-unknown-{os}"), None)
            }
            // Cranelift has no backend for these: wasmtime interprets Pulley code,
            // and a 32-bit host reserves only max_memory per instance.
            a if a.starts_with("arm") || a.starts_with("thumb") || a == "i686" || a == "i586" => {
                Self::new("pulley32", Some(max_memory))
            }
            _ => bail!(
                "{triple:?}: no wasm code target known for {arch:?} (x86_64, aarch64, armv7, riscv64 and s390x are)"
            ),
        })
    }

    /// The name of artifacts for this engine: a digest of every field that decides
    /// the code, and of whether the agent is fuel-metered (a separate engine whose
    /// code counts fuel).
    pub fn artifact_key(&self, fuel: bool) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "edgeleaf-engine\n{}\n{}\n{}\n{:?}\n{}",
            self.target,
            self.wasmtime,
            self.settings,
            self.memory_reservation,
            if fuel { "fuel" } else { "plain" }
        ));
        hex::encode(&h.finalize()[..12])
    }

    /// Whether this edgeleaf can build code this profile's engines load: the same
    /// wasmtime and engine settings (a node on another edgeleaf version may differ).
    pub fn compatible_with_this_build(&self) -> Result<(), String> {
        if self.wasmtime != WASMTIME_VERSION || self.settings != ENGINE_SETTINGS {
            return Err(format!(
                "its engine is wasmtime {} with edgeleaf engine settings {}, this edgeleaf's is \
                 wasmtime {WASMTIME_VERSION} with settings {ENGINE_SETTINGS}",
                self.wasmtime, self.settings
            ));
        }
        if self.fingerprint != self.artifact_key(false) {
            return Err(format!(
                "its fingerprint {} is not what its profile gives ({})",
                self.fingerprint,
                self.artifact_key(false)
            ));
        }
        Ok(())
    }
}

/// Starts every artifact; cannot be the start of a wasm module (`\0asm`).
const MAGIC: &[u8; 16] = b"\0edgeleaf-cwasm\n";

/// What an artifact says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactHeader {
    /// sha256 of the wasm module it was compiled from, hex: the agent's identity.
    pub module: String,
    /// The [`EngineProfile::artifact_key`] it was compiled for.
    pub engine: String,
    /// `component` or `wasi-command`.
    pub kind: String,
    /// The code's target, for messages.
    pub target: String,
}

/// A parsed artifact: its header, and wasmtime's serialized code.
pub struct Artifact<'a> {
    pub header: ArtifactHeader,
    pub kind: ModuleKind,
    pub code: &'a [u8],
}

impl<'a> Artifact<'a> {
    /// Whether `bytes` start like an artifact.
    pub fn is_artifact(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Parses `bytes`; an error for bytes that start like an artifact but are not one.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .context("not an edgeleaf artifact (no header)")?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .context("artifact cut short in its header")?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() || len > 64 * 1024 {
            bail!("artifact header of {len} bytes does not fit the artifact");
        }
        let (header, code) = rest.split_at(len);
        let header: ArtifactHeader =
            serde_json::from_slice(header).context("artifact header is not valid")?;
        let kind = match header.kind.as_str() {
            "component" => ModuleKind::Component,
            "wasi-command" => ModuleKind::WasiCommand,
            other => bail!("artifact of unknown kind {other:?}"),
        };
        Ok(Self { header, kind, code })
    }

    /// An artifact of `code` described by `header`.
    pub fn wrap(header: &ArtifactHeader, code: &[u8]) -> Vec<u8> {
        let json = serde_json::to_vec(header).unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + code.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(code);
        out
    }
}

/// Compiles `wasm` for engines of `profile` (fuel-metered ones with `fuel`) and
/// returns the artifact. Needs this build's Cranelift to have the profile's
/// target (the default build has every backend).
#[cfg(feature = "compiler")]
pub fn precompile(profile: &EngineProfile, fuel: bool, wasm: &[u8]) -> Result<Vec<u8>> {
    profile.compatible_with_this_build().map_err(|why| {
        anyhow::anyhow!(
            "cannot precompile for engine {}: {why}",
            profile.fingerprint
        )
    })?;
    let kind = ModuleKind::detect(wasm).context("not a WebAssembly module or component")?;
    let mut config = super::engine::compile_config(profile.memory_reservation, fuel);
    config
        .target(&profile.target)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("this edgeleaf cannot compile for {}", profile.target))?;
    let engine = wasmtime::Engine::new(&config)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot set up a compiler for {}", profile.target))?;
    let code = match kind {
        ModuleKind::Component => engine.precompile_component(wasm),
        ModuleKind::WasiCommand => engine.precompile_module(wasm),
    }
    .map_err(anyhow::Error::from)
    .with_context(|| format!("does not compile for {}", profile.target))?;
    let header = ArtifactHeader {
        module: hex::encode(Sha256::digest(wasm)),
        engine: profile.artifact_key(fuel),
        kind: kind.as_str().to_owned(),
        target: profile.target.clone(),
    };
    Ok(Artifact::wrap(&header, &code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmtime_version_is_the_locked_one() {
        let lock = include_str!("../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .expect("wasmtime in Cargo.lock");
        assert_eq!(locked.trim_matches('"'), WASMTIME_VERSION);
    }

    #[test]
    fn rust_targets_map_to_code_targets() {
        let p = |t| EngineProfile::for_rust_target(t, 32 << 20).unwrap();
        assert_eq!(
            p("aarch64-unknown-linux-gnu").target,
            "aarch64-unknown-linux"
        );
        assert_eq!(
            p("x86_64-unknown-linux-musl").target,
            "x86_64-unknown-linux"
        );
        let armv7 = p("armv7-unknown-linux-gnueabihf");
        assert_eq!(
            (armv7.target.as_str(), armv7.memory_reservation),
            ("pulley32", Some(32 << 20))
        );
        let e = EngineProfile::for_rust_target("mips-unknown-linux-gnu", 1).unwrap_err();
        assert!(format!("{e}").contains("no wasm code target"), "{e}");
        assert!(EngineProfile::for_rust_target("aarch64-apple-darwin", 1).is_err());
    }

    #[test]
    fn artifact_keys_tell_engines_apart() {
        let a = EngineProfile::new("aarch64-unknown-linux", None);
        assert_eq!(a.fingerprint, a.artifact_key(false));
        assert_ne!(a.artifact_key(false), a.artifact_key(true));
        let b = EngineProfile::new("pulley32", Some(32 << 20));
        let c = EngineProfile::new("pulley32", Some(64 << 20));
        assert_ne!(b.fingerprint, c.fingerprint);
        assert!(a.compatible_with_this_build().is_ok());
        let old = EngineProfile {
            wasmtime: "40.0.0".into(),
            ..a.clone()
        };
        let e = old.compatible_with_this_build().unwrap_err();
        assert!(e.contains("wasmtime 40.0.0"), "{e}");
    }

    #[test]
    fn artifacts_round_trip_and_refuse_garbage() {
        let header = ArtifactHeader {
            module: "ab".repeat(32),
            engine: "e1".into(),
            kind: "component".into(),
            target: "pulley32".into(),
        };
        let bytes = Artifact::wrap(&header, b"code");
        assert!(Artifact::is_artifact(&bytes));
        assert!(!Artifact::is_artifact(b"\0asm\x01\0\0\0"));
        let a = Artifact::parse(&bytes).unwrap();
        assert_eq!(
            (a.header, a.kind, a.code),
            (header, ModuleKind::Component, &b"code"[..])
        );
        let cut = &bytes[..MAGIC.len() + 2];
        assert!(Artifact::parse(cut).is_err());
        let mut long = bytes.clone();
        long[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = Artifact::parse(&long).err().unwrap();
        assert!(format!("{e}").contains("does not fit"), "{e}");
    }
}
