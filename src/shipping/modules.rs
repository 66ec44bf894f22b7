//! Module bytes in the hub's object store `EDGELEAF_MODULES`, named by their sha256.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// sha256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads `bytes` under their digest unless an object of that name and size is
/// already there. `progress` is told how many bytes went out so far. Returns
/// whether it uploaded.
pub async fn upload(
    store: &ObjectStore,
    bytes: &[u8],
    progress: impl FnMut(u64) + Send + Unpin,
) -> Result<bool> {
    let name = digest(bytes);
    if let Ok(info) = store.info(&name).await
        && info.size == bytes.len()
    {
        return Ok(false);
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

/// Fetches the module named `digest`, refusing more than `max_size` bytes and
/// anything whose sha256 is not `digest`.
pub async fn fetch(store: &ObjectStore, digest_hex: &str, max_size: u64) -> Result<Vec<u8>> {
    let mut object = store
        .get(digest_hex)
        .await
        .with_context(|| format!("module {digest_hex} not in the object store"))?;
    let size = object.info().size as u64;
    if size > max_size {
        bail!("module {digest_hex} is {size} bytes, above this node's maximum of {max_size}");
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut object)
        .take(max_size + 1)
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("cannot read module {digest_hex}"))?;
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
