//! Shipping agents: signed desired state in the hub's KV bucket, reconciled by every
//! node it targets — also by nodes that were offline, and after restarts without the hub.

use std::time::Duration;

use edgeleaf::protocol::DeployStatus;
use edgeleaf::shipping::{DeploymentSpec, ModuleRef, SecretKey, SignedDeployment};
use serde_json::Value;

use crate::harness::{
    Cluster, Node, NodeSpec, Server, agent_wasm, cli, eventually, free_port, publisher, trusting,
};

/// `edgeleaf deploy …` against the hub; returns (success, stdout + stderr).
pub(crate) async fn deploy(hub: &str, args: &[impl AsRef<str>]) -> (bool, String) {
    let mut full = vec!["deploy"];
    full.extend(args.iter().map(AsRef::as_ref));
    full.extend_from_slice(&["-s", hub, "--wait", "20s"]);
    let out = cli(&full).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The reply of `edgeleaf invoke NODE AGENT PAYLOAD`, or `None` if it failed.
async fn invoke(hub: &str, node: &str, agent: &str, payload: &str) -> Option<String> {
    let out = cli(&[
        "invoke",
        "--node",
        node,
        "--agent",
        agent,
        payload,
        "-s",
        hub,
        "--timeout",
        "2s",
    ])
    .await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// Waits until `edgeleaf nodes` lists `node` as `state` (`online` or `offline`).
pub(crate) async fn wait_node(hub_url: &str, node: &str, state: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{node} {state}"),
        || async {
            let rows = crate::harness::try_cli_json(&["nodes", "--json", "-s", hub_url]).await?;
            rows.as_array()?
                .iter()
                .any(|r| r["node_id"] == node && r["status"] == state)
                .then_some(())
        },
    )
    .await;
}

/// A hub and leaf, a publisher key, and node `id` trusting that key, online.
pub(crate) struct TrustingNode {
    pub _cluster: Cluster,
    pub hub_url: String,
    _keys: tempfile::TempDir,
    pub key: std::path::PathBuf,
    pub public: String,
    pub node: Node,
}

impl TrustingNode {
    pub(crate) async fn start(id: &'static str) -> Self {
        Self::start_with(id, "").await
    }

    /// With more lines for the `[security]` section.
    pub(crate) async fn start_with(id: &'static str, security: &str) -> Self {
        let cluster = Cluster::start().await;
        let hub_url = cluster.hub.url();
        let keys = tempfile::tempdir().unwrap();
        let (key, public) = publisher(keys.path(), "pub.key").await;
        let node = Node::start(NodeSpec {
            id,
            url: Some(cluster.leaf.url()),
            extra: trusting(&public) + security,
            ..Default::default()
        });
        wait_node(&hub_url, id, "online").await;
        Self {
            _cluster: cluster,
            hub_url,
            _keys: keys,
            key,
            public,
            node,
        }
    }

    /// `deploy` arguments for echo.wasm as agent `svc` on `<id>.svc`, to this node,
    /// signed with the trusted key.
    pub(crate) fn echo_svc(&self) -> Vec<String> {
        let id = &self.node.id;
        [
            agent_wasm("echo").display().to_string(),
            "--name".into(),
            "svc".into(),
            "--trigger".into(),
            format!("{id}.svc"),
            "--node".into(),
            id.clone(),
            "--key".into(),
            self.key.display().to_string(),
        ]
        .into()
    }
}

pub(crate) async fn status(
    hub: &async_nats::Client,
    node: &str,
    agent: &str,
) -> Option<DeployStatus> {
    let js = async_nats::jetstream::new(hub.clone());
    let kv = js.get_key_value("EDGELEAF_STATUS").await.ok()?;
    let raw = kv.get(format!("{node}.{agent}")).await.ok()??;
    serde_json::from_slice(&raw).ok()
}

#[tokio::test]
async fn deploys_reach_nodes_by_id_tag_and_all_and_undeploy_removes_them() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;
    let start = |id: &'static str, site: &'static str| {
        Node::start(NodeSpec {
            id,
            url: Some(cluster.leaf.url()),
            tags: if site == "x" {
                &[("site", "x")]
            } else {
                &[("site", "y")]
            },
            extra: trusting(&public),
            ..Default::default()
        })
    };
    let (_a, _b) = (start("ship-a", "x"), start("ship-b", "y"));
    // Both online before deploying, so the CLI waits for both.
    eventually(Duration::from_secs(20), "both nodes online", || async {
        let rows = crate::harness::try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
        (rows
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "online")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let echo = agent_wasm("echo");
    let counter = agent_wasm("counter");
    let key = key.to_str().unwrap();

    let (ok, out) = deploy(
        &hub_url,
        &[
            echo.to_str().unwrap(),
            "--name",
            "svc",
            "--trigger",
            "ship.svc",
            "--all",
            "--key",
            key,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("ship-a")
            && out.contains("ship-b")
            && out.matches("running version 1").count() == 2,
        "{out}"
    );
    assert_eq!(
        invoke(&hub_url, "ship-a", "svc", "hi").await.as_deref(),
        Some("hi")
    );
    assert_eq!(
        invoke(&hub_url, "ship-b", "svc", "hi").await.as_deref(),
        Some("hi")
    );

    // A tag deployment is more specific than `all`: only site=x switches to counter.
    let (ok, out) = deploy(
        &hub_url,
        &[
            counter.to_str().unwrap(),
            "--name",
            "svc",
            "--trigger",
            "ship.svc",
            "--tag",
            "site=x",
            "--key",
            key,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("ship-a") && !out.contains("ship-b"), "{out}");
    assert_eq!(
        invoke(&hub_url, "ship-a", "svc", "").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        invoke(&hub_url, "ship-b", "svc", "still echo")
            .await
            .as_deref(),
        Some("still echo")
    );

    // Several nodes by id in one command; --json reports each.
    let (ok, out) = deploy(
        &hub_url,
        &[
            echo.to_str().unwrap(),
            "--name",
            "pair",
            "--trigger",
            "ship.pair",
            "--node",
            "ship-a",
            "--node",
            "ship-b",
            "--key",
            key,
            "--json",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let report: Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(report["keys"].as_array().unwrap().len(), 2, "{report}");
    let states: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "running"], "{report}");
    let agents = crate::harness::cli_json(&["agents", "--json", "-s", &hub_url]).await;
    let pairs = agents
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["agent"] == "pair" && r["version"] == 1)
        .count();
    assert_eq!(pairs, 2, "{agents}");
    let out = cli(&[
        "undeploy", "pair", "--node", "ship-a", "--node", "ship-b", "-s", &hub_url,
    ])
    .await;
    assert!(out.status.success());

    // Undeploying the tag falls back to `all`, and drops the counter's kv data.
    let out = cli(&["undeploy", "svc", "--tag", "site=x", "-s", &hub_url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), "ship-a back on echo", || async {
        (invoke(&hub_url, "ship-a", "svc", "back").await.as_deref() == Some("back")).then_some(())
    })
    .await;

    // Undeploying `all` removes the agent everywhere, and its status.
    let out = cli(&["undeploy", "svc", "--all", "-s", &hub_url]).await;
    assert!(out.status.success());
    let hub = async_nats::connect(&hub_url).await.unwrap();
    for node in ["ship-a", "ship-b"] {
        eventually(Duration::from_secs(20), "agent removed", || async {
            invoke(&hub_url, node, "svc", "x")
                .await
                .is_none()
                .then_some(())
        })
        .await;
        eventually(Duration::from_secs(10), "status removed", || async {
            status(&hub, node, "svc").await.is_none().then_some(())
        })
        .await;
    }
    // Undeploying what is not deployed is a clear error.
    let out = cli(&["undeploy", "svc", "--all", "-s", &hub_url]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is deployed under all.svc"));
}

#[tokio::test]
async fn offline_nodes_converge_and_restart_from_local_state_without_the_hub() {
    let hub = Server::hub();
    let hub_url = hub.url();
    crate::harness::hub_init(&hub_url).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;
    let leaf_port = free_port();
    let mut node = Node::start(NodeSpec {
        id: "roamer",
        spawn_leaf: Some((leaf_port, hub.leafnode_port.unwrap())),
        extra: trusting(&public),
        ..Default::default()
    });
    eventually(Duration::from_secs(20), "node seen by the hub", || async {
        let rows = crate::harness::try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
        rows.as_array()?
            .iter()
            .any(|r| r["node_id"] == "roamer")
            .then_some(())
    })
    .await;
    assert!(node.stop_with(libc::SIGTERM).success());
    wait_node(&hub_url, "roamer", "offline").await;

    // Deployed while the node is off: the CLI says so and succeeds.
    let counter = agent_wasm("counter");
    let (ok, out) = deploy(
        &hub_url,
        &[
            counter.to_str().unwrap(),
            "--trigger",
            "roam.count",
            "--node",
            "roamer",
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("roamer") && out.contains("offline"), "{out}");

    // It comes back and converges with no operator action.
    node.spawn();
    eventually(
        Duration::from_secs(30),
        "converged after coming back",
        || async {
            (invoke(&hub_url, "roamer", "counter", "").await.as_deref() == Some("1")).then_some(())
        },
    )
    .await;

    // Undeployed while the node is off: removed when it comes back.
    let echo = agent_wasm("echo");
    let (ok, out) = deploy(
        &hub_url,
        &[
            echo.to_str().unwrap(),
            "--name",
            "brief",
            "--trigger",
            "roam.brief",
            "--node",
            "roamer",
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && out.contains("running"), "{out}");
    assert!(node.stop_with(libc::SIGTERM).success());
    let out = cli(&["undeploy", "brief", "--node", "roamer", "-s", &hub_url]).await;
    assert!(out.status.success());
    node.spawn();
    eventually(
        Duration::from_secs(30),
        "brief removed after coming back",
        || async {
            let rows = crate::harness::try_cli_json(&[
                "agents", "--node", "roamer", "--json", "-s", &hub_url,
            ])
            .await?;
            let names: Vec<&str> = rows
                .as_array()?
                .iter()
                .filter(|r| r["live"] == true)
                .filter_map(|r| r["agent"].as_str())
                .collect();
            (names == ["counter"]).then_some(())
        },
    )
    .await;

    // Restart with the hub gone: the agent comes back from sled, kv state intact,
    // reachable on the node's own leaf.
    assert!(node.stop_with(libc::SIGTERM).success());
    drop(hub);
    node.spawn();
    let leaf_url = node.local_url(leaf_port);
    let leaf = eventually(Duration::from_secs(20), "leaf back", || async {
        crate::harness::with_login(&leaf_url)
            .connection_timeout(Duration::from_secs(1))
            .connect(&leaf_url)
            .await
            .ok()
    })
    .await;
    let reply = eventually(
        Duration::from_secs(30),
        "agent restored offline",
        || async {
            let msg = tokio::time::timeout(
                Duration::from_secs(1),
                leaf.request("roam.count", "".into()),
            )
            .await
            .ok()?
            .ok()?;
            Some(String::from_utf8_lossy(&msg.payload).into_owned())
        },
    )
    .await;
    assert_eq!(reply, "2");
    assert!(
        node.log().contains("restored from local state"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn rejections_never_disturb_what_runs() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = publisher(dir.path(), "pub.key").await;
    let (stranger, _) = publisher(dir.path(), "stranger.key").await;
    let _node = Node::start(NodeSpec {
        id: "guard",
        url: Some(cluster.leaf.url()),
        extra: trusting(&public)
            + "[limits]\nmax_memory = \"32MiB\"\nmax_module_size = \"100KiB\"\n",
        ..Default::default()
    });
    wait_node(&hub_url, "guard", "online").await;
    let echo = agent_wasm("echo");
    let echo = echo.to_str().unwrap();
    let key = key.to_str().unwrap();
    let base = ["--name", "svc", "--trigger", "guard.svc", "--node", "guard"];
    // The module, then the common flags, then `more` (16 MiB of memory unless it says).
    let args = |module: &str, more: &[&str]| -> Vec<String> {
        let memory: &[&str] = if more.contains(&"--memory") {
            &[]
        } else {
            &["--memory", "16MiB"]
        };
        std::iter::once(module)
            .chain(base)
            .chain(memory.iter().copied())
            .chain(more.iter().copied())
            .map(str::to_owned)
            .collect()
    };

    let (ok, out) = deploy(&hub_url, &args(echo, &["--key", key])).await;
    assert!(ok, "{out}");
    let serving =
        || async { invoke(&hub_url, "guard", "svc", "alive").await.as_deref() == Some("alive") };
    assert!(serving().await);

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let threshold = agent_wasm("threshold"); // 115 KB: above the node's 100 KiB
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(echo, &["--key", stranger.to_str().unwrap()]),
            "untrusted_publisher",
        ),
        (args(echo, &["--unsigned"]), "unsigned"),
        (
            args(garbage.to_str().unwrap(), &["--key", key]),
            "invalid_module",
        ),
        (
            args(echo, &["--key", key, "--set-version", "1"]),
            "stale_version",
        ),
        (
            args(threshold.to_str().unwrap(), &["--key", key]),
            "module_too_large",
        ),
        // 48 MiB is above the node's 32 MiB.
        (
            args(echo, &["--memory", "48MiB", "--key", key]),
            "invalid_spec",
        ),
    ];
    for (args, code) in cases {
        let (ok, out) = deploy(&hub_url, &args).await;
        assert!(!ok, "accepted: {out}");
        assert!(out.contains(code), "want {code}: {out}");
        assert!(out.contains("version 1 keeps running"), "{out}");
        // The running version is untouched.
        assert!(serving().await, "svc stopped serving after {code}");
    }

    // Forged: a spec signed by the trusted key, its bytes changed afterwards.
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let js = async_nats::jetstream::new(hub.clone());
    let kv = js.get_key_value("EDGELEAF_DEPLOYMENTS").await.unwrap();
    let raw = kv.get("node.guard.svc").await.unwrap().unwrap();
    let mut env: SignedDeployment = serde_json::from_slice(&raw).unwrap();
    let secret = SecretKey::load(std::path::Path::new(key)).unwrap();
    let spec = DeploymentSpec {
        agent: edgeleaf::protocol::AgentSpec {
            name: "svc".into(),
            triggers: vec!["guard.svc".into()],
            limits: Default::default(),
            allow_publish: vec![],
            config: Default::default(),
            ..Default::default()
        },
        module: ModuleRef {
            digest: "00".repeat(32),
            size: 10,
        },
        version: 99,
        issued_at: "2026-11-25T00:00:00Z".into(),
        nonce: "x".into(),
        target: "node.guard.svc".into(),
        publisher: Some(secret.public().to_string()),
        keep_kv: false,
        secrets: Default::default(),
        absent: false,
        artifacts: Default::default(),
    };
    use base64::Engine as _;
    env.spec = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&spec).unwrap());
    kv.put("node.guard.svc", serde_json::to_vec(&env).unwrap().into())
        .await
        .unwrap();
    let rejected = eventually(Duration::from_secs(20), "forged spec rejected", || async {
        status(&hub, "guard", "svc")
            .await
            .filter(|s| s.version == Some(99))
    })
    .await;
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.error.unwrap().code, "bad_signature");
    assert!(serving().await);

    // Signed correctly but the object under that digest is other bytes.
    let signed = SignedDeployment::seal(
        &DeploymentSpec {
            version: 100,
            ..spec.clone()
        },
        Some(&secret),
    );
    let os = js.get_object_store("EDGELEAF_MODULES").await.unwrap();
    os.put("00".repeat(32).as_str(), &mut &b"0123456789"[..])
        .await
        .unwrap();
    kv.put("node.guard.svc", signed.to_bytes().into())
        .await
        .unwrap();
    let failed = eventually(
        Duration::from_secs(20),
        "digest mismatch reported",
        || async {
            status(&hub, "guard", "svc")
                .await
                .filter(|s| s.version == Some(100))
        },
    )
    .await;
    let error = failed.error.unwrap();
    assert!(error.message.contains("digest mismatch"), "{error:?}");
    assert_eq!(failed.running_version, Some(1));
    assert!(serving().await);

    // Events name each refusal.
    let events: Value = {
        let js = async_nats::jetstream::new(hub.clone());
        let stream = js.get_stream("EDGELEAF_TELEMETRY").await.unwrap();
        let msg = stream
            .get_last_raw_message_by_subject("edgeleaf.evt.guard.deploy_failed")
            .await
            .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    };
    assert_eq!(events["agent"], "svc");
}

#[tokio::test]
async fn replayed_deployments_are_refused_even_after_undeploy() {
    let setup = TrustingNode::start("replay").await;
    let hub_url = setup.hub_url.clone();
    let mut args = setup.echo_svc();
    args.extend(["--memory".into(), "16MiB".into()]);
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let kv = async_nats::jetstream::new(hub.clone())
        .get_key_value("EDGELEAF_DEPLOYMENTS")
        .await
        .unwrap();
    let serving =
        || async { invoke(&hub_url, "replay", "svc", "alive").await.as_deref() == Some("alive") };
    // Someone who can write the bucket, but has no publisher key, puts an old
    // signed envelope back.
    let replay = |raw: bytes::Bytes, version: u64| {
        let (kv, hub) = (kv.clone(), hub.clone());
        async move {
            kv.put("node.replay.svc", raw).await.unwrap();
            eventually(Duration::from_secs(20), "the replay refused", || async {
                status(&hub, "replay", "svc")
                    .await
                    .filter(|s| s.version == Some(version) && s.state == "rejected")
            })
            .await
        }
    };

    let (ok, out) = deploy(&hub_url, &args).await;
    assert!(ok && out.contains("version 1"), "{out}");
    let v1 = kv.get("node.replay.svc").await.unwrap().unwrap();
    let (ok, out) = deploy(&hub_url, &args).await;
    assert!(ok && out.contains("version 2"), "{out}");
    let v2 = kv.get("node.replay.svc").await.unwrap().unwrap();

    let refused = replay(v1.clone(), 1).await;
    assert_eq!(refused.error.unwrap().code, "stale_version");
    assert_eq!(refused.running_version, Some(2));
    assert!(serving().await, "version 2 stopped serving after a replay");

    // Undeployed, then the newest envelope itself is written back: still refused.
    let out = cli(&["undeploy", "svc", "--node", "replay", "-s", &hub_url]).await;
    assert!(out.status.success());
    eventually(Duration::from_secs(20), "svc undeployed", || async {
        (!serving().await).then_some(())
    })
    .await;
    let refused = replay(v2, 2).await;
    assert_eq!(refused.error.unwrap().code, "replayed");
    assert_eq!(refused.running_version, None);
    assert!(
        !serving().await,
        "an undeployed agent came back from a replay"
    );

    // The publisher's next deploy counts past the undeployed history, and runs.
    let (ok, out) = deploy(&hub_url, &args).await;
    assert!(ok && out.contains("version 3"), "{out}");
    assert!(serving().await);
}

#[tokio::test]
async fn a_revoked_publisher_s_agents_stop_at_the_next_start_and_say_why() {
    let mut setup = TrustingNode::start("revoke").await;
    let hub_url = setup.hub_url.clone();
    let (ok, out) = deploy(&hub_url, &setup.echo_svc()).await;
    assert!(ok, "{out}");
    assert_eq!(
        invoke(&hub_url, "revoke", "svc", "hi").await.as_deref(),
        Some("hi")
    );

    // The operator revokes the key in the node's config and restarts it.
    let node = &mut setup.node;
    node.stop_with(libc::SIGTERM);
    let config = node.dir.path().join("node.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("revoked_publishers = [\"{}\"]\n", setup.public);
    std::fs::write(&config, text).unwrap();
    node.spawn();

    let hub = async_nats::connect(&hub_url).await.unwrap();
    let report = eventually(
        Duration::from_secs(30),
        "the revocation reported",
        || async {
            status(&hub, "revoke", "svc")
                .await
                .filter(|s| s.state == "rejected")
        },
    )
    .await;
    assert_eq!(report.error.unwrap().code, "revoked_publisher");
    assert_eq!(report.running_version, None);
    assert_eq!(invoke(&hub_url, "revoke", "svc", "hi").await, None);
    assert!(
        node.log().contains("no longer accepted, dropped"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn an_undeploy_missed_while_offline_is_not_undone_by_writing_the_same_bytes_back() {
    let mut setup = TrustingNode::start("missed").await;
    let hub_url = setup.hub_url.clone();
    let (ok, out) = deploy(&hub_url, &setup.echo_svc()).await;
    assert!(ok, "{out}");
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let kv = async_nats::jetstream::new(hub.clone())
        .get_key_value("EDGELEAF_DEPLOYMENTS")
        .await
        .unwrap();
    let raw = kv.get("node.missed.svc").await.unwrap().unwrap();

    // The node is off while the operator undeploys; then the same bytes go back.
    let node = &mut setup.node;
    node.stop_with(libc::SIGTERM);
    let out = cli(&["undeploy", "svc", "--node", "missed", "-s", &hub_url]).await;
    assert!(out.status.success());
    kv.put("node.missed.svc", raw).await.unwrap();
    node.spawn();

    let report = eventually(Duration::from_secs(30), "the rewrite refused", || async {
        status(&hub, "missed", "svc")
            .await
            .filter(|s| s.state == "rejected")
    })
    .await;
    let error = report.error.unwrap();
    assert_eq!(error.code, "replayed", "{error:?}");
    assert!(error.message.contains("written again"), "{error:?}");
    eventually(Duration::from_secs(20), "svc stopped", || async {
        invoke(&hub_url, "missed", "svc", "hi")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}
