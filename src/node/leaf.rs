//! The node's own leaf server: a nats-server child, configured from the node's TOML.
//!
//! Its client port demands a login. The node logs in as [`NODE_LEAF_USER`] with a
//! password only it knows; local applications (sensors, other programs,
//! `run-agent`) log in as `leaf.local_user`, which may use the agents' subjects but
//! can never act as the node: it cannot publish the node's heartbeats, results,
//! events or logs, cannot listen to its control, direct-invocation or inbox
//! subjects, and has no JetStream, KV or object-store API. Without this, any process
//! on the device was the node on the hub: it could report its own encryption key in
//! a heartbeat and be sent the node's secrets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Config, NODE_LEAF_USER};
use crate::natsd::{
    self, ClientUser, LeafRemote, Permissions, ServerFiles, ServerSpec, Supervisor,
};

/// Where the leaf's files live: `<state_dir>/leaf/`.
pub fn files(config: &Config) -> ServerFiles {
    ServerFiles::new(config.node.state_dir.join("leaf"))
}

/// Passwords of the leaf's two users, generated on first start and kept in
/// `<state_dir>/leaf-users.json` (0600); made again when the file is missing.
#[derive(Clone, Serialize, Deserialize)]
pub struct LeafLogins {
    /// The node's own login: only the node process (and root) can read it.
    pub node_password: String,
    /// The local applications' user (`leaf.local_user`), for tools on the device
    /// that read this file (`edgeleaf outbox --state-dir`).
    #[serde(default = "default_local_user")]
    pub local_user: String,
    /// The local applications' login (`leaf.local_password` when set).
    pub local_password: String,
}

fn default_local_user() -> String {
    "local".to_owned()
}

impl std::fmt::Debug for LeafLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeafLogins { *** }")
    }
}

/// 32 random characters from a URL-safe alphabet: usable in a `nats://` URL as is.
fn random_password() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl LeafLogins {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("leaf-users.json")
    }

    /// The logins the node on `state_dir` uses, if it made them.
    pub fn read(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Reads the logins, or makes new ones when the file is missing or corrupt (the
    /// leaf's config is rewritten at every start, so new passwords take effect
    /// at once). `leaf.local_user` / `local_password` override the stored ones, and
    /// the file is rewritten to match.
    pub fn load_or_create(config: &Config) -> Result<Self> {
        let state_dir = &config.node.state_dir;
        let path = Self::path(state_dir);
        let stored = Self::read(state_dir);
        if let Err(e) = &stored
            && path.exists()
        {
            tracing::warn!("{e:#}; making new leaf passwords");
        }
        let mut logins = stored.as_ref().cloned().unwrap_or_else(|_| Self {
            node_password: random_password(),
            local_user: String::new(),
            local_password: random_password(),
        });
        logins.local_user = config.leaf.local_user.clone();
        if let Some(password) = &config.leaf.local_password {
            logins.local_password = password.clone();
        }
        let unchanged = stored.is_ok_and(|s| {
            s.local_user == logins.local_user && s.local_password == logins.local_password
        });
        if !unchanged {
            natsd::write_private(&path, &serde_json::to_string_pretty(&logins)?)?;
        }
        Ok(logins)
    }

    /// The URL a local application connects with, credentials included.
    pub fn local_url(&self, config: &Config) -> String {
        format!(
            "nats://{}:{}@{}",
            config.leaf.local_user, self.local_password, config.leaf.listen
        )
    }

    /// The client port's users: the node (everything) and the local applications.
    fn users(&self, config: &Config) -> Vec<ClientUser> {
        vec![
            ClientUser {
                user: NODE_LEAF_USER.to_owned(),
                password: self.node_password.clone(),
                permissions: None,
            },
            ClientUser {
                user: config.leaf.local_user.clone(),
                password: self.local_password.clone(),
                permissions: Some(local_permissions(config)),
            },
        ]
    }
}

/// What the local user may do: `leaf.local_publish` / `local_subscribe` (default:
/// everything), minus what only the node may do, whatever those lists say.
pub fn local_permissions(config: &Config) -> Permissions {
    let (p, id) = (config.prefix(), &config.node.id);
    let (d, location) = (config.discovery.subjects(), config.location());
    let node_inbox = format!("{}.>", crate::node::inbox_prefix(id));
    let system = ["$JS.>", "$JSC.>", "$KV.>", "$O.>", "$SYS.>", "$NRG.>"].map(str::to_owned);
    let mut publish_deny = system.to_vec();
    publish_deny.extend([
        // Heartbeats of any node: their `enc_key` decides who is sent secrets.
        format!("{p}.hb.>"),
        format!("{p}.res.{id}.>"),
        format!("{p}.evt.{id}.>"),
        format!("{p}.log.{id}.>"),
        node_inbox.clone(),
        // Cards announced in the node's name.
        d.card("*", id, ">"),
    ]);
    let mut subscribe_deny = system.to_vec();
    subscribe_deny.extend([
        // Control requests (a fake answer to `ping` or `info`) and direct
        // invocations (a fake agent) are the node's to answer.
        format!("{p}.ctl.>"),
        format!("{p}.inv.>"),
        // Discovery queries (fake cards) and the location's workloads (stolen
        // work) are the node's too.
        d.query(">"),
        d.workloads(location),
        // Replies to the node's own requests: deployments, modules, secrets.
        node_inbox,
    ]);
    Permissions {
        publish_allow: config.leaf.local_publish.clone(),
        publish_deny,
        subscribe_allow: config.leaf.local_subscribe.clone(),
        subscribe_deny,
    }
}

/// Renders the leaf config and starts supervising the server.
pub async fn start(config: &Config, logins: &LeafLogins) -> Result<Supervisor> {
    let binary = natsd::find_binary(config.leaf.nats_server.as_deref())?;
    let listen: SocketAddr = config
        .leaf
        .listen
        .parse()
        .context("leaf.listen is not IP:PORT")?;
    let hub_urls = config.leaf.hub_urls();
    anyhow::ensure!(
        !hub_urls.is_empty(),
        "leaf.hub_url is required when leaf.spawn = true"
    );
    let files = files(config);
    let server_name = format!("edgeleaf-leaf-{}", config.node.id);
    let text = natsd::render_leaf(
        &files,
        &server_name,
        listen,
        &logins.users(config),
        &LeafRemote {
            urls: hub_urls,
            creds: config.leaf.creds.clone(),
            tls: config.leaf.tls.clone(),
        },
    );
    Supervisor::start(ServerSpec {
        role: "leaf".into(),
        server_name,
        binary,
        files,
        config: text,
        client_addr: listen,
    })
    .await
}
