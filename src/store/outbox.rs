//! The outbox: results and events are appended here (with a node-local sequence)
//! before anything is sent, and removed only once the hub acknowledged them.
//!
//! Sequences come from sled's `generate_id`, which only grows, also across restarts,
//! so a message id `<node>:<incarnation>:<seq>` is never reused. Size is bounded by
//! `max_bytes` with an explicit overflow policy, age by a TTL; every drop is counted
//! (persisted) and reported. Durability: `batch` relies on a flush at least every
//! `flush_interval` (done by the forwarder); `sync` flushes before `append` returns.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Store, StoreError};
use crate::config::{Durability, Overflow};
use crate::protocol::OutboxStats;

/// One buffered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Milliseconds since the Unix epoch, node clock.
    pub appended_ms: u64,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox full ({bytes} of {max} bytes) and its policy is reject_new")]
    Full { bytes: u64, max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy)]
pub struct OutboxOptions {
    pub max_bytes: u64,
    pub ttl: Duration,
    pub overflow: Overflow,
    pub durability: Durability,
}

/// In-memory view, kept exact under concurrent appends.
#[derive(Debug, Default)]
struct Counters {
    bytes: u64,
    count: u64,
    /// Dropped since the state dir was new (persisted).
    dropped: u64,
    /// Dropped since the last report to the hub.
    unreported: u64,
    appended: u64,
    forwarded: u64,
    /// Set aside since the state dir was new (persisted): refused by the hub for
    /// good.
    set_aside: u64,
}

pub struct Outbox {
    /// Group commit for `sync` durability: the highest sequence known to be on disk.
    /// A caller whose entry is already covered by someone else's flush returns at
    /// once; otherwise it flushes for everyone queued behind it.
    flushed: tokio::sync::Mutex<u64>,
    /// The highest sequence appended so far.
    last_seq: std::sync::atomic::AtomicU64,
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    /// The last [`ASIDE_KEPT`] entries the hub refused for good (a record above
    /// its size limit): kept for inspection, out of the forwarder's way.
    aside: sled::Tree,
    opts: OutboxOptions,
    counters: Mutex<Counters>,
    /// Wakes the forwarder when something was appended.
    pub appended: tokio::sync::Notify,
}

const DROPPED_KEY: &[u8] = b"outbox.dropped";
const SET_ASIDE_KEY: &[u8] = b"outbox.set_aside";
/// Preallocation for a read of pending entries.
const BATCH_HINT: usize = 256;
/// Refused entries kept in the aside tree; older ones are deleted.
const ASIDE_KEPT: usize = 16;

fn read_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    Ok(meta
        .get(key)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(subject: &str, payload: &[u8], appended_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + subject.len() + payload.len());
    v.extend_from_slice(&appended_ms.to_be_bytes());
    v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
    v.extend_from_slice(subject.as_bytes());
    v.extend_from_slice(payload);
    v
}

fn decode(seq: u64, v: &[u8]) -> Option<Entry> {
    let appended_ms = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let len = u16::from_be_bytes(v.get(8..10)?.try_into().ok()?) as usize;
    let subject = std::str::from_utf8(v.get(10..10 + len)?).ok()?.to_owned();
    Some(Entry {
        seq,
        subject,
        payload: v.get(10 + len..)?.to_vec(),
        appended_ms,
    })
}

/// Bytes an entry counts for (what it costs on disk, roughly).
fn cost(v: &[u8]) -> u64 {
    v.len() as u64 + 8
}

