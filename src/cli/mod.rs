//! The command line: one file per subcommand. Commands that talk to a node do so
//! over NATS only; `node` and `up` embed a node on purpose.

mod agents;
mod context;
#[cfg(feature = "operator")]
mod dashboard;
#[cfg(feature = "operator")]
mod deploy;
#[cfg(feature = "operator")]
mod dev;
mod discover;
#[cfg(feature = "operator")]
mod hub;
mod invoke;
#[cfg(feature = "operator")]
mod keys;
mod logs;
mod node;
mod nodes;
mod outbox;
mod ping;
#[cfg(feature = "operator")]
mod precompile;
#[cfg(feature = "operator")]
mod project;
#[cfg(feature = "operator")]
mod rollout;
#[cfg(feature = "operator")]
mod run_agent;
#[cfg(feature = "operator")]
mod up;
#[cfg(feature = "operator")]
mod upgrade;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::TlsFiles;
use crate::connect::{NatsTarget, Persistence};
use crate::protocol::{DEFAULT_PREFIX, Subjects};

/// Where CLI commands connect without `-s` or `NATS_URL`.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// edgeleaf: WASM agents on edge hosts, next to a NATS leaf node.
#[derive(Debug, Parser)]
#[command(name = "edgeleaf", version = crate::version::version(), about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// How CLI commands reach the NATS system (like the `nats` CLI's flags). `Debug`
/// shows what it connects with (`NatsTarget`'s, which hides the secrets).
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Connection (every command)")]
pub struct ConnOpts {
    /// A nats CLI context (`~/.config/nats/context/NAME.json`): its URL, login, TLS
    /// files, JetStream domain and inbox prefix, wherever no flag gives them.
    #[arg(long, global = true, env = "NATS_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// NATS server URL [default: nats://127.0.0.1:4222]; the servers of a hub cluster
    /// as one list, `nats://a:4222,nats://b:4222`. For `node`, this and the
    /// other connection flags override the config's [nats] section.
    #[arg(short = 's', long = "server", global = true, env = "NATS_URL")]
    pub server: Option<String>,
    /// Credentials file (JWT + nkey).
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// User name (with --password).
    #[arg(long, global = true, env = "NATS_USER")]
    pub user: Option<String>,
    /// Password (with --user).
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding an nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// CA certificate to verify the server (PEM).
    #[arg(long, global = true)]
    pub tlsca: Option<PathBuf>,
    /// Client certificate (PEM, with --tlskey).
    #[arg(long, global = true, requires = "tlskey")]
    pub tlscert: Option<PathBuf>,
    /// Client key (PEM, with --tlscert).
    #[arg(long, global = true, requires = "tlscert")]
    pub tlskey: Option<PathBuf>,
    /// The hub's JetStream domain, when connected through a leaf (e.g. `hub`).
    #[arg(long, global = true, env = "EDGELEAF_JS_DOMAIN")]
    pub domain: Option<String>,
    /// Prefix of the reply subjects the CLI listens on (when the server allows
    /// only some, e.g. `_INBOX_ops`).
    #[arg(long, global = true)]
    pub inbox_prefix: Option<String>,
    /// First token of every edgeleaf subject.
    #[arg(long, global = true, env = "EDGELEAF_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
}

