//! What an agent can reach, one capability per file: [`kv`] (its own sled tree),
//! [`messaging`] (publish to allowed subjects), [`log`] (tracing + NATS), [`config`]
//! (its config map), [`serial`] (granted ports), and [`fs`] (granted directories)
//! and [`net`] (outbound TCP), both through WASI, and [`http`] (outbound HTTP
//! on the same grants). Each file holds the
//! capability itself and its implementation of the world's import; [`Capabilities`]
//! bundles them per agent.

pub mod config;
pub mod fs;
pub mod http;
pub mod kv;
pub mod log;
pub mod messaging;
pub mod net;
pub mod serial;

use std::collections::BTreeMap;

use crate::store::agent_kv::AgentKv;

/// A `[devices]` ceiling as a refusal names it: its entries, or that it allows
/// nothing (the default). Shared by the directory, connect and serial checks.
pub(crate) fn describe_ceiling(entries: impl IntoIterator<Item = String>) -> String {
    let entries: Vec<String> = entries.into_iter().collect();
    if entries.is_empty() {
        "which allows nothing".to_owned()
    } else {
        entries.join(", ")
    }
}

/// One agent's capabilities, shared by all its instances.
pub struct Capabilities {
    pub kv: AgentKv,
    pub messaging: messaging::Publisher,
    pub log: log::AgentLog,
    pub config: BTreeMap<String, String>,
    /// Directories preopened in every instance (see [`fs`]).
    pub dirs: Vec<fs::DirGrant>,
    /// Where the agent may connect over TCP (see [`net`]); empty: nowhere.
    pub connect: std::sync::Arc<[crate::protocol::ConnectRule]>,
    /// The serial ports it may open (see [`serial`]).
    pub serial: Vec<crate::protocol::SerialGrant>,
}
