//! The fleet as the hub sees it: the last heartbeat of every node, read from the
//! heartbeat stream (last message per subject), judged online or offline by the
//! hub's receive time, never by the node's clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use async_nats::Client;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;

use serde::Serialize;

use crate::protocol::{
    AgentInfo, ControlReply, DeployStatus, ErrorBody, HEARTBEAT_STREAM, Heartbeat, NodeRow,
    NodeStatus, STATUS_BUCKET, Subjects,
};

/// How long to wait for the next stored heartbeat before giving up on a read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Every node that ever sent a heartbeat, sorted by node id.
pub async fn nodes(js: &Context, subjects: &Subjects) -> Result<Vec<NodeRow>> {
    let mut stream = js
        .get_stream(HEARTBEAT_STREAM)
        .await
        .map_err(|e| super::opening(&format!("stream {HEARTBEAT_STREAM}"), e))?;
    if stream.info().await?.state.messages == 0 {
        return Ok(Vec::new());
    }
    let last = last_per_subject(&stream, subjects.heartbeats(), "the heartbeat stream").await?;
    let now = SystemTime::now();
    let mut rows = BTreeMap::new();
    for msg in last.into_values() {
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let received = SystemTime::from(info.published);
        match serde_json::from_slice::<Heartbeat>(&msg.payload) {
            Ok(heartbeat)
                if subjects.node_of_heartbeat(&msg.subject) == Some(&heartbeat.node_id) =>
            {
                let age_s = now
                    .duration_since(received)
                    .unwrap_or_default()
                    .as_secs_f64();
                rows.insert(
                    heartbeat.node_id.clone(),
                    NodeRow {
                        node_id: heartbeat.node_id.clone(),
                        status: NodeStatus::judge(age_s, heartbeat.interval_s),
                        last_seen: humantime::format_rfc3339_millis(received).to_string(),
                        age_s,
                        heartbeat,
                    },
                );
            }
            // A heartbeat under another node's subject, or not a heartbeat at all:
            // skip it, and say so, rather than show a wrong row.
            Ok(hb) => {
                tracing::warn!(subject = %msg.subject, node_id = %hb.node_id, "heartbeat subject and node_id disagree; skipped")
            }
            Err(e) => tracing::warn!(subject = %msg.subject, "unreadable heartbeat skipped: {e}"),
        }
    }
    Ok(rows.into_values().collect())
}

/// The last message of each subject under `filter` in `stream`, by subject, as they
/// stood when the read began: one ordered consumer that delivers the last message per
/// subject, instead of a request per subject. What arrives while it reads (a large
/// fleet heartbeats hundreds of times a second) comes after those and is not waited
/// for; a subject met twice keeps its latest.
async fn last_per_subject(
    stream: &async_nats::jetstream::stream::Stream,
    filter: String,
    what: &str,
) -> Result<BTreeMap<String, async_nats::jetstream::Message>> {
    let consumer = super::patiently(|| {
        stream.create_consumer(OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
    })
    .await
    .with_context(|| format!("cannot read {what}"))?;
    let mut left = consumer.cached_info().num_pending;
    let mut last = BTreeMap::new();
    if left == 0 {
        return Ok(last);
    }
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("cannot read {what}"))?;
    loop {
        let msg = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .with_context(|| format!("timed out reading {what}"))?;
        let Some(msg) = msg else { break };
        let msg = msg.with_context(|| format!("cannot read {what}"))?;
        let pending = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
        last.insert(msg.subject.to_string(), msg);
        left = left.saturating_sub(1);
        if pending == 0 || left == 0 {
            break;
        }
    }
    Ok(last)
}

