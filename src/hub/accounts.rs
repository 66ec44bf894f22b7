//! Least privilege on the hub: a nats-server `accounts { }` block with one account
//! per node, so that each node's leaf can only send what that node may send and only
//! receive what is meant for it, enforced by the hub.
//!
//! Why accounts and not user permissions: in nats-server 2.9 a leafnode user's
//! `publish` permissions are handed to the leaf server, which applies them to itself;
//! the hub does not check what a leaf sends. A tampered device with the node's
//! credentials could publish anything, even delete streams. Between accounts, only
//! what is exported and imported flows, and the hub enforces that.
//!
//! The layout:
//! - `EDGE` holds the hub's own users (operators, the CLI, services), JetStream, and
//!   every edgeleaf stream and bucket. It exports the node→hub subjects as services
//!   and the hub→all-nodes subjects as streams.
//! - `NODE_<id>` holds the one user its leaf connects as. It imports from `EDGE` only
//!   the slice for its id, and exports to `EDGE` its control, invoke and agent
//!   subjects (services, so replies find their way back).
//!
//! Subject namespaces for agents (triggers are deployed at run time, so a static
//! config allots prefixes, not subjects):
//! - `<to_node>.<id>.>` (default `dev.<id>.>`): hub→node requests to one node's agents;
//! - `<broadcast>.>` (default `fleet.>`): hub→every node;
//! - `<from_node>.<id>.>` (default `up.<id>.>`): what a node's agents publish to the hub.
//!
//! Discovery and workloads (see `node::discovery`): every node hears capability
//! queries; a node announces cards only under its own id; workloads of a location
//! reach the nodes `--location` puts there (default: the node id); `results.>` is
//! open to every node (a node answering a task it was sent cannot be told apart
//! from one forging a result: results carry the node id for consumers to check).
//! Queue groups do not span accounts: several nodes of one location each receive
//! every workload under per-node accounts.
//!
//! Subjects local to the device (a sensor publishing on its own leaf) never cross the
//! link and need nothing here.
//!
//! Known limits (nats-server 2.9; see README "Least privilege on the hub"):
//! - JetStream consumers name their filter in the request body, so a node can read
//!   any key of the deployments bucket and any node's telemetry. Deployments are
//!   signed, and agent secrets are encrypted to their node, so reading is not writing.
//! - A node may publish onto a hub client's reply inbox (`_INBOX.>`), to answer
//!   `ping` and broadcast requests. It would have to guess the random inbox name.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use crate::protocol::{
    DEPLOYMENTS_BUCKET, DiscoverySubjects, HEARTBEAT_STREAM, LOGS_STREAM, MODULES_BUCKET,
    STATUS_BUCKET, TELEMETRY_STREAM, UPGRADES_BUCKET,
};

/// The services API name of every node (see `node::services`; `hub` does not
/// depend on `node`, so a test keeps the two equal).
const SERVICE_NAME: &str = "edgeleaf-node";

/// The account of the hub's own users.
pub const HUB_ACCOUNT: &str = "EDGE";

/// What to render.
#[derive(Debug, Clone)]
pub struct AccountsSpec {
    /// First token of edgeleaf subjects.
    pub prefix: String,
    /// Users of the hub account: (name, password).
    pub hub_users: Vec<(String, String)>,
    /// One account per node: (node id, password of its leaf).
    pub nodes: Vec<(String, String)>,
    /// Agent namespaces (see the module docs).
    pub to_node: String,
    pub broadcast: String,
    pub from_node: String,
    /// JetStream ceilings of the hub account, which holds every edgeleaf stream and
    /// every consumer a node creates (node accounts have no JetStream of their own).
    pub jetstream: JetStreamLimits,
    /// The discovery and workload subjects (`[discovery]` of the nodes).
    pub discovery: DiscoverySubjects,
    /// Node id → location, for nodes whose location is not their id.
    pub locations: BTreeMap<String, String>,
}

