//! `edgeleaf hub …`: hub-side set-up.

use anyhow::Result;

use super::ConnOpts;
use crate::config::parse_duration;
use crate::hub::{self, init::HubOptions};

#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Create the streams and buckets edgeleaf uses (idempotent).
    Init(InitArgs),
    /// Print a nats-server `accounts` block with one account per node, so that the
    /// hub lets each node's leaf send and receive only that node's subjects.
    Accounts(AccountsArgs),
}

#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    /// A node: ID, or ID:PASSWORD (repeat). A password is generated when not given.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// A user of the hub's own account: NAME:PASSWORD (repeat). Default: `hub`
    /// with a generated password.
    #[arg(long = "hub-user")]
    hub_users: Vec<String>,
    /// Namespace of hub-to-node agent requests: `<NS>.<node id>.>`.
    #[arg(long, default_value = "dev")]
    to_node: String,
    /// Namespace of hub-to-every-node agent messages: `<NS>.>`.
    #[arg(long, default_value = "fleet")]
    broadcast: String,
    /// Namespace agents publish to the hub in: `<NS>.<node id>.>`.
    #[arg(long, default_value = "up")]
    from_node: String,
    /// Write the block to FILE, readable by its owner only (it holds passwords),
    /// instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// File storage the hub account's JetStream may use in all (every stream and
    /// bucket, whatever the nodes send).
    #[arg(long, default_value = "20GiB", value_parser = crate::config::parse_size)]
    js_max_file: u64,
    /// Memory storage the hub account's JetStream may use.
    #[arg(long, default_value = "256MiB", value_parser = crate::config::parse_size)]
    js_max_mem: u64,
    /// Consumers the hub account may hold in all (nodes create theirs there).
    #[arg(long, default_value_t = 65_536)]
    js_max_consumers: u64,
    /// A node's location, ID=LOCATION (repeat), where it is not the node's id (its
    /// `[node] location`, or its `site` tag): its account receives that location's
    /// workloads.
    #[arg(long = "location", value_name = "ID=LOCATION")]
    locations: Vec<String>,
    #[command(flatten)]
    discovery: super::discover::Prefixes,
}

