//! Nodes built without a compiler (`--no-default-features`, what
//! `scripts/cross-build.sh TARGET --runtime-only` makes for small boards) run agents
//! from code precompiled for their engine: `deploy` makes it for the compiler-less
//! nodes it targets (they report their engine in heartbeats), `edgeleaf precompile`
//! makes it as a file for a node's own `[[agents]]`. A node with a compiler uses
//! matching precompiled code too, and compiles nothing.

use std::time::Duration;

use edgeleaf::protocol::{Heartbeat, NodeInfo};
use serde_json::Value;

use crate::harness::{
    Cluster, Node, NodeSpec, agent_toml, agent_wasm, agents_settled, cli, cli_ok, control,
    eventually, next_json, publisher, request_ok, runtime_only_bin, serving, trusting,
};

const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

#[tokio::test]
async fn a_runtime_only_node_runs_precompiled_agents_and_refuses_plain_wasm() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(hub_url.as_str()).await.unwrap();
    let mut heartbeats = hub.subscribe("edgeleaf.hb.small").await.unwrap();
    hub.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;

    // A configured agent precompiled by hand, and one left as plain wasm.
    let cwasm = dir.path().join("echo.cwasm");
    let out = cli_ok(&[
        "precompile",
        agent_wasm("echo").to_str().unwrap(),
        "--target",
        HOST_TARGET,
        "-o",
        cwasm.to_str().unwrap(),
    ])
    .await;
    assert!(out.contains("x86_64-unknown-linux"), "{out}");
    let extra = [
        trusting(&public),
        agent_toml("local", &cwasm, &["small.local"], ""),
        agent_toml("plain", &agent_wasm("counter"), &["small.plain"], ""),
    ]
    .concat();
    let mut node = Node::start(NodeSpec {
        id: "small",
        url: Some(cluster.leaf.url()),
        extra,
        bin: Some(runtime_only_bin()),
        ..Default::default()
    });

    let hb: Heartbeat = serde_json::from_value(next_json(&mut heartbeats).await).unwrap();
    assert_eq!(hb.wasm_compiler, "none", "{hb:?}");
    assert_eq!(hb.engine.target, "x86_64-unknown-linux", "{hb:?}");
    assert!(hb.engine.compatible_with_this_build().is_ok(), "{hb:?}");

    // The precompiled one runs; the plain one fails alone, saying why.
    serving(&hub, "small.local", "hi").await;
    assert_eq!(request_ok(&hub, "small.local", "hi").await, "hi");
    let rows = agents_settled(&hub, "small", 2).await;
    let plain = rows
        .iter()
        .find(|r| r["name"] == "plain")
        .expect("plain listed");
    assert_eq!(plain["state"], "failed", "{rows:?}");
    let why = plain["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("no_compiler") || why.contains("without a compiler"),
        "{why}"
    );

    // A signed deploy precompiles for the node's engine by itself.
    let deploy = cli(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "shipped",
        "--trigger",
        "small.shipped",
        "--node",
        "small",
        "--key",
        key.to_str().unwrap(),
        "-s",
        &hub_url,
        "--wait",
        "30s",
    ])
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&deploy.stdout),
        String::from_utf8_lossy(&deploy.stderr),
    );
    assert!(deploy.status.success(), "{stdout}{stderr}\n{}", node.log());
    assert!(
        stderr.contains("precompiled for x86_64-unknown-linux"),
        "{stderr}"
    );
    assert!(stdout.contains("running version 1"), "{stdout}");
    assert_eq!(
        request_ok(&hub, "small.shipped", "shipped!").await,
        "shipped!"
    );

    // Fuel-metered agents run on an engine of their own: their own artifact.
    cli_ok(&[
        "deploy",
        agent_wasm("counter").to_str().unwrap(),
        "--name",
        "metered",
        "--trigger",
        "small.metered",
        "--fuel",
        "100000000",
        "--node",
        "small",
        "--key",
        key.to_str().unwrap(),
        "-s",
        &hub_url,
        "--wait",
        "30s",
    ])
    .await;
    assert_eq!(request_ok(&hub, "small.metered", "").await, "1");

    // Without precompiled code, the node refuses with a code that says so, and
    // keeps running the rest.
    let bare = cli(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "bare",
        "--trigger",
        "small.bare",
        "--node",
        "small",
        "--key",
        key.to_str().unwrap(),
        "--no-precompile",
        "-s",
        &hub_url,
        "--wait",
        "30s",
        "--json",
    ])
    .await;
    assert!(!bare.status.success());
    let report: Value = serde_json::from_slice(&bare.stdout).unwrap();
    let outcome = &report["nodes"][0];
    assert_eq!(outcome["state"], "rejected", "{report}");
    assert_eq!(outcome["error"]["code"], "no_artifact", "{report}");
    let why = outcome["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("precompiled") && why.contains(&hb.engine.fingerprint),
        "{why}"
    );
    assert_eq!(request_ok(&hub, "small.shipped", "still").await, "still");

    // After a restart, the deployment runs from the node's own copy.
    assert!(node.stop_with(libc::SIGTERM).success());
    node.spawn();
    serving(&hub, "small.shipped", "back").await;
    assert_eq!(request_ok(&hub, "small.shipped", "back").await, "back");
    assert_eq!(request_ok(&hub, "small.metered", "").await, "2");

    // The device build keeps the commands that look at the fleet, and names the
    // operator's commands it left out instead of calling them unknown.
    let device_cli = |args: &[&str]| {
        std::process::Command::new(runtime_only_bin())
            .args(args)
            .env_remove("NATS_URL")
            .output()
            .expect("cannot run the runtime-only edgeleaf")
    };
    let agents = device_cli(&["agents", "--node", "small", "--json", "-s", &hub_url]);
    let stdout = String::from_utf8_lossy(&agents.stdout);
    assert!(agents.status.success(), "{stdout}");
    assert!(stdout.contains("\"shipped\""), "{stdout}");
    for command in ["deploy", "hub", "dashboard"] {
        let out = device_cli(&[command, "--help"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains(&format!("`edgeleaf {command}` is an operator command")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_node_with_a_compiler_uses_matching_precompiled_code() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(hub_url.as_str()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;
    let _node = Node::start(NodeSpec {
        id: "big",
        url: Some(cluster.leaf.url()),
        extra: trusting(&public),
        ..Default::default()
    });
    eventually(Duration::from_secs(30), "node online", || async {
        crate::harness::try_control::<NodeInfo>(&hub, "big", "info").await
    })
    .await;
    // --precompile for the host's target, as for nodes that have not reported yet.
    let out = cli_ok(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "echo",
        "--trigger",
        "big.echo",
        "--node",
        "big",
        "--key",
        key.to_str().unwrap(),
        "--precompile",
        HOST_TARGET,
        "-s",
        &hub_url,
        "--wait",
        "30s",
    ])
    .await;
    assert!(out.contains("running version 1"), "{out}");
    assert_eq!(request_ok(&hub, "big.echo", "fast").await, "fast");
    let info: NodeInfo = control(&hub, "big", "info").await;
    assert_eq!(info.wasm_compiler, "cranelift");
    let cache = &info.compiled_cache;
    assert_eq!((cache.precompiled, cache.misses), (1, 0), "{cache:?}");

    // A target this edgeleaf does not know is a clear error before anything ships.
    let out = cli(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "echo",
        "--trigger",
        "big.echo",
        "--node",
        "big",
        "--key",
        key.to_str().unwrap(),
        "--precompile",
        "mips-unknown-linux-gnu",
        "-s",
        &hub_url,
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--precompile mips-unknown-linux-gnu"), "{err}");
    assert!(err.contains("no wasm code target"), "{err}");
}