/// The deployment statuses nodes wrote to `EDGELEAF_STATUS` (of one node, or all),
/// in one read of the bucket's stream.
async fn statuses(js: &Context, only: Option<&str>) -> Result<Vec<DeployStatus>> {
    let stream = js
        .get_stream(format!("KV_{STATUS_BUCKET}"))
        .await
        .map_err(|e| super::opening(&format!("bucket {STATUS_BUCKET}"), e))?;
    let prefix = format!("$KV.{STATUS_BUCKET}.");
    let filter = match only {
        Some(node) if crate::protocol::is_token(node) => format!("{prefix}{node}.*"),
        _ => format!("{prefix}>"),
    };
    let mut out = Vec::new();
    for (subject, msg) in last_per_subject(&stream, filter, "the status bucket").await? {
        let deleted = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
        let Some(key) = subject.strip_prefix(&prefix).filter(|_| !deleted) else {
            continue;
        };
        let Ok(s) = serde_json::from_slice::<DeployStatus>(&msg.payload) else {
            continue;
        };
        // The key says whose status it is (a node may write only its own keys under
        // `hub accounts`); a value naming another node or agent is forged.
        if !status_matches_key(key, &s) {
            tracing::warn!(
                "status {key} claims to be {}.{}; ignored",
                s.node_id,
                s.agent
            );
            continue;
        }
        if only.is_none_or(|n| n == s.node_id) {
            out.push(s);
        }
    }
    Ok(out)
}

/// One row: one agent on one node.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AgentRow {
    pub node_id: String,
    pub agent: String,
    /// Live state when the node answered (`running`, `backoff`, `failed`), else the
    /// last reported deployment state, else `unknown`.
    pub state: String,
    /// Deployed version (agents from the node's own config have none).
    pub version: Option<u64>,
    pub digest: Option<String>,
    pub triggers: Vec<String>,
    /// Timer entries, when the node answered and the agent has a timer.
    pub schedule: Vec<String>,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    /// Live counters, when the node answered.
    pub invocations: Option<u64>,
    pub failures: Option<u64>,
    pub skipped_ticks: Option<u64>,
    /// Messages answered `busy` unrun (the agent's queue was full).
    pub refused_busy: Option<u64>,
    /// `fresh` or `warm`, and for warm the instances started so far.
    pub instances: Option<crate::protocol::Instances>,
    pub warm_started: Option<u64>,
    /// Directories granted read-only and read-write.
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// Outbound TCP granted.
    pub connect: Vec<String>,
    /// Serial ports granted.
    pub serial: Vec<String>,
    /// Why the last deployment or load failed, if it did.
    pub last_error: Option<ErrorBody>,
    /// Whether the node answered now.
    pub live: bool,
}

/// Does a status value agree with the key it was found under (`<node>.<agent>`)?
fn status_matches_key(key: &str, status: &DeployStatus) -> bool {
    key.split_once('.')
        .is_some_and(|(node, agent)| node == status.node_id && agent == status.agent)
}

/// What `node` answers on `ctl.<node>.agents` within 2 s a page: its agents with
/// their live counters (every page of them), or `None` when it does not answer (or
/// not with a list).
pub async fn live_agents(
    client: &Client,
    subjects: &Subjects,
    node: &str,
) -> Option<Vec<AgentInfo>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = match &after {
            Some(a) => serde_json::to_vec(&serde_json::json!({ "after": a })).ok()?,
            None => Vec::new(),
        };
        let request = client.request(subjects.agents(node), body.into());
        let msg = tokio::time::timeout(Duration::from_secs(2), request)
            .await
            .ok()?
            .ok()?;
        match serde_json::from_slice::<ControlReply<Vec<AgentInfo>>>(&msg.payload) {
            Ok(ControlReply::Ok(infos)) => all.extend(infos),
            _ => return None,
        }
        let next = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::protocol::AGENTS_NEXT_HEADER))
            .map(|v| v.as_str().to_owned());
        match next {
            // A node that repeats itself would never end: only forward.
            Some(n) if after.as_ref().is_none_or(|a| n > *a) => after = Some(n),
            _ => return Some(all),
        }
    }
}

