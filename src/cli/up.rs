//! `edgeleaf up`: a hub, a leaf and a node on loopback, for trying edgeleaf on one
//! machine. It supervises what it starts and stops all of it on Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::{Config, parse_duration};
use crate::connect::{NatsTarget, Persistence};
use crate::hub::{self, init::HubOptions};
use crate::natsd::{self, ServerFiles, ServerSpec, Supervisor};
use crate::protocol::{ControlReply, LinkState, NodeInfo, Subjects};
use crate::shipping::SecretKey;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the hub's JetStream store, the node's state and up.json go.
    #[arg(long, default_value = ".edgeleaf")]
    state_dir: PathBuf,
    /// Client port of the hub server.
    #[arg(long, default_value_t = 4250)]
    hub_port: u16,
    /// Leafnode port of the hub server (the leaf dials it).
    #[arg(long, default_value_t = 7450)]
    hub_leafnode_port: u16,
    /// Client port of the leaf server (the node and local agents use it).
    #[arg(long, default_value_t = 4251)]
    leaf_port: u16,
    /// Node id. Default: the hostname as a NATS token.
    #[arg(long)]
    node_id: Option<String>,
    /// JetStream domain of the hub.
    #[arg(long, default_value = "hub")]
    domain: String,
    /// Heartbeat interval of the node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// nats-server binary. Default: PATH, then /usr/sbin.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Directory agents may be granted to read ([devices] read; repeat).
    #[arg(long, value_name = "DIR")]
    devices_read: Vec<PathBuf>,
    /// Directory agents may be granted to read and write ([devices] write; repeat).
    #[arg(long, value_name = "DIR")]
    devices_write: Vec<PathBuf>,
    /// Outbound TCP and HTTP agents may be granted ([devices] connect; IP:PORT, CIDR:PORT
    /// or NAME:PORT; repeat).
    #[arg(long, value_name = "ADDR:PORT")]
    devices_connect: Vec<String>,
    /// Serial device agents may be granted ([devices] serial; repeat).
    #[arg(long, value_name = "PATH")]
    devices_serial: Vec<PathBuf>,
}

