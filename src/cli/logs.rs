//! `edgeleaf logs`: agent and node log lines from the hub's `EDGELEAF_LOGS` stream
//! (what every node's log store forwarded, including what was written while its
//! hub was unreachable), then with `-f` new lines as they arrive, until Ctrl-C.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;

use super::ConnOpts;
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{LOGS_STREAM, LogLine, is_token};

/// How long to wait for the next stored line while reading history.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this node's lines (default: every node).
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// Only this agent's lines; `_node` is the node's own warnings and errors.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Only lines the hub received in this window (e.g. 10m, 2h; lines a node kept
    /// while offline count from when they arrived).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only lines at this level or more severe: trace, debug, info, warn, error.
    #[arg(long, value_parser = parse_level)]
    level: Option<u8>,
    /// After the history, print new lines as they arrive, until Ctrl-C.
    #[arg(short = 'f', long)]
    follow: bool,
    /// JSON Lines: `node`, `agent`, `level`, `message`, `at` (the node's time),
    /// `seq` (the hub stream's sequence) and `received` (the hub's time).
    #[arg(long)]
    json: bool,
}

/// A level's severity: error 4 … trace 0; `None` for a name that is not one.
fn severity(level: &str) -> Option<u8> {
    Some(match level {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" => 3,
        "error" => 4,
        _ => return None,
    })
}

fn parse_level(s: &str) -> Result<u8, String> {
    severity(&s.to_ascii_lowercase())
        .ok_or_else(|| format!("{s:?} is not a level (trace, debug, info, warn, error)"))
}

/// One line as `--json` prints it (and the dashboard's `/api/logs` serves it).
#[derive(Debug, serde::Serialize)]
pub(super) struct Row {
    node: String,
    agent: String,
    level: String,
    message: String,
    /// The node's time.
    at: String,
    /// The hub stream's sequence.
    seq: u64,
    /// When the hub received it.
    received: String,
}

impl Row {
    pub(super) fn new(line: LogLine, seq: u64, received: SystemTime) -> Self {
        Self {
            node: line.node_id,
            agent: line.agent,
            level: line.level,
            message: line.message,
            at: line.at,
            seq,
            received: humantime::format_rfc3339_millis(received).to_string(),
        }
    }
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    for (flag, value) in [("--node", &args.node), ("--agent", &args.agent)] {
        if let Some(v) = value
            && !is_token(v)
        {
            anyhow::bail!("{flag} {v:?} is not a single NATS token");
        }
    }
    let client = conn.connect().await?;
    let js = hub::jetstream(client.clone(), conn.domain.as_deref());
    let stream = js.get_stream(LOGS_STREAM).await.with_context(|| {
        format!(
            "no stream {LOGS_STREAM} on the hub; run `edgeleaf hub init` (again, on hubs set up before nodes kept logs)"
        )
    })?;
    let filter = format!(
        "{}.log.{}.{}",
        conn.prefix,
        args.node.as_deref().unwrap_or("*"),
        args.agent.as_deref().unwrap_or("*")
    );
    let deliver_policy = match args.since {
        Some(window) => DeliverPolicy::ByStartTime {
            start_time: (SystemTime::now() - window).into(),
        },
        None => DeliverPolicy::All,
    };
    let consumer = crate::hub::patiently(|| {
        stream.create_consumer(OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy,
            ..Default::default()
        })
    })
    .await
    .context("cannot read the log stream")?;
    let mut history = consumer.cached_info().num_pending;
    if history == 0 && !args.follow {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the log stream")?;
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    let mut out = std::io::stdout();
    loop {
        let next = async {
            if history > 0 {
                tokio::time::timeout(READ_TIMEOUT, messages.next())
                    .await
                    .context("timed out reading the log stream")
            } else {
                Ok(messages.next().await)
            }
        };
        let msg = tokio::select! {
            _ = &mut stop => return Ok(()),
            msg = next => msg?,
        };
        let Some(msg) = msg else { return Ok(()) };
        let msg = msg.context("cannot read the log stream")?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, received) = (info.stream_sequence, SystemTime::from(info.published));
        history = info.pending;
        match serde_json::from_slice::<LogLine>(&msg.payload) {
            Ok(line) => {
                if args
                    .level
                    .is_none_or(|min| severity(&line.level).is_none_or(|s| s >= min))
                {
                    print_line(&mut out, line, seq, received, args.json)?;
                }
            }
            Err(e) => eprintln!(
                "skipped an unreadable line (seq {seq}, {}): {e}",
                msg.subject
            ),
        }
        if history == 0 && !args.follow {
            return Ok(());
        }
    }
}

fn print_line(
    out: &mut impl Write,
    line: LogLine,
    seq: u64,
    received: SystemTime,
    json: bool,
) -> Result<()> {
    if json {
        let row = Row::new(line, seq, received);
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    } else {
        writeln!(
            out,
            "{} {}/{} {:<5} {}",
            line.at,
            line.node_id,
            line.agent,
            line.level.to_ascii_uppercase(),
            line.message
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_severity() {
        assert_eq!(parse_level("WARN"), Ok(3));
        assert!(severity("error") > severity("warn"));
        assert!(parse_level("loud").unwrap_err().contains("trace, debug"));
    }
}
