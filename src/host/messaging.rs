//! `messaging` import: publish, only to the subjects the agent's spec allows.

use async_nats::Client;

use crate::protocol::{is_valid_pattern, subject_matches};
use crate::runtime::AgentError;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::messaging::Host;

/// Largest message an agent may publish, bytes.
pub const MAX_PUBLISH: usize = 1 << 20;

pub struct Publisher {
    /// `None` when the agent runs without NATS (in-process benchmarks).
    client: Option<Client>,
    /// The spec's `allow_publish` patterns, checked at load time.
    allowed: Vec<String>,
    agent: String,
}

impl Publisher {
    pub fn new(client: Option<Client>, allowed: Vec<String>, agent: &str) -> Self {
        Self {
            client,
            allowed,
            agent: agent.to_owned(),
        }
    }

    /// Publishes if the spec allows `subject`; a refusal has code `forbidden`.
    pub async fn publish(&self, subject: String, payload: Vec<u8>) -> Result<(), AgentError> {
        let bad = |m: String| AgentError::new("bad_request", m);
        if !is_valid_pattern(&subject) || subject.contains(['*', '>']) {
            return Err(bad(format!(
                "{subject:?} is not a valid subject to publish to"
            )));
        }
        if !self.allowed.iter().any(|p| subject_matches(p, &subject)) {
            tracing::warn!(agent = %self.agent, %subject, "publish refused: not in allow_publish");
            return Err(AgentError::new(
                "forbidden",
                format!(
                    "agent {} may not publish to {subject:?} (allowed: {})",
                    self.agent,
                    if self.allowed.is_empty() {
                        "nothing".to_owned()
                    } else {
                        self.allowed.join(", ")
                    }
                ),
            ));
        }
        if payload.len() > MAX_PUBLISH {
            return Err(bad(format!(
                "message of {} bytes exceeds {MAX_PUBLISH} bytes",
                payload.len()
            )));
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| AgentError::new("nats", "no NATS connection"))?;
        client
            .publish(subject, payload.into())
            .await
            .map_err(|e| AgentError::new("nats", format!("publish failed: {e}")))
    }
}

impl Host for ComponentState {
    /// A forbidden publish is remembered, so an invocation that then fails is
    /// reported as `forbidden`.
    async fn publish(&mut self, subject: String, payload: Vec<u8>) -> Result<(), String> {
        self.caps
            .messaging
            .publish(subject, payload)
            .await
            .map_err(|e| {
                let message = format!("{}: {}", e.code, e.message);
                if e.code == "forbidden" {
                    self.refused = Some(e);
                }
                message
            })
    }
}