/// Written to `<state-dir>/up.json` once everything answers, for scripts.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct UpFile {
    pub hub_url: String,
    pub leaf_url: String,
    pub hub_leafnode_url: String,
    pub domain: String,
    pub node_id: String,
    pub state_dir: PathBuf,
    /// Secret key the node trusts, for `edgeleaf deploy --key`.
    pub publisher_key: PathBuf,
    pub pid: u32,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub async fn run(args: Args) -> Result<()> {
    let signal = crate::shutdown::signal();
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let binary = natsd::find_binary(args.nats_server.as_deref())?;
    let hub_files = ServerFiles::new(state_dir.join("hub"));
    let hub_addr = loopback(args.hub_port);
    let leafnode_addr = loopback(args.hub_leafnode_port);
    let hub = Supervisor::start(ServerSpec {
        role: "hub".into(),
        server_name: "edgeleaf-hub".into(),
        binary: binary.clone(),
        config: natsd::render_hub(
            &hub_files,
            "edgeleaf-hub",
            hub_addr,
            leafnode_addr,
            &args.domain,
        ),
        files: hub_files,
        client_addr: hub_addr,
    })
    .await
    .context("cannot start the hub nats-server")?;

    let mut config = Config::default();
    config.node.id = args
        .node_id
        .clone()
        .unwrap_or_else(crate::config::default_node_id);
    config.node.name = String::new();
    config.node.state_dir = state_dir.join("node");
    config.leaf.spawn = true;
    config.leaf.nats_server = Some(binary);
    config.leaf.listen = loopback(args.leaf_port).to_string();
    config.leaf.hub_url = Some(format!("nats-leaf://{leafnode_addr}"));
    config.leaf.domain = args.domain.clone();
    config.heartbeat.interval = args.heartbeat_interval;
    for dir in args.devices_read.iter().chain(&args.devices_write) {
        if !dir.is_dir() {
            anyhow::bail!(
                "--devices-read/--devices-write {}: not a directory",
                dir.display()
            );
        }
    }
    config.devices.read = absolute(&args.devices_read)?;
    config.devices.write = absolute(&args.devices_write)?;
    config.devices.connect = args.devices_connect.clone();
    config.devices.serial = args.devices_serial.clone();
    // A publisher key the local node trusts, so `deploy --key` works out of the box.
    let key_path = state_dir.join("publisher.key");
    let publisher = match SecretKey::load(&key_path) {
        Ok(key) => key,
        Err(_) if !key_path.exists() => {
            let key = SecretKey::generate();
            key.save(&key_path)?;
            key
        }
        Err(e) => return Err(e),
    };
    config.security.trusted_publishers = vec![publisher.public().to_string()];
    let config = config.validate("edgeleaf up")?;
    let node_id = config.node.id.clone();
    // The leaf demands a login: local applications use the local user's, in
    // up.json's leaf_url (the node reads the same file when it starts).
    crate::node::prepare_state_dir(&config)?;
    let logins = crate::node::leaf::LeafLogins::load_or_create(&config)?;
    let up = UpFile {
        hub_url: format!("nats://{hub_addr}"),
        leaf_url: logins.local_url(&config),
        hub_leafnode_url: format!("nats-leaf://{leafnode_addr}"),
        domain: args.domain.clone(),
        node_id: node_id.clone(),
        state_dir: state_dir.clone(),
        publisher_key: key_path.clone(),
        pid: std::process::id(),
    };

    let (stop_node, node_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut node = tokio::spawn(crate::node::run(config, async {
        let _ = node_stopped.await;
    }));
    tokio::pin!(signal);

    let outcome: Result<()> = async {
        tokio::select! {
            ready = become_ready(&up, &args.domain) => ready?,
            _ = &mut signal => return Ok(()),
            ended = &mut node => return node_ended(ended),
        }
        write_up_file(&state_dir, &up)?;
        print_welcome(&up);
        tokio::select! {
            _ = &mut signal => Ok(()),
            ended = &mut node => node_ended(ended),
        }
    }
    .await;

    let _ = stop_node.send(());
    if !node.is_finished() {
        let _ = node.await;
    }
    hub.stop().await;
    let _ = std::fs::remove_file(state_dir.join("up.json"));
    outcome
}

fn node_ended(ended: Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    match ended {
        Ok(Ok(())) => bail!("the node stopped unexpectedly"),
        Ok(Err(e)) => Err(e.context("the node failed")),
        Err(e) => bail!("the node task panicked: {e}"),
    }
}

/// Creates the hub resources and waits until the node answers through the hub with
/// its hub link up: then a user's first command works.
async fn become_ready(up: &UpFile, domain: &str) -> Result<()> {
    let target = NatsTarget {
        url: up.hub_url.clone(),
        ..Default::default()
    };
    let client = target.connect("edgeleaf-up", Persistence::Forever).await?;
    let js = hub::jetstream(client.clone(), Some(domain));
    let subjects = Subjects::default();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    // JetStream may need a moment after the server accepts clients.
    let mut last_err = None;
    loop {
        match hub::init::init(&js, &subjects, &HubOptions::default()).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => last_err = Some(e),
            Err(e) => return Err(e.context("hub init failed")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(e) = last_err {
        tracing::debug!("hub init needed retries: {e:#}");
    }
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(subjects.info(&up.node_id), "".into()),
        )
        .await;
        if let Ok(Ok(msg)) = reply
            && let Ok(ControlReply::Ok(info)) =
                serde_json::from_slice::<ControlReply<NodeInfo>>(&msg.payload)
            && info.hub_link.state == LinkState::Up
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the node did not answer through the hub within {READY_TIMEOUT:?}; see {}",
                Path::new(&up.state_dir)
                    .join("node/leaf/nats-server.log")
                    .display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes up.json in one step: a reader sees the whole file or none. Owner-only:
/// `leaf_url` holds the local user's password.
fn write_up_file(state_dir: &Path, up: &UpFile) -> Result<()> {
    natsd::replace_private(
        &state_dir.join("up.json"),
        &serde_json::to_string_pretty(up)?,
    )
}

fn print_welcome(up: &UpFile) {
    let me = std::env::args().next().unwrap_or_else(|| "edgeleaf".into());
    println!("edgeleaf is up.");
    println!(
        "  hub   {}   (JetStream domain {:?})",
        up.hub_url, up.domain
    );
    println!(
        "  leaf  {}   (local applications: leaf_url in {})",
        crate::connect::redact_url(&up.leaf_url),
        up.state_dir.join("up.json").display()
    );
    println!(
        "  node  {}   (state in {})",
        up.node_id,
        up.state_dir.display()
    );
    println!();
    println!("Try, in another terminal:");
    println!("  {me} nodes -s {}", up.hub_url);
    println!("  {me} ping -s {}", up.hub_url);
    println!("  {me} nodes --watch -s {}", up.hub_url);
    println!(
        "  {me} deploy wasm-agents/dist/echo.wasm --trigger demo.echo --all --key {} -s {}",
        up.publisher_key.display(),
        up.hub_url
    );
    println!("  {me} invoke demo.echo hello -s {}", up.hub_url);
    println!();
    println!("Ctrl-C stops the hub, the leaf and the node.");
}

/// The directories as absolute paths (a grant names an absolute path).
fn absolute(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|d| std::path::absolute(d).with_context(|| format!("cannot resolve {}", d.display())))
        .collect()
}