impl Outbox {
    pub fn open(store: &Store, opts: OutboxOptions) -> Result<Self, StoreError> {
        let entries = store.db.open_tree("outbox")?;
        let meta = store.db.open_tree("outbox_meta")?;
        let mut c = Counters::default();
        for kv in entries.iter() {
            let (_, v) = kv?;
            c.bytes += cost(&v);
            c.count += 1;
        }
        c.dropped = read_counter(&meta, DROPPED_KEY)?;
        c.set_aside = read_counter(&meta, SET_ASIDE_KEY)?;
        Ok(Self {
            aside: store.db.open_tree("outbox_aside")?,
            flushed: tokio::sync::Mutex::new(0),
            last_seq: std::sync::atomic::AtomicU64::new(0),
            db: store.db.clone(),
            entries,
            meta,
            opts,
            counters: Mutex::new(c),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a message; in `sync` durability, returns once it is on disk.
    pub async fn append(&self, subject: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let seq = self.append_buffered(subject, payload)?;
        if self.opts.durability == Durability::Sync {
            self.flush_through(seq).await?;
        }
        self.appended.notify_one();
        Ok(seq)
    }

    /// Returns once every entry up to `seq` is on disk. Concurrent callers share
    /// one flush. (sled 0.34's `flush_async` deadlocks with a few concurrent
    /// callers — found by benches/outbox.sh — so the flush runs on a blocking
    /// thread, one at a time.)
    async fn flush_through(&self, seq: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= seq {
            return Ok(());
        }
        let target = self.last_seq.load(SeqCst).max(seq);
        let tree = self.entries.clone();
        tokio::task::spawn_blocking(move || tree.flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))??;
        *flushed = target;
        Ok(())
    }

    fn append_buffered(&self, subject: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let value = encode(subject, payload, now_ms());
        let size = cost(&value);
        let mut c = self.counters();
        if c.bytes + size > self.opts.max_bytes {
            match self.opts.overflow {
                Overflow::RejectNew => {
                    self.count_drops(&mut c, 1)?;
                    return Err(OutboxError::Full {
                        bytes: c.bytes,
                        max: self.opts.max_bytes,
                    });
                }
                Overflow::DropOldest => {
                    let mut dropped = 0;
                    while c.bytes + size > self.opts.max_bytes {
                        let Some((k, v)) = self.entries.pop_min().map_err(StoreError::from)? else {
                            break;
                        };
                        let _ = k;
                        c.bytes -= cost(&v);
                        c.count -= 1;
                        dropped += 1;
                    }
                    self.count_drops(&mut c, dropped)?;
                }
            }
        }
        let seq = self.db.generate_id().map_err(StoreError::from)?;
        self.entries
            .insert(seq.to_be_bytes(), value)
            .map_err(StoreError::from)?;
        self.last_seq
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        c.bytes += size;
        c.count += 1;
        c.appended += 1;
        Ok(seq)
    }

    fn count_drops(&self, c: &mut Counters, n: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        c.dropped += n;
        c.unreported += n;
        self.meta.insert(DROPPED_KEY, &c.dropped.to_be_bytes())?;
        Ok(())
    }

    /// Up to `limit` entries in sequence order.
    pub fn pending(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.pending_after(None, limit)
    }

    /// Up to `limit` entries after sequence `after` (from the first without one),
    /// in sequence order.
    pub fn pending_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let from = match after {
            Some(seq) => seq.saturating_add(1),
            None => 0,
        };
        let mut out = Vec::with_capacity(limit.min(BATCH_HINT));
        for kv in self.entries.range(from.to_be_bytes()..).take(limit) {
            let (k, v) = kv?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            match decode(seq, &v) {
                Some(e) => out.push(e),
                None => {
                    // Unreadable (should not happen): drop it rather than block the queue.
                    tracing::error!(seq, "unreadable outbox entry dropped");
                    self.remove(seq)?;
                }
            }
        }
        Ok(out)
    }

    /// Removes an entry the hub acknowledged (or already holds).
    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        if self.take(seq)? {
            self.counters().forwarded += 1;
        }
        Ok(())
    }

    /// Moves an entry the hub refused for good out of the queue, so that what
    /// follows it is sent; counted and kept (the newest few) for inspection.
    pub fn set_aside(&self, seq: u64) -> Result<(), StoreError> {
        let Some(v) = self.entries.get(seq.to_be_bytes())? else {
            return Ok(());
        };
        self.aside.insert(seq.to_be_bytes(), v)?;
        while self.aside.len() > ASIDE_KEPT {
            self.aside.pop_min()?;
        }
        if self.take(seq)? {
            let mut c = self.counters();
            c.set_aside += 1;
            self.meta
                .insert(SET_ASIDE_KEY, &c.set_aside.to_be_bytes())?;
        }
        Ok(())
    }

    /// Deletes one entry and its bytes from the counters; false if it was gone.
    fn take(&self, seq: u64) -> Result<bool, StoreError> {
        let Some(v) = self.entries.remove(seq.to_be_bytes())? else {
            return Ok(false);
        };
        let mut c = self.counters();
        c.bytes -= cost(&v);
        c.count -= 1;
        Ok(true)
    }