impl AccountsArgs {
    fn spec(&self, prefix: &str) -> Result<hub::accounts::AccountsSpec> {
        let split = |s: &str, what: &str| -> Result<(String, String)> {
            let (name, password) = match s.split_once(':') {
                Some((n, p)) if !p.is_empty() => (n, p.to_owned()),
                Some(_) => anyhow::bail!("{what} {s:?}: empty password"),
                None => (s, hub::accounts::random_password()),
            };
            if !crate::protocol::is_token(name) {
                anyhow::bail!("{what} {name:?} is not a single NATS token");
            }
            Ok((name.to_owned(), password))
        };
        let nodes = self
            .nodes
            .iter()
            .map(|n| split(n, "--node"))
            .collect::<Result<Vec<_>>>()?;
        let mut hub_users = self
            .hub_users
            .iter()
            .map(|u| split(u, "--hub-user"))
            .collect::<Result<Vec<_>>>()?;
        if hub_users.is_empty() {
            hub_users.push(("hub".into(), hub::accounts::random_password()));
        }
        let namespaces = [&self.to_node, &self.broadcast, &self.from_node];
        for ns in namespaces {
            if !crate::protocol::is_token(ns) {
                anyhow::bail!("namespace {ns:?} must be a single NATS token");
            }
            crate::protocol::check_agent_pattern(ns, prefix)
                .map_err(|e| anyhow::anyhow!("namespace {e}"))?;
        }
        let d = &self.discovery;
        for token in [&d.discovery_prefix, &d.workloads_prefix, &d.results_prefix] {
            if !crate::protocol::is_discovery_prefix(token) || token == prefix {
                anyhow::bail!(
                    "discovery prefix {token:?} must be a single NATS token, not starting with '_' or '$', other than {prefix:?}"
                );
            }
        }
        let distinct: std::collections::BTreeSet<_> = namespaces.into_iter().collect();
        if distinct.len() != 3 {
            anyhow::bail!(
                "--to-node, --broadcast and --from-node must differ: one would carry the other's traffic"
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (name, _) in nodes.iter().chain(&hub_users) {
            if !names.insert(name.as_str()) {
                anyhow::bail!(
                    "{name:?} is given twice (node ids and hub users share one namespace of users)"
                );
            }
        }
        let mut locations = std::collections::BTreeMap::new();
        for entry in &self.locations {
            let (id, location) = super::parse_tag(entry).map_err(|_| {
                anyhow::anyhow!("--location {entry:?} is not ID=LOCATION (single tokens)")
            })?;
            if !nodes.iter().any(|(n, _)| *n == id) {
                anyhow::bail!("--location {entry:?}: {id} is not one of the --node ids");
            }
            locations.insert(id, location);
        }
        Ok(hub::accounts::AccountsSpec {
            prefix: prefix.to_owned(),
            hub_users,
            nodes,
            to_node: self.to_node.clone(),
            broadcast: self.broadcast.clone(),
            from_node: self.from_node.clone(),
            jetstream: hub::accounts::JetStreamLimits {
                max_file: self.js_max_file,
                max_mem: self.js_max_mem,
                max_consumers: self.js_max_consumers,
            },
            discovery: self.discovery.subjects(),
            locations,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// JetStream replicas per stream and bucket.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Keep results and events this long.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    telemetry_max_age: std::time::Duration,
    /// Keep at most this much telemetry (e.g. 1GiB).
    #[arg(long, default_value = "1GiB", value_parser = crate::config::parse_size)]
    telemetry_max_bytes: u64,
    /// Keep at most this many results per node and agent (and events per node and
    /// kind): one node cannot evict everyone else's telemetry.
    #[arg(long, default_value_t = 10_000)]
    telemetry_per_subject: i64,
    /// Largest result or event record the hub stores.
    #[arg(long, default_value = "1MiB", value_parser = crate::config::parse_size)]
    max_record: u64,
    /// Keep agent and node log lines this long.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    logs_max_age: std::time::Duration,
    /// Keep at most this much log text, all nodes together.
    #[arg(long, default_value = "1GiB", value_parser = crate::config::parse_size)]
    logs_max_bytes: u64,
    /// Keep at most this many lines per node and agent: one chatty agent cannot
    /// evict everyone else's lines.
    #[arg(long, default_value_t = 100_000)]
    logs_per_subject: i64,
    /// Largest value a node may write to the status bucket.
    #[arg(long, default_value = "16KiB", value_parser = crate::config::parse_size)]
    status_max_value: u64,
    /// Total size of the status bucket.
    #[arg(long, default_value = "64MiB", value_parser = crate::config::parse_size)]
    status_max_bytes: u64,
    /// Largest deployment (a spec with its sealed secrets).
    #[arg(long, default_value = "1MiB", value_parser = crate::config::parse_size)]
    deployments_max_value: u64,
    /// Total size of the deployments bucket (with its history).
    #[arg(long, default_value = "256MiB", value_parser = crate::config::parse_size)]
    deployments_max_bytes: u64,
    /// Total size of the module store.
    #[arg(long, default_value = "8GiB", value_parser = crate::config::parse_size)]
    modules_max_bytes: u64,
    /// Consumers per stream and bucket, set when it is created (each node keeps one
    /// per key that can select it, its own, `all` and one per tag, on the
    /// deployments and on the upgrades bucket: leave room for the fleet).
    #[arg(long, default_value_t = 16_384)]
    max_consumers: i32,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

/// A size flag as the i64 JetStream wants.
fn bytes(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A size flag as the i32 JetStream wants for one message.
fn message_bytes(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub async fn run(cmd: HubCommand, conn: &ConnOpts) -> Result<()> {
    match cmd {
        HubCommand::Accounts(args) => {
            let text = hub::accounts::render(&args.spec(&conn.prefix)?);
            match &args.out {
                Some(path) => crate::natsd::write_private(path, &text),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        HubCommand::Init(args) => {
            let client = conn.connect().await?;
            let js = hub::jetstream(client.clone(), conn.domain.as_deref());
            let opts = HubOptions {
                replicas: args.replicas,
                telemetry_max_age: args.telemetry_max_age,
                telemetry_max_bytes: bytes(args.telemetry_max_bytes),
                telemetry_per_subject: args.telemetry_per_subject,
                max_record: message_bytes(args.max_record),
                logs_max_age: args.logs_max_age,
                logs_max_bytes: bytes(args.logs_max_bytes),
                logs_per_subject: args.logs_per_subject,
                status_max_value: message_bytes(args.status_max_value),
                status_max_bytes: bytes(args.status_max_bytes),
                deployments_max_value: message_bytes(args.deployments_max_value),
                deployments_max_bytes: bytes(args.deployments_max_bytes),
                modules_max_bytes: bytes(args.modules_max_bytes),
                max_consumers: args.max_consumers,
                ..HubOptions::default()
            };
            let done = hub::init::init(&js, &conn.subjects(), &opts).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                for c in &done {
                    println!("{:<13} {:<22} {}", c.kind, c.name, c.outcome);
                }
            }
            Ok(())
        }
    }
}