impl std::fmt::Debug for ConnOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnOpts")
            .field("target", &self.target())
            .field("domain", &self.domain)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl ConnOpts {
    pub fn target(&self) -> NatsTarget {
        NatsTarget {
            url: self.url(),
            creds: self.creds.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            nkey: self.nkey.clone(),
            tls: TlsFiles {
                ca: self.tlsca.clone(),
                cert: self.tlscert.clone(),
                key: self.tlskey.clone(),
            },
            inbox_prefix: self.inbox_prefix.clone(),
            subscription_capacity: None,
        }
    }

    pub fn url(&self) -> String {
        self.server
            .clone()
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    pub async fn connect(&self) -> Result<async_nats::Client> {
        let target = self.target();
        if let Some(warning) = crate::connect::plaintext_warning("-s", &target.url, &target.tls) {
            eprintln!("warning: {warning}");
        }
        target.connect("edgeleaf-cli", Persistence::Once).await
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.prefix)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the daemon that sends heartbeats and runs agents.
    Node(node::Args),
    #[cfg(feature = "operator")]
    /// Start a local hub, a leaf and a node on loopback, to try edgeleaf on one machine.
    Up(up::Args),
    #[cfg(feature = "operator")]
    /// Hub-side set-up.
    #[command(subcommand)]
    Hub(hub::HubCommand),
    /// List every node that ever sent a heartbeat, online or offline.
    Nodes(nodes::Args),
    /// Ask every node (optionally only those with given tags) to answer.
    Ping(ping::Args),
    #[cfg(feature = "operator")]
    /// Run one agent against a NATS server, for local development.
    RunAgent(run_agent::Args),
    /// List the agents one node runs (or failed to start).
    Agents(agents::Args),
    /// Send one request to one node's agent and print the reply.
    Invoke(invoke::Args),
    #[cfg(feature = "operator")]
    /// Ship an agent to a node, a tag or the whole fleet (signed desired state).
    Deploy(deploy::DeployArgs),
    #[cfg(feature = "operator")]
    /// Remove a deployment; the targeted nodes stop the agent and drop its data.
    Undeploy(deploy::UndeployArgs),
    #[cfg(feature = "operator")]
    /// Publisher keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// A node's store-and-forward backlog: depth, age, drops, rate.
    Outbox(outbox::Args),
    /// Agent and node log lines kept on the hub (history, then -f to follow).
    Logs(logs::Args),
    #[cfg(feature = "operator")]
    /// Serve a read-only web page of the fleet (and its JSON API) from the hub.
    Dashboard(dashboard::Args),
    #[cfg(feature = "operator")]
    /// Print a shell completion script, e.g. `edgeleaf completions bash >
    /// /etc/bash_completion.d/edgeleaf`.
    Completions {
        /// bash, zsh or fish (also elvish, powershell).
        #[arg(value_parser = clap::value_parser!(clap_complete::Shell))]
        shell: clap_complete::Shell,
    },
    /// Find agents by capability: every node's cards of the agents that have it.
    Discover(discover::DiscoverArgs),
    /// Send a workload to a location; an agent there with the capability runs it.
    Work(discover::WorkArgs),
    #[cfg(feature = "operator")]
    /// Write a new agent project (Rust, C, Python or JavaScript) that builds on its own.
    New(project::NewArgs),
    #[cfg(feature = "operator")]
    /// Build the agent project in DIR into DIR/dist/<name>.wasm (its path is the last
    /// line printed).
    Build(project::BuildArgs),
    #[cfg(feature = "operator")]
    /// A staged rollout (`deploy --waves`): its status, resume it, or abort it.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    #[cfg(feature = "operator")]
    /// Ship an edgeleaf binary to nodes (signed; each node checks it, tries it and
    /// keeps the previous one), or send them back with --rollback.
    #[command(disable_version_flag = true)]
    Upgrade(upgrade::Args),
    #[cfg(feature = "operator")]
    /// Build, deploy to a node (`edgeleaf up`'s by default), and rebuild and redeploy
    /// on every change, printing results and log lines until Ctrl-C.
    Dev(dev::Args),
    #[cfg(feature = "operator")]
    /// Compile an agent for another node's engine into a .cwasm file, for the
    /// `[[agents]]` of a node built without a compiler (`deploy` precompiles itself).
    Precompile(precompile::PrecompileArgs),
}

/// The commands of the `operator` feature, which a device build (`--runtime-only`)
/// leaves out; `edgeleaf` names them when such a build is asked for one.
pub const OPERATOR_COMMANDS: &[&str] = &[
    "up",
    "hub",
    "run-agent",
    "deploy",
    "undeploy",
    "keys",
    "dashboard",
    "completions",
    "new",
    "build",
    "rollout",
    "upgrade",
    "dev",
    "precompile",
];

/// Parses the command line like `Cli::parse`, but a command this build left out
/// gets an error that says so instead of clap's "unrecognized subcommand".
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let missing = (e.kind() == clap::error::ErrorKind::InvalidSubcommand)
                .then(|| e.get(clap::error::ContextKind::InvalidSubcommand))
                .flatten()
                .map(|name| name.to_string())
                .filter(|name| OPERATOR_COMMANDS.contains(&name.as_str()));
            match missing {
                Some(name) => {
                    eprintln!(
                        "error: `edgeleaf {name}` is an operator command, and this edgeleaf \
                         was built for devices without them (no `operator` feature, as \
                         `--runtime-only` builds are); run it from a full build"
                    );
                    std::process::exit(2)
                }
                None => e.exit(),
            }
        }
    }
}

