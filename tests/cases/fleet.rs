//! The fleet view: `nodes` (from the hub's heartbeat stream) and `ping` (live).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, Node, NodeSpec, cli_json, eventually};

fn row<'a>(rows: &'a Value, id: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["node_id"] == id)
}

#[tokio::test]
async fn nodes_marks_a_stopped_node_offline() {
    let cluster = Cluster::start().await;
    let hub = cluster.hub.url();
    let mut node = Node::start(NodeSpec {
        id: "fleet-a",
        url: Some(cluster.leaf.url()),
        ..Default::default()
    });
    let online = eventually(
        Duration::from_secs(20),
        "node online in `nodes`",
        || async {
            let rows = cli_json(&["nodes", "--json", "-s", &hub]).await;
            row(&rows, "fleet-a")
                .filter(|r| r["status"] == "online")
                .cloned()
        },
    )
    .await;
    for field in ["node_id", "status", "last_seen", "heartbeat"] {
        assert!(online.get(field).is_some(), "row lacks {field}: {online}");
    }
    assert_eq!(online["heartbeat"]["node_id"], "fleet-a");

    // With heartbeats pouring in while it reads (500 more nodes, this one's
    // heartbeat under their names, sent without pause), `nodes` still lists each
    // node once.
    let client = async_nats::connect(&hub).await.unwrap();
    let template = online["heartbeat"].clone();
    let publish = move |round: u64| {
        let (client, mut hb) = (client.clone(), template.clone());
        async move {
            for i in 0..500 {
                let id = format!("crowd{i:03}");
                hb["node_id"] = id.clone().into();
                hb["name"] = id.clone().into();
                hb["seq"] = round.into();
                let body = serde_json::to_vec(&hb).unwrap();
                client
                    .publish(format!("edgeleaf.hb.{id}"), body.into())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
        }
    };
    publish(1).await;
    let crowd = tokio::spawn({
        let publish = publish.clone();
        async move {
            for round in 2.. {
                publish(round).await;
            }
        }
    });
    for _ in 0..3 {
        let rows = cli_json(&["nodes", "--json", "-s", &hub]).await;
        let mut ids: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["node_id"].as_str().unwrap())
            .collect();
        let listed = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), listed, "a node listed twice");
        assert_eq!(ids.iter().filter(|id| id.starts_with("crowd")).count(), 500);
    }
    crowd.abort();

    let status = node.stop_with(libc::SIGTERM);
    assert!(status.success(), "node exit on SIGTERM: {status}");
    let stopped_at = std::time::Instant::now();
    let offline = eventually(
        Duration::from_secs(20),
        "node offline in `nodes`",
        || async {
            let rows = cli_json(&["nodes", "--json", "-s", &hub]).await;
            row(&rows, "fleet-a")
                .filter(|r| r["status"] == "offline")
                .cloned()
        },
    )
    .await;
    // Three missed 1 s intervals, judged by the hub's receive time.
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(2),
        "offline too early: {offline}"
    );
    assert!(offline["age_s"].as_f64().unwrap() > 3.0, "{offline}");
}

#[tokio::test]
async fn ping_across_the_leaf_filters_by_tag() {
    let cluster = Cluster::start().await;
    let hub = cluster.hub.url();
    let _a = Node::start(NodeSpec {
        id: "ping-a",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "north"), ("role", "gw")],
        ..Default::default()
    });
    let _b = Node::start(NodeSpec {
        id: "ping-b",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "south"), ("role", "gw")],
        ..Default::default()
    });
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        Duration::from_secs(20),
        "both nodes answer ping",
        || async {
            let v = cli_json(&["ping", "--json", "-s", &hub]).await;
            (ids(&v) == ["ping-a", "ping-b"]).then_some(())
        },
    )
    .await;
    let v = cli_json(&["ping", "--json", "--tag", "site=north", "-s", &hub]).await;
    assert_eq!(ids(&v), ["ping-a"]);
    let v = cli_json(&[
        "ping",
        "--json",
        "--tag",
        "role=gw",
        "--tag",
        "site=south",
        "-s",
        &hub,
    ])
    .await;
    assert_eq!(ids(&v), ["ping-b"]);
    assert_eq!(v[0]["tags"]["site"], "south");
    let v = cli_json(&["ping", "--json", "--tag", "site=east", "-s", &hub]).await;
    assert_eq!(ids(&v), Vec::<String>::new());
}
