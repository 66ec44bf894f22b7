//! `log` import: an agent's log lines go to the node's tracing output and to
//! `<prefix>.log.<node>.<agent>`.

use std::time::SystemTime;

use async_nats::Client;

use crate::protocol::LogLine;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::log::{Host, Level};

/// Longest log line kept, bytes; longer ones are cut.
pub const MAX_LINE: usize = 4096;

pub struct AgentLog {
    client: Option<Client>,
    /// `<prefix>.log.<node>.<agent>`.
    subject: String,
    node_id: String,
    agent: String,
}

impl AgentLog {
    pub fn new(client: Option<Client>, subject: String, node_id: &str, agent: &str) -> Self {
        Self {
            client,
            subject,
            node_id: node_id.to_owned(),
            agent: agent.to_owned(),
        }
    }

    /// Logs each non-empty line of a guest's stderr at `level`.
    pub async fn stderr(&self, level: &str, text: &[u8]) {
        for line in String::from_utf8_lossy(text)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            self.line(level, line).await;
        }
    }

    /// Logs one line at `level` (`trace` … `error`).
    pub async fn line(&self, level: &str, message: &str) {
        let mut message = message.to_owned();
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        match level {
            "error" => tracing::error!(agent = %self.agent, "{message}"),
            "warn" => tracing::warn!(agent = %self.agent, "{message}"),
            "info" => tracing::info!(agent = %self.agent, "{message}"),
            "debug" => tracing::debug!(agent = %self.agent, "{message}"),
            _ => tracing::trace!(agent = %self.agent, "{message}"),
        }
        let Some(client) = &self.client else { return };
        let line = LogLine {
            node_id: self.node_id.clone(),
            agent: self.agent.clone(),
            level: level.to_owned(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            message,
        };
        if let Ok(body) = serde_json::to_vec(&line) {
            let _ = client.publish(self.subject.clone(), body.into()).await;
        }
    }
}

impl Host for ComponentState {
    async fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.caps.log.line(level, &message).await;
    }
}
