//! Self-update of edgeleaf: what `edgeleaf upgrade` announces, signed like a
//! deployment, in the hub's `EDGELEAF_UPGRADES` bucket, and the binary's
//! architecture as its ELF header gives it.
//!
//! Keys are a [`Target`]'s, with the architecture in place of the agent name:
//! `all.x86_64`, `tag.site.a.aarch64`, `node.gw1.arm`. A node follows the most
//! specific key for its own architecture (`std::env::consts::ARCH`).

use serde::{Deserialize, Serialize};

use super::{Issued, ModuleRef, Rejection, SecretKey, SignedDeployment, TrustPolicy};

/// What a publisher signs to move nodes to another edgeleaf binary, or back to
/// the one they kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// What the binary prints for `--version` (`edgeleaf <version>`). Empty for a
    /// rollback.
    pub version: String,
    /// `std::env::consts::ARCH` of the nodes it is for (`x86_64`, `aarch64`, `arm`).
    pub arch: String,
    /// The binary in `EDGELEAF_MODULES`, by sha256. `None` for a rollback.
    pub binary: Option<ModuleRef>,
    /// Go back to the binary each node kept from its last upgrade.
    #[serde(default)]
    pub rollback: bool,
    pub issued_at: String,
    pub nonce: String,
    /// The KV key it was written under; checked like a deployment's.
    pub target: String,
    pub publisher: Option<String>,
}

impl Issued for UpgradeSpec {
    fn target(&self) -> &str {
        &self.target
    }
    fn publisher(&self) -> Option<&str> {
        self.publisher.as_deref()
    }
}

impl UpgradeSpec {
    pub fn new(
        version: String,
        arch: String,
        binary: Option<ModuleRef>,
        target: String,
        key: &SecretKey,
    ) -> Self {
        let (issued_at, nonce) = super::issue_stamp();
        Self {
            version,
            arch,
            rollback: binary.is_none(),
            binary,
            issued_at,
            nonce,
            target,
            publisher: Some(key.public().to_string()),
        }
    }

    /// The envelope to store.
    pub fn seal(&self, key: &SecretKey) -> Vec<u8> {
        SignedDeployment::seal(self, Some(key)).to_bytes()
    }

    /// Verifies the envelope under `key`. Unlike agents, the runtime is never
    /// replaced on an unsigned announcement, whatever `allow_unsigned` says.
    pub fn open(raw: &[u8], key: &str, policy: &TrustPolicy) -> Result<Self, Rejection> {
        let strict = TrustPolicy {
            allow_unsigned: false,
            ..policy.clone()
        };
        let spec: Self = SignedDeployment::open_as(raw, key, &strict, "upgrade")?;
        if spec.rollback != spec.binary.is_none()
            || (!spec.rollback && !crate::version::valid(&spec.version))
        {
            return Err(Rejection::new(
                "malformed",
                format!("upgrade under {key}: neither a binary with a version nor a rollback"),
            ));
        }
        Ok(spec)
    }
}

/// How long `BINARY --version` may take.
const VERSION_CHECK: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `path --version` (clean environment, at most [`VERSION_CHECK`]) and checks
/// that it prints `edgeleaf <version>`: the CLI before it ships a binary, the node
/// before it tries one.
pub async fn check_runs(path: &std::path::Path, version: &str) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        VERSION_CHECK,
        tokio::process::Command::new(path)
            .arg("--version")
            .env_clear()
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "`{} --version` did not finish within {VERSION_CHECK:?}",
            path.display()
        )
    })?
    .map_err(|e| {
        anyhow::anyhow!(
            "the binary does not run here (`{} --version`): {e}",
            path.display()
        )
    })?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let want = format!("edgeleaf {version}");
    anyhow::ensure!(
        out.status.success() && printed == want,
        "`{} --version` prints {printed:?}, not {want:?}{}",
        path.display(),
        if out.status.success() {
            String::new()
        } else {
            format!(" ({})", out.status)
        }
    );
    Ok(())
}

/// The architecture an ELF executable is built for, named like
/// `std::env::consts::ARCH`.
pub fn elf_arch(bytes: &[u8]) -> Result<&'static str, String> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    let (class, little) = (bytes[4], bytes[5] == 1);
    let kind = u16_at(bytes, 16, little);
    if kind != 2 && kind != 3 {
        return Err(format!("an ELF file of type {kind}, not an executable"));
    }
    match (u16_at(bytes, 18, little), class) {
        (62, 2) => Ok("x86_64"),
        (183, 2) => Ok("aarch64"),
        (40, 1) => Ok("arm"),
        (3, 1) => Ok("x86"),
        (243, 2) => Ok("riscv64"),
        (machine, class) => Err(format!(
            "an ELF executable for machine {machine} ({}-bit), which edgeleaf does not run on",
            if class == 2 { 64 } else { 32 }
        )),
    }
}

fn u16_at(b: &[u8], at: usize, little: bool) -> u16 {
    let pair = [b[at], b[at + 1]];
    if little {
        u16::from_le_bytes(pair)
    } else {
        u16::from_be_bytes(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_of_this_arch() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_arch(&me), Ok(std::env::consts::ARCH));
        let mut arm = me[..64].to_vec();
        arm[4] = 2;
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(elf_arch(&arm), Ok("aarch64"));
        assert!(
            elf_arch(b"#!/bin/sh\necho")
                .unwrap_err()
                .contains("not an ELF")
        );
    }

    #[test]
    fn announcements_verify_and_refuse_unsigned_ones() {
        let key = SecretKey::generate();
        let policy = TrustPolicy {
            trusted: vec![key.public()],
            revoked: vec![],
            allow_unsigned: true,
        };
        let module = ModuleRef {
            digest: "ab".repeat(32),
            size: 10,
        };
        let spec = UpgradeSpec::new(
            "1.2.0".into(),
            "x86_64".into(),
            Some(module),
            "all.x86_64".into(),
            &key,
        );
        let raw = spec.seal(&key);
        assert_eq!(UpgradeSpec::open(&raw, "all.x86_64", &policy), Ok(spec));
        assert_eq!(
            UpgradeSpec::open(&raw, "node.gw1.x86_64", &policy)
                .unwrap_err()
                .code,
            "wrong_target"
        );
        let unsigned = SignedDeployment {
            signature: None,
            publisher: None,
            ..serde_json::from_slice(&raw).unwrap()
        };
        assert_eq!(
            UpgradeSpec::open(&unsigned.to_bytes(), "all.x86_64", &policy)
                .unwrap_err()
                .code,
            "unsigned"
        );
    }
}
