//! `hub init`: create (or bring up to date) the streams and buckets DESIGN.md names.
//! Safe to run any number of times.

use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::{Context, object_store, stream};

use crate::protocol::{
    DEPLOYMENTS_BUCKET, HEARTBEAT_STREAM, MODULES_BUCKET, NODE_KEYS_BUCKET, STATUS_BUCKET,
    Subjects, TELEMETRY_STREAM,
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
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            telemetry_max_age: Duration::from_secs(7 * 24 * 3600),
            telemetry_max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(10 * 60),
            heartbeats_per_node: 5,
        }
    }
}

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
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    };
    for config in [telemetry, heartbeats] {
        let name = config.name.clone();
        let existed = js.get_stream(&name).await.is_ok();
        js.create_or_update_stream(config)
            .await
            .with_context(|| format!("cannot create or update stream {name}"))?;
        done.push(Created {
            kind: "stream",
            name,
            outcome: if existed { "updated" } else { "created" },
        });
    }
    for (bucket, history, description) in [
        (
            DEPLOYMENTS_BUCKET,
            5,
            "desired state: signed deployment specs",
        ),
        (STATUS_BUCKET, 1, "what each node runs"),
        (
            NODE_KEYS_BUCKET,
            5,
            "node encryption keys pinned by deploy --secret",
        ),
    ] {
        let outcome = match js.get_key_value(bucket).await {
            Ok(_) => "exists",
            Err(_) => {
                js.create_stream(kv_stream(bucket, history, description, opts.replicas))
                    .await
                    .with_context(|| format!("cannot create KV bucket {bucket}"))?;
                "created"
            }
        };
        done.push(Created {
            kind: "kv",
            name: bucket.into(),
            outcome,
        });
    }
    let outcome = match js.get_object_store(MODULES_BUCKET).await {
        Ok(_) => "exists",
        Err(_) => {
            js.create_object_store(object_store::Config {
                bucket: MODULES_BUCKET.into(),
                description: Some("agent modules by sha256 digest".into()),
                storage: stream::StorageType::File,
                num_replicas: opts.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create object store {MODULES_BUCKET}"))?;
            "created"
        }
    };
    done.push(Created {
        kind: "object store",
        name: MODULES_BUCKET.into(),
        outcome,
    });
    Ok(done)
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
