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
        let (body, next) = match is_ping {
            true => (answer_ping(&state, &msg), None),
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
        let Some(body) = body else { continue };
        let sent = match next {
            Some(after) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(NEXT_PAGE_HEADER, after.as_str());
                client
                    .publish_with_headers(reply_to, headers, body.into())
                    .await
            }
            None => client.publish(reply_to, body.into()).await,
        };
        if let Err(e) = sent {
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

/// The reply body, and for a page of agents with more after it, the last name on it.
fn answer_control(state: &NodeState, msg: &Message) -> (Option<Vec<u8>>, Option<String>) {
    let request = msg.subject.rsplit('.').next().unwrap_or_default();
    match request {
        "info" => (json(&ControlReply::Ok(state.info())), None),
        "agents" => match AgentsPage::parse(&msg.payload) {
            Ok(page) => {
                let (rows, next) = page.of(state.agents.infos());
                (json(&ControlReply::Ok(rows)), next)
            }
            Err(e) => (
                json(&ControlReply::<()>::Error(ErrorBody::new(
                    "bad_request",
                    format!("agents body must be empty or {{\"after\": \"<agent name>\"}}: {e}"),
                ))),
                None,
            ),
        },
        "outbox" => (json(&ControlReply::Ok(state.outbox.stats())), None),
        other => (
            json(&ControlReply::<()>::Error(ErrorBody::new(
                "not_found",
                format!(
                    "unknown control request {other:?} (this node answers: info, agents, outbox)"
                ),
            ))),
            None,
        ),
    }
}

/// Rows of one `ctl.<node>.agents` reply: a node with many agents answers in pages
/// of at most this many bytes of rows (far below NATS' 1 MiB default max_payload),
/// and names the last agent of a page that has more after it in the header
/// [`NEXT_PAGE_HEADER`]; the next request asks for the agents `after` it.
const AGENTS_PAGE_BYTES: usize = 128 * 1024;

pub use crate::protocol::AGENTS_NEXT_HEADER as NEXT_PAGE_HEADER;

/// Which page of the agents a request asks for: an empty body, the first.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsPage {
    /// Agents whose name sorts after this one.
    #[serde(default)]
    after: Option<String>,
}

impl AgentsPage {
    fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
    }

    /// This page's rows of `all` (sorted by name), and the name to continue after.
    fn of(
        &self,
        all: Vec<crate::protocol::AgentInfo>,
    ) -> (Vec<crate::protocol::AgentInfo>, Option<String>) {
        let mut rows = Vec::new();
        let mut bytes = 0;
        let mut rest = all
            .into_iter()
            .filter(|r| self.after.as_ref().is_none_or(|a| r.name > *a))
            .peekable();
        while let Some(row) = rest.next_if(|row| {
            let size = serde_json::to_vec(row).map(|v| v.len()).unwrap_or(0) + 1;
            // At least one row per page, whatever its size.
            (rows.is_empty() || bytes + size <= AGENTS_PAGE_BYTES) && {
                bytes += size;
                true
            }
        }) {
            rows.push(row);
        }
        let next = rest
            .peek()
            .is_some()
            .then(|| rows.last().map(|r| r.name.clone()))
            .flatten();
        (rows, next)
    }
}

fn json<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(value)
        .inspect_err(|e| tracing::error!("control reply not serializable: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AgentInfo;

    fn agent(name: &str, triggers: usize) -> AgentInfo {
        AgentInfo {
            name: name.to_owned(),
            state: "running".into(),
            kind: None,
            digest: None,
            triggers: vec!["t".repeat(1000); triggers],
            invocations: 0,
            failures: 0,
            refused_busy: 0,
            log_dropped: 0,
            schedule: vec![],
            next_run: None,
            last_run: None,
            skipped_ticks: 0,
            read: vec![],
            write: vec![],
            connect: vec![],
            serial: vec![],
            capabilities: vec![],
            agent_type: None,
            compiled_from_cache: None,
            instances: Default::default(),
            warm_started: 0,
            error: None,
        }
    }

    #[test]
    fn agents_come_in_pages_that_continue_where_the_last_ended() {
        let all: Vec<AgentInfo> = (0..300).map(|i| agent(&format!("a{i:03}"), 1)).collect();
        let mut after = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (rows, next) = AgentsPage {
                after: after.clone(),
            }
            .of(all.clone());
            let bytes = serde_json::to_vec(&rows).unwrap().len();
            assert!(bytes <= AGENTS_PAGE_BYTES + 2, "{bytes}");
            seen.extend(rows.into_iter().map(|r| r.name));
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert!(pages >= 3, "{pages} pages");
        let names: Vec<String> = all.into_iter().map(|r| r.name).collect();
        assert_eq!(seen, names);
        // A few agents: one page, no continuation; a row larger than a page still goes.
        let (rows, next) = AgentsPage::default().of(vec![agent("x", 200), agent("y", 1)]);
        assert_eq!((rows.len(), next.as_deref()), (1, Some("x")));
        assert!(AgentsPage::parse(b"").unwrap().after.is_none());
        assert_eq!(
            AgentsPage::parse(br#"{"after":"b"}"#)
                .unwrap()
                .after
                .as_deref(),
            Some("b")
        );
        assert!(AgentsPage::parse(b"{\"page\": 2}").is_err());
    }
}