/// Runs the parsed command.
pub async fn run(mut cli: Cli) -> Result<()> {
    cli.conn = cli.conn.with_context()?;
    match cli.command {
        Command::Node(args) => node::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Up(args) => up::run(args).await,
        #[cfg(feature = "operator")]
        Command::Hub(cmd) => hub::run(cmd, &cli.conn).await,
        Command::Nodes(args) => nodes::run(args, &cli.conn).await,
        Command::Ping(args) => ping::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::RunAgent(args) => run_agent::run(args, &cli.conn).await,
        Command::Agents(args) => agents::run(args, &cli.conn).await,
        Command::Invoke(args) => invoke::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Deploy(args) => deploy::deploy(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Undeploy(args) => deploy::undeploy(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Keys(cmd) => keys::run(cmd),
        Command::Outbox(args) => outbox::run(args, &cli.conn).await,
        Command::Logs(args) => logs::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Dashboard(args) => dashboard::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgeleaf", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Discover(args) => discover::discover(args, &cli.conn).await,
        Command::Work(args) => discover::work(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::New(args) => project::new(args),
        #[cfg(feature = "operator")]
        Command::Build(args) => project::build(args),
        #[cfg(feature = "operator")]
        Command::Dev(args) => dev::run(args, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Precompile(args) => precompile::run(args),
        #[cfg(feature = "operator")]
        Command::Rollout(cmd) => rollout::run(cmd, &cli.conn).await,
        #[cfg(feature = "operator")]
        Command::Upgrade(args) => upgrade::run(args, &cli.conn).await,
    }
}

/// Parses `k=v` (for `--tag`).
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if crate::protocol::is_token(k) && crate::protocol::is_token(v) => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not key=value with single-token key and value"
        )),
    }
}

/// Scatter-gather: publishes `body` on `subject` with a fresh reply inbox and
/// collects every reply that parses as `T` for `wait` (others are reported on
/// stderr and skipped).
pub async fn gather<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    body: bytes::Bytes,
    wait: std::time::Duration,
) -> Result<Vec<T>> {
    use anyhow::Context as _;
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject.clone(), inbox, body)
        .await?;
    client
        .flush()
        .await
        .with_context(|| format!("cannot send on {subject}"))?;
    let mut found = Vec::new();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            msg = replies.next() => {
                let Some(msg) = msg else { break };
                match serde_json::from_slice::<T>(&msg.payload) {
                    Ok(reply) => found.push(reply),
                    Err(e) => eprintln!("unexpected reply ({e}): {}", String::from_utf8_lossy(&msg.payload)),
                }
            }
        }
    }
    Ok(found)
}

/// Renders tags as `k=v,k2=v2` for tables.
pub fn tags_text(tags: &std::collections::BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "operator")]
    #[test]
    fn operator_commands_are_the_ones_a_device_build_leaves_out() {
        use clap::CommandFactory;
        let cli = super::Cli::command();
        for name in super::OPERATOR_COMMANDS {
            assert!(
                cli.find_subcommand(name).is_some(),
                "{name} is not a command"
            );
        }
    }

    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
