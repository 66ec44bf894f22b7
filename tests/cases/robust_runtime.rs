//! Round-2 robustness of the runtime on one node: the node's `[limits]` cap what a
//! spec may ask for, and what an agent may hold in the node, so a spec or a flood
//! of messages cannot take the disk or the memory of the device.

use std::time::Duration;

use edgeleaf::protocol::{AgentInfo, Instances};

use crate::harness::{
    Cluster, Node, NodeSpec, agent_toml, agent_wasm, control, eventually, request_error,
    request_ok, serving,
};

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

/// Item 5: the deadline holds while the guest is blocked in a host call (a
/// `wasi:io/poll` wait), and the instance is freed for the next message.
#[tokio::test]
async fn the_deadline_ends_an_agent_blocked_in_a_host_call() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = agent_toml(
        "sleeper",
        &agent_wasm("hostile"),
        &["sleeper.run"],
        "limits = { max_concurrency = 1, timeout = \"1s\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "sleepy",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "sleeper.run", "echo:up").await;
    // Ten minutes asleep: only the deadline can answer within `request`'s 20 s.
    let (code, message) = request_error(&hub, "sleeper.run", "sleep:600000").await;
    assert_eq!(code, "timeout", "{message}");
    // Its one instance is free again: the next message runs.
    assert_eq!(
        request_ok(&hub, "sleeper.run", "echo:next").await,
        "echo:next"
    );
}

/// Item 7: every first token starting with `_` (inboxes, `_R_` service replies)
/// or `$` is reserved, for triggers and for allowed publishes alike: in a node's
/// own config and in a deployment.
#[tokio::test]
async fn reserved_first_tokens_are_refused_for_triggers_and_publishes() {
    let hostile = agent_wasm("hostile");
    for (agent, field) in [
        (
            agent_toml("replies", &hostile, &["_R_.>"], ""),
            "trigger \"_R_.>\"",
        ),
        (
            agent_toml("inboxes", &hostile, &["_INBOX_other.>"], ""),
            "trigger \"_INBOX_other.>\"",
        ),
        (
            agent_toml(
                "pub",
                &hostile,
                &["ok.run"],
                "allow_publish = [\"_R_.abc.>\"]",
            ),
            "allowed publish subject \"_R_.abc.>\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, agent).unwrap();
        let out = tokio::process::Command::new(crate::harness::BIN)
            .args(["node", "--check", "-c"])
            .arg(&path)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field} accepted");
        assert!(
            stderr.contains(field) && stderr.contains("reserved"),
            "{field}: {stderr}"
        );
    }
    let node = crate::cases::shipping::TrustingNode::start("reserved").await;
    let mut args = node.echo_svc();
    let trigger = args.iter().position(|a| a == "--trigger").unwrap() + 1;
    args[trigger] = "_R_.>".into();
    let (ok, text) = crate::cases::shipping::deploy(&node.hub_url, &args).await;
    assert!(!ok && text.contains("reserved"), "{text}");
}

/// Item 11: an agent's log line stays one line in the node's log, and a flood of
/// lines is cut to the budget and counted.
#[tokio::test]
async fn agent_log_lines_are_escaped_and_bounded() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let mut lines = hub.subscribe("edgeleaf.log.chatty.noisy").await.unwrap();
    hub.flush().await.unwrap();
    let extra = agent_toml(
        "noisy",
        &agent_wasm("hostile"),
        &["noisy.run"],
        "limits = { timeout = \"20s\" }",
    );
    let node = Node::start(NodeSpec {
        id: "chatty",
        url: Some(cluster.leaf.url()),
        extra,
        env: &[("EDGELEAF_LOG", "info")],
        ..Default::default()
    });
    serving(&hub, "noisy.run", "echo:up").await;
    assert_eq!(request_ok(&hub, "noisy.run", "lognl").await, "logged");
    let forged = crate::harness::next_json(&mut lines).await;
    let message = forged["message"].as_str().unwrap();
    assert!(
        message.starts_with("first\\nFORGED node line\\r\\u{1b}"),
        "{message}"
    );
    let log = eventually(
        Duration::from_secs(10),
        "the line in the node's log",
        || {
            let log = node.log();
            async move { log.contains("first\\nFORGED").then_some(log) }
        },
    )
    .await;
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line reached the node's log"
    );
    assert!(
        !log.contains("\u{1b}[31mred"),
        "a terminal escape reached the node's log"
    );

    // 1000 lines of 1 KiB in one invocation: 64 KiB of them get through.
    assert_eq!(
        request_ok(&hub, "noisy.run", "logspam:1000").await,
        "logged 1000"
    );
    let rows: Vec<AgentInfo> = control(&hub, "chatty", "agents").await;
    let noisy = rows.iter().find(|a| a.name == "noisy").unwrap();
    assert!(noisy.log_dropped >= 900, "{noisy:?}");
    // What reached NATS: the budget, then one warning that counts the rest.
    let mut spam = 0;
    let summary = loop {
        let line = crate::harness::next_json(&mut lines).await;
        let message = line["message"].as_str().unwrap().to_owned();
        if message.contains("lines dropped") {
            break message;
        }
        spam += 1;
    };
    assert!((1..=100).contains(&spam), "{spam} lines published");
    assert!(
        summary.contains(&format!("{} lines dropped", 1000 - spam)),
        "{summary}"
    );
}

