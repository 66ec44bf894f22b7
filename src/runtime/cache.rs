//! Compiled code, kept on disk so a restart (or a reboot of a slow board) does not
//! recompile. Entries are files under `<state_dir>/compiled/` (the state dir is 0700
//! and must be the node's own), named by the module's sha256 and the engine's
//! compatibility hash.
//!
//! Deserializing is `unsafe` in wasmtime: it trusts the bytes to be its own output and
//! checks only compatibility. So each entry has a sidecar with the sha256 of the
//! compiled bytes, written by us and checked before every load; a stale, truncated or
//! corrupt entry is recompiled, never trusted. The bytes checked are the bytes
//! deserialized (one read, in memory), not a second read of the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Counts what the cache did, for logs, `info` and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries found but refused (bad checksum, failed to load).
    pub rejected: AtomicU64,
    /// Agents loaded from precompiled artifacts (nothing compiled, nothing cached).
    pub precompiled: AtomicU64,
}

/// The cache of one state dir, for every engine of the node: each entry is named by
/// the module's digest and its engine's key (the hex digest of the engine's
/// compatibility hash: a new wasmtime, other settings such as fuel, or another CPU
/// give other file names).
pub struct CompiledCache {
    dir: PathBuf,
    pub stats: CacheStats,
}

impl CompiledCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            stats: CacheStats::default(),
        }
    }

    fn entry(&self, digest: &str, engine_key: &str) -> (PathBuf, PathBuf) {
        let base = format!("{digest}-{engine_key}");
        (
            self.dir.join(format!("{base}.cwasm")),
            self.dir.join(format!("{base}.sha256")),
        )
    }

    /// The compiled bytes for `digest`, read once and checked against their
    /// checksum: the caller deserializes exactly these bytes, so a file swapped
    /// after the check cannot slip in.
    pub fn lookup(&self, digest: &str, engine_key: &str) -> Option<Vec<u8>> {
        let (path, sum) = self.entry(digest, engine_key);
        let expected = std::fs::read_to_string(&sum).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(path = %path.display(), "compiled cache entry fails its checksum; recompiling");
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            self.remove_entry(digest, engine_key);
            return None;
        }
        Some(bytes)
    }

    /// Stores compiled bytes: checksum first, then the entry, each by rename, so a
    /// crash in between leaves an entry that fails its check, not one that passes.
    pub fn store(&self, digest: &str, engine_key: &str, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let (path, sum) = self.entry(digest, engine_key);
        write_atomically(&sum, hex::encode(Sha256::digest(compiled)).as_bytes())?;
        write_atomically(&path, compiled)
    }

    /// Removes one engine's entry for `digest`.
    pub fn remove_entry(&self, digest: &str, engine_key: &str) {
        let (path, sum) = self.entry(digest, engine_key);
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(sum);
    }

    /// Removes every engine's entry for `digest` (the module was undeployed).
    pub fn remove(&self, digest: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{digest}-");
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
