//! The node's copy of its desired state: the deployments it accepted (the raw signed
//! envelope, re-verified at every start) and their module bytes, so that after a
//! reboot every agent comes back with no network round trip.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One accepted deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The KV key it came from (`node.<id>.<agent>` …).
    pub key: String,
    /// The exact value read from the hub.
    pub envelope: Vec<u8>,
    pub version: u64,
    /// sha256 of the module, hex (the key in the modules tree).
    pub digest: String,
}

/// The newest deployment ever accepted under one KV key: replay protection. A
/// deployment under that key must be newer, or be these very bytes while the key
/// has not been deleted since. Kept after an undeploy, so an old signed envelope
/// written back into the bucket is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub version: u64,
    /// sha256 of the envelope, hex.
    pub envelope_sha256: String,
    /// The key was deleted after this was accepted: not even these bytes come back.
    pub retired: bool,
    /// The KV revision these bytes had (0: not known, from an older node). The
    /// same bytes written again get a new revision: a replay, since the CLI never
    /// writes the same bytes twice.
    #[serde(default)]
    pub revision: u64,
}

impl Accepted {
    /// Whether `envelope` is the very bytes accepted.
    pub fn holds(&self, envelope: &[u8]) -> bool {
        self.envelope_sha256 == crate::shipping::modules::digest(envelope)
    }
}

/// The `deployments` tree (agent name → record), the `modules` tree (digest →
/// bytes) and the `accepted` tree (KV key → [`Accepted`]).
#[derive(Clone)]
pub struct Deployments {
    records: sled::Tree,
    modules: sled::Tree,
    accepted: sled::Tree,
    /// Agent name → the publisher whose deployment last ran with its kv data (""
    /// for unsigned): another publisher's agent of that name starts with none.
    kv_owners: sled::Tree,
}

impl Deployments {
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            records: store.db.open_tree("deployments")?,
            modules: store.db.open_tree("modules")?,
            accepted: store.db.open_tree("accepted")?,
            kv_owners: store.db.open_tree("kv_owners")?,
        })
    }

    /// The newest deployment accepted under `key`, ever.
    pub fn accepted(&self, key: &str) -> Result<Option<Accepted>, StoreError> {
        let Some(raw) = self.accepted.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: "accepted-deployment",
                key: key.to_owned(),
                message: e.to_string(),
            })
    }

    /// Records that `envelope` (version `version`, KV revision `revision`) was
    /// accepted under `key`.
    pub fn set_accepted(
        &self,
        key: &str,
        version: u64,
        envelope: &[u8],
        revision: u64,
    ) -> Result<(), StoreError> {
        let accepted = Accepted {
            version,
            envelope_sha256: crate::shipping::modules::digest(envelope),
            retired: false,
            revision,
        };
        self.accepted
            .insert(key, serde_json::to_vec(&accepted).unwrap_or_default())?;
        self.accepted.flush()?;
        Ok(())
    }

    /// The publisher whose agent `name` last ran with its kv data, if recorded.
    pub fn kv_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .kv_owners
            .get(name)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_kv_owner(&self, name: &str, publisher: &str) -> Result<(), StoreError> {
        self.kv_owners.insert(name, publisher.as_bytes())?;
        Ok(())
    }

    /// Marks `key` as deleted from the hub; returns true when that is news.
    pub fn retire(&self, key: &str) -> Result<bool, StoreError> {
        let Some(mut accepted) = self.accepted(key)? else {
            return Ok(false);
        };
        if accepted.retired {
            return Ok(false);
        }
        accepted.retired = true;
        self.accepted
            .insert(key, serde_json::to_vec(&accepted).unwrap_or_default())?;
        self.accepted.flush()?;
        Ok(true)
    }

    /// Every key something was ever accepted under, and not yet retired.
    pub fn live_accepted_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.accepted.iter() {
            let (k, v) = kv?;
            if serde_json::from_slice::<Accepted>(&v).is_ok_and(|a| !a.retired) {
                out.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        Ok(out)
    }

    pub fn get(&self, agent: &str) -> Result<Option<DeployRecord>, StoreError> {
        Ok(self
            .records
            .get(agent)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every record, by agent name. Unreadable records are skipped and logged.
    pub fn all(&self) -> Result<Vec<(String, DeployRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.records.iter() {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k).into_owned();
            match serde_json::from_slice(&v) {
                Ok(rec) => out.push((name, rec)),
                Err(e) => {
                    tracing::warn!(agent = %name, "unreadable deployment record skipped: {e}")
                }
            }
        }
        Ok(out)
    }

    /// Stores the module first, then the record, and flushes: after this returns,
    /// a power cut does not lose the deployment.
    pub fn put(&self, agent: &str, record: &DeployRecord, module: &[u8]) -> Result<(), StoreError> {
        self.modules.insert(record.digest.as_bytes(), module)?;
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        self.records.insert(agent, bytes)?;
        self.records.flush()?;
        Ok(())
    }

    pub fn module(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.modules.get(digest.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Removes the record of `agent`; returns the module digest when no other
    /// record uses it any more (and removes that module too).
    pub fn remove(&self, agent: &str) -> Result<Option<String>, StoreError> {
        let Some(old) = self.get(agent)? else {
            return Ok(None);
        };
        self.records.remove(agent)?;
        let still_used = self.all()?.iter().any(|(_, r)| r.digest == old.digest);
        if still_used {
            return Ok(None);
        }
        self.modules.remove(old.digest.as_bytes())?;
        self.records.flush()?;
        Ok(Some(old.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn records_and_modules_survive_reopen_and_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            cache_capacity: 1 << 20,
            flush_every: std::time::Duration::from_millis(100),
        };
        let rec = |d: &str| DeployRecord {
            key: "all.a".into(),
            envelope: b"{}".to_vec(),
            version: 1,
            digest: d.into(),
        };
        {
            let store = Store::open(dir.path(), opts).unwrap();
            let d = Deployments::open(&store).unwrap();
            d.put("a", &rec("d1"), b"m1").unwrap();
            d.put("b", &rec("d1"), b"m1").unwrap();
            d.put("c", &rec("d2"), b"m2").unwrap();
        }
        let store = Store::open(dir.path(), opts).unwrap();
        let d = Deployments::open(&store).unwrap();
        assert_eq!(d.all().unwrap().len(), 3);
        assert_eq!(d.remove("a").unwrap(), None, "d1 still used by b");
        assert_eq!(d.module("d1").unwrap().as_deref(), Some(&b"m1"[..]));
        assert_eq!(d.remove("b").unwrap(), Some("d1".into()));
        assert_eq!(d.module("d1").unwrap(), None);
        assert_eq!(d.get("c").unwrap(), Some(rec("d2")));
    }
}
