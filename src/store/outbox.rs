//! The outbox: results and events are appended here (with a node-local sequence)
//! before anything is sent, and removed only once the hub acknowledged them.
//!
//! Sequences come from sled's `generate_id`, which only grows, also across restarts,
//! so a message id `<node>:<incarnation>:<seq>` is never reused. Size is bounded by
//! `max_bytes` with an explicit overflow policy, age by a TTL; every drop is counted
//! (persisted) and reported.
//!
//! Durability: `sync` writes to sled and flushes before `append` returns. `batch`
//! keeps new entries in memory and writes what is still there at the next
//! [`Outbox::flush`], which the node runs every `flush_interval`: the hub usually
//! acknowledges an entry within milliseconds, so under load most entries are sent
//! and removed without ever being written, and a power cut still loses at most one
//! `flush_interval` of entries, as before. Sequences only grow and every entry in
//! sled is older than every entry in memory, so reads see one ordered queue.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Store, StoreError, StoreOptions};
use crate::config::{Durability, OutboxSection, Overflow};
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

/// In-memory view, kept exact under concurrent appends, and (`batch`) the entries
/// not written yet.
#[derive(Debug, Default)]
struct Counters {
    /// `batch`: entries appended since the last flush, by sequence, encoded as in
    /// sled. All newer than anything in sled; counted in `bytes` and `count`.
    recent: BTreeMap<u64, Vec<u8>>,
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
    /// The hub stream's sequence of the newest acknowledged entry such that every
    /// entry before it was settled too (persisted with the next flush; 0: none).
    hub_mark: u64,
    /// `hub_mark` changed since it was last written.
    hub_mark_dirty: bool,
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
const HUB_MARK_KEY: &[u8] = b"outbox.hub_mark";
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
    /// The node's outbox of results and events.
    pub fn open(store: &Store, opts: OutboxOptions) -> Result<Self, StoreError> {
        Self::open_named(store, "outbox", opts)
    }

    /// An outbox in trees of its own, `<name>`, `<name>_meta` and `<name>_aside`
    /// (the log store is one).
    pub fn open_named(store: &Store, name: &str, opts: OutboxOptions) -> Result<Self, StoreError> {
        let entries = store.db.open_tree(name)?;
        let meta = store.db.open_tree(format!("{name}_meta"))?;
        let mut c = Counters::default();
        for kv in entries.iter() {
            let (_, v) = kv?;
            c.bytes += cost(&v);
            c.count += 1;
        }
        c.dropped = read_counter(&meta, DROPPED_KEY)?;
        c.set_aside = read_counter(&meta, SET_ASIDE_KEY)?;
        c.hub_mark = read_counter(&meta, HUB_MARK_KEY)?;
        Ok(Self {
            aside: store.db.open_tree(format!("{name}_aside"))?,
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

    /// The outbox of a node that is not running, opened to look at what it left
    /// (`edgeleaf outbox` without `--node`). `StoreError::Locked` while the node runs.
    pub fn open_stopped(state_dir: &std::path::Path) -> Result<Self, StoreError> {
        let store = Store::open(
            state_dir,
            StoreOptions {
                cache_capacity: 1 << 20,
                flush_every: Duration::from_secs(1),
            },
        )?;
        let d = OutboxSection::default();
        Self::open(
            &store,
            OutboxOptions {
                max_bytes: d.max_bytes,
                ttl: d.ttl,
                overflow: Overflow::DropOldest,
                durability: Durability::Batch,
            },
        )
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

    /// Appends without waiting for the disk, whatever the durability: for lines
    /// logged from places that cannot await (the node's own tracing events).
    pub fn append_now(&self, subject: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let seq = self.append_buffered(subject, payload)?;
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
                        let Some(oldest) = self.pop_oldest(&mut c)? else {
                            break;
                        };
                        c.bytes -= oldest;
                        c.count -= 1;
                        dropped += 1;
                    }
                    self.count_drops(&mut c, dropped)?;
                }
            }
        }
        // Under the lock: sequences enter the queue in order.
        let seq = self.db.generate_id().map_err(StoreError::from)?;
        match self.opts.durability {
            Durability::Sync => {
                self.entries
                    .insert(seq.to_be_bytes(), value)
                    .map_err(StoreError::from)?;
            }
            Durability::Batch => {
                c.recent.insert(seq, value);
            }
        }
        self.last_seq
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        c.bytes += size;
        c.count += 1;
        c.appended += 1;
        Ok(seq)
    }

