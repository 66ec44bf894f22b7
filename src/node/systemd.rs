//! The systemd notification protocol (`sd_notify`), for `Type=notify` units: the node
//! says `READY=1` once it runs, `STOPPING=1` when it stops, and - when the unit sets
//! `WatchdogSec=` - `WATCHDOG=1` at half that interval while it is healthy. Without
//! `$NOTIFY_SOCKET` (not under systemd) all of this does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use super::NodeState;
use crate::shutdown::Shutdown;

/// Sends one notification (`READY=1`, `STATUS=...`); errors are logged, never fatal.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({}): {e}", path.to_string_lossy());
    }
}

/// How often to pet the watchdog: half of `$WATCHDOG_USEC`, when it is meant for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse() != Ok(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pets the watchdog while the node can still answer for itself: each `WATCHDOG=1`
/// follows a full `info` (the agent pool, the outbox and the leaf status, each
/// behind its own lock), built on the tokio runtime. A wedged runtime or a stuck lock
/// stops the pings, and systemd restarts the node.
pub(super) async fn watchdog(state: Arc<NodeState>, every: Duration, mut shutdown: Shutdown) {
    tracing::info!(every = ?every, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = state.info();
                notify("WATCHDOG=1");
            }
            _ = shutdown.recv() => return,
        }
    }
}
