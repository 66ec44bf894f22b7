//! Agent cards, capability discovery and workloads (issue 14): real hub, leaf and
//! nodes, real agents, queried and sent work the way an orchestrator written
//! against the original design does it (plain NATS requests).

use std::time::Duration;

use edgeleaf::protocol::{AgentCard, WorkloadResult};
use futures::StreamExt;

use crate::cases::shipping::{TrustingNode, deploy};
use crate::harness::{Cluster, Node, NodeSpec, agent_toml, agent_wasm, cli, eventually};

/// `edgeleaf discover CAP --json` against `hub`.
async fn discover(hub: &str, capability: &str) -> Vec<AgentCard> {
    let out = cli(&["discover", capability, "--json", "--wait", "1s", "-s", hub]).await;
    assert!(
        out.status.success(),
        "discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `edgeleaf work …` against `hub`: its exit status and the result it printed.
async fn work(hub: &str, args: &[&str]) -> (bool, WorkloadResult) {
    let mut full = vec!["work", "--json", "-s", hub];
    full.extend_from_slice(args);
    let out = cli(&full).await;
    let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "work {args:?} printed no result ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), result)
}

/// Runs `examples/orchestrator.py` with the Python that has nats-py
/// (`$EDGELEAF_PYTHON`, set by scripts/test.sh) and parses what it prints.
async fn orchestrator(hub: &str, args: &[&str]) -> serde_json::Value {
    let python = std::env::var("EDGELEAF_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/orchestrator.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--url", hub])
        .args(args)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("orchestrator.py did not finish within 60 s")
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "orchestrator.py failed (it needs nats-py: EDGELEAF_CLIENTS=1 source scripts/deps.sh \
         provides it as $EDGELEAF_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The next message on `sub` within 20 s.
async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("no message within 20 s")
        .unwrap()
}

#[tokio::test]
async fn discovery_finds_agents_by_capability_on_every_node() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let mut announced = hub.subscribe("discovery.agents.>").await.unwrap();
    hub.flush().await.unwrap();
    let echo = agent_wasm("echo");
    let _north = Node::start(NodeSpec {
        id: "d1",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "north")],
        extra: agent_toml(
            "rev",
            &echo,
            &[],
            "capabilities = [\"reverse\", \"text\"]\ntype = \"textproc\"",
        ) + &agent_toml(
            "temp",
            &echo,
            &["d1.temp"],
            "capabilities = [\"temperature\"]",
        ),
        ..Default::default()
    });
    let _south = Node::start(NodeSpec {
        id: "d2",
        url: Some(cluster.leaf.url()),
        env: &[("EDGELEAF_NODE_LOCATION", "south")],
        extra: agent_toml("rev2", &echo, &[], "capabilities = [\"reverse\"]"),
        ..Default::default()
    });

    // Scatter-gather: every node with the capability answers with its cards.
    let cards = eventually(Duration::from_secs(30), "both nodes' cards", || async {
        let cards = discover(&hub_url, "reverse").await;
        (cards.len() == 2).then_some(cards)
    })
    .await;
    let (rev, rev2) = (&cards[0], &cards[1]);
    assert_eq!(rev.id, "d1.rev");
    assert_eq!(rev.name, "rev");
    assert_eq!(rev.agent_type, "textproc");
    assert_eq!(rev.capabilities, ["reverse", "text"]);
    assert_eq!(rev.endpoint, "edgeleaf.inv.d1.rev");
    assert_eq!((rev.node.as_str(), rev.location.as_str()), ("d1", "north"));
    assert_eq!(rev.tags.get("site").map(String::as_str), Some("north"));
    assert_eq!(rev.health_status, "healthy");
    assert_eq!(rev.load_metrics.max_concurrency, 4);
    assert_eq!(rev.ttl, 3, "three 1 s heartbeat intervals");
    assert_eq!(rev2.id, "d2.rev2");
    assert_eq!(rev2.agent_type, "rev2", "type defaults to the name");
    assert_eq!(rev2.location, "south");

    // Only matching agents; nobody answers for a capability nobody has.
    let temp = discover(&hub_url, "temperature").await;
    assert_eq!(
        temp.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["d1.temp"]
    );
    assert!(discover(&hub_url, "ocr").await.is_empty());
    let plain = hub
        .send_request(
            "discovery.query.capability.ocr",
            async_nats::Request::new().timeout(Some(Duration::from_millis(500))),
        )
        .await;
    assert!(plain.is_err(), "a node without the capability answered");

    // A plain request gets the first node's cards; the endpoint runs the agent.
    let first = hub
        .request("discovery.query.capability.text", bytes::Bytes::new())
        .await
        .unwrap();
    let first: Vec<AgentCard> = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(first.len(), 1);
    let reply = hub
        .request(first[0].endpoint.clone(), "called by card".into())
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"called by card");
    let after = eventually(Duration::from_secs(20), "the call on the card", || async {
        let cards = discover(&hub_url, "text").await;
        cards.into_iter().find(|c| c.load_metrics.invocations == 1)
    })
    .await;
    assert!(after.load_metrics.p50_ms.is_some(), "{after:?}");

    // The NATS services API: both nodes answer a ping; a node's INFO lists its
    // control and agent endpoints, its STATS count the call above.
    let inbox = hub.new_inbox();
    let mut pongs = hub.subscribe(inbox.clone()).await.unwrap();
    hub.publish_with_reply("$SRV.PING.edgeleaf-node", inbox, "".into())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let pong: async_nats::service::PingResponse =
            serde_json::from_slice(&next(&mut pongs).await.payload).unwrap();
        assert_eq!(pong.kind, "io.nats.micro.v1.ping_response");
        ids.push(pong.id);
    }
    ids.sort();
    assert_eq!(ids, ["d1", "d2"]);
    let info = hub
        .request("$SRV.INFO.edgeleaf-node.d1", "".into())
        .await
        .unwrap();
    let info: async_nats::service::Info = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(
        info.metadata.get("location").map(String::as_str),
        Some("north")
    );
    let rev_endpoint = info.endpoints.iter().find(|e| e.name == "rev").unwrap();
    assert_eq!(rev_endpoint.subject, "edgeleaf.inv.d1.rev");
    assert_eq!(rev_endpoint.metadata["capabilities"], "reverse,text");
    assert!(
        info.endpoints
            .iter()
            .any(|e| e.subject == "edgeleaf.ctl.d1.agents")
    );
    let stats = hub
        .request("$SRV.STATS.edgeleaf-node.d1", "".into())
        .await
        .unwrap();
    let stats: async_nats::service::Stats = serde_json::from_slice(&stats.payload).unwrap();
    let rev_stats = stats.endpoints.iter().find(|e| e.name == "rev").unwrap();
    assert_eq!(rev_stats.requests, 1, "{:?}", rev_stats.requests);
    assert!(!rev_stats.processing_time.is_zero());
    let temp_stats = stats.endpoints.iter().find(|e| e.name == "temp").unwrap();
    assert_eq!(temp_stats.requests, 0);

    // The README's orchestrator, in Python with nats-py, works unchanged.
    let report = orchestrator(
        &hub_url,
        &[
            "--capability",
            "reverse",
            "--location",
            "north",
            "from python",
        ],
    )
    .await;
    assert_eq!(report["cards"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["reply"], "from python", "{report}");
    let result = &report["result"];
    assert_eq!(result["ok"], true, "{report}");
    assert_eq!(
        (&result["node"], &result["agent"]),
        (&"d1".into(), &"rev".into()),
        "{report}"
    );
    assert_eq!(result["output"], "from python", "{report}");

    // Announcements: each running agent's card under its type, node and name.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let msg = next(&mut announced).await;
        let card: AgentCard = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(
            msg.subject.as_str(),
            format!(
                "discovery.agents.{}.{}.{}",
                card.agent_type, card.node, card.name
            )
        );
        seen.insert(msg.subject.to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "discovery.agents.rev2.d2.rev2",
            "discovery.agents.temp.d1.temp",
            "discovery.agents.textproc.d1.rev",
        ]
    );
}

