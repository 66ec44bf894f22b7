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

/// Changes to the keys of `bucket` under `filters` (KV key patterns such as
/// `node.gw1.*`): an item for each change, for a follower that re-reads what it
/// needs (a node's deployments and upgrade announcements).
///
/// When `hub init` made the bucket republish its changes (headers only, under
/// [`crate::protocol::Subjects::kv_changes`]), these are plain subscriptions: the hub
/// keeps no consumer per node, and 10,000 nodes cost it 10,000 subscriptions' worth
/// of interest instead of 20,000 ordered consumers per stream. A change made while
/// the leaf's link was down is not repeated: the follower's periodic re-read catches
/// it. A bucket made without republishing (by an older edgeleaf, which nats-server
/// 2.9 cannot amend) is followed with a KV watch per filter, as before.
pub async fn key_changes(
    client: &Client,
    bucket: &jetstream::kv::Store,
    filters: &[String],
) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<()>>> {
    use anyhow::Context as _;
    use futures::StreamExt as _;
    if let Some(prefix) = republished_under(bucket) {
        let mut subscriptions = Vec::new();
        for filter in filters {
            subscriptions.push(
                client
                    .subscribe(format!("{prefix}{filter}"))
                    .await
                    .with_context(|| format!("cannot follow {} changes", bucket.name))?,
            );
        }
        client
            .flush()
            .await
            .with_context(|| format!("cannot follow {} changes", bucket.name))?;
        return Ok(futures::stream::select_all(subscriptions)
            .map(|_| Ok(()))
            .boxed());
    }
    let mut watches = Vec::new();
    for filter in filters {
        watches.push(
            patiently(|| bucket.watch(filter))
                .await
                .with_context(|| format!("cannot watch {}", bucket.name))?,
        );
    }
    let name = bucket.name.clone();
    Ok(futures::stream::select_all(watches)
        .map(move |change| {
            change
                .map(drop)
                .with_context(|| format!("watch of {name} failed"))
        })
        .boxed())
}

/// The subject prefix (`<prefix>.kv.<bucket>.`) a bucket's stream republishes its
/// keys' changes under, if it does so for all of them.
fn republished_under(bucket: &jetstream::kv::Store) -> Option<String> {
    let republish = bucket.stream.cached_info().config.republish.as_ref()?;
    if republish.source != format!("$KV.{}.>", bucket.name) {
        return None;
    }
    republish
        .destination
        .strip_suffix('>')
        .filter(|prefix| prefix.ends_with('.'))
        .map(str::to_owned)
}

/// Takes every item `changes` has ready without waiting: a burst of changes (a
/// deploy of many agents, or to the whole fleet) is one re-read, not one each.
pub fn drain_ready(
    changes: &mut futures::stream::BoxStream<'static, anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use futures::{FutureExt as _, StreamExt as _};
    while let Some(Some(change)) = changes.next().now_or_never() {
        change?;
    }
    Ok(())
}
