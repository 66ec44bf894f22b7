//! The node's sled database under `<state_dir>/db`.
//!
//! sled locks its database for one process, which doubles as the guard against two
//! nodes sharing a state directory. Trees are added by the parts that need them
//! (modules, compiled code, deployments, agent kv, outbox); this file owns opening,
//! tuning and the node's identity across restarts.

pub mod agent_kv;
pub mod deployments;
pub mod outbox;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state dir {dir} is in use by another edgeleaf process (sled lock held)")]
    Locked { dir: PathBuf },
    #[error("cannot open sled database in {dir}")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A record that does not parse: whoever reads it must not guess.
    #[error("corrupt {what} record under {key:?}: {message}")]
    Corrupt {
        what: &'static str,
        key: String,
        message: String,
    },
}

/// Tuning that must be set explicitly: sled's defaults suit servers, not boards.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub cache_capacity: u64,
    pub flush_every: Duration,
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    /// Shared by every tree; sled handles are cheap clones.
    db: sled::Db,
    /// Each agent's kv usage, one count per tree however many handles are open on
    /// it (an upgrade opens the new version's before the old one stops).
    kv_accounts: agent_kv::Accounts,
}

const META_TREE: &str = "meta";
const INCARNATION_KEY: &[u8] = b"incarnation";
/// Agent name → the last timer tick it ran (ms since the epoch, big-endian i64).
const TIMERS_TREE: &str = "timers";

impl Store {
    pub fn open(state_dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        let dir = state_dir.join("db");
        let flush_ms = opts.flush_every.as_millis().max(1) as u64;
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(opts.cache_capacity)
            .flush_every_ms(Some(flush_ms))
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    StoreError::Locked { dir: dir.clone() }
                }
                _ => StoreError::Open {
                    dir: dir.clone(),
                    source,
                },
            })?;
        Ok(Self {
            db,
            kv_accounts: Default::default(),
        })
    }

    /// A random id, made once when the state directory is new and kept after. It
    /// tells a restart (same incarnation) from a wiped device (new one), and makes
    /// message ids unique across wipes.
    pub fn incarnation(&self) -> Result<String, StoreError> {
        let meta = self.db.open_tree(META_TREE)?;
        if let Some(v) = meta.get(INCARNATION_KEY)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let fresh = format!("{:016x}", rand::random::<u64>());
        // compare_and_swap: the first writer wins, even if two tasks raced here.
        let _ = meta.compare_and_swap(
            INCARNATION_KEY,
            None as Option<&[u8]>,
            Some(fresh.as_bytes()),
        )?;
        meta.flush()?;
        let v = meta.get(INCARNATION_KEY)?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// The last timer tick agent `name` ran, if it ever did (kept across restarts,
    /// so the ticks missed while the node was down owe one run).
    pub fn last_tick(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let tree = self.db.open_tree(TIMERS_TREE)?;
        Ok(tree
            .get(name)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    pub fn set_last_tick(&self, name: &str, ms: i64) -> Result<(), StoreError> {
        self.db
            .open_tree(TIMERS_TREE)?
            .insert(name, &ms.to_be_bytes())?;
        Ok(())
    }

    /// Writes everything dirty to disk; called on shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> StoreOptions {
        StoreOptions {
            cache_capacity: 1 << 20,
            flush_every: Duration::from_millis(100),
        }
    }

    #[test]
    fn incarnation_survives_reopen_and_locks_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let first = store.incarnation().unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(store.incarnation().unwrap(), first);
        drop(store);
        let store = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(store.incarnation().unwrap(), first);
    }
}
