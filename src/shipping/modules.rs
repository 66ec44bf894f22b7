//! Module bytes in the hub's object store `EDGELEAF_MODULES`, named by their sha256.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

/// sha256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A download that delivers no byte for this long has stalled (an object whose
/// chunks never arrive, a hub that went away).
const STALL: Duration = Duration::from_secs(10);
/// The slowest rate a whole download may average, on top of [`STALL`]: 32 MiB take
/// at most about 17 minutes.
const MIN_RATE: u64 = 32 * 1024;

/// Uploads `bytes` under their digest unless the store already holds exactly these
/// bytes under it: an object of the right name and size is read back and hashed,
/// because whoever can write the store can leave one whose chunks never arrive.
/// `progress` is told how many bytes went out so far. Returns whether it uploaded.
pub async fn upload(
    store: &ObjectStore,
    bytes: &[u8],
    progress: impl FnMut(u64) + Send + Unpin,
) -> Result<bool> {
    let name = digest(bytes);
    if let Ok(info) = store.info(&name).await
        && info.size == bytes.len()
    {
        match fetch(store, &name, bytes.len() as u64).await {
            Ok(_) => return Ok(false),
            Err(e) => {
                eprintln!("warning: the stored module is not intact ({e:#}); uploading it again")
            }
        }
    }
    let mut reader = Counting {
        inner: bytes,
        sent: 0,
        progress,
    };
    store
        .put(name.as_str(), &mut reader)
        .await
        .with_context(|| format!("cannot upload module {name}"))?;
    Ok(true)
}

/// Fetches the module named `digest`, refusing more than `max_size` bytes, a
/// download that stalls or takes too long, and anything whose sha256 is not
/// `digest`.
pub async fn fetch(store: &ObjectStore, digest_hex: &str, max_size: u64) -> Result<Vec<u8>> {
    let whole = STALL + Duration::from_secs(max_size / MIN_RATE);
    // Each try has the whole time: a try that timed out creating its consumer (a
    // hub cluster that lost a server) has used up to a request timeout of it.
    crate::hub::patiently(|| async {
        tokio::time::timeout(whole, fetch_unbounded(store, digest_hex, max_size))
            .await
            .map_err(|_| anyhow::anyhow!("module {digest_hex}: download took over {whole:?}"))?
    })
    .await
}

async fn fetch_unbounded(store: &ObjectStore, digest_hex: &str, max_size: u64) -> Result<Vec<u8>> {
    let mut object = tokio::time::timeout(STALL, store.get(digest_hex))
        .await
        .map_err(|_| {
            anyhow::anyhow!("module {digest_hex}: the object store did not answer within {STALL:?}")
        })?
        .with_context(|| format!("module {digest_hex} not in the object store"))?;
    let size = object.info().size as u64;
    if size > max_size {
        bail!("module {digest_hex} is {size} bytes, above the expected maximum of {max_size}");
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(STALL, object.read(&mut chunk))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "module {digest_hex}: no bytes for {STALL:?} after {} of {size} \
                     (an object whose chunks never arrive?)",
                    bytes.len()
                )
            })?
            .with_context(|| format!("cannot read module {digest_hex}"))?;
        if n == 0 {
            break;
        }
        if (bytes.len() + n) as u64 > max_size {
            bail!("module {digest_hex} is above the expected maximum of {max_size} bytes");
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let got = digest(&bytes);
    if got != digest_hex {
        bail!("module {digest_hex}: downloaded bytes have sha256 {got} (digest mismatch)");
    }
    Ok(bytes)
}

/// An `AsyncRead` over a slice that reports progress.
struct Counting<'a, F> {
    inner: &'a [u8],
    sent: u64,
    progress: F,
}

impl<F: FnMut(u64) + Unpin> AsyncRead for Counting<'_, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.sent += n;
            (this.progress)(this.sent);
        }
        poll
    }
}
