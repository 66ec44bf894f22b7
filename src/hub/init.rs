//! `hub init`: create (or bring up to date) the streams and buckets DESIGN.md names.
//! Safe to run any number of times.

use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::{Context, stream};

use crate::protocol::{
    DEPLOYMENTS_BUCKET, HEARTBEAT_STREAM, LOGS_STREAM, MODULES_BUCKET, NODE_KEYS_BUCKET,
    ROLLOUTS_BUCKET, STATUS_BUCKET, Subjects, TELEMETRY_STREAM, UPGRADES_BUCKET,
};

/// Sizing of the hub resources.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// JetStream replicas of each stream and bucket (1 on a single hub server).
    pub replicas: usize,
    /// Results and events older than this are dropped.
    pub telemetry_max_age: Duration,
    /// Results and events beyond this many bytes drop the oldest.
    pub telemetry_max_bytes: i64,
    /// How far apart two publishes with one `Nats-Msg-Id` are still recognised.
    pub duplicate_window: Duration,
    /// Heartbeats kept per node.
    pub heartbeats_per_node: i64,
    /// Results (or events of one kind) kept per node and agent: one node cannot
    /// evict everyone else's telemetry by flooding the shared stream.
    pub telemetry_per_subject: i64,
    /// Largest result or event record the telemetry stream takes.
    pub max_record: i32,
    /// Log lines older than this are dropped.
    pub logs_max_age: Duration,
    /// Log lines beyond this many bytes drop the oldest.
    pub logs_max_bytes: i64,
    /// Lines kept per node and agent.
    pub logs_per_subject: i64,
    /// Largest value and total size of the status bucket: nodes write it.
    pub status_max_value: i32,
    pub status_max_bytes: i64,
    /// Largest value and total size of the deployments bucket.
    pub deployments_max_value: i32,
    pub deployments_max_bytes: i64,
    /// Total size of the module store.
    pub modules_max_bytes: i64,
    /// Consumers per stream (each node keeps one per key that can select it on the
    /// deployments and the upgrades bucket: its own, `all`, each tag):
    /// bounds what a node can make the hub hold.
    pub max_consumers: i32,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            telemetry_max_age: Duration::from_secs(7 * 24 * 3600),
            telemetry_max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(10 * 60),
            heartbeats_per_node: 5,
            telemetry_per_subject: 10_000,
            max_record: 1 << 20,
            logs_max_age: Duration::from_secs(7 * 24 * 3600),
            logs_max_bytes: 1 << 30,
            logs_per_subject: 100_000,
            status_max_value: 16 << 10,
            status_max_bytes: 64 << 20,
            deployments_max_value: 1 << 20,
            deployments_max_bytes: 256 << 20,
            modules_max_bytes: 8 << 30,
            max_consumers: 16_384,
        }
    }
}

/// Largest heartbeat the heartbeat stream takes.
const MAX_HEARTBEAT: i32 = 64 << 10;
/// Largest log line record the log stream takes (a line is at most 4 KiB of
/// text, escaped, in JSON with its node, agent, level and time).
const MAX_LOG_LINE: i32 = 32 << 10;
/// Largest pinned node key.
const MAX_NODE_KEY: i32 = 1 << 10;

/// What `init` found or made, one line per resource.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    pub kind: &'static str,
    pub name: String,
    /// `created` or `updated`/`exists`.
    pub outcome: &'static str,
}

