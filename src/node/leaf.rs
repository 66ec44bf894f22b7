//! The node's own leaf server: a nats-server child, configured from the node's TOML.

use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::natsd::{self, LeafRemote, ServerFiles, ServerSpec, Supervisor};

/// Where the leaf's files live: `<state_dir>/leaf/`.
pub fn files(config: &Config) -> ServerFiles {
    ServerFiles::new(config.node.state_dir.join("leaf"))
}

/// Renders the leaf config and starts supervising the server.
pub async fn start(config: &Config) -> Result<Supervisor> {
    let binary = natsd::find_binary(config.leaf.nats_server.as_deref())?;
    let listen: SocketAddr = config
        .leaf
        .listen
        .parse()
        .context("leaf.listen is not IP:PORT")?;
    let hub_url = config
        .leaf
        .hub_url
        .clone()
        .context("leaf.hub_url is required when leaf.spawn = true")?;
    let files = files(config);
    let server_name = format!("edgeleaf-leaf-{}", config.node.id);
    let text = natsd::render_leaf(
        &files,
        &server_name,
        listen,
        &LeafRemote {
            url: hub_url,
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
