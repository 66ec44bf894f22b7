//! Secrets for agents: config values that travel encrypted to the node that runs the
//! agent, and stay encrypted at rest.
//!
//! Every node has an x25519 key pair, made at its first start in
//! `<state_dir>/node.key` (0600), and reports the public half as `enc_key` in its
//! heartbeats. `edgeleaf deploy --secret NAME=VALUE` seals the value to each
//! targeted node's public key (a libsodium sealed box: X25519 + XSalsa20-Poly1305)
//! inside the signed spec, so it cannot be swapped or altered either. The node keeps
//! the envelope as it came (sealed) and opens the value only in memory, when it
//! starts the agent.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::OsRng;

use super::keys::{read_key_file, write_key_file};

const PUBLIC_PREFIX: &str = "x25519:";
const SECRET_PREFIX: &str = "x25519-secret:";

/// A node's own key pair, for opening the secrets sealed to it.
pub struct NodeKey {
    secret: crypto_box::SecretKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public())
    }
}

impl NodeKey {
    /// Where a node keeps its key.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("node.key")
    }

    /// Loads the node's key, or makes one (0600) on the first start. A key file that
    /// others may read or write is refused: whoever reads it reads every secret sent
    /// to this node, whoever writes it can swap it.
    pub fn load_or_create(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let secret = match std::fs::metadata(&path) {
            Ok(_) => {
                crypto_box::SecretKey::from_bytes(read_key_file(&path, SECRET_PREFIX, "node key")?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = crypto_box::SecretKey::generate(&mut OsRng);
                write_key_file(&path, SECRET_PREFIX, &secret.to_bytes(), "node key")?;
                tracing::info!(path = %path.display(), "node encryption key created");
                secret
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read node key {}", path.display()));
            }
        };
        Ok(Self { secret })
    }

    /// The public half, `x25519:<hex>`, as heartbeats report it.
    pub fn public(&self) -> String {
        format!(
            "{PUBLIC_PREFIX}{}",
            hex::encode(self.secret.public_key().as_bytes())
        )
    }

    /// Opens a value sealed to this node by [`seal`] for the deployment under
    /// `target` by `publisher` and the secret `name`; a value sealed for another
    /// deployment, publisher or name (copied into another spec) is refused.
    pub fn open(
        &self,
        sealed: &str,
        target: &str,
        publisher: &str,
        name: &str,
    ) -> Result<String, String> {
        let bytes = B64.decode(sealed).map_err(|e| format!("not base64: {e}"))?;
        let plain = self
            .secret
            .unseal(&bytes)
            .map_err(|_| "it was not sealed to this node's key".to_owned())?;
        let sealed: Sealed =
            serde_json::from_slice(&plain).map_err(|_| "it is not a sealed secret".to_owned())?;
        if sealed.target != target || sealed.name != name {
            return Err(format!(
                "it was sealed for secret {:?} of {}, not for this deployment",
                sealed.name, sealed.target
            ));
        }
        match sealed.publisher.as_deref() {
            Some(p) if p == publisher => {}
            Some(p) => {
                return Err(format!(
                    "it was sealed for a deployment by publisher {p}, not by {publisher}"
                ));
            }
            None => {
                return Err(
                    "it was sealed by an older edgeleaf that did not bind it to its publisher: \
                     deploy again"
                        .to_owned(),
                );
            }
        }
        Ok(sealed.value)
    }
}

/// What is sealed: the value, bound to the deployment key, its publisher and the
/// secret's name, so another trusted publisher cannot copy it into a spec of its own.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    target: String,
    /// `None` only in values sealed before the binding existed: refused.
    #[serde(default)]
    publisher: Option<String>,
    name: String,
    value: String,
}

/// Seals the secret `name` = `value` of the deployment under `target` by
/// `publisher` to the node whose public key is `public` (`x25519:<hex>`).
pub fn seal(
    public: &str,
    target: &str,
    publisher: &str,
    name: &str,
    value: &str,
) -> Result<String> {
    let bytes: [u8; 32] = public
        .strip_prefix(PUBLIC_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{public:?} is not an x25519 public key"))?;
    let plain = serde_json::to_vec(&Sealed {
        target: target.to_owned(),
        publisher: Some(publisher.to_owned()),
        name: name.to_owned(),
        value: value.to_owned(),
    })?;
    let sealed = crypto_box::PublicKey::from_bytes(bytes)
        .seal(&mut OsRng, &plain)
        .map_err(|_| anyhow::anyhow!("cannot seal a secret"))?;
    Ok(B64.encode(sealed))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_node_key() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create(dir.path()).unwrap();
        let again = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public(), again.public(), "the key survives a restart");
        let mode = std::fs::metadata(NodeKey::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let (a, b) = ("ed25519:aa", "ed25519:bb");
        let sealed = seal(&key.public(), "node.n1.a", a, "token", "s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            key.open(&sealed, "node.n1.a", a, "token").unwrap(),
            "s3cret"
        );
        let stranger = NodeKey::load_or_create(other.path()).unwrap();
        assert!(stranger.open(&sealed, "node.n1.a", a, "token").is_err());
        // Copied into another deployment, under another name, or into another
        // publisher's spec: refused.
        assert!(key.open(&sealed, "node.n1.b", a, "token").is_err());
        assert!(key.open(&sealed, "node.n1.a", a, "other").is_err());
        let copied = key.open(&sealed, "node.n1.a", b, "token").unwrap_err();
        assert!(copied.contains("publisher"), "{copied}");
        assert!(key.open("not base64!", "node.n1.a", a, "token").is_err());
        assert!(seal("ed25519:00", "node.n1.a", a, "token", "x").is_err());

        std::fs::set_permissions(
            NodeKey::path(dir.path()),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = NodeKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
