//! Agents on a real node: real wasm built from wasm-agents/, real hub + leaf, real sled.

use std::time::Duration;

use edgeleaf::protocol::{EventRecord, NodeInfo, ResultRecord};
use serde_json::Value;

use crate::harness::{
    Cluster, Node, NodeSpec, agent_toml, agent_wasm, agents_settled, cli, cli_json, control,
    eventually, next_json, request_error, request_ok,
};

#[tokio::test]
async fn components_and_wasi_commands_answer_through_the_leaf() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut results = hub.subscribe("edgeleaf.res.ag1.*").await.unwrap();
    let mut logs = hub.subscribe("edgeleaf.log.ag1.upper-c").await.unwrap();
    hub.flush().await.unwrap();
    let extra = [
        agent_toml("echo", &agent_wasm("echo"), &["demo.echo"], ""),
        agent_toml("upper-c", &agent_wasm("upper-c"), &["demo.upper"], ""),
        agent_toml("exit-c", &agent_wasm("exit-c"), &["demo.exit"], ""),
    ]
    .concat();
    let _node = Node::start(NodeSpec {
        id: "ag1",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let rows = agents_settled(&hub, "ag1", 3).await;
    for row in &rows {
        assert_eq!(row["state"], "running", "{row}");
    }
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["component", "wasi-command", "wasi-command"]);

    assert_eq!(
        request_ok(&hub, "demo.echo", "hello edge").await,
        "hello edge"
    );
    let record: ResultRecord = serde_json::from_value(next_json(&mut results).await).unwrap();
    assert_eq!((record.agent.as_str(), record.ok), ("echo", true));
    assert_eq!(record.output.as_deref(), Some("hello edge"));
    assert_eq!(record.subject, "demo.echo");

    assert_eq!(
        request_ok(&hub, "demo.upper", "shout, please").await,
        "SHOUT, PLEASE"
    );
    let line = next_json(&mut logs).await;
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("from demo.upper"),
        "{line}"
    );

    // A WASI exit code is an `exit` error carrying it; exit 0 is success.
    let (code, message) = request_error(&hub, "demo.exit", "exit:3").await;
    assert_eq!(code, "exit");
    assert!(message.contains("code 3"), "{message}");
    assert_eq!(request_ok(&hub, "demo.exit", "plain").await, "plain");

    // The direct subject reaches this node's agent without the queue group.
    assert_eq!(
        request_ok(&hub, "edgeleaf.inv.ag1.echo", "direct").await,
        "direct"
    );

    let info: NodeInfo = control(&hub, "ag1", "info").await;
    assert_eq!(info.agents.running, 3);
    assert_eq!(info.wasm_compiler, "cranelift");

    // The same through the CLI, as an operator would.
    let hub_url = cluster.hub.url();
    let out = cli(&[
        "invoke", "--node", "ag1", "--agent", "upper-c", "cli", "-s", &hub_url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "CLI\n");
    let out = cli(&["invoke", "demo.echo", "by trigger", "-s", &hub_url]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "by trigger\n");
    let out = cli(&["invoke", "demo.exit", "exit:7", "-s", &hub_url]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit: exited with code 7"));
    let rows = cli_json(&["agents", "--node", "ag1", "--json", "-s", &hub_url]).await;
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[0]["agent"], "echo");
    assert_eq!(rows[0]["live"], true);
    assert!(rows[0]["invocations"].as_u64().unwrap() >= 2, "{rows}");
}