#[tokio::test]
async fn workloads_run_on_a_capable_agent_and_report_their_result() {
    let setup = TrustingNode::start("wl").await;
    let hub_url = setup.hub_url.clone();
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let mut cards = hub
        .subscribe("discovery.agents.textproc.wl.svc")
        .await
        .unwrap();
    let mut results = hub.subscribe("results.>").await.unwrap();
    let mut records = hub.subscribe("edgeleaf.res.wl.svc").await.unwrap();
    hub.flush().await.unwrap();
    let mut args = setup.echo_svc();
    args.extend(["--capability", "reverse", "--type", "textproc"].map(str::to_owned));
    let (ok, out) = deploy(&hub_url, &args).await;
    assert!(ok, "{out}");
    let card: AgentCard = serde_json::from_slice(&next(&mut cards).await.payload).unwrap();
    assert_eq!((card.id.as_str(), card.version), ("wl.svc", 1));

    // The location defaults to the node id (no site tag).
    let (ok, result) = work(
        &hub_url,
        &[
            "--location",
            "wl",
            "--capability",
            "reverse",
            "--task-id",
            "job.1",
            "hello",
        ],
    )
    .await;
    assert!(ok, "{result:?}");
    assert_eq!(result.task_id, "job.1");
    assert_eq!(
        (result.node.as_str(), result.agent.as_deref()),
        ("wl", Some("svc"))
    );
    assert_eq!(result.output.as_deref(), Some("hello"));
    // Published on results.<task_id> too, and recorded through the outbox.
    let published = next(&mut results).await;
    assert_eq!(published.subject.as_str(), "results.job.1");
    let published: WorkloadResult = serde_json::from_slice(&published.payload).unwrap();
    assert_eq!(published, result);
    let record: serde_json::Value =
        serde_json::from_slice(&next(&mut records).await.payload).unwrap();
    assert_eq!(record["task_id"], "job.1", "{record}");
    assert_eq!(record["subject"], "edge.wl.workloads", "{record}");

    // No agent with the capability: a result that says so, and a failing exit.
    let (ok, result) = work(&hub_url, &["--location", "wl", "--capability", "ocr", "x"]).await;
    assert!(!ok);
    assert_eq!(
        result.error.as_ref().map(|e| e.code.as_str()),
        Some("no_agent"),
        "{result:?}"
    );
    // A location nobody serves: a clear error.
    let out = cli(&[
        "work",
        "--location",
        "nowhere",
        "--capability",
        "reverse",
        "x",
        "-s",
        &hub_url,
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no node takes workloads for location nowhere"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Malformed workloads are refused with a reason, and the node carries on.
    let reply = hub
        .request(
            "edge.wl.workloads",
            "{\"task_id\": \"a b\", \"capability\": \"reverse\"}".into(),
        )
        .await
        .unwrap();
    let refused: WorkloadResult = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        refused.error.as_ref().map(|e| e.code.as_str()),
        Some("invalid_request")
    );
    let reply = hub
        .request("edge.wl.workloads", "not json".into())
        .await
        .unwrap();
    let refused: WorkloadResult = serde_json::from_slice(&reply.payload).unwrap();
    assert!(refused.error.unwrap().message.contains("not valid JSON"));

    // Undeploy: the card is withdrawn with an empty message.
    let out = cli(&["undeploy", "svc", "--node", "wl", "-s", &hub_url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cards announced before the undeploy may still be in flight: the last
    // message is the empty one.
    let withdrawn = loop {
        let msg = next(&mut cards).await;
        if msg.payload.is_empty() {
            break msg;
        }
    };
    assert_eq!(
        withdrawn.subject.as_str(),
        "discovery.agents.textproc.wl.svc"
    );
}

#[tokio::test]
async fn a_workload_goes_to_the_agent_with_free_instances_once_per_location() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let hostile = agent_wasm("hostile");
    let pair = agent_toml(
        "a",
        &hostile,
        &[],
        "capabilities = [\"work\"]\nlimits = { max_concurrency = 1, timeout = \"10s\" }",
    ) + &agent_toml(
        "b",
        &hostile,
        &[],
        "capabilities = [\"work\"]\nlimits = { max_concurrency = 1, timeout = \"10s\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "w1",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "plant")],
        extra: pair,
        ..Default::default()
    });
    let _other = Node::start(NodeSpec {
        id: "w2",
        url: Some(cluster.leaf.url()),
        tags: &[("site", "plant")],
        ..Default::default()
    });
    eventually(Duration::from_secs(30), "w1's agents", || async {
        (discover(&hub_url, "work").await.len() == 2).then_some(())
    })
    .await;
    // w2 has no agent for it: the location's queue group may hand it the work, and
    // it says so. Send until w1 takes one that keeps an instance busy.
    let busy = eventually(Duration::from_secs(30), "a long workload on w1", || {
        let hub_url = hub_url.clone();
        async move {
            let started = tokio::spawn(async move {
                work(
                    &hub_url,
                    &["--location", "plant", "--capability", "work", "sleep:3000"],
                )
                .await
            });
            tokio::time::sleep(Duration::from_millis(700)).await;
            Some(started).filter(|s| !s.is_finished())
        }
    })
    .await;
    // While that runs, the other agent of w1 is the free one.
    let second = eventually(
        Duration::from_secs(30),
        "a second workload on w1",
        || async {
            let (ok, r) = work(
                &hub_url,
                &["--location", "plant", "--capability", "work", "echo:2"],
            )
            .await;
            (ok && r.node == "w1").then_some(r)
        },
    )
    .await;
    let (ok, first) = busy.await.unwrap();
    assert!(ok, "{first:?}");
    assert_eq!(first.node, "w1");
    assert_eq!(first.output.as_deref(), Some("slept"));
    assert_ne!(
        first.agent, second.agent,
        "both went to the same agent: {first:?} {second:?}"
    );

    // Each workload runs once in the location: 10 sent, 10 results, one per task.
    let mut results = hub.subscribe("results.once.>").await.unwrap();
    hub.flush().await.unwrap();
    for i in 0..10 {
        let (_, r) = work(
            &hub_url,
            &[
                "--location",
                "plant",
                "--capability",
                "work",
                "--task-id",
                &format!("once.{i}"),
                "echo:x",
            ],
        )
        .await;
        assert!(
            r.node == "w1" || r.error.as_ref().is_some_and(|e| e.code == "no_agent"),
            "{r:?}"
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 10 {
        let msg = next(&mut results).await;
        *seen.entry(msg.subject.to_string()).or_insert(0) += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(100), results.next()).await
    {
        *seen.entry(msg.subject.to_string()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

/// A workload sent on the device's own leaf while the hub is away runs, and its
/// result (with its task id) reaches the hub's stream once the hub is back.
#[tokio::test]
async fn a_workload_run_during_a_hub_outage_reaches_the_hub_later() {
    let mut hub = crate::harness::Server::hub();
    let hub_url = hub.url();
    crate::harness::hub_init(&hub_url).await;
    let leaf_port = crate::harness::free_port();
    let node = Node::start(NodeSpec {
        id: "offwl",
        spawn_leaf: Some((leaf_port, hub.leafnode_port.unwrap())),
        extra: agent_toml(
            "mirror",
            &agent_wasm("echo"),
            &[],
            "capabilities = [\"mirror\"]",
        ),
        ..Default::default()
    });
    let local = crate::cases::outbox::connect_when_up(&node.local_url(leaf_port)).await;
    let send = |task: &'static str| {
        let local = local.clone();
        async move {
            let body = format!(
                "{{\"task_id\": \"{task}\", \"capability\": \"mirror\", \"payload\": \"kept\"}}"
            );
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                local.request("edge.offwl.workloads", body.into()),
            )
            .await
            .ok()?
            .ok()?;
            serde_json::from_slice::<WorkloadResult>(&reply.payload).ok()
        }
    };
    eventually(Duration::from_secs(30), "workloads served", || async {
        send("warm.up").await.filter(|r| r.ok)
    })
    .await;

    hub.kill();
    let result = send("during.outage")
        .await
        .expect("no result while the hub is away");
    assert!(result.ok, "{result:?}");
    assert_eq!(result.output.as_deref(), Some("kept"));

    hub.restart();
    let record = eventually(Duration::from_secs(60), "the record on the hub", || async {
        crate::cases::outbox::stored_results(&hub_url, "offwl")
            .await
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.task_id.as_deref() == Some("during.outage"))
    })
    .await;
    assert_eq!(record.output.as_deref(), Some("kept"));
    assert_eq!(record.agent, "mirror");
}
