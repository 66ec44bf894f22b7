//! Shipping agents to fleets: publisher keys, signed deployment specs, where they
//! live in the hub's KV bucket, and the module bytes in its object store.
//!
//! A deployment is stored as a [`SignedDeployment`] envelope: the exact bytes of a
//! [`DeploymentSpec`] (base64), an ed25519 signature over those bytes, and the
//! publisher's key. Nodes verify the bytes they received — never a re-serialization —
//! and only then parse them.

pub mod keys;
pub mod modules;
pub mod secrets;
pub mod target;
pub mod upgrade;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

pub use keys::{PublicKey, SecretKey};
pub use target::Target;

use crate::protocol::AgentSpec;

/// The module a deployment runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleRef {
    /// sha256 of the bytes, hex; also the object's name in `EDGELEAF_MODULES`.
    pub digest: String,
    pub size: u64,
}

/// What a publisher signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub agent: AgentSpec,
    pub module: ModuleRef,
    /// Only grows per agent name; a node refuses a spec older than what it runs.
    pub version: u64,
    /// RFC 3339, the publisher's clock.
    pub issued_at: String,
    /// Random, so two specs never sign the same bytes.
    pub nonce: String,
    /// The KV key this spec was written under (`node.<id>.<agent>` …). Nodes check
    /// it, so a signed spec cannot be replayed under another target.
    pub target: String,
    /// The publisher's public key (`ed25519:<hex>`), or `None` when unsigned.
    pub publisher: Option<String>,
    /// Keep the agent's kv data when this deployment is removed.
    #[serde(default)]
    pub keep_kv: bool,
    /// Secret config values: name → node id → the value sealed to that node's key
    /// ([`secrets::seal`]). The node adds the values it can open to the agent's
    /// config.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// A tombstone: the agent must not run on the nodes this key selects, whatever
    /// broader keys say (`undeploy --waves` writes them per node). `module` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
    /// The module precompiled, by engine ([`crate::runtime::precompiled::EngineProfile::artifact_key`]):
    /// a node whose engine has an entry loads that artifact instead of compiling,
    /// and a node without a compiler needs one. Objects in `EDGELEAF_MODULES` like
    /// the module. Honoured in signed deployments only: loading one trusts it as
    /// native code.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub artifacts: std::collections::BTreeMap<String, ModuleRef>,
}

impl DeploymentSpec {
    /// A tombstone for `agent` under `target` (see [`Self::absent`]).
    pub fn tombstone(agent: &str, version: u64, target: String, key: &SecretKey) -> Self {
        Self {
            absent: true,
            ..Self::new(
                AgentSpec {
                    name: agent.to_owned(),
                    ..Default::default()
                },
                ModuleRef {
                    digest: String::new(),
                    size: 0,
                },
                version,
                target,
                Some(key),
                false,
                Default::default(),
            )
        }
    }

    /// A spec issued now: the issue time and a fresh nonce, and the publisher of
    /// `key` (`None`: unsigned).
    pub fn new(
        agent: AgentSpec,
        module: ModuleRef,
        version: u64,
        target: String,
        key: Option<&SecretKey>,
        keep_kv: bool,
        secrets: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    ) -> Self {
        let (issued_at, nonce) = issue_stamp();
        Self {
            agent,
            module,
            version,
            issued_at,
            nonce,
            target,
            publisher: key.map(|k| k.public().to_string()),
            keep_kv,
            secrets,
            absent: false,
            artifacts: Default::default(),
        }
    }
}

/// The value stored in `EDGELEAF_DEPLOYMENTS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDeployment {
    /// The exact spec bytes, base64.
    pub spec: String,
    /// ed25519 over the spec bytes, base64; `None` for an unsigned deployment.
    pub signature: Option<String>,
    pub publisher: Option<String>,
}

/// Why a deployment was refused. `code` is short and stable (status and events).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Who a node trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub trusted: Vec<PublicKey>,
    pub revoked: Vec<PublicKey>,
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    /// The node's `[security]` section (keys that do not parse are left out: the
    /// config check names them).
    pub fn from_config(security: &crate::config::SecuritySection) -> Self {
        let parse = |keys: &[String]| -> Vec<PublicKey> {
            keys.iter()
                .filter_map(|k| PublicKey::parse(k).ok())
                .collect()
        };
        Self {
            trusted: parse(&security.trusted_publishers),
            revoked: parse(&security.revoked_publishers),
            allow_unsigned: security.allow_unsigned,
        }
    }
}

impl SignedDeployment {
    /// Signs the exact bytes of `spec` (unsigned when `key` is `None`).
    pub fn seal(spec: &impl Serialize, key: Option<&SecretKey>) -> Self {
        let bytes = serde_json::to_vec(spec).unwrap_or_default();
        Self {
            spec: B64.encode(&bytes),
            signature: key.map(|k| B64.encode(k.sign(&bytes))),
            publisher: key.map(|k| k.public().to_string()),
        }
    }

