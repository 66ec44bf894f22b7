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

/// The consumers a node holds on a stream of the hub (they deliver to its inbox,
/// `_INBOX_<id>.`; the CLI's own come and go).
async fn consumers(js: &async_nats::jetstream::Context, stream: &str, node: &str) -> usize {
    use futures::TryStreamExt as _;
    let stream = js.get_stream(stream).await.unwrap();
    let inbox = format!("_INBOX_{node}.");
    let all: Vec<_> = stream.consumers().try_collect().await.unwrap();
    all.iter()
        .filter(|c| {
            c.config
                .deliver_subject
                .as_deref()
                .is_some_and(|s| s.starts_with(&inbox))
        })
        .count()
}

/// Deploys echo.wasm as `agent` to every node, signed with `key`, and waits.
async fn deploy_to_all(hub_url: &str, key: &std::path::Path, agent: &str, trigger: &str) {
    let (ok, out) = crate::cases::shipping::deploy(
        hub_url,
        &[
            crate::harness::agent_wasm("echo").to_str().unwrap(),
            "--name",
            agent,
            "--trigger",
            trigger,
            "--all",
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
}

/// A fleet of thousands must not cost the hub a JetStream consumer per node for
/// following deployments (each stream allows `--max-consumers`): `hub init` makes the
/// buckets nodes follow republish their changes, and nodes subscribe to those. A
/// bucket made before that (nats-server 2.9 cannot add it later) is still followed,
/// with KV watches.
#[tokio::test]
async fn nodes_follow_deployments_without_a_consumer_each_and_watch_older_buckets() {
    use crate::harness::{Server, publisher, request_ok, serving, trusting};
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;

    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(hub_url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(hub.clone());
    let _node = Node::start(NodeSpec {
        id: "lean",
        url: Some(cluster.leaf.url()),
        extra: trusting(&public),
        ..Default::default()
    });
    crate::cases::shipping::wait_node(&hub_url, "lean", "online").await;
    let mut deployments = js.get_stream("KV_EDGELEAF_DEPLOYMENTS").await.unwrap();
    let republish = deployments.info().await.unwrap().config.republish.clone();
    assert_eq!(
        republish.map(|r| (r.destination, r.headers_only)),
        Some(("edgeleaf.kv.EDGELEAF_DEPLOYMENTS.>".to_owned(), true))
    );
    deploy_to_all(&hub_url, &key, "first", "lean.first").await;
    serving(&hub, "lean.first", "1").await;
    // A later change reaches it the same way.
    deploy_to_all(&hub_url, &key, "second", "lean.second").await;
    assert_eq!(request_ok(&hub, "lean.second", "2").await, "2");
    assert_eq!(consumers(&js, "KV_EDGELEAF_DEPLOYMENTS", "lean").await, 0);
    assert_eq!(consumers(&js, "KV_EDGELEAF_UPGRADES", "lean").await, 0);

    // `agents` reads the statuses in one pass over the status bucket, of one node
    // or of all: another node's, a deleted one and a forged one beside lean's.
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    let reported = |node: &str, agent: &str| {
        serde_json::json!({"node_id": node, "agent": agent, "state": "running",
            "version": 3, "running_version": 3, "digest": null, "key": format!("node.{node}.{agent}"),
            "error": null, "since": "2026-12-04T00:00:00Z"})
        .to_string()
    };
    status
        .put("ghost.svc", reported("ghost", "svc").into())
        .await
        .unwrap();
    status
        .put("ghost.gone", reported("ghost", "gone").into())
        .await
        .unwrap();
    status.delete("ghost.gone").await.unwrap();
    status
        .put("ghost.forged", reported("lean", "forged").into())
        .await
        .unwrap();
    let rows = cli_json(&["agents", "--node", "lean", "--json", "-s", &hub_url]).await;
    let names = |rows: &Value| -> Vec<String> {
        let mut names: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}.{}",
                    r["node_id"].as_str().unwrap(),
                    r["agent"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&rows), ["lean.first", "lean.second"], "{rows}");
    assert!(rows[0]["live"].as_bool().unwrap(), "{rows}");
    assert_eq!(rows[0]["version"], 1, "{rows}");
    let rows = cli_json(&["agents", "--json", "-s", &hub_url]).await;
    assert_eq!(
        names(&rows),
        ["ghost.svc", "lean.first", "lean.second"],
        "{rows}"
    );

    // A hub whose deployments bucket an older edgeleaf made, without republishing.
    let old_hub = Server::hub();
    let old_js =
        async_nats::jetstream::new(async_nats::connect(old_hub.url().as_str()).await.unwrap());
    old_js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "KV_EDGELEAF_DEPLOYMENTS".into(),
            subjects: vec!["$KV.EDGELEAF_DEPLOYMENTS.>".into()],
            max_messages_per_subject: 5,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    crate::harness::hub_init(&old_hub.url()).await;
    let old = Cluster {
        leaf: Server::leaf(&old_hub),
        hub: old_hub,
    };
    old.wait_linked().await;
    let old_url = old.hub.url();
    let _old_node = Node::start(NodeSpec {
        id: "veteran",
        url: Some(old.leaf.url()),
        extra: trusting(&public),
        ..Default::default()
    });
    crate::cases::shipping::wait_node(&old_url, "veteran", "online").await;
    let mut deployments = old_js.get_stream("KV_EDGELEAF_DEPLOYMENTS").await.unwrap();
    let republished = deployments.info().await.unwrap().config.republish.is_some();
    deploy_to_all(&old_url, &key, "first", "veteran.first").await;
    let old_client = async_nats::connect(old_url.as_str()).await.unwrap();
    serving(&old_client, "veteran.first", "1").await;
    let watching = consumers(&old_js, "KV_EDGELEAF_DEPLOYMENTS", "veteran").await;
    if republished {
        // A server that could add republishing to the existing bucket.
        assert_eq!(watching, 0);
    } else {
        // A watch per key pattern that can select it: its own and `all` (a watch
        // being replaced may briefly count twice).
        assert!(watching >= 2, "{watching} watches");
    }
    // The bucket made here republishes as a new hub's does.
    assert_eq!(
        consumers(&old_js, "KV_EDGELEAF_UPGRADES", "veteran").await,
        0
    );
}
