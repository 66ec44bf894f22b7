//! `edgeleaf discover CAP`: every node's cards of the agents that have a
//! capability (a scatter-gather on `discovery.query.capability.<CAP>`), and
//! `edgeleaf work`: one workload sent to a location, its result printed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use super::{ConnOpts, tags_text};
use crate::config::parse_duration;
use crate::protocol::{
    AgentCard, DiscoverySubjects, Workload, WorkloadResult, is_task_id, is_token,
};

/// The first tokens of discovery's subjects, as the nodes' `[discovery]` has them.
#[derive(Debug, clap::Args)]
pub struct Prefixes {
    /// First token of discovery subjects (`[discovery] discovery_prefix`).
    #[arg(long, env = "EDGELEAF_DISCOVERY_PREFIX", default_value = "discovery")]
    pub discovery_prefix: String,
    /// First token of workload subjects (`[discovery] workloads_prefix`).
    #[arg(long, env = "EDGELEAF_WORKLOADS_PREFIX", default_value = "edge")]
    pub workloads_prefix: String,
    /// First token of result subjects (`[discovery] results_prefix`).
    #[arg(long, env = "EDGELEAF_RESULTS_PREFIX", default_value = "results")]
    pub results_prefix: String,
}

impl Prefixes {
    pub fn subjects(&self) -> DiscoverySubjects {
        DiscoverySubjects::new(
            &self.discovery_prefix,
            &self.workloads_prefix,
            &self.results_prefix,
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// The capability (a NATS token).
    capability: String,
    /// How long to collect answers.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    wait: Duration,
    /// Print the cards as one JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    prefixes: Prefixes,
}

pub async fn discover(args: DiscoverArgs, conn: &ConnOpts) -> Result<()> {
    if !is_token(&args.capability) {
        bail!(
            "capability {:?} is not a single NATS token",
            args.capability
        );
    }
    let client = conn.connect().await?;
    let subject = args.prefixes.subjects().query(&args.capability);
    let answers: Vec<Vec<AgentCard>> =
        super::gather(&client, subject.clone(), bytes::Bytes::new(), args.wait).await?;
    let mut cards: Vec<AgentCard> = answers.into_iter().flatten().collect();
    cards.sort_by(|a, b| a.id.cmp(&b.id));
    if args.json {
        println!("{}", serde_json::to_string(&cards)?);
        return Ok(());
    }
    if cards.is_empty() {
        println!(
            "no agent with capability {} answered on {subject} within {:?}",
            args.capability, args.wait
        );
        return Ok(());
    }
    println!(
        "{:<28} {:<14} {:<12} {:<10} {:>7} {:>9} {:>7}  TAGS",
        "ID", "TYPE", "LOCATION", "HEALTH", "LOAD", "P50", "VERSION"
    );
    for c in &cards {
        let m = &c.load_metrics;
        println!(
            "{:<28} {:<14} {:<12} {:<10} {:>7} {:>9} {:>7}  {}",
            c.id,
            c.agent_type,
            c.location,
            c.health_status,
            format!("{}/{}", m.in_flight, m.max_concurrency),
            m.p50_ms.map_or("-".to_owned(), |ms| format!("{ms:.2}ms")),
            c.version,
            tags_text(&c.tags)
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WorkArgs {
    /// The location to send it to (a node's `[node] location`; default its `site`
    /// tag, else its id).
    #[arg(long)]
    location: String,
    /// The capability an agent there must have.
    #[arg(long)]
    capability: String,
    /// The input (UTF-8); `-` reads stdin (sent as `payload_b64` unless UTF-8).
    payload: Option<String>,
    /// The task id (default: a random one); the result is also published on
    /// `results.<task_id>`.
    #[arg(long)]
    task_id: Option<String>,
    /// Run this agent rather than the freest one with the capability.
    #[arg(long)]
    agent: Option<String>,
    /// A deadline for the run shorter than the agent's own.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// How long to wait for the result.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    wait: Duration,
    /// Print the result object as JSON (exit status still says whether it ran ok).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    prefixes: Prefixes,
}

pub async fn work(args: WorkArgs, conn: &ConnOpts) -> Result<()> {
    for (what, value) in [
        ("location", &args.location),
        ("capability", &args.capability),
    ] {
        if !is_token(value) {
            bail!("{what} {value:?} is not a single NATS token");
        }
    }
    let task_id = args.task_id.clone().unwrap_or_else(|| {
        format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    });
    if !is_task_id(&task_id) {
        bail!("task id {task_id:?} cannot name a subject (dot-separated tokens)");
    }
    let (payload, payload_b64) = match args.payload.as_deref() {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            match String::from_utf8(buf) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                ),
            }
        }
        Some(text) => (Some(text.to_owned()), None),
        None => (None, None),
    };
    let workload = Workload {
        task_id,
        capability: args.capability.clone(),
        payload,
        payload_b64,
        agent: args.agent.clone(),
        timeout_ms: args.timeout.map(|t| t.as_millis() as u64),
    };
    let subject = args.prefixes.subjects().workloads(&args.location);
    let client = conn.connect().await?;
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(&workload)?.into())
        .timeout(Some(args.wait));
    let msg = match client.send_request(subject.clone(), request).await {
        Ok(msg) => msg,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            bail!(
                "no node takes workloads for location {} (nothing listens on {subject})",
                args.location
            )
        }
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            bail!(
                "no result for task {} within {:?}",
                workload.task_id,
                args.wait
            )
        }
        Err(e) => return Err(e).context(format!("cannot send the workload on {subject}")),
    };
    let result: WorkloadResult = serde_json::from_slice(&msg.payload).with_context(|| {
        format!(
            "unexpected answer: {}",
            String::from_utf8_lossy(&msg.payload)
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else if result.ok {
        let mut out = std::io::stdout().lock();
        let bytes = match (&result.output, &result.output_b64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64)?,
            (None, None) => Vec::new(),
        };
        out.write_all(&bytes)?;
        if !bytes.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
    }
    if !result.ok {
        let (code, message) = result
            .error
            .map(|e| (e.code, e.message))
            .unwrap_or_else(|| ("error".into(), "no reason given".into()));
        bail!(
            "task {} on node {} failed: {code}: {message}",
            result.task_id,
            result.node
        );
    }
    Ok(())
}