#[tokio::test]
async fn kv_state_survives_invocations_and_restarts_and_the_cache_is_used() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = agent_toml("counter", &agent_wasm("counter"), &["demo.count"], "");
    let mut node = Node::start(NodeSpec {
        id: "kv1",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let rows = agents_settled(&hub, "kv1", 1).await;
    assert_eq!(
        rows[0]["compiled_from_cache"], false,
        "first start must compile"
    );
    for expected in ["1", "2", "3"] {
        assert_eq!(request_ok(&hub, "demo.count", "").await, expected);
    }
    assert!(node.stop_with(libc::SIGTERM).success());

    node.spawn();
    let rows = agents_settled(&hub, "kv1", 1).await;
    assert_eq!(
        rows[0]["compiled_from_cache"], true,
        "restart must load compiled code from the cache"
    );
    assert_eq!(request_ok(&hub, "demo.count", "").await, "4");
    let info: NodeInfo = control(&hub, "kv1", "info").await;
    assert_eq!(
        (info.compiled_cache.hits, info.compiled_cache.misses),
        (1, 0)
    );

    // A corrupt cache entry is recompiled, never trusted.
    assert!(node.stop_with(libc::SIGTERM).success());
    let compiled = node.state_dir().join("compiled");
    let entry = std::fs::read_dir(&compiled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("no compiled cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    node.spawn();
    let rows = agents_settled(&hub, "kv1", 1).await;
    assert_eq!(rows[0]["compiled_from_cache"], false);
    let info: NodeInfo = control(&hub, "kv1", "info").await;
    assert_eq!(info.compiled_cache.rejected, 1);
    assert_eq!(request_ok(&hub, "demo.count", "").await, "5");
}

#[tokio::test]
async fn threshold_publishes_an_alert_through_messaging() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut alerts = hub.subscribe("alerts.threshold").await.unwrap();
    hub.flush().await.unwrap();
    let extra = agent_toml(
        "threshold",
        &agent_wasm("threshold"),
        &["sensors.temp"],
        "allow_publish = [\"alerts.>\"]\nconfig = { limit = \"50\", window = \"3\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "th1",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    agents_settled(&hub, "th1", 1).await;
    let reading = |v: f64| format!("{{\"sensor\":\"t1\",\"value\":{v}}}");
    let first: Value =
        serde_json::from_str(&request_ok(&hub, "sensors.temp", &reading(20.0)).await).unwrap();
    assert_eq!(first["alert"], false, "{first}");
    request_ok(&hub, "sensors.temp", &reading(90.0)).await;
    let third: Value =
        serde_json::from_str(&request_ok(&hub, "sensors.temp", &reading(95.0)).await).unwrap();
    assert_eq!(third["alert"], true, "{third}");
    let alert = next_json(&mut alerts).await;
    assert_eq!(alert["sensor"], "t1", "{alert}");
    // Bad input is the agent's own error, named.
    let (code, message) = request_error(&hub, "sensors.temp", "not json").await;
    assert_eq!(code, "agent_error");
    assert!(!message.is_empty());
}

#[tokio::test]
async fn hostile_agents_are_contained_while_others_keep_serving() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut events = hub
        .subscribe("edgeleaf.evt.hx.invocation_failed")
        .await
        .unwrap();
    let mut sys = hub.subscribe("forbidden.target").await.unwrap();
    hub.flush().await.unwrap();
    let hostile = agent_wasm("hostile");
    let limits = |memory: &str, timeout: &str| {
        format!(
            "limits = {{ memory = \"{memory}\", timeout = \"{timeout}\", max_output = \"64KiB\", kv_quota = \"256KiB\", max_concurrency = 1 }}"
        )
    };
    let mut extra = agent_toml("echo", &agent_wasm("echo"), &["ok.echo"], "");
    for mode in ["loop", "oom", "trap", "big", "publish", "kvfill"] {
        extra += &agent_toml(
            &format!("h-{mode}"),
            &hostile,
            &[&format!("hostile.{mode}")],
            // `big` builds its 16 MiB answer in memory: give it room, so the output
            // limit is what stops it.
            &format!(
                "{}\nallow_publish = [\"allowed.>\"]",
                // `big` also gets time: copying 16 MiB out of a debug build under
                // load can take longer than the others' 500 ms.
                if mode == "big" {
                    limits("48MiB", "10s")
                } else {
                    limits("8MiB", "500ms")
                }
            ),
        );
    }
    extra += &agent_toml(
        "h-spin",
        &hostile,
        &["hostile.spin"],
        "limits = { timeout = \"10s\", max_concurrency = 1 }",
    );
    extra += &agent_toml(
        "h-fuel",
        &hostile,
        &["hostile.fuel"],
        "limits = { fuel = 1000000, timeout = \"5s\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "hx",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    agents_settled(&hub, "hx", 9).await;

    let cases = [
        ("hostile.loop", "loop", "timeout"),
        ("hostile.oom", "oom", "memory"),
        ("hostile.trap", "trap", "trap"),
        ("hostile.big", "big", "output_too_large"),
        ("hostile.publish", "publish:forbidden.target", "forbidden"),
        ("hostile.kvfill", "kvfill", "quota"),
        ("hostile.fuel", "loop", "fuel"),
    ];
    for (subject, payload, want) in cases {
        let (code, message) = request_error(&hub, subject, payload).await;
        assert_eq!(code, want, "{subject}: {message}");
        assert!(!message.is_empty());
        // The node and the well-behaved agent are unaffected...
        assert_eq!(
            request_ok(&hub, "ok.echo", "still here").await,
            "still here"
        );
        // ...and the hostile agent's next invocation is a fresh instance.
        assert_eq!(
            request_ok(&hub, subject, "echo").await,
            "echo",
            "{subject} after {want}"
        );
        let event: EventRecord = serde_json::from_value(next_json(&mut events).await).unwrap();
        assert_eq!(event.code.as_deref(), Some(want), "{event:?}");
    }
    // Nothing was published on the forbidden subject.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(200),
            futures::StreamExt::next(&mut sys)
        )
        .await
        .is_err()
    );
    // Allowed subjects work.
    assert_eq!(
        request_ok(&hub, "hostile.publish", "publish:allowed.x").await,
        "published"
    );

    // Concurrency 1: a second request while one spins waits briefly, then is busy.
    let slow = {
        let hub = hub.clone();
        tokio::spawn(async move { request_ok(&hub, "hostile.spin", "spin:2500").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, _) = request_error(&hub, "hostile.spin", "spin:10").await;
    assert_eq!(code, "busy");
    assert_eq!(slow.await.unwrap(), "done");
}

#[tokio::test]
async fn bad_modules_fail_alone_with_clear_errors() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let no_start = dir.path().join("no-start.wasm");
    // `(module (func (export "f")))`: valid wasm, but not a WASI command.
    let module: &[u8] = &[
        0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // header
        1, 4, 1, 0x60, 0, 0, // type section: () -> ()
        3, 2, 1, 0, // function section
        7, 5, 1, 1, b'f', 0, 0, // export "f"
        0x0a, 4, 1, 2, 0, 0x0b, // code section
    ];
    std::fs::write(&no_start, module).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let echo = std::fs::read(agent_wasm("echo")).unwrap();
    std::fs::write(&truncated, &echo[..echo.len() / 2]).unwrap();
    let extra = [
        agent_toml("echo", &agent_wasm("echo"), &["ok.echo"], ""),
        agent_toml("garbage", &garbage, &["bad.garbage"], ""),
        agent_toml("no-start", &no_start, &["bad.nostart"], ""),
        agent_toml("truncated", &truncated, &["bad.truncated"], ""),
        agent_toml(
            "missing",
            &dir.path().join("missing.wasm"),
            &["bad.missing"],
            "",
        ),
    ]
    .concat();
    let _node = Node::start(NodeSpec {
        id: "bad",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let rows = agents_settled(&hub, "bad", 5).await;
    let error = |name: &str| -> String {
        let row = rows.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(row["state"], "failed", "{row}");
        row["error"].as_str().unwrap().to_owned()
    };
    assert!(
        error("garbage").contains("not a WebAssembly module"),
        "{}",
        error("garbage")
    );
    assert!(
        error("no-start").contains("_start"),
        "{}",
        error("no-start")
    );
    assert!(
        error("truncated").contains("invalid_module"),
        "{}",
        error("truncated")
    );
    assert!(
        error("missing").contains("missing.wasm"),
        "{}",
        error("missing")
    );
    assert_eq!(request_ok(&hub, "ok.echo", "fine").await, "fine");
    let info: NodeInfo = control(&hub, "bad", "info").await;
    assert_eq!((info.agents.running, info.agents.failed), (1, 4));
}

#[tokio::test]
async fn run_agent_serves_a_module_for_development() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let wasm = agent_wasm("echo");
    let mut child = tokio::process::Command::new(crate::harness::BIN)
        .args(["run-agent"])
        .arg(&wasm)
        .args([
            "--trigger",
            "dev.echo",
            "--name",
            "dev-echo",
            "--timeout",
            "1s",
            "-s",
            &cluster.leaf.url(),
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let reply = eventually(Duration::from_secs(30), "run-agent answering", || async {
        let msg = tokio::time::timeout(
            Duration::from_secs(1),
            hub.request("dev.echo", "dev".into()),
        )
        .await
        .ok()?
        .ok()?;
        Some(String::from_utf8_lossy(&msg.payload).into_owned())
    })
    .await;
    assert_eq!(reply, "dev");
    crate::harness::signal(child.id().unwrap(), libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn hundreds_of_agents_share_their_code_and_list_in_pages() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    const AGENTS: usize = 400;
    let mut extra = format!("\n[limits]\nmax_agents = {AGENTS}\n");
    for i in 0..AGENTS {
        let name = format!("e{i:03}");
        extra += &agent_toml(&name, &agent_wasm("echo"), &[&format!("many.{name}")], "");
    }
    let _node = Node::start(NodeSpec {
        id: "many",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let info: NodeInfo = eventually(Duration::from_secs(120), "all agents running", || async {
        let info: NodeInfo = control(&hub, "many", "info").await;
        (info.agents.running == AGENTS as u64).then_some(info)
    })
    .await;
    // One module: compiled once and shared in memory, however many agents run it
    // (not loaded again from the compiled-code cache per agent).
    let cache = &info.compiled_cache;
    assert_eq!((cache.misses, cache.hits), (1, 0), "{cache:?}");
    assert_eq!(request_ok(&hub, "many.e399", "last").await, "last");

    // The first page stays far below max_payload and says where to go on.
    let page = hub
        .request("edgeleaf.ctl.many.agents", "".into())
        .await
        .unwrap();
    assert!(page.payload.len() <= 130 * 1024, "{}", page.payload.len());
    let next = page
        .headers
        .as_ref()
        .and_then(|h| h.get("Edgeleaf-Next"))
        .map(|v| v.as_str().to_owned())
        .expect("a first page with more after it");
    let rows: Value = serde_json::from_slice(&page.payload).unwrap();
    let first = rows["ok"].as_array().unwrap();
    assert!(first.len() < AGENTS, "{}", first.len());
    assert_eq!(first.last().unwrap()["name"], next.as_str());
    let bad = hub
        .request("edgeleaf.ctl.many.agents", "{\"page\": 2}".into())
        .await
        .unwrap();
    let bad: Value = serde_json::from_slice(&bad.payload).unwrap();
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");

    // The CLI reads every page: each agent once, in order.
    let rows = cli_json(&[
        "agents",
        "--node",
        "many",
        "--json",
        "-s",
        &cluster.hub.url(),
    ])
    .await;
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..AGENTS).map(|i| format!("e{i:03}")).collect();
    assert_eq!(names, want);
    assert!(rows.as_array().unwrap().iter().all(|r| r["live"] == true));
}

#[tokio::test]
async fn a_host_with_little_address_space_gets_bounds_checked_memories() {
    // What a kernel with 39-bit addresses (Raspberry Pi OS on aarch64) gives a
    // process is far below the default layout's pool; `ulimit -v` does the same here.
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut heartbeats = hub.subscribe("edgeleaf.hb.narrow").await.unwrap();
    hub.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("edgeleaf-limited");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -v {}\nexec {} \"$@\"\n",
            64 << 20, // KiB: 64 GiB
            crate::harness::BIN
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let extra = [
        agent_toml("counter", &agent_wasm("counter"), &["narrow.count"], ""),
        agent_toml(
            "metered",
            &agent_wasm("echo"),
            &["narrow.echo"],
            "limits = { fuel = 100000000 }",
        ),
    ]
    .concat();
    let node = Node::start(NodeSpec {
        id: "narrow",
        url: Some(cluster.leaf.url()),
        extra,
        bin: Some(wrapper),
        ..Default::default()
    });
    let hb: edgeleaf::protocol::Heartbeat =
        serde_json::from_value(next_json(&mut heartbeats).await).unwrap();
    assert_eq!(
        hb.engine.memory_reservation,
        Some(64 << 20),
        "{hb:?}\n{}",
        node.log()
    );
    assert!(
        node.log().contains("cannot reserve the address space"),
        "{}",
        node.log()
    );
    crate::harness::serving(&hub, "narrow.echo", "fuel").await;
    for expected in ["1", "2"] {
        assert_eq!(request_ok(&hub, "narrow.count", "").await, expected);
    }
}
