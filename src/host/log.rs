//! `log` import: an agent's log lines go to the node's tracing output and to
//! `<prefix>.log.<node>.<agent>`: on a node through its log store (kept while the
//! hub is unreachable, forwarded in order to the hub's `EDGELEAF_LOGS` stream), in
//! `run-agent` straight to NATS. The node's own warnings and errors go the same
//! way, as agent `_node` ([`NodeLogLayer`]).
//!
//! An agent does not choose what its lines do to the node's log: control characters
//! (newlines, carriage returns, terminal escapes) are escaped, so one line stays one
//! line, and lines are bounded per invocation and per agent per second. What is
//! dropped is counted (`log_dropped` in `agents`) and summarised in one warning at
//! most once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::Client;

use crate::protocol::LogLine;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::log::{Host, Level};
use crate::store::outbox::Outbox;

/// Longest log line kept, bytes; longer ones are cut.
pub const MAX_LINE: usize = 4096;
/// Lines one invocation may log; the rest are dropped and counted.
pub const MAX_LINES_PER_INVOCATION: u32 = 100;
/// Bytes one invocation may log.
pub const MAX_BYTES_PER_INVOCATION: usize = 64 << 10;
/// Lines one agent may log per second, across its instances.
pub const MAX_LINES_PER_SECOND: u32 = 200;
/// Bytes one agent may log per second.
pub const MAX_BYTES_PER_SECOND: usize = 256 << 10;

/// What one invocation has logged so far.
#[derive(Debug, Default)]
pub struct InvocationLog {
    lines: u32,
    bytes: usize,
    dropped: u64,
}

/// The agent's current one-second window.
struct Window {
    started: Instant,
    lines: u32,
    bytes: usize,
}

/// Where log lines go.
#[derive(Clone)]
pub enum LogSink {
    /// The node's log store, forwarded to the hub.
    Store(Arc<Outbox>),
    /// Straight to NATS, fire and forget (`run-agent`).
    Direct(Client),
}

pub struct AgentLog {
    sink: Option<LogSink>,
    /// `<prefix>.log.<node>.<agent>`.
    subject: String,
    node_id: String,
    agent: String,
    window: Mutex<Window>,
    /// Lines dropped since the agent was loaded.
    dropped: AtomicU64,
    /// Dropped lines not yet reported in a warning, and when the last one went out.
    unreported: Mutex<(u64, Option<Instant>)>,
}

impl AgentLog {
    pub fn new(sink: Option<LogSink>, subject: String, node_id: &str, agent: &str) -> Self {
        Self {
            sink,
            subject,
            node_id: node_id.to_owned(),
            agent: agent.to_owned(),
            window: Mutex::new(Window {
                started: Instant::now(),
                lines: 0,
                bytes: 0,
            }),
            dropped: AtomicU64::new(0),
            unreported: Mutex::new((0, None)),
        }
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Lines dropped since the agent was loaded.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Logs each non-empty line of a guest's stderr at `level`.
    pub async fn stderr(&self, inv: &mut InvocationLog, level: &str, text: &[u8]) {
        for line in String::from_utf8_lossy(text)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            self.line(inv, level, line).await;
        }
    }

