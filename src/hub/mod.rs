//! The hub side, with no daemon of its own: the JetStream resources that carry
//! telemetry and shipping ([`init`]), the fleet view read from them ([`fleet`]), and
//! the node keys secrets are sealed to ([`node_keys`]).

pub mod accounts;
pub mod fleet;
pub mod init;
pub mod node_keys;

use async_nats::Client;
use async_nats::jetstream::{self, Context};

/// A JetStream context on the hub: local when `domain` is `None` (connected to a hub
/// server), else through a leaf by the hub's domain.
pub fn jetstream(client: Client, domain: Option<&str>) -> Context {
    match domain {
        Some(d) => jetstream::with_domain(client, d),
        None => jetstream::new(client),
    }
}

/// The error of opening `what` (a stream, bucket or store) on the hub, saying which
/// of two things the user has to fix: the hub was never set up (`hub init`), or it
/// did not answer in time (the link is down, or a hub cluster is electing a new
/// leader for it after losing a server: try again).
pub fn opening(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut missing = false;
    while let Some(c) = cause {
        if let Some(g) = c.downcast_ref::<jetstream::context::GetStreamError>()
            && let jetstream::context::GetStreamErrorKind::JetStream(js) = g.kind()
        {
            missing |= js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND;
        }
        cause = c.source();
    }
    let message = if missing {
        format!("no {what} on the hub; run `edgeleaf hub init` first")
    } else {
        format!(
            "cannot reach the {what} on the hub (is it up? a hub cluster that lost a server \
             answers again once it has elected a new leader)"
        )
    };
    anyhow::Error::new(e).context(message)
}

/// How many times [`patiently`] tries.
const CONSUMER_TRIES: u32 = 6;

/// An error that may be a JetStream request that timed out.
pub trait TimedOut {
    fn timed_out(&self) -> bool;
}

impl TimedOut for jetstream::kv::WatchError {
    fn timed_out(&self) -> bool {
        self.kind() == jetstream::kv::WatchErrorKind::TimedOut
    }
}

impl TimedOut for jetstream::stream::ConsumerError {
    fn timed_out(&self) -> bool {
        self.kind() == jetstream::stream::ConsumerErrorKind::TimedOut
    }
}

impl TimedOut for anyhow::Error {
    /// Whether any cause in the chain is a timeout of an object download (a module
    /// or binary fetch): the object lookup, or a read whose consumer create timed out.
    fn timed_out(&self) -> bool {
        self.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
                || cause
                    .downcast_ref::<jetstream::object_store::GetError>()
                    .is_some_and(|e| e.kind() == jetstream::object_store::GetErrorKind::TimedOut)
        })
    }
}

/// Runs `create` (anything that creates a consumer: a KV watch, a key listing, an
/// ordered consumer) again while it times out, up to six tries.
///
/// On a hub cluster with one server down, nats-server before 2.11.8 places a new
/// ephemeral consumer on any server of its stream, the dead one too (one try in
/// three with three servers), and that create times out; the next try places it
/// afresh. Other errors return at once.
pub async fn patiently<T, E, F, Fut>(mut create: F) -> Result<T, E>
where
    E: TimedOut + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 1;
    loop {
        match create().await {
            Err(e) if tries < CONSUMER_TRIES && e.timed_out() => {
                tracing::debug!("consumer create timed out (try {tries}), trying again: {e}");
                tries += 1;
            }
            other => return other,
        }
    }
}