/// Item 17: `run-agent --state-dir` makes the dir its own (0700), and refuses a
/// dir another user owns (whose owner could plant compiled code).
#[tokio::test]
async fn run_agent_keeps_its_state_dir_private() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run_agent = |state: &std::path::Path| {
        let mut command = tokio::process::Command::new(crate::harness::BIN);
        command
            .arg("run-agent")
            .arg(agent_wasm("echo"))
            .args(["--trigger", "priv.echo", "--name", "priv", "--state-dir"])
            .arg(state)
            .args(["-s", &cluster.leaf.url()])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let child = run_agent(&state).spawn().unwrap();
    serving(&hub, "priv.echo", "x").await;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "state dir left {mode:o}");
    crate::harness::signal(child.id().unwrap(), libc::SIGINT);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another user's dir. Only root can give a dir away; elsewhere this half is
    // covered by the node's own state dir tests.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: skipping the other-owner half");
        return;
    }
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), run_agent(&theirs).output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("belongs to uid 65534") && stderr.contains("--state-dir"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(&theirs).unwrap().next().is_none(),
        "run-agent wrote into another user's dir"
    );
}

/// A WASI command module of `funcs` functions of `adds` additions each: slow to
/// compile on purpose, quick to run (`_start` is the first one).
fn slow_to_compile(funcs: u32, adds: u32) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: () -> ()
    let mut functions = Vec::new();
    leb(funcs.into(), &mut functions);
    functions.resize(functions.len() + funcs as usize, 0);
    section(3, &functions, &mut module);
    let mut exports = vec![1, 6];
    exports.extend_from_slice(b"_start");
    exports.extend_from_slice(&[0, 0]);
    section(7, &exports, &mut module);
    let mut body = vec![1, 1, 0x7f]; // one local, i32
    for i in 0..adds {
        // local.get 0; i32.const i; i32.mul; local.set 0
        body.extend_from_slice(&[0x20, 0, 0x41]);
        leb(u64::from(i & 0x3f), &mut body);
        body.extend_from_slice(&[0x6c, 0x21, 0]);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(funcs.into(), &mut code);
    for _ in 0..funcs {
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    module
}

/// Item 18: compiling a module does not hold one of the node's runtime workers.
/// With a single worker, a node that compiled on it could answer nothing else
/// until the compiler finished.
#[tokio::test]
async fn the_node_answers_while_it_compiles() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("slow.wasm");
    std::fs::write(&wasm, slow_to_compile(1200, 1500)).unwrap();
    let node = Node::start(NodeSpec {
        id: "builder",
        url: Some(cluster.leaf.url()),
        extra: agent_toml("slow", &wasm, &["slow.run"], ""),
        env: &[
            ("TOKIO_WORKER_THREADS", "1"),
            ("EDGELEAF_LOG", "info,edgeleaf=debug"),
        ],
        ..Default::default()
    });
    eventually(Duration::from_secs(60), "compiling started", || {
        let started = node
            .log()
            .lines()
            .any(|l| l.contains("runtime::engine") && l.contains("compiling"));
        async move { started.then_some(()) }
    })
    .await;
    let info: Option<serde_json::Value> =
        crate::harness::try_control(&hub, "builder", "info").await;
    let compiled = node
        .log()
        .lines()
        .any(|l| l.contains("runtime::engine") && l.contains("compiled"));
    assert!(
        info.is_some(),
        "the node did not answer `info` within 1 s while it compiled"
    );
    assert!(
        !compiled,
        "the module compiled before `info` was answered: make it slower to tell"
    );
    // And the module it compiled runs.
    eventually(Duration::from_secs(60), "slow serving", || async {
        let msg = tokio::time::timeout(Duration::from_secs(1), hub.request("slow.run", "".into()))
            .await
            .ok()?
            .ok()?;
        msg.headers.is_none().then_some(())
    })
    .await;
}

