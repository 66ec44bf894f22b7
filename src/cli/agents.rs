//! `edgeleaf agents [--node ID] [--json]`: per node and agent, what the nodes
//! reported in `EDGELEAF_STATUS` (version, digest, state, last error) joined with
//! the live counters of the nodes that answer `ctl.<node>.agents` now.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use serde::Serialize;

use super::ConnOpts;
use crate::hub;
use crate::protocol::{
    AgentInfo, ControlReply, DeployStatus, ErrorBody, NodeStatus, STATUS_BUCKET,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

/// One row: one agent on one node.
#[derive(Debug, Default, Serialize)]
struct Row {
    node_id: String,
    agent: String,
    /// Live state when the node answered (`running`, `backoff`, `failed`), else the
    /// last reported deployment state, else `unknown`.
    state: String,
    /// Deployed version (agents from the node's own config have none).
    version: Option<u64>,
    digest: Option<String>,
    triggers: Vec<String>,
    /// Timer entries, when the node answered and the agent has a timer.
    schedule: Vec<String>,
    next_run: Option<String>,
    last_run: Option<String>,
    /// Live counters, when the node answered.
    invocations: Option<u64>,
    failures: Option<u64>,
    skipped_ticks: Option<u64>,
    /// Messages answered `busy` unrun (the agent's queue was full).
    refused_busy: Option<u64>,
    /// `fresh` or `warm`, and for warm the instances started so far.
    instances: Option<crate::protocol::Instances>,
    warm_started: Option<u64>,
    /// Directories granted read-only and read-write.
    read: Vec<String>,
    write: Vec<String>,
    /// Outbound TCP granted.
    connect: Vec<String>,
    /// Serial ports granted.
    serial: Vec<String>,
    /// Why the last deployment or load failed, if it did.
    last_error: Option<ErrorBody>,
    /// Whether the node answered now.
    live: bool,
}

/// Does a status value agree with the key it was found under (`<node>.<agent>`)?
fn status_matches_key(key: &str, status: &DeployStatus) -> bool {
    key.split_once('.')
        .is_some_and(|(node, agent)| node == status.node_id && agent == status.agent)
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut nodes: BTreeSet<String> = BTreeSet::new();

    if let Ok(status) = js.get_key_value(STATUS_BUCKET).await
        && let Ok(mut keys) = status.keys().await
    {
        while let Some(Ok(key)) = keys.next().await {
            let Ok(Some(raw)) = status.get(&key).await else {
                continue;
            };
            let Ok(s) = serde_json::from_slice::<DeployStatus>(&raw) else {
                continue;
            };
            // The key says whose status it is (a node may write only its own keys
            // under `hub accounts`); a value naming another node or agent is forged.
            if !status_matches_key(&key, &s) {
                eprintln!(
                    "warning: status {key} claims to be {}.{}; ignored",
                    s.node_id, s.agent
                );
                continue;
            }
            if args.node.as_ref().is_some_and(|n| *n != s.node_id) {
                continue;
            }
            nodes.insert(s.node_id.clone());
            rows.insert(
                (s.node_id.clone(), s.agent.clone()),
                Row {
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
    match &args.node {
        Some(n) => {
            nodes.insert(n.clone());
        }
        None => {
            let fleet = hub::fleet::nodes(&js, &conn.subjects())
                .await
                .unwrap_or_default();
            nodes.extend(
                fleet
                    .into_iter()
                    .filter(|r| r.status == NodeStatus::Online)
                    .map(|r| r.node_id),
            );
        }
    }
    let subjects = conn.subjects();
    let live = futures::future::join_all(nodes.iter().map(|node| {
        let (client, subject) = (client.clone(), subjects.agents(node));
        async move {
            let reply =
                tokio::time::timeout(Duration::from_secs(2), client.request(subject, "".into()))
                    .await;
            let infos = match reply {
                Ok(Ok(msg)) => {
                    match serde_json::from_slice::<ControlReply<Vec<AgentInfo>>>(&msg.payload) {
                        Ok(ControlReply::Ok(infos)) => Some(infos),
                        _ => None,
                    }
                }
                _ => None,
            };
            (node.clone(), infos)
        }
    }))
    .await;
    for (node, infos) in live {
        for info in infos.into_iter().flatten() {
            let row = rows
                .entry((node.clone(), info.name.clone()))
                .or_insert_with(|| Row {
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
    let rows: Vec<Row> = rows.into_values().collect();
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no agents");
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<8} {:>7} {:<12} {:>11} {:>8}  TRIGGERS, SCHEDULE / LAST ERROR",
        "NODE", "AGENT", "STATE", "VERSION", "DIGEST", "INVOCATIONS", "FAILURES"
    );
    for r in &rows {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<16} {:<8} {:>7} {:<12} {:>11} {:>8}  {}",
            r.node_id,
            r.agent,
            r.state,
            opt(r.version),
            r.digest
                .as_deref()
                .map(|d| &d[..d.len().min(12)])
                .unwrap_or("-"),
            opt(r.invocations),
            opt(r.failures),
            match &r.last_error {
                Some(e) => format!("{}: {}", e.code, e.message),
                None => r
                    .triggers
                    .iter()
                    .chain(&r.schedule)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        );
    }
    Ok(())
}