    /// Removes the oldest entry (sled first: it holds the older ones); its cost.
    fn pop_oldest(&self, c: &mut Counters) -> Result<Option<u64>, StoreError> {
        if let Some((_, v)) = self.entries.pop_min()? {
            return Ok(Some(cost(&v)));
        }
        Ok(c.recent.pop_first().map(|(_, v)| cost(&v)))
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
        let mut unreadable = Vec::new();
        let mut keep = |seq: u64, v: &[u8], out: &mut Vec<Entry>| match decode(seq, v) {
            Some(e) => out.push(e),
            None => unreadable.push(seq),
        };
        {
            // Held across both reads, so a flush cannot move an entry between them.
            let c = self.counters();
            let mut read = 0;
            for kv in self.entries.range(from.to_be_bytes()..).take(limit) {
                let (k, v) = kv?;
                read += 1;
                let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                keep(seq, &v, &mut out);
            }
            for (seq, v) in c.recent.range(from..).take(limit - read) {
                keep(*seq, v, &mut out);
            }
        }
        for seq in unreadable {
            // Should not happen: drop it rather than block the queue.
            tracing::error!(seq, "unreadable outbox entry dropped");
            self.remove(seq)?;
        }
        Ok(out)
    }

    /// Removes an entry the hub acknowledged (or already holds).
    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        let mut c = self.counters();
        if self.take_locked(&mut c, seq)?.is_some() {
            c.forwarded += 1;
        }
        Ok(())
    }

    /// Notes where the hub's stream stored the entry the forwarder just settled in
    /// order: every entry published before it is settled, so what an interrupted
    /// run may have left on the hub unacknowledged lies after this stream sequence.
    /// Written with the next flush. Not a maximum: a hub stream made anew counts
    /// from 1 again.
    pub fn set_hub_mark(&self, stream_seq: u64) {
        let mut c = self.counters();
        if c.hub_mark != stream_seq {
            c.hub_mark = stream_seq;
            c.hub_mark_dirty = true;
        }
    }

    /// The last [`set_hub_mark`](Self::set_hub_mark), also from before a restart if it
    /// was flushed; `None` if the hub never acknowledged anything.
    pub fn hub_mark(&self) -> Option<u64> {
        Some(self.counters().hub_mark).filter(|m| *m > 0)
    }

    /// Moves an entry the hub refused for good out of the queue, so that what
    /// follows it is sent; counted and kept (the newest few) for inspection.
    pub fn set_aside(&self, seq: u64) -> Result<(), StoreError> {
        let mut c = self.counters();
        let Some(v) = self.take_locked(&mut c, seq)? else {
            return Ok(());
        };
        c.set_aside += 1;
        self.meta
            .insert(SET_ASIDE_KEY, &c.set_aside.to_be_bytes())?;
        drop(c);
        self.aside.insert(seq.to_be_bytes(), v)?;
        while self.aside.len() > ASIDE_KEPT {
            self.aside.pop_min()?;
        }
        Ok(())
    }

    /// Deletes one entry and its bytes from the counters; false if it was gone.
    fn take(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.take_locked(&mut self.counters(), seq)?.is_some())
    }

    /// Deletes one entry, wherever it is; its encoded bytes, `None` if it was gone.
    fn take_locked(&self, c: &mut Counters, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let v = match c.recent.remove(&seq) {
            Some(v) => v,
            None => match self.entries.remove(seq.to_be_bytes())? {
                Some(v) => v.to_vec(),
                None => return Ok(None),
            },
        };
        c.bytes -= cost(&v);
        c.count -= 1;
        Ok(Some(v))
    }

    /// Drops entries older than the TTL; returns how many.
    pub fn expire(&self) -> Result<u64, StoreError> {
        let cutoff = now_ms().saturating_sub(self.opts.ttl.as_millis() as u64);
        // In sequence order, so the first young entry ends it.
        let expired = self.take_front_while(|e| e.appended_ms < cutoff)?;
        if expired > 0 {
            let mut c = self.counters();
            self.count_drops(&mut c, expired)?;
        }
        Ok(expired)
    }

    /// Deletes entries from the front of the queue while `old` holds; how many.
    fn take_front_while(&self, old: impl Fn(&Entry) -> bool) -> Result<u64, StoreError> {
        let mut taken = 0;
        loop {
            let batch = self.pending(BATCH_HINT)?;
            let full = batch.len() == BATCH_HINT;
            for e in batch {
                if !old(&e) {
                    return Ok(taken);
                }
                self.take(e.seq)?;
                taken += 1;
            }
            if !full {
                return Ok(taken);
            }
        }
    }

    /// Drops not yet reported to the hub; resets the count.
    pub fn take_unreported(&self) -> u64 {
        std::mem::take(&mut self.counters().unreported)
    }

    /// Writes what `batch` durability holds in memory to sled, then flushes sled:
    /// afterwards every entry still waiting is on disk. Blocks on disk I/O.
    pub fn flush(&self) -> Result<(), StoreError> {
        Self::flush_all(&[self])
    }

    /// [`flush`](Self::flush) for outboxes of one store (the node's outbox and its
    /// log store): each writes what it holds in memory, then sled flushes once,
    /// since one flush writes every tree of the database.
    pub fn flush_all(outboxes: &[&Outbox]) -> Result<(), StoreError> {
        for o in outboxes {
            o.spill()?;
        }
        if let Some(o) = outboxes.first() {
            o.db.flush()?;
        }
        Ok(())
    }

    /// Moves the entries `batch` durability holds in memory into sled (not flushed).
    fn spill(&self) -> Result<(), StoreError> {
        let mut c = self.counters();
        if !c.recent.is_empty() {
            let mut batch = sled::Batch::default();
            for (seq, v) in &c.recent {
                batch.insert(&seq.to_be_bytes(), v.as_slice());
            }
            self.entries.apply_batch(batch)?;
            c.recent.clear();
        }
        if c.hub_mark_dirty {
            self.meta.insert(HUB_MARK_KEY, &c.hub_mark.to_be_bytes())?;
            c.hub_mark_dirty = false;
        }
        Ok(())
    }

    pub fn stats(&self) -> OutboxStats {
        let c = self.counters();
        let oldest = self
            .entries
            .first()
            .ok()
            .flatten()
            .and_then(|(k, v)| decode(u64::from_be_bytes(k.as_ref().try_into().ok()?), &v))
            .or_else(|| {
                let (seq, v) = c.recent.first_key_value()?;
                decode(*seq, v)
            })
            .map(|e| now_ms().saturating_sub(e.appended_ms) / 1000)
            .unwrap_or(0);
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

impl Drop for Outbox {
    /// Nothing `batch` held in memory is lost on a clean exit, whoever forgot to
    /// flush.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("outbox not flushed on close: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn open(dir: &std::path::Path, max: u64, overflow: Overflow) -> (Store, Outbox) {
        open_with(dir, max, overflow, Durability::Sync)
    }

    fn open_with(
        dir: &std::path::Path,
        max: u64,
        overflow: Overflow,
        durability: Durability,
    ) -> (Store, Outbox) {
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
                durability,
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

    #[test]
    fn the_hub_mark_is_kept_across_a_restart_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, outbox) =
            open_with(dir.path(), 1 << 20, Overflow::DropOldest, Durability::Batch);
        assert_eq!(outbox.hub_mark(), None);
        outbox.set_hub_mark(41);
        outbox.set_hub_mark(40_000);
        assert_eq!(outbox.hub_mark(), Some(40_000));
        outbox.flush().unwrap();
        // A hub stream made anew counts from 1 again: the mark follows it down.
        outbox.set_hub_mark(7);
        drop((outbox, store));
        let (store, outbox) =
            open_with(dir.path(), 1 << 20, Overflow::DropOldest, Durability::Batch);
        assert_eq!(outbox.hub_mark(), Some(7), "written when the outbox closed");
        drop((outbox, store));
        let (_store, outbox) =
            open_with(dir.path(), 1 << 20, Overflow::DropOldest, Durability::Batch);
        assert_eq!(outbox.hub_mark(), Some(7));
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

    fn payloads(outbox: &Outbox, after: Option<u64>) -> Vec<u8> {
        let pending = outbox.pending_after(after, 100).unwrap();
        pending.iter().map(|e| e.payload[0]).collect()
    }

    #[tokio::test]
    async fn batch_keeps_one_ordered_queue_across_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, outbox) =
            open_with(dir.path(), 1 << 20, Overflow::DropOldest, Durability::Batch);
        let mut seqs = Vec::new();
        for i in 0..3u8 {
            seqs.push(outbox.append("s", &[i]).await.unwrap());
        }
        // Acknowledged before any flush: never written.
        outbox.remove(seqs[1]).unwrap();
        outbox.flush().unwrap();
        for i in 3..6u8 {
            seqs.push(outbox.append("s", &[i]).await.unwrap());
        }
        assert_eq!(payloads(&outbox, None), [0, 2, 3, 4, 5]);
        assert_eq!(payloads(&outbox, Some(seqs[2])), [3, 4, 5]);
        assert_eq!(outbox.pending_after(None, 2).unwrap().len(), 2);
        let stats = outbox.stats();
        assert_eq!((stats.depth, stats.appended, stats.forwarded), (5, 6, 1));
        // Removal works in either tier (2 and 3 were written, 4 is in memory).
        for seq in [seqs[0], seqs[2], seqs[3], seqs[4]] {
            outbox.remove(seq).unwrap();
        }
        assert_eq!(payloads(&outbox, None), [5]);
        // What is still waiting on close is on disk after reopening.
        drop((outbox, store));
        let (_store, outbox) =
            open_with(dir.path(), 1 << 20, Overflow::DropOldest, Durability::Batch);
        assert_eq!(payloads(&outbox, None), [5]);
        assert_eq!(outbox.stats().depth, 1);
    }

    #[tokio::test]
    async fn batch_drops_the_oldest_from_disk_before_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, outbox) = open_with(dir.path(), 300, Overflow::DropOldest, Durability::Batch);
        for i in 0..4u8 {
            outbox.append("s", &[i; 40]).await.unwrap();
        }
        outbox.flush().unwrap();
        for i in 4..10u8 {
            outbox.append("s", &[i; 40]).await.unwrap();
        }
        let kept = payloads(&outbox, None);
        let stats = outbox.stats();
        assert_eq!(stats.dropped as usize + kept.len(), 10);
        assert_eq!(kept, (10 - kept.len() as u8..10).collect::<Vec<_>>());
        assert!(stats.bytes <= 300);
    }
}
