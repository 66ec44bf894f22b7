//! Fault tests: a link that comes and goes, hostile agents under load, and
//! malformed control and deployment messages. Each fails alone; the node and the
//! other agents keep working.

use std::time::Duration;

use base64::Engine as _;
use edgeleaf::protocol::{ControlReply, DeployStatus, LinkState, NodeInfo};
use futures::StreamExt;

use crate::harness::{
    Cluster, Node, NodeSpec, Server, agent_toml, agent_wasm, eventually, free_port, request_ok,
};

#[tokio::test]
async fn heartbeats_resume_each_time_the_link_returns() {
    let mut hub = Server::hub();
    let _node = Node::start(NodeSpec {
        id: "flappy",
        spawn_leaf: Some((free_port(), hub.leafnode_port.unwrap())),
        ..Default::default()
    });
    for round in 0..3 {
        let client = async_nats::connect(hub.url()).await.unwrap();
        let mut hbs = client.subscribe("edgeleaf.hb.flappy").await.unwrap();
        client.flush().await.unwrap();
        // A heartbeat that arrived through the restored link reports it up.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let hb = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no heartbeat with the link up"
            );
            let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), hbs.next()).await
            else {
                continue;
            };
            let hb: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            if hb["hub_link"]["state"] == "up" {
                break hb;
            }
        };
        assert_eq!(hb["node_id"], "flappy", "round {round}");
        drop(hbs);
        hub.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        hub.restart();
    }
}

#[tokio::test]
async fn a_good_agent_answers_correctly_while_hostile_ones_run() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = agent_toml(
        "echo",
        &agent_wasm("echo"),
        &["good.echo"],
        "limits = { max_concurrency = 8 }",
    ) + &agent_toml(
        "spinner",
        &agent_wasm("hostile"),
        &["bad.loop"],
        "limits = { timeout = \"300ms\", max_concurrency = 4, memory = \"8MiB\" }",
    ) + &agent_toml(
        "bomber",
        &agent_wasm("hostile"),
        &["bad.oom"],
        "limits = { timeout = \"2s\", max_concurrency = 4, memory = \"8MiB\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "load",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    eventually(Duration::from_secs(30), "echo serving", || async {
        let msg =
            tokio::time::timeout(Duration::from_secs(1), hub.request("good.echo", "x".into()))
                .await
                .ok()?
                .ok()?;
        (msg.payload.as_ref() == b"x").then_some(())
    })
    .await;

    eventually(
        Duration::from_secs(30),
        "all three agents running",
        || async {
            let rows: Vec<serde_json::Value> =
                crate::harness::control(&hub, "load", "agents").await;
            (rows.iter().filter(|r| r["state"] == "running").count() == 3).then_some(())
        },
    )
    .await;

    // Four clients keep the hostile agents busy for the whole run...
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hostiles = Vec::new();
    for i in 0..4 {
        let (hub, stop) = (hub.clone(), stop.clone());
        hostiles.push(tokio::spawn(async move {
            let (subject, body) = if i % 2 == 0 {
                ("bad.loop", "loop")
            } else {
                ("bad.oom", "oom")
            };
            let mut errors = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Ok(msg)) =
                    tokio::time::timeout(Duration::from_secs(5), hub.request(subject, body.into()))
                        .await
                    && msg.headers.is_some()
                {
                    errors += 1;
                }
            }
            errors
        }));
    }
    // ...while 200 requests to the good agent, 8 at a time, must all be right.
    let mut good = futures::stream::iter(0..200)
        .map(|i| {
            let hub = hub.clone();
            async move {
                let body = format!("good-{i}");
                let msg = tokio::time::timeout(
                    Duration::from_secs(10),
                    hub.request("good.echo", body.clone().into()),
                )
                .await
                .expect("good agent too slow")
                .expect("good agent request failed");
                assert!(
                    msg.headers.is_none(),
                    "good agent failed: {:?}",
                    String::from_utf8_lossy(&msg.payload)
                );
                assert_eq!(msg.payload.as_ref(), body.as_bytes());
            }
        })
        .buffer_unordered(8);
    while good.next().await.is_some() {}
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut contained = 0;
    for h in hostiles {
        contained += h.await.unwrap();
    }
    assert!(contained > 0, "the hostile agents never failed");
}