/// Every agent of every node (or of `only` one node): the statuses nodes reported in
/// `EDGELEAF_STATUS`, joined with the live counters of the online nodes that answer
/// `ctl.<node>.agents` within 2 s. Sorted by node, then agent.
pub async fn agents(
    client: &Client,
    js: &Context,
    subjects: &Subjects,
    only: Option<&str>,
) -> Result<Vec<AgentRow>> {
    let mut rows: BTreeMap<(String, String), AgentRow> = BTreeMap::new();
    let mut asked: BTreeSet<String> = BTreeSet::new();

    match statuses(js, only).await {
        Err(e) => tracing::warn!("deployment statuses not read: {e:#}"),
        Ok(found) => {
            for s in found {
                asked.insert(s.node_id.clone());
                rows.insert(
                    (s.node_id.clone(), s.agent.clone()),
                    AgentRow {
                        state: s.state,
                        version: s.running_version,
                        digest: s.digest,
                        last_error: s.error,
                        node_id: s.node_id,
                        agent: s.agent,
                        ..Default::default()
                    },
                );
            }
        }
    }
    match only {
        Some(n) => {
            asked.insert(n.to_owned());
        }
        None => {
            let fleet = nodes(js, subjects).await.unwrap_or_default();
            asked.extend(
                fleet
                    .into_iter()
                    .filter(|r| r.status == NodeStatus::Online)
                    .map(|r| r.node_id),
            );
        }
    }
    let live = futures::future::join_all(
        asked
            .iter()
            .map(|node| async move { (node.clone(), live_agents(client, subjects, node).await) }),
    )
    .await;
    for (node, infos) in live {
        for info in infos.into_iter().flatten() {
            let row = rows
                .entry((node.clone(), info.name.clone()))
                .or_insert_with(|| AgentRow {
                    node_id: node.clone(),
                    agent: info.name.clone(),
                    ..Default::default()
                });
            row.live = true;
            row.state = info.state;
            row.digest = info.digest.or(row.digest.take());
            row.triggers = info.triggers;
            row.schedule = info.schedule;
            row.next_run = info.next_run;
            row.last_run = info.last_run;
            row.invocations = Some(info.invocations);
            row.failures = Some(info.failures);
            row.skipped_ticks = Some(info.skipped_ticks);
            row.refused_busy = Some(info.refused_busy);
            row.instances = Some(info.instances);
            row.warm_started = Some(info.warm_started);
            row.read = info.read;
            row.write = info.write;
            row.connect = info.connect;
            row.serial = info.serial;
            if let Some(e) = info.error {
                row.last_error = Some(ErrorBody::new("load_failed", e));
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// A message as a stream stored it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The stream's sequence.
    pub seq: u64,
    /// When the hub received it (its clock, never a node's).
    pub received: SystemTime,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// Stream positions [`recent`] looks back at most: a bound on what one read costs
/// the hub, whatever the stream holds.
const RECENT_SCAN: u64 = 50_000;

/// The newest `limit` messages on `filter` that `stream` received in the last
/// `window`, oldest first; only the last [`RECENT_SCAN`] messages of the stream are
/// looked at.
pub async fn recent(
    js: &Context,
    stream: &str,
    filter: String,
    window: Duration,
    limit: usize,
) -> Result<Vec<Stored>> {
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("no stream {stream} on the hub; run `edgeleaf hub init`"))?;
    let state = s.info().await?.state.clone();
    if state.messages == 0 || limit == 0 {
        return Ok(Vec::new());
    }
    let start = state
        .first_sequence
        .max(state.last_sequence.saturating_sub(RECENT_SCAN))
        .max(1);
    let consumer = super::patiently(|| {
        s.create_consumer(OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
    })
    .await
    .with_context(|| format!("cannot read stream {stream}"))?;
    let mut kept = std::collections::VecDeque::with_capacity(limit.min(1024));
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let since = SystemTime::now() - window;
    let mut messages = consumer.messages().await?;
    loop {
        let msg = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .with_context(|| format!("timed out reading stream {stream}"))?;
        let Some(msg) = msg else { break };
        let msg = msg.with_context(|| format!("cannot read stream {stream}"))?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (pending, received) = (info.pending, SystemTime::from(info.published));
        if received >= since {
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(Stored {
                seq: info.stream_sequence,
                received,
                subject: msg.subject.to_string(),
                payload: msg.payload.clone(),
            });
        }
        if pending == 0 {
            break;
        }
    }
    Ok(kept.into())
}
