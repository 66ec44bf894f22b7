//! Discovery and workloads, as the design edgeleaf follows describes them: the
//! node answers `discovery.query.capability.<cap>` with the cards of its agents
//! that have `<cap>`, announces each running agent's card on
//! `discovery.agents.<type>.<node>.<agent>` (every heartbeat, on every change, and
//! an empty message when the agent stops), and takes the workloads sent to its
//! location on `edge.<location>.workloads` (one queue group per location, so each
//! runs once there), publishing each result on `results.<task_id>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::{Client, Message};
use futures::StreamExt;

use super::NodeState;
use super::agents::CardContext;
use crate::protocol::{DiscoverySubjects, ErrorBody, Workload, WorkloadResult, is_task_id};
use crate::shutdown::Shutdown;

/// Workloads running at once on this node (each agent's own concurrency limit
/// applies within); more wait in the subscription.
const MAX_WORKLOADS: usize = 1024;

pub(super) async fn run(state: Arc<NodeState>, client: Client, mut shutdown: Shutdown) {
    let subjects = state.config.discovery.subjects();
    let location = state.config.location().to_owned();
    let node_id = state.config.node.id.clone();
    let context = CardContext {
        location: location.clone(),
        tags: state.config.node.tags.clone(),
        ttl_s: (state.config.heartbeat.interval.as_secs_f64() * 3.0).ceil() as u64,
    };
    let queries = client.subscribe(subjects.queries()).await;
    let workloads = client
        .queue_subscribe(
            subjects.workloads(&location),
            subjects.workload_group(&location),
        )
        .await;
    let (mut queries, mut workloads) = match (queries, workloads) {
        (Ok(q), Ok(w)) => (q, w),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("discovery: cannot subscribe: {e}");
            // Without its subscriptions the node would be half there: end, and
            // let the node stop (see `node::run`).
            return;
        }
    };
    tracing::info!(%location, workloads = %subjects.workloads(&location), "discovery and workloads on");
    let mut changes = state.agents.changes();
    let mut ticker = tokio::time::interval(state.config.heartbeat.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let running = Arc::new(tokio::sync::Semaphore::new(MAX_WORKLOADS));
    let mut announced = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(msg) = queries.next() => answer(&state, &client, &context, msg).await,
            Some(msg) = workloads.next() => {
                let Ok(slot) = running.clone().acquire_owned().await else { break };
                let (state, client, subjects) = (state.clone(), client.clone(), subjects.clone());
                tokio::spawn(async move {
                    work(&state, &client, &subjects, msg).await;
                    drop(slot);
                });
            }
            Ok(()) = changes.changed() => {
                announce(&state, &client, &subjects, &context, &node_id, &mut announced).await;
            }
            _ = ticker.tick() => {
                announce(&state, &client, &subjects, &context, &node_id, &mut announced).await;
            }
        }
    }
    // The node is stopping, and its agents with it.
    for subject in announced.into_values() {
        let _ = client.publish(subject, bytes::Bytes::new()).await;
    }
    let _ = client.flush().await;
}

/// Answers a capability query with the matching cards; silent when none match, so
/// a plain request gets the first node that has one.
async fn answer(state: &NodeState, client: &Client, context: &CardContext, msg: Message) {
    let Some(reply) = msg.reply else { return };
    let Some(capability) = msg.subject.rsplit('.').next() else {
        return;
    };
    let cards = state.agents.cards(context, Some(capability));
    if cards.is_empty() {
        return;
    }
    match serde_json::to_vec(&cards) {
        Ok(body) => {
            if let Err(e) = client.publish(reply, body.into()).await {
                tracing::warn!("discovery: answer not sent: {e}");
            }
        }
        Err(e) => tracing::error!("discovery: cards not serializable: {e}"),
    }
}

/// Publishes every running agent's card, and an empty message for each agent
/// announced before that runs no more (or under another type).
async fn announce(
    state: &NodeState,
    client: &Client,
    subjects: &DiscoverySubjects,
    context: &CardContext,
    node_id: &str,
    announced: &mut BTreeMap<String, String>,
) {
    let cards = state.agents.cards(context, None);
    let mut now = BTreeMap::new();
    for card in cards {
        let subject = subjects.card(&card.agent_type, node_id, &card.name);
        match serde_json::to_vec(&card) {
            Ok(body) => {
                let _ = client.publish(subject.clone(), body.into()).await;
            }
            Err(e) => tracing::error!("discovery: card not serializable: {e}"),
        }
        now.insert(card.name, subject);
    }
    for (name, subject) in announced.iter() {
        if now.get(name) != Some(subject) {
            let _ = client.publish(subject.clone(), bytes::Bytes::new()).await;
        }
    }
    *announced = now;
}

/// Runs one workload and reports it on `results.<task_id>` and to the reply
/// subject, if any. A malformed workload gets an `invalid_request` reply (there is
/// no task id to publish it under).
async fn work(state: &NodeState, client: &Client, subjects: &DiscoverySubjects, msg: Message) {
    let node = state.config.node.id.clone();
    let result = match serde_json::from_slice::<Workload>(&msg.payload) {
        Err(e) => invalid(
            &node,
            "",
            format!("workload is not valid JSON of the expected shape: {e}"),
        ),
        Ok(w) if !is_task_id(&w.task_id) => invalid(
            &node,
            &w.task_id,
            format!(
                "task_id {:?} cannot name a subject (dot-separated tokens of letters, digits, '-' and '_', at most 256 bytes)",
                w.task_id
            ),
        ),
        Ok(w) if !crate::protocol::is_token(&w.capability) => invalid(
            &node,
            &w.task_id,
            format!("capability {:?} is not a single NATS token", w.capability),
        ),
        Ok(w) => state.agents.run_workload(msg.subject.to_string(), &w).await,
    };
    let body: bytes::Bytes = match serde_json::to_vec(&result) {
        Ok(body) => body.into(),
        Err(e) => {
            tracing::error!("workload result not serializable: {e}");
            return;
        }
    };
    if result
        .error
        .as_ref()
        .is_some_and(|e| e.code == "invalid_request")
    {
        tracing::warn!(task_id = %result.task_id, "workload refused: {}", result.error.as_ref().map_or("", |e| e.message.as_str()));
    } else if let Err(e) = client
        .publish(subjects.result(&result.task_id), body.clone())
        .await
    {
        tracing::warn!(task_id = %result.task_id, "workload result not published: {e}");
    }
    if let Some(reply) = msg.reply
        && let Err(e) = client.publish(reply, body).await
    {
        tracing::warn!(task_id = %result.task_id, "workload reply not sent: {e}");
    }
}

fn invalid(node: &str, task_id: &str, message: String) -> WorkloadResult {
    WorkloadResult {
        task_id: task_id.to_owned(),
        node: node.to_owned(),
        error: Some(ErrorBody::new("invalid_request", message)),
        ..Default::default()
    }
}