#[tokio::test]
async fn malformed_control_and_deployment_messages_are_answered_and_harmless() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let _node = Node::start(NodeSpec {
        id: "sturdy",
        url: Some(cluster.leaf.url()),
        extra: "\n[security]\nallow_unsigned = true\n".to_owned()
            + &agent_toml("echo", &agent_wasm("echo"), &["sturdy.echo"], ""),
        ..Default::default()
    });
    eventually(Duration::from_secs(30), "node answering", || async {
        let msg = tokio::time::timeout(
            Duration::from_secs(1),
            hub.request("sturdy.echo", "x".into()),
        )
        .await
        .ok()?
        .ok()?;
        (msg.payload.as_ref() == b"x").then_some(())
    })
    .await;

    // Control: garbage, wrong types, a payload near the server's limit.
    for body in [
        &b"{not json"[..],
        br#"{"tags": 5}"#,
        br#"{"tags": {"a": "b"}, "v": 2}"#,
        &vec![b'x'; 900 * 1024][..],
    ] {
        let msg = hub
            .request("edgeleaf.ctl.ping", body.to_vec().into())
            .await
            .unwrap();
        let reply: ControlReply<serde_json::Value> = serde_json::from_slice(&msg.payload).unwrap();
        assert!(
            matches!(reply, ControlReply::Error(ref e) if e.code == "bad_request"),
            "{reply:?}"
        );
    }

    // Deployments: not an envelope, a spec of the wrong shape, a spec from a future
    // version with fields this node does not know.
    let js = async_nats::jetstream::new(hub.clone());
    let kv = js.get_key_value("EDGELEAF_DEPLOYMENTS").await.unwrap();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
    };
    let future_spec = serde_json::json!({
        "agent": {"name": "future", "triggers": ["f.x"]},
        "module": {"digest": "00".repeat(32), "size": 1},
        "version": 1, "issued_at": "2030-01-01T00:00:00Z", "nonce": "n",
        "target": "node.sturdy.future", "publisher": null, "keep_kv": false,
        "schema": 2
    });
    let cases = [
        ("node.sturdy.garbage", b"\x00\x01 not json".to_vec()),
        ("node.sturdy.shape", serde_json::to_vec(&serde_json::json!({"spec": b64(&serde_json::json!({"agent": 5})), "signature": null, "publisher": null})).unwrap()),
        ("node.sturdy.future", serde_json::to_vec(&serde_json::json!({"spec": b64(&future_spec), "signature": null, "publisher": null})).unwrap()),
    ];
    for (key, value) in &cases {
        kv.put(*key, value.clone().into()).await.unwrap();
    }
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    for (key, _) in &cases {
        let agent = key.rsplit('.').next().unwrap();
        let s: DeployStatus = eventually(Duration::from_secs(20), "rejection status", || async {
            let raw = status.get(format!("sturdy.{agent}")).await.ok()??;
            serde_json::from_slice(&raw).ok()
        })
        .await;
        assert_eq!(s.state, "rejected", "{key}: {s:?}");
        assert_eq!(s.error.as_ref().unwrap().code, "malformed", "{key}: {s:?}");
    }
    // Unharmed.
    assert_eq!(
        request_ok(&hub, "sturdy.echo", "still fine").await,
        "still fine"
    );
    let msg = hub
        .request("edgeleaf.ctl.sturdy.info", "".into())
        .await
        .unwrap();
    let info: ControlReply<NodeInfo> = serde_json::from_slice(&msg.payload).unwrap();
    assert!(
        matches!(info, ControlReply::Ok(ref i) if i.hub_link.state == LinkState::Up),
        "{info:?}"
    );
}
