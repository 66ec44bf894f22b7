//! The node in the NATS services API ("micro"): `$SRV.PING|INFO|STATS`, with or
//! without `.edgeleaf-node` and `.edgeleaf-node.<node id>` (the node id is the
//! service id), answered in the `io.nats.micro.v1` shapes (async-nats's own types),
//! so `nats micro ls/info/stats edgeleaf-node` list the fleet.
//!
//! The endpoints are the node's control subjects and each running agent's direct
//! subject. The node answers these itself rather than through async-nats's
//! `Service`: that would subscribe to the agents' subjects a second time (every
//! request would run twice) and count only the requests answered through it,
//! while an agent also runs from triggers, timers and workloads. An agent
//! endpoint's counts are all of the agent's invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::service::{self, endpoint, error::Error as ServiceError};
use async_nats::{Client, Message};
use futures::StreamExt;

use super::NodeState;
use crate::shutdown::Shutdown;

/// The service name every node registers under.
pub const SERVICE_NAME: &str = "edgeleaf-node";

/// Requests, errors and time of one control endpoint.
#[derive(Default)]
pub struct Counter {
    requests: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

impl Counter {
    /// Counts one request that began at `started`.
    pub fn count(&self, started: Instant, ok: bool) {
        self.requests.fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    }
}

/// The control endpoints' counters (see `node::control`).
#[derive(Default)]
pub struct ControlCounters {
    pub ping: Counter,
    pub info: Counter,
    pub agents: Counter,
    pub outbox: Counter,
}

pub(super) async fn run(state: Arc<NodeState>, client: Client, mut shutdown: Shutdown) {
    let id = state.config.node.id.clone();
    let mut subs = Vec::new();
    for subject in [
        "$SRV.*".to_owned(),
        format!("$SRV.*.{SERVICE_NAME}"),
        format!("$SRV.*.{SERVICE_NAME}.{id}"),
    ] {
        match client.subscribe(subject.clone()).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                tracing::error!("cannot subscribe to {subject}: {e}");
                return;
            }
        }
    }
    let started = async_nats::datetime::DateTime::now_utc();
    let mut requests = futures::stream::select_all(subs);
    loop {
        let msg = tokio::select! {
            _ = shutdown.recv() => return,
            m = requests.next() => m,
        };
        let Some(msg) = msg else { return };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        if let Some(body) = answer(&state, &msg, started)
            && let Err(e) = client.publish(reply, body.into()).await
        {
            tracing::warn!("services API reply not sent: {e}");
        }
    }
}

fn answer(
    state: &NodeState,
    msg: &Message,
    started: async_nats::datetime::DateTime,
) -> Option<Vec<u8>> {
    let verb = msg.subject.split('.').nth(1)?;
    let c = &state.config;
    let metadata = metadata(state);
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let body = match verb {
        "PING" => serde_json::to_vec(&service::PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name: SERVICE_NAME.into(),
            id: c.node.id.clone(),
            version,
            metadata,
        }),
        "INFO" => serde_json::to_vec(&service::Info {
            kind: "io.nats.micro.v1.info_response".into(),
            name: SERVICE_NAME.into(),
            id: c.node.id.clone(),
            description: format!("edgeleaf node {} at {}", c.node.id, c.location()),
            version,
            metadata,
            endpoints: endpoints(state)
                .into_iter()
                .map(|e| endpoint::Info {
                    name: e.name,
                    subject: e.subject,
                    queue_group: String::new(),
                    metadata: e.metadata,
                })
                .collect(),
        }),
        "STATS" => serde_json::to_vec(&service::Stats {
            kind: "io.nats.micro.v1.stats_response".into(),
            name: SERVICE_NAME.into(),
            id: c.node.id.clone(),
            version,
            started,
            endpoints: endpoints(state)
                .into_iter()
                .map(|e| endpoint::Stats {
                    name: e.name,
                    subject: e.subject,
                    requests: e.requests as usize,
                    errors: e.errors as usize,
                    processing_time: e.busy,
                    average_processing_time: e
                        .busy
                        .checked_div(e.requests.max(1) as u32)
                        .unwrap_or_default(),
                    last_error: e
                        .last_error
                        .map(|status| ServiceError { status, code: 500 }),
                    data: None,
                    queue_group: String::new(),
                })
                .collect(),
        }),
        _ => return None,
    };
    body.inspect_err(|e| tracing::error!("services API reply not serializable: {e}"))
        .ok()
}

fn metadata(state: &NodeState) -> HashMap<String, String> {
    let c = &state.config;
    HashMap::from([
        ("node_id".to_owned(), c.node.id.clone()),
        ("location".to_owned(), c.location().to_owned()),
        ("arch".to_owned(), std::env::consts::ARCH.to_owned()),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("tags".to_owned(), crate::cli::tags_text(&c.node.tags)),
    ])
}

/// One endpoint, with what INFO and STATS say of it.
struct Row {
    name: String,
    subject: String,
    metadata: HashMap<String, String>,
    requests: u64,
    errors: u64,
    busy: Duration,
    last_error: Option<String>,
}

fn endpoints(state: &NodeState) -> Vec<Row> {
    let subjects = &state.subjects;
    let id = &state.config.node.id;
    let counters = &state.control_counters;
    let control = [
        ("ctl-ping", subjects.ping(), &counters.ping),
        ("ctl-info", subjects.info(id), &counters.info),
        ("ctl-agents", subjects.agents(id), &counters.agents),
        ("ctl-outbox", subjects.outbox(id), &counters.outbox),
    ];
    let mut rows: Vec<Row> = control
        .into_iter()
        .map(|(name, subject, counter)| Row {
            name: name.to_owned(),
            subject,
            metadata: HashMap::from([("kind".to_owned(), "control".to_owned())]),
            requests: counter.requests.load(Relaxed),
            errors: counter.errors.load(Relaxed),
            busy: Duration::from_nanos(counter.nanos.load(Relaxed)),
            last_error: None,
        })
        .collect();
    rows.extend(state.agents.endpoint_stats().into_iter().map(|e| Row {
        metadata: HashMap::from([
            ("kind".to_owned(), "agent".to_owned()),
            ("type".to_owned(), e.agent_type),
            ("capabilities".to_owned(), e.capabilities.join(",")),
        ]),
        name: e.name,
        subject: e.subject,
        requests: e.requests,
        errors: e.errors,
        busy: e.busy,
        last_error: e.last_error,
    }));
    rows
}