/// A burst larger than an agent's queue: what does not fit is refused `busy` and
/// counted, per agent and in the node's heartbeat counts; every message is either
/// run or counted, none silently lost in a buffer.
#[tokio::test]
async fn a_burst_beyond_the_queue_is_counted_not_lost() {
    const BURST: u64 = 400;
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = "\n[limits]\nmax_queued = 50\n".to_owned()
        + &agent_toml(
            "slow",
            &agent_wasm("hostile"),
            &["burst.run"],
            "limits = { max_concurrency = 1, timeout = \"10s\" }",
        );
    let _node = Node::start(NodeSpec {
        id: "bursty",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "burst.run", "echo:up").await;
    let before: Vec<AgentInfo> = control(&hub, "bursty", "agents").await;
    let before = before
        .iter()
        .find(|a| a.name == "slow")
        .unwrap()
        .invocations;
    for _ in 0..BURST {
        hub.publish("burst.run", "spin:2".into()).await.unwrap();
    }
    hub.flush().await.unwrap();
    let slow = eventually(
        Duration::from_secs(60),
        "every message run or counted",
        || async {
            let rows: Vec<AgentInfo> = control(&hub, "bursty", "agents").await;
            let slow = rows.into_iter().find(|a| a.name == "slow")?;
            (slow.invocations - before + slow.refused_busy == BURST).then_some(slow)
        },
    )
    .await;
    assert!(slow.refused_busy > 0, "the burst fit the queue: {slow:?}");
    assert!(
        slow.invocations - before >= 50,
        "the queue's 50 and the running ones ran: {slow:?}"
    );
    let info: edgeleaf::protocol::NodeInfo = control(&hub, "bursty", "info").await;
    assert_eq!(info.agents.refused_busy, slow.refused_busy, "{info:?}");
}

/// Issue 15: `instances = "warm"` keeps an instance between messages (its globals
/// survive), replaces it after `max_invocations` and at once after a trap or a
/// timeout, but not after the agent's own `Err`; fresh agents stay fresh; a WASI
/// command cannot be warm; `agents` shows which is which.
#[tokio::test]
async fn warm_instances_are_kept_recycled_and_replaced_after_a_fault() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let hostile = agent_wasm("hostile");
    let extra = agent_toml(
        "warm",
        &hostile,
        &["warm.run"],
        "instances = \"warm\"\nmax_invocations = 3\nlimits = { max_concurrency = 1, timeout = \"1s\" }",
    ) + &agent_toml(
        "cold",
        &hostile,
        &["cold.run"],
        "limits = { max_concurrency = 1 }",
    ) + &agent_toml(
        "cmd",
        &agent_wasm("upper-c"),
        &["cmd.run"],
        "instances = \"warm\"",
    );
    let _node = Node::start(NodeSpec {
        id: "warmth",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "warm.run", "echo:up").await;
    // A trap ends the instance that served `echo:up`.
    assert_eq!(request_error(&hub, "warm.run", "trap").await.0, "trap");
    let mut counts = Vec::new();
    for _ in 0..5 {
        counts.push(request_ok(&hub, "warm.run", "calls").await);
    }
    assert_eq!(
        counts,
        ["1", "2", "3", "1", "2"],
        "kept, then replaced after 3"
    );
    // A timeout ends it too; the agent's own error does not.
    assert_eq!(request_error(&hub, "warm.run", "loop").await.0, "timeout");
    assert_eq!(request_ok(&hub, "warm.run", "calls").await, "1");
    assert_eq!(
        request_error(&hub, "warm.run", "no-such-mode").await.0,
        "agent_error"
    );
    assert_eq!(request_ok(&hub, "warm.run", "calls").await, "3");
    for _ in 0..3 {
        assert_eq!(request_ok(&hub, "cold.run", "calls").await, "1");
    }

    let rows: Vec<AgentInfo> = control(&hub, "warmth", "agents").await;
    let row = |name: &str| rows.iter().find(|a| a.name == name).unwrap().clone();
    let (warm, cold, cmd) = (row("warm"), row("cold"), row("cmd"));
    assert_eq!(warm.instances, Instances::Warm);
    // echo:up's (ended by the trap), 1-2-3, 1-2 (ended by the timeout), 1-err-3.
    assert_eq!(warm.warm_started, 4, "{warm:?}");
    assert_eq!((cold.instances, cold.warm_started), (Instances::Fresh, 0));
    assert_eq!(cmd.state, "failed");
    let why = cmd.error.unwrap_or_default();
    assert!(why.contains("warm instances need a component"), "{why}");
}

/// Issue 15: an agent's invocations stop with it. Undeploying an agent whose one
/// instance is busy lets that invocation finish (its reply and its result record
/// arrive) and answers at once, with `agent_stopped`, the messages that waited for an
/// instance, instead of leaving their requesters to time out.
#[tokio::test]
async fn stopping_an_agent_finishes_what_runs_and_answers_what_waits() {
    let node = crate::cases::shipping::TrustingNode::start("stopper").await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let key = node.key.display().to_string();
    let wasm = agent_wasm("hostile").display().to_string();
    let (ok, text) = crate::cases::shipping::deploy(
        &node.hub_url,
        &[
            wasm.as_str(),
            "--name",
            "slow",
            "--trigger",
            "stopper.slow",
            "--node",
            "stopper",
            "--key",
            &key,
            "--max-concurrency",
            "1",
            "--timeout",
            "20s",
        ],
    )
    .await;
    assert!(ok, "{text}");
    serving(&hub, "stopper.slow", "echo:up").await;
    let mut results = hub.subscribe("edgeleaf.res.stopper.slow").await.unwrap();
    hub.flush().await.unwrap();

    // One runs (8 s in the host); three clients keep a message waiting for the only
    // instance (each is answered `busy` after a second and sends the next) until the
    // agent stops.
    let running = {
        let hub = hub.clone();
        tokio::spawn(
            async move { crate::harness::request(&hub, "stopper.slow", "sleep:8000").await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            let hub = hub.clone();
            tokio::spawn(async move {
                loop {
                    let started = std::time::Instant::now();
                    let reply = tokio::time::timeout(
                        Duration::from_secs(20),
                        hub.request("stopper.slow", format!("echo:{i}").into()),
                    )
                    .await
                    .expect("a waiting message was never answered");
                    let took = started.elapsed();
                    let code = match &reply {
                        Ok(msg) => msg
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(edgeleaf::protocol::ERROR_HEADER))
                            .map(|v| v.to_string()),
                        // Unsubscribed: nobody serves the trigger any more.
                        Err(_) => return (None, took),
                    };
                    if code.as_deref() != Some("busy") {
                        return (code, took);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out =
        crate::harness::cli(&["undeploy", "slow", "--node", "stopper", "-s", &node.hub_url]).await;
    assert!(out.status.success(), "{out:?}");

    let mut stopped = 0;
    for w in waiting {
        let (code, took) = w.await.unwrap();
        if code.as_deref() == Some("agent_stopped") {
            stopped += 1;
            assert!(took < Duration::from_secs(2), "answered after {took:?}");
        } else {
            assert_eq!(code, None, "neither stopped nor unsubscribed");
        }
    }
    assert!(
        stopped >= 1,
        "no waiting message was answered agent_stopped"
    );
    let done = running.await.unwrap();
    assert_eq!(
        done.payload.as_ref(),
        b"slept",
        "the running invocation completed"
    );
    // Its result was recorded as for any other invocation.
    let record = tokio::time::timeout(Duration::from_secs(30), async {
        use futures::StreamExt;
        while let Some(msg) = results.next().await {
            if let Ok(r) = serde_json::from_slice::<edgeleaf::protocol::ResultRecord>(&msg.payload)
                && r.output.as_deref() == Some("slept")
            {
                return r;
            }
        }
        panic!("results subscription ended");
    })
    .await
    .expect("no result record of sleep:8000 within 30s");
    assert!(record.ok);
    // And nothing of the agent remains.
    let rows: Vec<AgentInfo> = control(&hub, "stopper", "agents").await;
    assert!(rows.iter().all(|a| a.name != "slow"), "{rows:?}");
}