/// Creates or updates every hub resource. Idempotent.
pub async fn init(js: &Context, subjects: &Subjects, opts: &HubOptions) -> Result<Vec<Created>> {
    let mut done = Vec::new();
    let telemetry = stream::Config {
        name: TELEMETRY_STREAM.into(),
        description: Some("edgeleaf results and events, from every node's outbox".into()),
        subjects: vec![subjects.results(), subjects.events()],
        max_age: opts.telemetry_max_age,
        max_bytes: opts.telemetry_max_bytes,
        max_messages_per_subject: opts.telemetry_per_subject,
        max_message_size: opts.max_record,
        max_consumers: opts.max_consumers,
        duplicate_window: opts.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    };
    let heartbeats = stream::Config {
        name: HEARTBEAT_STREAM.into(),
        description: Some("last heartbeats of each edgeleaf node".into()),
        subjects: vec![subjects.heartbeats()],
        max_messages_per_subject: opts.heartbeats_per_node,
        max_message_size: MAX_HEARTBEAT,
        max_consumers: opts.max_consumers,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    };
    let logs = stream::Config {
        name: LOGS_STREAM.into(),
        description: Some("edgeleaf agent and node log lines, from every node's log store".into()),
        subjects: vec![subjects.logs()],
        max_age: opts.logs_max_age,
        max_bytes: opts.logs_max_bytes,
        max_messages_per_subject: opts.logs_per_subject,
        max_message_size: MAX_LOG_LINE,
        max_consumers: opts.max_consumers,
        duplicate_window: opts.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    };
    for config in [telemetry, heartbeats, logs] {
        let name = config.name.clone();
        done.push(Created {
            kind: "stream",
            outcome: ensure_stream(js, config).await?,
            name,
        });
    }
    for (bucket, history, description, max_value, max_bytes) in [
        (
            DEPLOYMENTS_BUCKET,
            5,
            "desired state: signed deployment specs",
            opts.deployments_max_value,
            opts.deployments_max_bytes,
        ),
        (
            STATUS_BUCKET,
            1,
            "what each node runs",
            opts.status_max_value,
            opts.status_max_bytes,
        ),
        (
            NODE_KEYS_BUCKET,
            5,
            "node encryption keys pinned by deploy --secret",
            MAX_NODE_KEY,
            16 << 20,
        ),
        (
            ROLLOUTS_BUCKET,
            5,
            "staged rollouts (deploy --waves): their waves and outcome, by agent",
            1 << 20,
            64 << 20,
        ),
        (
            UPGRADES_BUCKET,
            5,
            "edgeleaf binaries announced by `edgeleaf upgrade`, by target and architecture",
            64 << 10,
            16 << 20,
        ),
    ] {
        // The buckets every node follows republish their changes, headers only, so
        // that a node listens with plain subscriptions rather than a consumer each
        // (10,000 nodes would need more than a stream's consumer limit).
        let republish = [DEPLOYMENTS_BUCKET, UPGRADES_BUCKET]
            .contains(&bucket)
            .then(|| stream::Republish {
                source: format!("$KV.{bucket}.>"),
                destination: subjects.kv_changes(bucket),
                headers_only: true,
            });
        let config = stream::Config {
            max_message_size: max_value,
            max_bytes,
            max_consumers: opts.max_consumers,
            republish,
            ..kv_stream(bucket, history, description, opts.replicas)
        };
        done.push(Created {
            kind: "kv",
            name: bucket.into(),
            outcome: ensure_stream(js, config).await?,
        });
    }
    // The object store's stream, as `create_object_store` makes it, with limits.
    let modules = stream::Config {
        name: format!("OBJ_{MODULES_BUCKET}"),
        description: Some("agent modules by sha256 digest".into()),
        subjects: vec![
            format!("$O.{MODULES_BUCKET}.C.>"),
            format!("$O.{MODULES_BUCKET}.M.>"),
        ],
        max_bytes: opts.modules_max_bytes,
        max_consumers: opts.max_consumers,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..Default::default()
    };
    let outcome = ensure_stream(js, modules).await?;
    done.push(Created {
        kind: "object store",
        name: MODULES_BUCKET.into(),
        outcome,
    });
    Ok(done)
}

/// Creates a stream, or brings an existing one to `config`, keeping its consumer
/// limit (nats-server refuses to change one). Returns `created` or `updated`.
///
/// An existing stream keeps its RePublish too when the server refuses to change it
/// (nats-server 2.9 does): a bucket made before edgeleaf republished its changes
/// stays as it was, and nodes follow it with a KV watch each, as they did.
async fn ensure_stream(js: &Context, mut config: stream::Config) -> Result<&'static str> {
    let name = config.name.clone();
    let existing = js.get_stream(&name).await.ok();
    let Some(mut stream) = existing else {
        js.create_stream(config)
            .await
            .with_context(|| format!("cannot create stream {name}"))?;
        return Ok("created");
    };
    let current = stream
        .info()
        .await
        .with_context(|| format!("cannot read stream {name}"))?
        .config
        .clone();
    config.max_consumers = current.max_consumers;
    if config.republish != current.republish {
        if js.update_stream(config.clone()).await.is_ok() {
            return Ok("updated");
        }
        tracing::warn!(
            "stream {name} was made without republishing its changes and this server \
             cannot add it: its nodes follow it with a consumer each (see README, \
             \"Fleets of thousands\")"
        );
        config.republish = current.republish;
    }
    js.update_stream(config)
        .await
        .with_context(|| format!("cannot update stream {name}"))?;
    Ok("updated")
}

/// The stream behind a KV bucket, as `create_key_value` would make it.
///
/// async-nats 0.51's `create_key_value` first reads the account info and insists on
/// fields (`reserved_memory`, `reserved_storage`) that nats-server 2.9 (Debian's) does
/// not send, so it fails there. Creating the stream directly works on 2.9 and later,
/// and `get_key_value` then opens the bucket as usual.
fn kv_stream(bucket: &str, history: i64, description: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}
