//! A node's heartbeat, published on its leaf, reaches the hub with every field.

use crate::harness::{Cluster, Node, NodeSpec, next_json};
use edgeleaf::protocol::{ControlReply, Heartbeat, LinkState, NodeInfo};

/// Every field DESIGN.md lists for a heartbeat.
const FIELDS: &[&str] = &[
    "node_id",
    "name",
    "version",
    "os",
    "arch",
    "tags",
    "started_at",
    "uptime_s",
    "seq",
    "interval_s",
    "cpu_pct",
    "load1",
    "mem_used",
    "mem_total",
    "disk_free",
    "agents",
    "invocations",
    "outbox",
    "hub_link",
];

#[tokio::test]
async fn heartbeat_reaches_hub_with_every_field() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut hbs = hub.subscribe("edgeleaf.hb.hb-node").await.unwrap();
    hub.flush().await.unwrap();
    let _node = Node::start(NodeSpec {
        id: "hb-node",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "lab")],
        ..Default::default()
    });

    let first = next_json(&mut hbs).await;
    for field in FIELDS {
        let v = first
            .get(field)
            .unwrap_or_else(|| panic!("heartbeat lacks {field}: {first}"));
        assert!(!v.is_null(), "heartbeat field {field} is null: {first}");
    }
    for field in ["depth", "oldest_age_s", "dropped"] {
        assert!(
            first["outbox"].get(field).is_some(),
            "outbox lacks {field}: {first}"
        );
    }
    for field in ["running", "failed"] {
        assert!(
            first["agents"].get(field).is_some(),
            "agents lacks {field}: {first}"
        );
    }
    let first: Heartbeat = serde_json::from_value(first).unwrap();
    assert_eq!(first.node_id, "hb-node");
    assert_eq!(first.arch, std::env::consts::ARCH);
    assert_eq!(first.os, "linux");
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.tags.get("site").map(String::as_str), Some("lab"));
    assert_eq!(first.interval_s, 1.0);
    assert!(first.mem_total > 0 && first.mem_used > 0 && first.mem_used <= first.mem_total);
    assert!(first.disk_free > 0);
    assert!(
        humantime::parse_rfc3339(&first.started_at).is_ok(),
        "{}",
        first.started_at
    );
    // It arrived on the hub through the leaf, and the first heartbeat is sent after a
    // probe: the link must be reported up.
    assert_eq!(first.hub_link.state, LinkState::Up);

    let second: Heartbeat = serde_json::from_value(next_json(&mut hbs).await).unwrap();
    assert_eq!(second.seq, first.seq + 1);
    assert_eq!(second.started_at, first.started_at);
}

#[tokio::test]
async fn info_and_unknown_control_requests_through_the_hub() {
    let cluster = Cluster::start().await;
    let _node = Node::start(NodeSpec {
        id: "ctl-node",
        url: Some(cluster.leaf.url()),
        ..Default::default()
    });
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let info: NodeInfo = crate::harness::control(&hub, "ctl-node", "info").await;
    assert_eq!(info.node_id, "ctl-node");
    assert!(!info.leaf.spawned);
    assert_eq!(info.leaf.url, cluster.leaf.url());

    let msg = hub
        .request("edgeleaf.ctl.ctl-node.frobnicate", "".into())
        .await
        .unwrap();
    let reply: ControlReply<serde_json::Value> = serde_json::from_slice(&msg.payload).unwrap();
    match reply {
        ControlReply::Error(e) => {
            assert_eq!(e.code, "not_found");
            assert!(e.message.contains("frobnicate"), "{}", e.message);
        }
        ControlReply::Ok(v) => panic!("unknown request answered ok: {v}"),
    }

    // A malformed ping body gets a bad_request answer, not silence or a crash.
    let msg = hub
        .request("edgeleaf.ctl.ping", "{not json".into())
        .await
        .unwrap();
    let reply: ControlReply<serde_json::Value> = serde_json::from_slice(&msg.payload).unwrap();
    assert!(
        matches!(reply, ControlReply::Error(ref e) if e.code == "bad_request"),
        "{reply:?}"
    );
}
