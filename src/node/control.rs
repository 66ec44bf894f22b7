//! Control requests: `<prefix>.ctl.ping` (every node whose tags match answers with
//! its NodeInfo) and `<prefix>.ctl.<node>.<request>` (`{"ok": …}` / `{"error": …}`).

use std::sync::Arc;

use async_nats::{Client, Message};
use futures::StreamExt;
use serde::Serialize;

use super::NodeState;
use crate::protocol::{ControlReply, ErrorBody, PingRequest};
use crate::shutdown::Shutdown;

pub(super) async fn run(state: Arc<NodeState>, client: Client, mut shutdown: Shutdown) {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .inspect_err(|e| tracing::error!("cannot subscribe to {subject}: {e}"))
        }
    };
    let (Ok(mut ping), Ok(mut ctl)) = (
        subscribe(state.subjects.ping()).await,
        subscribe(state.subjects.control(&state.config.node.id)).await,
    ) else {
        return;
    };
    loop {
        let msg = tokio::select! {
            _ = shutdown.recv() => return,
            m = ping.next() => m.map(|m| (m, true)),
            m = ctl.next() => m.map(|m| (m, false)),
        };
        let Some((msg, is_ping)) = msg else { return };
        let Some(reply_to) = msg.reply.clone() else {
            continue; // a control message nobody waits for needs no answer
        };
        let started = std::time::Instant::now();
        let body = match is_ping {
            true => answer_ping(&state, &msg),
            false => answer_control(&state, &msg),
        };
        let counters = &state.control_counters;
        let counter = match msg.subject.rsplit('.').next() {
            _ if is_ping => Some(&counters.ping),
            Some("info") => Some(&counters.info),
            Some("agents") => Some(&counters.agents),
            Some("outbox") => Some(&counters.outbox),
            _ => None,
        };
        // A ping whose tags do not match goes unanswered on purpose: not an error.
        if let Some(counter) = counter {
            counter.count(started, is_ping || body.is_some());
        }
        if let Some(body) = body
            && let Err(e) = client.publish(reply_to, body.into()).await
        {
            tracing::warn!("control reply not sent: {e}");
        }
    }
}

fn answer_ping(state: &NodeState, msg: &Message) -> Option<Vec<u8>> {
    match PingRequest::parse(&msg.payload) {
        Ok(req) if req.matches(&state.config.node.tags) => json(&state.info()),
        Ok(_) => None,
        Err(e) => json(&ControlReply::<()>::Error(ErrorBody::new(
            "bad_request",
            format!("ping body must be empty or {{\"tags\": {{\"k\": \"v\"}}}}: {e}"),
        ))),
    }
}

fn answer_control(state: &NodeState, msg: &Message) -> Option<Vec<u8>> {
    let request = msg.subject.rsplit('.').next().unwrap_or_default();
    match request {
        "info" => json(&ControlReply::Ok(state.info())),
        "agents" => json(&ControlReply::Ok(state.agents.infos())),
        "outbox" => json(&ControlReply::Ok(state.outbox.stats())),
        other => json(&ControlReply::<()>::Error(ErrorBody::new(
            "not_found",
            format!("unknown control request {other:?} (this node answers: info, agents, outbox)"),
        ))),
    }
}

fn json<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(value)
        .inspect_err(|e| tracing::error!("control reply not serializable: {e}"))
        .ok()
}