    /// Logs one line at `level` (`trace` … `error`), if the budgets allow.
    pub async fn line(&self, inv: &mut InvocationLog, level: &str, message: &str) {
        let message = clean(message);
        if !self.admit(inv, message.len()) {
            inv.dropped += 1;
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        match level {
            "error" => tracing::error!(agent = %self.agent, "{message}"),
            "warn" => tracing::warn!(agent = %self.agent, "{message}"),
            "info" => tracing::info!(agent = %self.agent, "{message}"),
            "debug" => tracing::debug!(agent = %self.agent, "{message}"),
            _ => tracing::trace!(agent = %self.agent, "{message}"),
        }
        self.publish(level, message).await;
    }

    /// Ends an invocation: reports what was dropped, at most one warning a second.
    pub async fn finish(&self, inv: InvocationLog) {
        if inv.dropped == 0 {
            return;
        }
        let report = {
            let mut u = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
            u.0 += inv.dropped;
            let due = u.1.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if !due {
                return;
            }
            u.1 = Some(Instant::now());
            std::mem::take(&mut u.0)
        };
        let message = format!(
            "agent {} logged too much: {report} lines dropped (limits: {MAX_LINES_PER_INVOCATION} lines or {} KiB per invocation, {MAX_LINES_PER_SECOND} lines or {} KiB per second)",
            self.agent,
            MAX_BYTES_PER_INVOCATION >> 10,
            MAX_BYTES_PER_SECOND >> 10
        );
        tracing::warn!(agent = %self.agent, dropped = report, "{message}");
        self.publish("warn", message).await;
    }

    /// Counts a line of `len` bytes against the invocation's and the agent's budgets.
    fn admit(&self, inv: &mut InvocationLog, len: usize) -> bool {
        if inv.lines >= MAX_LINES_PER_INVOCATION || inv.bytes + len > MAX_BYTES_PER_INVOCATION {
            return false;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.elapsed() >= Duration::from_secs(1) {
            *w = Window {
                started: Instant::now(),
                lines: 0,
                bytes: 0,
            };
        }
        if w.lines >= MAX_LINES_PER_SECOND || w.bytes + len > MAX_BYTES_PER_SECOND {
            return false;
        }
        w.lines += 1;
        w.bytes += len;
        inv.lines += 1;
        inv.bytes += len;
        true
    }

    async fn publish(&self, level: &str, message: String) {
        let Some(body) = self.encode(level, message) else {
            return;
        };
        match &self.sink {
            Some(LogSink::Store(store)) => self.store(store, &body),
            Some(LogSink::Direct(client)) => {
                let _ = client.publish(self.subject.clone(), body.into()).await;
            }
            None => {}
        }
    }

    fn encode(&self, level: &str, message: String) -> Option<Vec<u8>> {
        let line = LogLine {
            node_id: self.node_id.clone(),
            agent: self.agent.clone(),
            level: level.to_owned(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            message,
        };
        serde_json::to_vec(&line).ok()
    }

    fn store(&self, store: &Outbox, body: &[u8]) {
        // Not through tracing: a failure here must not log a line that fails again.
        if let Err(e) = store.append_now(&self.subject, body) {
            eprintln!("edgeleaf: log line of {} not kept: {e}", self.agent);
        }
    }

    /// Keeps one of the node's own lines, if the agent budget allows; for callers
    /// that cannot await. Only with a [`LogSink::Store`].
    fn record_now(&self, level: &str, message: &str) {
        let Some(LogSink::Store(store)) = &self.sink else {
            return;
        };
        let message = clean(message);
        if !self.admit(&mut InvocationLog::default(), message.len()) {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        if let Some(body) = self.encode(level, message) {
            self.store(store, &body);
        }
    }
}

/// A tracing layer that keeps the node's own events (at or above a level) in the
/// log store, as agent `_node`, within the same budgets as an agent. Installed
/// once by `main`; does nothing until a node [`NodeLogLayer::attach`]es its store.
pub struct NodeLogLayer;

static NODE_LOG: std::sync::RwLock<Option<(AgentLog, tracing::Level)>> =
    std::sync::RwLock::new(None);

thread_local! {
    /// Set while an event is being kept: whatever logs underneath is not kept again.
    static KEEPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl NodeLogLayer {
    /// From now on the node's events at `level` or above go to `store`.
    pub fn attach(store: Arc<Outbox>, subject: String, node_id: &str, level: tracing::Level) {
        let log = AgentLog::new(
            Some(LogSink::Store(store)),
            subject,
            node_id,
            crate::protocol::NODE_LOG_AGENT,
        );
        *NODE_LOG.write().unwrap_or_else(|e| e.into_inner()) = Some((log, level));
    }

    /// Stops keeping the node's events (the node is stopping).
    pub fn detach() {
        *NODE_LOG.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Lines of the node's own dropped by the budget since it attached.
    pub fn dropped() -> u64 {
        NODE_LOG
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|(l, _)| l.dropped()))
            .unwrap_or(0)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NodeLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        // An agent's own lines are kept by its AgentLog already.
        if meta.target() == module_path!() || KEEPING.get() {
            return;
        }
        let Ok(guard) = NODE_LOG.try_read() else {
            return;
        };
        let Some((log, level)) = guard.as_ref() else {
            return;
        };
        // tracing's order: ERROR < WARN < INFO (more verbose is greater).
        if *meta.level() > *level {
            return;
        }
        let mut text = Fields::default();
        event.record(&mut text);
        KEEPING.set(true);
        log.record_now(&meta.level().as_str().to_ascii_lowercase(), &text.0);
        KEEPING.set(false);
    }
}

/// An event as one line: its message, then `key=value` for the other fields.
#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            self.0.push_str(&rest);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// One line as the node shows it: control characters escaped (`\n`, `\r`,
/// `\u{1b}` …), cut to [`MAX_LINE`] bytes.
fn clean(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_LINE + 8));
    for c in message.chars() {
        if out.len() >= MAX_LINE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        self.caps.log.line(&mut self.log, level, &message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_lines_cut() {
        assert_eq!(
            clean("a\nFORGED\r\u{1b}[31mred\t"),
            "a\\nFORGED\\r\\u{1b}[31mred\\t"
        );
        let long = clean(&"é".repeat(MAX_LINE));
        assert!(
            long.len() <= MAX_LINE + 4 && long.ends_with('…'),
            "{}",
            long.len()
        );
    }

    #[test]
    fn budgets_drop_beyond_the_limits() {
        let log = AgentLog::new(None, "s".into(), "n", "a");
        let mut inv = InvocationLog::default();
        let admitted = (0..MAX_LINES_PER_INVOCATION + 50)
            .filter(|_| log.admit(&mut inv, 10))
            .count();
        assert_eq!(admitted, MAX_LINES_PER_INVOCATION as usize);
        // A fresh invocation in the same second still counts against the agent.
        let mut total = admitted;
        for _ in 0..10 {
            let mut inv = InvocationLog::default();
            total += (0..MAX_LINES_PER_INVOCATION)
                .filter(|_| log.admit(&mut inv, 10))
                .count();
        }
        assert_eq!(total, MAX_LINES_PER_SECOND as usize);
    }
}
