//! Each agent's own key-value data: one sled tree per agent, with a byte quota.

use std::sync::Mutex;

use super::{Store, StoreError};

/// Longest key an agent may use, bytes.
pub const MAX_KEY: usize = 1024;

/// Why a kv operation failed. The agent sees the message; the node also tells a
/// quota refusal apart, to report it as such.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

/// One agent's tree. Shared by its concurrent instances.
pub struct AgentKv {
    tree: sled::Tree,
    quota: u64,
    /// Bytes of keys + values stored, kept exact under concurrent writers.
    used: Mutex<u64>,
}

impl AgentKv {
    /// Opens (or creates) the tree of `agent`, counting what it already holds.
    pub fn open(store: &Store, agent: &str, quota: u64) -> Result<Self, StoreError> {
        let tree = store.db.open_tree(tree_name(agent))?;
        let mut used = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv?;
            used += (k.len() + v.len()) as u64;
        }
        Ok(Self {
            tree,
            quota,
            used: Mutex::new(used),
        })
    }

    /// Removes every key of `agent` (on undeploy).
    pub fn destroy(store: &Store, agent: &str) -> Result<(), StoreError> {
        store.db.drop_tree(tree_name(agent))?;
        Ok(())
    }

    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| KvError::Store(format!("kv get {key:?}: {e}")))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        let store_err = |e: sled::Error| KvError::Store(format!("kv set {key:?}: {e}"));
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let old = self
            .tree
            .get(key)
            .map_err(store_err)?
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let new_used = *used - old + (key.len() + value.len()) as u64;
        if new_used > self.quota {
            return Err(KvError::Quota(format!(
                "kv quota exceeded: storing {key:?} ({} bytes) would use {new_used} of {} bytes",
                value.len(),
                self.quota
            )));
        }
        self.tree.insert(key, value).map_err(store_err)?;
        *used = new_used;
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let old = self
            .tree
            .remove(key)
            .map_err(|e| KvError::Store(format!("kv delete {key:?}: {e}")))?;
        if let Some(old) = old {
            *used -= (key.len() + old.len()) as u64;
        }
        Ok(())
    }

    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        self.tree
            .scan_prefix(prefix)
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| KvError::Store(format!("kv list-keys {prefix:?}: {e}")))
            })
            .collect()
    }
}

fn tree_name(agent: &str) -> String {
    format!("agent_kv/{agent}")
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(KvError::Invalid(format!(
            "kv keys must be 1 to {MAX_KEY} bytes (got {})",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn quota_is_exact_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            cache_capacity: 1 << 20,
            flush_every: std::time::Duration::from_millis(100),
        };
        let store = Store::open(dir.path(), opts).unwrap();
        let kv = AgentKv::open(&store, "a", 100).unwrap();
        kv.set("k1", &[0; 40]).unwrap();
        kv.set("k1", &[0; 50]).unwrap(); // replaces, 52 used
        assert_eq!(kv.used(), 52);
        let err = kv.set("k2", &[0; 50]).unwrap_err();
        assert!(matches!(err, KvError::Quota(_)), "{err}");
        assert_eq!(kv.get("k2").unwrap(), None);
        kv.delete("k1").unwrap();
        assert_eq!(kv.used(), 0);
        kv.set("p/x", b"1").unwrap();
        kv.set("p/y", b"2").unwrap();
        kv.set("q", b"3").unwrap();
        assert_eq!(kv.list_keys("p/").unwrap(), ["p/x", "p/y"]);
        // Other agents see none of it.
        let other = AgentKv::open(&store, "b", 100).unwrap();
        assert_eq!(other.get("q").unwrap(), None);
        drop((kv, other));
        let kv = AgentKv::open(&store, "a", 100).unwrap();
        assert_eq!(kv.used(), 10); // "p/x"+"1", "p/y"+"2", "q"+"3"
    }
}