    /// Removes every entry up to and including `seq` (already on the hub).
    pub fn remove_through(&self, seq: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for kv in self.entries.range(..=seq.to_be_bytes()) {
            let (k, _) = kv?;
            let s = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            self.remove(s)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Drops entries older than the TTL; returns how many.
    pub fn expire(&self) -> Result<u64, StoreError> {
        let cutoff = now_ms().saturating_sub(self.opts.ttl.as_millis() as u64);
        let mut expired = 0;
        for kv in self.entries.iter() {
            let (k, v) = kv?;
            let Some(e) = decode(
                u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                &v,
            ) else {
                continue;
            };
            if e.appended_ms >= cutoff {
                break; // in sequence order, so the rest is younger
            }
            self.take(e.seq)?;
            expired += 1;
        }
        if expired > 0 {
            let mut c = self.counters();
            self.count_drops(&mut c, expired)?;
        }
        Ok(expired)
    }

    /// Drops not yet reported to the hub; resets the count.
    pub fn take_unreported(&self) -> u64 {
        std::mem::take(&mut self.counters().unreported)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.entries.flush()?;
        Ok(())
    }

    pub fn stats(&self) -> OutboxStats {
        let oldest = self
            .entries
            .first()
            .ok()
            .flatten()
            .and_then(|(k, v)| decode(u64::from_be_bytes(k.as_ref().try_into().ok()?), &v))
            .map(|e| now_ms().saturating_sub(e.appended_ms) / 1000)
            .unwrap_or(0);
        let c = self.counters();
        OutboxStats {
            depth: c.count,
            oldest_age_s: oldest,
            dropped: c.dropped,
            bytes: c.bytes,
            appended: c.appended,
            forwarded: c.forwarded,
            set_aside: c.set_aside,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn open(dir: &std::path::Path, max: u64, overflow: Overflow) -> (Store, Outbox) {
        let store = Store::open(
            dir,
            StoreOptions {
                cache_capacity: 1 << 20,
                flush_every: Duration::from_millis(100),
            },
        )
        .unwrap();
        let outbox = Outbox::open(
            &store,
            OutboxOptions {
                max_bytes: max,
                ttl: Duration::from_secs(3600),
                overflow,
                durability: Durability::Sync,
            },
        )
        .unwrap();
        (store, outbox)
    }

    #[tokio::test]
    async fn order_survives_reopen_and_sequences_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let (store, outbox) = open(dir.path(), 1 << 20, Overflow::DropOldest);
        let a = outbox.append("x.a", b"1").await.unwrap();
        let b = outbox.append("x.b", b"2").await.unwrap();
        assert!(b > a);
        outbox.remove(a).unwrap();
        drop((outbox, store));
        let (_store, outbox) = open(dir.path(), 1 << 20, Overflow::DropOldest);
        let pending = outbox.pending(10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].seq,
                pending[0].subject.as_str(),
                &pending[0].payload[..]
            ),
            (b, "x.b", &b"2"[..])
        );
        let c = outbox.append("x.c", b"3").await.unwrap();
        assert!(c > b, "sequence reused after reopen");
        assert_eq!(outbox.stats().depth, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_appends_survive_many_concurrent_callers() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, outbox) = open(dir.path(), 1 << 20, Overflow::DropOldest);
        let outbox = std::sync::Arc::new(outbox);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let o = outbox.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        o.append("s", format!("{i}-{j}").as_bytes()).await.unwrap();
                    }
                })
            })
            .collect();
        let all = futures::future::join_all(tasks);
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("concurrent sync appends hung");
        assert_eq!(outbox.stats().depth, 640);
    }

    #[tokio::test]
    async fn overflow_policies_count_what_they_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, outbox) = open(dir.path(), 300, Overflow::DropOldest);
        for i in 0..10u8 {
            outbox.append("s", &[i; 40]).await.unwrap();
        }
        let kept: Vec<u8> = outbox
            .pending(100)
            .unwrap()
            .iter()
            .map(|e| e.payload[0])
            .collect();
        let stats = outbox.stats();
        assert_eq!(stats.dropped as usize + kept.len(), 10);
        assert_eq!(*kept.last().unwrap(), 9, "drop_oldest keeps the newest");
        assert!(stats.bytes <= 300);

        let dir = tempfile::tempdir().unwrap();
        let (_s, outbox) = open(dir.path(), 300, Overflow::RejectNew);
        let mut refused = 0;
        for i in 0..10u8 {
            if outbox.append("s", &[i; 40]).await.is_err() {
                refused += 1;
            }
        }
        let kept: Vec<u8> = outbox
            .pending(100)
            .unwrap()
            .iter()
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(kept[0], 0, "reject_new keeps the oldest");
        assert_eq!(outbox.stats().dropped, refused);
        assert_eq!(outbox.take_unreported(), refused);
        assert_eq!(outbox.take_unreported(), 0);
    }
}
