//! Publisher keys (ed25519). A public key is written `ed25519:<64 hex digits>`, the
//! form `edgeleaf keys gen` prints and `security.trusted_publishers` takes.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "edgeleaf-ed25519-secret:";

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<hex>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex_part = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            format!("{s:?} is not a public key (want {PUBLIC_PREFIX}<64 hex digits>)")
        })?;
        let bytes: [u8; 32] = hex::decode(hex_part)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{s:?}: want 64 hex digits after {PUBLIC_PREFIX}"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| format!("{s:?} is not a valid ed25519 key: {e}"))
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let sig = Signature::from_slice(signature).map_err(|e| e.to_string())?;
        self.0.verify(message, &sig).map_err(|e| e.to_string())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A publisher's signing key. `Debug` never shows it.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

impl SecretKey {
    pub fn generate() -> Self {
        Self(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_bytes().to_vec()
    }

    /// Reads a key file written by [`SecretKey::save`]; refuses one that others can read.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_key_file(path, SECRET_PREFIX, "key")?;
        Ok(Self(SigningKey::from_bytes(&bytes)))
    }

    /// Writes the key (mode 0600, never overwriting) and `<path>.pub` beside it.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_key_file(path, SECRET_PREFIX, &self.0.to_bytes(), "key")?;
        let public = path.with_extension(match path.extension() {
            Some(ext) => format!("{}.pub", ext.to_string_lossy()),
            None => "pub".to_owned(),
        });
        std::fs::write(&public, format!("{}\n", self.public()))
            .with_context(|| format!("cannot write {}", public.display()))?;
        Ok(())
    }
}

/// Reads a 32-byte key written by [`write_key_file`] as `<prefix><hex>`. A file that
/// other users may read or write is refused: whoever reads a secret key holds it,
/// whoever writes it can swap it. `what` names the key in errors.
pub(crate) fn read_key_file(path: &Path, prefix: &str, what: &str) -> Result<[u8; 32]> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} is open to other users (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    text.trim()
        .strip_prefix(prefix)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not an edgeleaf {what}", path.display()))
}

/// Writes a 32-byte key as `<prefix><hex>` to a new file (mode 0600, never
/// overwriting), synced before it returns.
pub(crate) fn write_key_file(
    path: &Path,
    prefix: &str,
    bytes: &[u8; 32],
    what: &str,
) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {what} {} (it must not exist yet)",
                path.display()
            )
        })?;
    writeln!(file, "{prefix}{}", hex::encode(bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let key = SecretKey::generate();
        key.save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = SecretKey::load(&path).unwrap();
        assert_eq!(loaded.public(), key.public());
        let text = std::fs::read_to_string(dir.path().join("publisher.key.pub")).unwrap();
        assert_eq!(PublicKey::parse(&text).unwrap(), key.public());
        assert!(key.save(&path).is_err(), "must not overwrite a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            SecretKey::load(&path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        let sig = key.sign(b"m");
        assert!(key.public().verify(b"m", &sig).is_ok());
        assert!(key.public().verify(b"n", &sig).is_err());
        assert!(PublicKey::parse("ed25519:zz").is_err());
    }
}
