//! The fleet as the hub sees it: the last heartbeat of every node, read from the
//! heartbeat stream (last message per subject), judged online or offline by the
//! hub's receive time, never by the node's clock.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;

use crate::protocol::{HEARTBEAT_STREAM, Heartbeat, NodeRow, NodeStatus, Subjects};

/// How long to wait for the next stored heartbeat before giving up on a read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Every node that ever sent a heartbeat, sorted by node id.
pub async fn nodes(js: &Context, subjects: &Subjects) -> Result<Vec<NodeRow>> {
    let mut stream = js.get_stream(HEARTBEAT_STREAM).await.with_context(|| {
        format!("no stream {HEARTBEAT_STREAM} on the hub; run `edgeleaf hub init` first")
    })?;
    if stream.info().await?.state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects.heartbeats(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .context("cannot read the heartbeat stream")?;
    let mut messages = consumer.messages().await?;
    let now = SystemTime::now();
    let mut rows = Vec::new();
    loop {
        let msg = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .context("timed out reading the heartbeat stream")?;
        let Some(msg) = msg else { break };
        let msg = msg.context("cannot read the heartbeat stream")?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let pending = info.pending;
        let received = SystemTime::from(info.published);
        match serde_json::from_slice::<Heartbeat>(&msg.payload) {
            Ok(heartbeat)
                if subjects.node_of_heartbeat(&msg.subject) == Some(&heartbeat.node_id) =>
            {
                let age_s = now
                    .duration_since(received)
                    .unwrap_or_default()
                    .as_secs_f64();
                rows.push(NodeRow {
                    node_id: heartbeat.node_id.clone(),
                    status: NodeStatus::judge(age_s, heartbeat.interval_s),
                    last_seen: humantime::format_rfc3339_millis(received).to_string(),
                    age_s,
                    heartbeat,
                });
            }
            // A heartbeat under another node's subject, or not a heartbeat at all:
            // skip it, and say so, rather than show a wrong row.
            Ok(hb) => {
                tracing::warn!(subject = %msg.subject, node_id = %hb.node_id, "heartbeat subject and node_id disagree; skipped")
            }
            Err(e) => tracing::warn!(subject = %msg.subject, "unreadable heartbeat skipped: {e}"),
        }
        if pending == 0 {
            break;
        }
    }
    rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(rows)
}