impl AccountsSpec {
    fn location<'a>(&'a self, id: &'a str) -> &'a str {
        self.locations.get(id).map_or(id, String::as_str)
    }
}

/// An account's JetStream ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamLimits {
    pub max_file: u64,
    pub max_mem: u64,
    pub max_consumers: u64,
}

impl Default for JetStreamLimits {
    fn default() -> Self {
        Self {
            max_file: 20 << 30,
            max_mem: 256 << 20,
            max_consumers: 65_536,
        }
    }
}

/// A node's reply inbox prefix (see `node::inbox_prefix`; `hub` does not depend on
/// `node`, so the rule is written twice and a test keeps the two equal).
fn node_inbox(id: &str) -> String {
    format!("_INBOX_{id}")
}

/// The account a node's leaf connects into.
pub fn node_account(id: &str) -> String {
    format!("NODE_{id}")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The JetStream API calls a node makes through its leaf (by the hub's domain; the
/// hub maps `$JS.<domain>.API.…` to these in the node's account).
fn jetstream_api(id: &str) -> Vec<String> {
    let kv = |b: &str| format!("KV_{b}");
    let obj = format!("OBJ_{MODULES_BUCKET}");
    let deployments = kv(DEPLOYMENTS_BUCKET);
    let upgrades = kv(UPGRADES_BUCKET);
    let mut out = vec!["$JS.API.INFO".to_owned()];
    for stream in [
        kv(STATUS_BUCKET),
        deployments.clone(),
        upgrades.clone(),
        obj.clone(),
        TELEMETRY_STREAM.to_owned(),
        LOGS_STREAM.to_owned(),
    ] {
        out.push(format!("$JS.API.STREAM.INFO.{stream}"));
    }
    // Reading: the deployments and upgrade announcements (watch, keys, get), module
    // (and binary) objects, and the node's own last telemetry and log line (the
    // forwarders' reconcile after a reconnect).
    for stream in [
        &deployments,
        &upgrades,
        &obj,
        &TELEMETRY_STREAM.to_owned(),
        &LOGS_STREAM.to_owned(),
    ] {
        out.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        out.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        out.push(format!("$JS.API.CONSUMER.INFO.{stream}.*"));
        out.push(format!("$JS.API.CONSUMER.DELETE.{stream}.*"));
        out.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"));
        out.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        out.push(format!("$JS.API.DIRECT.GET.{stream}"));
        out.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
        out.push(format!("$JS.FC.{stream}.>"));
    }
    // Writing: its own status keys only.
    out.push(format!("$KV.{STATUS_BUCKET}.{id}.>"));
    out
}

/// The changes of the buckets every node follows, as `hub init` republishes them
/// (headers only; a node could read these keys anyway, see the known limits above).
fn followed_buckets(prefix: &str) -> [String; 2] {
    let subjects = crate::protocol::Subjects::new(prefix);
    [
        subjects.kv_changes(DEPLOYMENTS_BUCKET),
        subjects.kv_changes(UPGRADES_BUCKET),
    ]
}

/// The `accounts { }` block (with `system_account`), to include from the hub's
/// nats-server config.
pub fn render(spec: &AccountsSpec) -> String {
    let p = &spec.prefix;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Written by `edgeleaf hub accounts`: one account per node (see README,\n\
         # \"Least privilege on the hub\"). Holds passwords: keep it 0600.\n\
         # Streams and buckets: {TELEMETRY_STREAM}, {LOGS_STREAM}, {HEARTBEAT_STREAM}, {DEPLOYMENTS_BUCKET}, \
         {STATUS_BUCKET}, {MODULES_BUCKET}, {UPGRADES_BUCKET}\n\
         # (create them as a user of account {HUB_ACCOUNT}: edgeleaf hub init --user …)."
    );
    for (id, password) in &spec.nodes {
        let _ = writeln!(
            w,
            "# node {id}: leaf.hub_url = \"nats-leaf://{id}:{password}@<hub>:7422\""
        );
    }
    let _ = writeln!(w, "accounts {{");
    let _ = writeln!(w, "  {HUB_ACCOUNT} {{");
    let js = spec.jetstream;
    let _ = writeln!(
        w,
        "    jetstream {{ max_file: {}, max_mem: {}, max_consumers: {} }}",
        js.max_file, js.max_mem, js.max_consumers
    );
    let users: Vec<String> = spec
        .hub_users
        .iter()
        .map(|(u, pw)| format!("{{ user: {}, password: {} }}", quote(u), quote(pw)))
        .collect();
    let _ = writeln!(w, "    users = [ {} ]", users.join(", "));
    let _ = writeln!(w, "    exports = [");
    let _ = writeln!(w, "      # node -> hub; each node imports its own slice");
    for service in [
        format!("{p}.hb.*"),
        format!("{p}.res.>"),
        format!("{p}.evt.>"),
        format!("{p}.log.>"),
        format!("{}.>", spec.from_node),
        spec.discovery.all_cards(),
        spec.discovery.result(">"),
        format!("$KV.{STATUS_BUCKET}.>"),
        "$JS.API.>".to_owned(),
        "$JS.FC.>".to_owned(),
        // Replies to requests the hub sent to every node (ping, broadcast triggers).
        "_INBOX.>".to_owned(),
    ] {
        let _ = writeln!(w, "      {{ service: {} }}", quote(&service));
    }
    let _ = writeln!(w, "      # hub -> every node");
    for stream in [
        format!("{p}.ctl.ping"),
        format!("{}.>", spec.broadcast),
        spec.discovery.query(">"),
        "$SRV.>".to_owned(),
    ]
    .into_iter()
    .chain(followed_buckets(p))
    {
        let _ = writeln!(w, "      {{ stream: {} }}", quote(&stream));
    }
    let _ = writeln!(w, "      # hub -> the nodes of one location");
    let mut by_location: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, _) in &spec.nodes {
        by_location
            .entry(spec.location(id))
            .or_default()
            .push(node_account(id));
    }
    for (location, accounts) in by_location {
        let _ = writeln!(
            w,
            "      {{ stream: {}, accounts: [{}] }}",
            quote(&spec.discovery.workloads(location)),
            accounts.join(", ")
        );
    }
    let _ = writeln!(
        w,
        "      # hub -> one node: JetStream deliveries to its inbox, for it alone"
    );
    for (id, _) in &spec.nodes {
        let _ = writeln!(
            w,
            "      {{ stream: {}, accounts: [{}] }}",
            quote(&format!("{}.>", node_inbox(id))),
            node_account(id)
        );
    }
    let _ = writeln!(w, "    ]");
    let _ = writeln!(w, "    imports = [");
    for (id, _) in &spec.nodes {
        let account = node_account(id);
        for service in node_services(spec, id) {
            let _ = writeln!(
                w,
                "      {{ service: {{ account: {account}, subject: {} }} }}",
                quote(&service)
            );
        }
    }
    let _ = writeln!(w, "    ]");
    let _ = writeln!(w, "  }}");
    for (id, password) in &spec.nodes {
        let _ = writeln!(w, "  {} {{", node_account(id));
        let _ = writeln!(
            w,
            "    users = [ {{ user: {}, password: {} }} ]",
            quote(id),
            quote(password)
        );
        let exports: Vec<String> = node_services(spec, id)
            .iter()
            .map(|s| format!("{{ service: {} }}", quote(s)))
            .collect();
        let _ = writeln!(w, "    exports = [ {} ]", exports.join(", "));
        let _ = writeln!(w, "    imports = [");
        let services = [
            format!("{p}.hb.{id}"),
            format!("{p}.res.{id}.>"),
            format!("{p}.evt.{id}.>"),
            format!("{p}.log.{id}.>"),
            format!("{}.{id}.>", spec.from_node),
            spec.discovery.card("*", id, ">"),
            spec.discovery.result(">"),
            "_INBOX.>".to_owned(),
        ]
        .into_iter()
        .chain(jetstream_api(id));
        for service in services {
            let _ = writeln!(
                w,
                "      {{ service: {{ account: {HUB_ACCOUNT}, subject: {} }} }}",
                quote(&service)
            );
        }
        for stream in [
            format!("{p}.ctl.ping"),
            format!("{}.>", spec.broadcast),
            spec.discovery.query(">"),
            spec.discovery.workloads(spec.location(id)),
            // The NATS services API: to every node, and to this one by its id.
            "$SRV.*".to_owned(),
            format!("$SRV.*.{SERVICE_NAME}"),
            format!("$SRV.*.{SERVICE_NAME}.{id}"),
            // JetStream push deliveries to the node's inbox (`_INBOX_<id>.…`).
            format!("{}.>", node_inbox(id)),
        ]
        .into_iter()
        .chain(followed_buckets(p))
        {
            let _ = writeln!(
                w,
                "      {{ stream: {{ account: {HUB_ACCOUNT}, subject: {} }} }}",
                quote(&stream)
            );
        }
        let _ = writeln!(w, "    ]");
        let _ = writeln!(w, "  }}");
    }
    let _ = writeln!(w, "}}");
    out
}

/// What the hub may ask of one node: its control and invoke subjects, and its agent
/// namespace.
fn node_services(spec: &AccountsSpec, id: &str) -> Vec<String> {
    let p = &spec.prefix;
    vec![
        format!("{p}.ctl.{id}.>"),
        format!("{p}.inv.{id}.>"),
        format!("{}.{id}.>", spec.to_node),
    ]
}

/// A password for a node's leaf: 24 letters and digits.
pub fn random_password() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_imports_only_its_own_slice() {
        let spec = AccountsSpec {
            prefix: "edgeleaf".into(),
            hub_users: vec![("ops".into(), "pw".into())],
            nodes: vec![("n1".into(), "a".into()), ("n2".into(), "b".into())],
            to_node: "dev".into(),
            broadcast: "fleet".into(),
            from_node: "up".into(),
            jetstream: JetStreamLimits::default(),
            discovery: DiscoverySubjects::default(),
            locations: [("n2".to_owned(), "plant".to_owned())].into(),
        };
        let text = render(&spec);
        assert!(
            text.contains("jetstream { max_file: 21474836480,"),
            "{text}"
        );
        let n1 = text
            .split("NODE_n1 {")
            .nth(1)
            .unwrap()
            .split("NODE_n2 {")
            .next()
            .unwrap();
        assert!(n1.contains("\"edgeleaf.hb.n1\""), "{n1}");
        assert!(n1.contains("\"$KV.EDGELEAF_STATUS.n1.>\""), "{n1}");
        assert!(!n1.contains(".n2"), "{n1}");
        assert!(n1.contains("\"_INBOX_n1.>\""), "{n1}");
        assert_eq!(node_inbox("n1"), crate::node::inbox_prefix("n1"));
        assert_eq!(SERVICE_NAME, crate::node::SERVICE_NAME);
        assert!(n1.contains("\"$SRV.*.edgeleaf-node.n1\""), "{n1}");
        assert!(
            text.contains("{ stream: \"_INBOX_n2.>\", accounts: [NODE_n2] }"),
            "{text}"
        );
        assert!(!n1.contains("$JS.API.>"), "{n1}");
        assert!(n1.contains("\"discovery.agents.*.n1.>\""), "{n1}");
        assert!(n1.contains("\"edge.n1.workloads\""), "{n1}");
        assert!(
            text.contains("{ stream: \"edge.plant.workloads\", accounts: [NODE_n2] }"),
            "{text}"
        );
        assert!(
            text.contains("{ service: \"discovery.agents.>\" }"),
            "{text}"
        );
        assert!(!n1.contains("STREAM.DELETE"), "{n1}");
        assert_eq!(random_password().len(), 24);
        assert_ne!(random_password(), random_password());
    }
}