    /// The spec inside an envelope, without verifying it: for envelopes verified
    /// before (the node's own records) or for display, never for accepting one.
    pub fn peek_spec(raw: &[u8]) -> Option<DeploymentSpec> {
        let env: SignedDeployment = serde_json::from_slice(raw).ok()?;
        serde_json::from_slice(&B64.decode(&env.spec).ok()?).ok()
    }

    /// The version an envelope claims, unverified (see [`Self::peek_spec`]).
    pub fn peek_version(raw: &[u8]) -> Option<u64> {
        let env: SignedDeployment = serde_json::from_slice(raw).ok()?;
        let bytes = B64.decode(&env.spec).ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["version"].as_u64()
    }

    /// The version of an envelope whose signature verifies against the publisher it
    /// names (and, with `unsigned_too`, of an unsigned one), for `deploy` to count
    /// from. A forged envelope with a huge version is not counted.
    pub fn verified_version(raw: &[u8], unsigned_too: bool) -> Option<u64> {
        let env: SignedDeployment = serde_json::from_slice(raw).ok()?;
        let bytes = B64.decode(&env.spec).ok()?;
        match (&env.signature, &env.publisher) {
            (Some(sig), Some(publisher)) => {
                let pk = PublicKey::parse(publisher).ok()?;
                pk.verify(&bytes, &B64.decode(sig).ok()?).ok()?;
            }
            (None, None) if unsigned_too => {}
            _ => return None,
        }
        let spec: DeploymentSpec = serde_json::from_slice(&bytes).ok()?;
        (spec.publisher == env.publisher).then_some(spec.version)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The spec bytes of the envelope found under `key`, once its signature verifies
    /// against `policy`, and the publisher it names. Deployments and upgrade
    /// announcements travel in the same envelope.
    fn verified_bytes(
        raw: &[u8],
        key: &str,
        policy: &TrustPolicy,
    ) -> Result<(Vec<u8>, Option<String>), Rejection> {
        let env: SignedDeployment = serde_json::from_slice(raw).map_err(|e| {
            Rejection::new(
                "malformed",
                format!("value under {key} is not a signed envelope: {e}"),
            )
        })?;
        let bytes = B64.decode(&env.spec).map_err(|e| {
            Rejection::new(
                "malformed",
                format!("value under {key}: spec is not base64: {e}"),
            )
        })?;
        match (&env.signature, &env.publisher) {
            (Some(sig), Some(publisher)) => {
                let pk =
                    PublicKey::parse(publisher).map_err(|e| Rejection::new("bad_signature", e))?;
                if policy.revoked.contains(&pk) {
                    return Err(Rejection::new(
                        "revoked_publisher",
                        format!("publisher {pk} is revoked"),
                    ));
                }
                if !policy.trusted.contains(&pk) {
                    return Err(Rejection::new(
                        "untrusted_publisher",
                        format!("publisher {pk} is not in security.trusted_publishers"),
                    ));
                }
                let sig = B64.decode(sig).map_err(|e| {
                    Rejection::new("bad_signature", format!("signature is not base64: {e}"))
                })?;
                pk.verify(&bytes, &sig).map_err(|e| {
                    Rejection::new("bad_signature", format!("signature does not verify: {e}"))
                })?;
            }
            // Only a verified signature may name a publisher: an unsigned envelope
            // that claims a trusted one would pass for it (and unlock its secrets).
            (None, Some(publisher)) => {
                return Err(Rejection::new(
                    "bad_signature",
                    format!("unsigned deployment names publisher {publisher}"),
                ));
            }
            (None, None) if policy.allow_unsigned => {}
            (None, None) => {
                return Err(Rejection::new(
                    "unsigned",
                    "unsigned deployment, and this node does not allow_unsigned",
                ));
            }
            (Some(_), None) => {
                return Err(Rejection::new(
                    "bad_signature",
                    "signature without a publisher key",
                ));
            }
        }
        Ok((bytes, env.publisher))
    }

    /// Verifies the envelope found under `key` against `policy` and returns the
    /// spec it carries.
    pub fn open(raw: &[u8], key: &str, policy: &TrustPolicy) -> Result<DeploymentSpec, Rejection> {
        Self::open_as(raw, key, policy, "deployment")
    }

    /// Verifies the envelope found under `key` against `policy` and parses the spec
    /// it carries (`what` names it in errors), which must name that key and the
    /// envelope's publisher.
    pub(crate) fn open_as<T: Issued>(
        raw: &[u8],
        key: &str,
        policy: &TrustPolicy,
        what: &str,
    ) -> Result<T, Rejection> {
        let (bytes, publisher) = Self::verified_bytes(raw, key, policy)?;
        let spec: T = serde_json::from_slice(&bytes).map_err(|e| {
            Rejection::new(
                "malformed",
                format!("{what} under {key}: spec does not parse: {e}"),
            )
        })?;
        if spec.target() != key {
            return Err(Rejection::new(
                "wrong_target",
                format!("spec was issued for {}, found under {key}", spec.target()),
            ));
        }
        if spec.publisher() != publisher.as_deref() {
            return Err(Rejection::new(
                "bad_signature",
                "spec and envelope name different publishers",
            ));
        }
        Ok(spec)
    }
}

/// A spec that travels in a [`SignedDeployment`] envelope: it names the key it was
/// issued for and its publisher, and both are checked against the envelope.
pub(crate) trait Issued: serde::de::DeserializeOwned {
    fn target(&self) -> &str;
    fn publisher(&self) -> Option<&str>;
}

impl Issued for DeploymentSpec {
    fn target(&self) -> &str {
        &self.target
    }
    fn publisher(&self) -> Option<&str> {
        self.publisher.as_deref()
    }
}

/// When a spec is issued, and a random nonce so two specs never sign the same
/// bytes.
pub(crate) fn issue_stamp() -> (String, String) {
    (
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        format!("{:032x}", rand::random::<u128>()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, publisher: Option<String>) -> DeploymentSpec {
        DeploymentSpec {
            agent: AgentSpec {
                name: "echo".into(),
                triggers: vec!["demo.echo".into()],
                limits: Default::default(),
                allow_publish: vec![],
                config: Default::default(),
                ..Default::default()
            },
            module: ModuleRef {
                digest: "ab".repeat(32),
                size: 10,
            },
            version: 3,
            issued_at: "2026-11-25T00:00:00Z".into(),
            nonce: "n".into(),
            target: target.into(),
            publisher,
            keep_kv: false,
            secrets: Default::default(),
            absent: false,
            artifacts: Default::default(),
        }
    }

    #[test]
    fn signed_specs_verify_and_tampering_is_caught() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let policy = TrustPolicy {
            trusted: vec![key.public()],
            ..Default::default()
        };
        let s = spec("all.echo", Some(key.public().to_string()));
        let env = SignedDeployment::seal(&s, Some(&key));
        assert_eq!(
            SignedDeployment::open(&env.to_bytes(), "all.echo", &policy),
            Ok(s.clone())
        );

        // Replayed under another key.
        let e = SignedDeployment::open(&env.to_bytes(), "node.x.echo", &policy).unwrap_err();
        assert_eq!(e.code, "wrong_target");
        // Bytes changed after signing.
        let mut tampered = env.clone();
        let mut forged = s.clone();
        forged.version = 99;
        tampered.spec = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            SignedDeployment::open(&tampered.to_bytes(), "all.echo", &policy)
                .unwrap_err()
                .code,
            "bad_signature"
        );
        // Signed by someone else.
        let env2 = SignedDeployment::seal(
            &spec("all.echo", Some(other.public().to_string())),
            Some(&other),
        );
        assert_eq!(
            SignedDeployment::open(&env2.to_bytes(), "all.echo", &policy)
                .unwrap_err()
                .code,
            "untrusted_publisher"
        );
        // Revoked.
        let revoking = TrustPolicy {
            revoked: vec![key.public()],
            ..policy.clone()
        };
        assert_eq!(
            SignedDeployment::open(&env.to_bytes(), "all.echo", &revoking)
                .unwrap_err()
                .code,
            "revoked_publisher"
        );
        // Unsigned.
        let unsigned = SignedDeployment::seal(&spec("all.echo", None), None);
        assert_eq!(
            SignedDeployment::open(&unsigned.to_bytes(), "all.echo", &policy)
                .unwrap_err()
                .code,
            "unsigned"
        );
        let lab = TrustPolicy {
            allow_unsigned: true,
            ..Default::default()
        };
        assert!(SignedDeployment::open(&unsigned.to_bytes(), "all.echo", &lab).is_ok());
        // Versions to count from: only what verifies.
        assert_eq!(
            SignedDeployment::verified_version(&env.to_bytes(), false),
            Some(3)
        );
        assert_eq!(
            SignedDeployment::verified_version(&tampered.to_bytes(), true),
            None
        );
        assert_eq!(
            SignedDeployment::verified_version(&unsigned.to_bytes(), false),
            None
        );
        assert_eq!(
            SignedDeployment::verified_version(&unsigned.to_bytes(), true),
            Some(3)
        );
        // Unsigned, but naming a trusted publisher (spec and envelope agree): a
        // forgery, even where unsigned deployments are allowed.
        let forged =
            SignedDeployment::seal(&spec("all.echo", Some(key.public().to_string())), None);
        let forged = SignedDeployment {
            publisher: Some(key.public().to_string()),
            ..forged
        };
        let trusting_lab = TrustPolicy {
            allow_unsigned: true,
            ..policy.clone()
        };
        assert_eq!(
            SignedDeployment::open(&forged.to_bytes(), "all.echo", &trusting_lab)
                .unwrap_err()
                .code,
            "bad_signature"
        );
        assert_eq!(
            SignedDeployment::open(b"junk", "all.echo", &lab)
                .unwrap_err()
                .code,
            "malformed"
        );
    }
}
