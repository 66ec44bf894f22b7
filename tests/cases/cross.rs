//! The smoke test for a node built for another architecture, run under qemu-user by
//! `scripts/cross-smoke.sh TARGET` (ignored in the normal run: it needs the foreign
//! binary). The hub, the CLI and this test are x86_64; the node under test spawns its
//! own leaf server (the host's nats-server), serves a configured agent, takes a
//! signed deployment from the hub, keeps its results in its outbox and forwards
//! them, and reports its architecture and wasm compiler in its heartbeat.

use std::time::Duration;

use edgeleaf::protocol::Heartbeat;

use crate::harness::{
    Node, NodeSpec, Server, agent_toml, agent_wasm, cli_ok, free_port, hub_init, next_json,
};

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run this test with scripts/cross-smoke.sh TARGET")
    })
}

#[tokio::test]
#[ignore = "needs a foreign-architecture node binary: scripts/cross-smoke.sh TARGET"]
async fn foreign_node_serves_agents_and_reports_its_arch() {
    let arch = required("EDGELEAF_EXPECT_ARCH");
    let compiler = required("EDGELEAF_EXPECT_COMPILER");
    let hub = Server::hub();
    hub_init(&hub.url()).await;
    let client = async_nats::connect(hub.url()).await.unwrap();
    let mut heartbeats = client.subscribe("edgeleaf.hb.cross-node").await.unwrap();
    let mut results = client.subscribe("edgeleaf.res.cross-node.>").await.unwrap();
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pub.key");
    let public = cli_ok(&["keys", "gen", "--out", key.to_str().unwrap()]).await;
    // A node without a compiler (`cross-smoke.sh TARGET --runtime-only`) runs its
    // configured agent precompiled, for its target, by this host's build.
    let configured = if compiler == "none" {
        let cwasm = dir.path().join("echo.cwasm");
        cli_ok(&[
            "precompile",
            agent_wasm("echo").to_str().unwrap(),
            "--target",
            &required("EDGELEAF_CROSS_TARGET"),
            "-o",
            cwasm.to_str().unwrap(),
        ])
        .await;
        cwasm
    } else {
        agent_wasm("echo")
    };
    let node = Node::start(NodeSpec {
        id: "cross-node",
        spawn_leaf: Some((free_port(), hub.leafnode_port.unwrap())),
        extra: format!(
            "\n[security]\ntrusted_publishers = [\"{}\"]\n{}",
            public.trim(),
            agent_toml("echo", &configured, &["smoke.echo"], "")
        ),
        ..Default::default()
    });

    let hb: Heartbeat = serde_json::from_value(next_json(&mut heartbeats).await).unwrap();
    assert_eq!(hb.arch, arch, "{hb:?}");
    assert_eq!(hb.wasm_compiler, compiler, "{hb:?}");

    // The configured agent, from a client on the hub. Compiling under emulation is
    // slow, so retry until it serves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let reply = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            client.request("smoke.echo", "hello".into()),
        )
        .await;
        match attempt {
            Ok(Ok(msg)) if msg.headers.is_none() => break msg.payload,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            other => panic!("echo never answered ({other:?}); log:\n{}", node.log()),
        }
    };
    assert_eq!(&reply[..], b"hello");
    let result = next_json(&mut results).await;
    assert_eq!(result["agent"], "echo", "{result}");
    assert_eq!(result["ok"], true, "{result}");

    // A signed deployment: fetched from the hub's object store, verified, compiled
    // (or, for a node without a compiler, precompiled by `deploy` for the engine its
    // heartbeat reports) and served by the foreign node.
    let out = cli_ok(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "shipped",
        "--trigger",
        "smoke.shipped",
        "--node",
        "cross-node",
        "--key",
        key.to_str().unwrap(),
        "-s",
        &hub.url(),
        "--wait",
        "120s",
    ])
    .await;
    assert!(out.contains("running version 1"), "{out}");
    let out = cli_ok(&[
        "invoke",
        "--node",
        "cross-node",
        "--agent",
        "shipped",
        "shipped!",
        "-s",
        &hub.url(),
        "--timeout",
        "20s",
    ])
    .await;
    assert_eq!(out.trim_end(), "shipped!");
}
