//! Each agent's own key-value data: one sled tree per agent, with a byte quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

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

/// Bytes of keys + values one agent's tree holds, shared by every handle on it.
type Usage = Arc<Mutex<u64>>;

/// The live usage count of each agent tree, by tree name: the one account of an
/// agent while any handle on its tree is open. (Two handles counting apart drifted
/// across an upgrade, and a delete counted on the other one underflowed.)
#[derive(Clone, Default)]
pub(crate) struct Accounts(Arc<Mutex<HashMap<String, Weak<Mutex<u64>>>>>);

/// One agent's tree. Shared by its concurrent instances.
pub struct AgentKv {
    tree: sled::Tree,
    quota: u64,
    /// Bytes of keys + values stored, kept exact under concurrent writers.
    used: Usage,
}

impl AgentKv {
    /// Opens (or creates) the tree of `agent`, sharing the usage count of any
    /// other open handle on it, or counting what it holds.
    pub fn open(store: &Store, agent: &str, quota: u64) -> Result<Self, StoreError> {
        let name = tree_name(agent);
        let tree = store.db.open_tree(&name)?;
        let mut accounts = store
            .kv_accounts
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        accounts.retain(|_, usage| usage.strong_count() > 0);
        let used = match accounts.get(&name).and_then(Weak::upgrade) {
            Some(used) => used,
            None => {
                let mut bytes = 0u64;
                for kv in tree.iter() {
                    let (k, v) = kv?;
                    bytes = bytes.saturating_add((k.len() + v.len()) as u64);
                }
                let used = Arc::new(Mutex::new(bytes));
                accounts.insert(name, Arc::downgrade(&used));
                used
            }
        };
        Ok(Self { tree, quota, used })
    }

    /// Removes every key of `agent` (on undeploy, or for another publisher).
    pub fn destroy(store: &Store, agent: &str) -> Result<(), StoreError> {
        let name = tree_name(agent);
        let accounts = store
            .kv_accounts
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        store.db.drop_tree(&name)?;
        if let Some(used) = accounts.get(&name).and_then(Weak::upgrade) {
            *used.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        }
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
        let new_used = used
            .saturating_sub(old)
            .saturating_add((key.len() + value.len()) as u64);
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
            *used = used.saturating_sub((key.len() + old.len()) as u64);
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

    #[test]
    fn an_upgrade_shares_one_account_and_never_underflows() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            cache_capacity: 1 << 20,
            flush_every: std::time::Duration::from_millis(100),
        };
        let store = Store::open(dir.path(), opts).unwrap();
        // The running version and the new one, open side by side.
        let old = AgentKv::open(&store, "a", 100).unwrap();
        let new = AgentKv::open(&store, "a", 100).unwrap();
        old.set("k", &[0; 89]).unwrap(); // 90 of 100, written by the old version
        assert_eq!(new.used(), 90);
        assert!(matches!(new.set("j", &[0; 20]), Err(KvError::Quota(_))));
        new.delete("k").unwrap(); // the new version deletes the old one's key
        assert_eq!((old.used(), new.used()), (0, 0));
        drop(old);
        new.set("j", &[0; 50]).unwrap();
        assert_eq!(new.used(), 51);
        // Dropped under it: the count follows.
        AgentKv::destroy(&store, "a").unwrap();
        assert_eq!(new.used(), 0);
    }
}
