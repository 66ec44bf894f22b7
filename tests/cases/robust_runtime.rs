//! Round-2 robustness of the runtime on one node: the node's `[limits]` cap what a
//! spec may ask for, and what an agent may hold in the node, so a spec or a flood
//! of messages cannot take the disk or the memory of the device.

use std::time::Duration;

use edgeleaf::protocol::AgentInfo;

use crate::harness::{Cluster, Node, NodeSpec, agent_toml, agent_wasm, control, eventually};

#[tokio::test]
async fn node_limits_cap_what_specs_ask_for() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let hostile = agent_wasm("hostile");
    let extra = "\n[limits]\nmax_kv_quota = \"1MiB\"\nkv_budget = \"1536KiB\"\n\
                 max_output = \"4MiB\"\nmax_fuel = 1000000000\n"
        .to_owned()
        + &agent_toml(
            "greedy",
            &hostile,
            &["greedy.run"],
            "limits = { kv_quota = \"2MiB\", fuel = 1000 }",
        )
        + &agent_toml(
            "wordy",
            &hostile,
            &["wordy.run"],
            "limits = { max_output = \"8MiB\", fuel = 1000 }",
        )
        + &agent_toml("unfuelled", &hostile, &["unfuelled.run"], "")
        + &agent_toml(
            "first",
            &hostile,
            &["first.run"],
            "limits = { kv_quota = \"1MiB\", fuel = 1000 }",
        )
        + &agent_toml(
            "second",
            &hostile,
            &["second.run"],
            "limits = { kv_quota = \"1MiB\", fuel = 1000 }",
        );
    let _node = Node::start(NodeSpec {
        id: "capped",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let agents: Vec<AgentInfo> = eventually(Duration::from_secs(30), "five agents", || async {
        let rows: Vec<AgentInfo> = control(&hub, "capped", "agents").await;
        (rows.len() == 5).then_some(rows)
    })
    .await;
    let error = |name: &str| {
        let row = agents.iter().find(|a| a.name == name).unwrap();
        assert_eq!(row.state, "failed", "{name}: {row:?}");
        row.error.clone().unwrap()
    };
    let greedy = error("greedy");
    assert!(
        greedy.contains("kv_quota") && greedy.contains("max_kv_quota"),
        "{greedy}"
    );
    let wordy = error("wordy");
    assert!(wordy.contains("max_output"), "{wordy}");
    let unfuelled = error("unfuelled");
    assert!(
        unfuelled.contains("fuel") && unfuelled.contains("max_fuel"),
        "{unfuelled}"
    );
    // 1 MiB each, 1.5 MiB for all: one of the two runs, the other is refused.
    let (first, second) = (
        agents.iter().find(|a| a.name == "first").unwrap(),
        agents.iter().find(|a| a.name == "second").unwrap(),
    );
    let refused = match (first.state.as_str(), second.state.as_str()) {
        ("running", "failed") => second,
        ("failed", "running") => first,
        other => panic!("expected one of first/second to run and one to fail: {other:?}"),
    };
    let message = refused.error.as_deref().unwrap();
    assert!(message.contains("kv_budget"), "{message}");
}

#[tokio::test]
async fn a_flood_of_large_messages_is_refused_busy_not_buffered() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = "\n[limits]\nmax_pending_bytes = \"512KiB\"\n".to_owned()
        + &agent_toml(
            "slow",
            &agent_wasm("hostile"),
            &["slow.run"],
            "limits = { max_concurrency = 1, timeout = \"20s\" }",
        );
    let _node = Node::start(NodeSpec {
        id: "flooded",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    eventually(Duration::from_secs(30), "slow serving", || async {
        let rows: Vec<AgentInfo> = control(&hub, "flooded", "agents").await;
        rows.iter()
            .any(|a| a.name == "slow" && a.state == "running")
            .then_some(())
    })
    .await;
    // 200 KiB each: two fit in 512 KiB, the rest is turned away at once.
    let body = format!("sleep:1500{}", " ".repeat(200 << 10));
    let replies = futures::future::join_all((0..8).map(|_| {
        let (hub, body) = (hub.clone(), body.clone());
        async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                hub.request("slow.run", body.into()),
            )
            .await
            .expect("every message gets a reply")
            .expect("request")
        }
    }))
    .await;
    let (mut busy, mut slept) = (0, 0);
    for msg in &replies {
        let code = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(edgeleaf::protocol::ERROR_HEADER))
            .map(|v| v.to_string());
        let text = String::from_utf8_lossy(&msg.payload);
        match code.as_deref() {
            None => {
                assert_eq!(text, "slept");
                slept += 1;
            }
            Some("busy") => busy += 1,
            Some(other) => panic!("unexpected error {other}: {text}"),
        }
        if code.is_some() && text.contains("max_pending_bytes") {
            assert!(text.contains("slow"), "{text}");
        }
    }
    assert!(slept >= 1, "at least one ran: {slept} slept, {busy} busy");
    assert!(busy >= 1, "some were refused: {slept} slept, {busy} busy");
    let rows: Vec<AgentInfo> = control(&hub, "flooded", "agents").await;
    let slow = rows.iter().find(|a| a.name == "slow").unwrap();
    assert!(slow.refused_busy >= 1, "{slow:?}");
    // Refused for bytes, not for a backlog of instances: the counter says so.
    assert!(slow.refused_busy <= busy as u64, "{slow:?} vs {busy}");
}
