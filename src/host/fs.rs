//! Directory grants: the `read` and `write` directories of a spec, checked against
//! the node's `[devices]` ceiling when the agent loads, and preopened in every
//! instance at the same absolute path. The sandbox (wasmtime-wasi on cap-std)
//! resolves every path inside a preopen: `..`, absolute paths elsewhere and
//! symlinks that lead out are refused, whenever they were made.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::DevicesSection;
use crate::runtime::AgentError;

/// A directory preopened for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the device, resolved (symlinks followed) at load time.
    pub host: PathBuf,
    /// Where the guest sees it: the path the spec asked for.
    pub guest: String,
    pub writable: bool,
}

/// Resolves a spec's grants against the ceiling: `read` grants must lie at or
/// below a `[devices] read` or `write` directory, `write` grants below a `write`
/// one, after following symlinks on both sides. Refusals are `forbidden` and
/// name the grant and the ceiling; a granted directory that does not exist is
/// `not_found`.
pub fn resolve(
    agent: &str,
    read: &[String],
    write: &[String],
    ceiling: &DevicesSection,
) -> Result<Vec<DirGrant>, AgentError> {
    let canonical = |dirs: &[PathBuf]| -> Vec<PathBuf> {
        dirs.iter().filter_map(|d| d.canonicalize().ok()).collect()
    };
    let writable_roots = canonical(&ceiling.write);
    let mut readable_roots = canonical(&ceiling.read);
    readable_roots.extend(writable_roots.iter().cloned());
    let grants = read
        .iter()
        .map(|d| (d, false))
        .chain(write.iter().map(|d| (d, true)));
    let mut out = Vec::new();
    for (dir, writable) in grants {
        let what = if writable { "write" } else { "read" };
        let host = Path::new(dir).canonicalize().map_err(|e| {
            AgentError::new(
                "not_found",
                format!("agent {agent}: {what} grant {dir}: {e} on this node"),
            )
        })?;
        if !host.is_dir() {
            return Err(AgentError::new(
                "not_found",
                format!("agent {agent}: {what} grant {dir} is not a directory"),
            ));
        }
        let (roots, key, configured) = if writable {
            (&writable_roots, "write", &ceiling.write)
        } else {
            (&readable_roots, "read or write", &ceiling.read)
        };
        if !roots.iter().any(|root| host.starts_with(root)) {
            let allowed = if writable {
                super::describe_ceiling(configured.iter().map(|d| d.display().to_string()))
            } else {
                super::describe_ceiling(
                    ceiling
                        .read
                        .iter()
                        .chain(&ceiling.write)
                        .map(|d| d.display().to_string()),
                )
            };
            return Err(AgentError::new(
                "forbidden",
                format!(
                    "agent {agent}: {what} grant {dir}{} is outside this node's [devices] {key} ({})",
                    if host != Path::new(dir) {
                        format!(" (which is {})", host.display())
                    } else {
                        String::new()
                    },
                    allowed
                ),
            ));
        }
        out.push(DirGrant {
            host,
            guest: dir.trim_end_matches('/').to_owned(),
            writable,
        });
    }
    Ok(out)
}

/// Preopens the grants in a fresh instance's WASI context, in order.
pub fn preopen(builder: &mut WasiCtxBuilder, grants: &[DirGrant]) -> Result<(), AgentError> {
    for g in grants {
        let perms = if g.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&g.host, &g.guest, perms)
            .map_err(|e| {
                AgentError::new(
                    "not_found",
                    format!(
                        "granted directory {} cannot be opened: {e}",
                        g.host.display()
                    ),
                )
            })?;
    }
    Ok(())
}
