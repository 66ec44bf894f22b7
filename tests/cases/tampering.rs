//! Whoever can write the hub's buckets (or a node's state dir) must not be able to
//! unlock secrets, overflow versions, forge another node's status or slip past
//! replay protection: each test writes what such a party could, with a raw client.

use std::time::Duration;

use edgeleaf::protocol::AgentSpec;
use edgeleaf::shipping::{DeploymentSpec, ModuleRef, SignedDeployment};

use crate::cases::shipping::{TrustingNode, deploy, status};
use crate::harness::{Cluster, cli, cli_json, eventually};

/// A spec for agent `name` under `target`, claiming `publisher`.
fn spec(name: &str, target: &str, version: u64, publisher: Option<String>) -> DeploymentSpec {
    DeploymentSpec {
        agent: AgentSpec {
            name: name.into(),
            triggers: vec![format!("tamper.{name}")],
            limits: Default::default(),
            allow_publish: vec![],
            config: Default::default(),
            ..Default::default()
        },
        module: ModuleRef {
            digest: "ab".repeat(32),
            size: 10,
        },
        version,
        issued_at: "2026-12-02T00:00:00Z".into(),
        nonce: "0".into(),
        target: target.into(),
        publisher,
        keep_kv: false,
        secrets: Default::default(),
        absent: false,
        artifacts: Default::default(),
    }
}

async fn deployments(hub_url: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(hub_url).await.unwrap();
    async_nats::jetstream::new(client)
        .get_key_value("EDGELEAF_DEPLOYMENTS")
        .await
        .unwrap()
}

#[tokio::test]
async fn agents_ignores_a_status_value_that_names_another_node() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let client = async_nats::connect(&hub_url).await.unwrap();
    let status = async_nats::jetstream::new(client)
        .get_key_value("EDGELEAF_STATUS")
        .await
        .unwrap();
    let value = |node: &str| {
        serde_json::json!({
            "node_id": node, "agent": "echo", "state": "running", "version": 7,
            "running_version": 7, "digest": null, "key": "all.echo", "error": null,
            "since": "2026-12-02T00:00:00Z",
        })
        .to_string()
    };
    // liar's key, victim's name; and an honest one.
    status
        .put("liar.echo", value("victim").into())
        .await
        .unwrap();
    status
        .put("honest.echo", value("honest").into())
        .await
        .unwrap();
    let rows = cli_json(&["agents", "--json", "-s", &hub_url]).await;
    let nodes: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["node_id"].as_str())
        .collect();
    assert_eq!(nodes, ["honest"], "{rows}");
}

#[tokio::test]
async fn deploy_counts_versions_only_from_envelopes_that_verify() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = crate::harness::publisher(dir.path(), "pub.key").await;
    let bucket = deployments(&hub_url).await;
    // Unsigned, and signed-looking with a signature over other bytes: both at the
    // very top of the range.
    let forged = SignedDeployment::seal(&spec("echo", "all.echo", u64::MAX, None), None);
    bucket
        .put("all.echo", forged.to_bytes().into())
        .await
        .unwrap();
    let other = edgeleaf::shipping::SecretKey::generate();
    let mut resigned = SignedDeployment::seal(
        &spec(
            "echo",
            "tag.site.x.echo",
            5,
            Some(other.public().to_string()),
        ),
        Some(&other),
    );
    resigned.spec = SignedDeployment::seal(
        &spec(
            "echo",
            "tag.site.x.echo",
            u64::MAX,
            Some(other.public().to_string()),
        ),
        None,
    )
    .spec;
    bucket
        .put("tag.site.x.echo", resigned.to_bytes().into())
        .await
        .unwrap();

    let echo = crate::harness::agent_wasm("echo");
    let out = cli(&[
        "deploy",
        echo.to_str().unwrap(),
        "--trigger",
        "tamper.echo",
        "--all",
        "--key",
        key.to_str().unwrap(),
        "--wait",
        "0s",
        "--json",
        "-s",
        &hub_url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 1, "{report}");
}

#[tokio::test]
async fn an_unsigned_envelope_naming_a_trusted_publisher_is_refused() {
    // A lab node that allows unsigned deployments, and trusts a publisher.
    let node = TrustingNode::start_with("lab", "allow_unsigned = true\n").await;
    let bucket = deployments(&node.hub_url).await;
    let target = "node.lab.forged";
    let mut envelope =
        SignedDeployment::seal(&spec("forged", target, 1, Some(node.public.clone())), None);
    envelope.publisher = Some(node.public.clone());
    bucket
        .put(target, envelope.to_bytes().into())
        .await
        .unwrap();
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let refused = eventually(Duration::from_secs(20), "the node's verdict", || async {
        status(&hub, "lab", "forged").await
    })
    .await;
    assert_eq!(refused.state, "rejected", "{refused:?}");
    let error = refused.error.expect("a reason");
    assert_eq!(error.code, "bad_signature", "{}", error.message);
    assert!(error.message.contains("unsigned"), "{}", error.message);
}

#[tokio::test]
async fn replay_protection_refuses_when_its_record_cannot_be_read() {
    let mut node = TrustingNode::start("forgetful").await;
    assert!(node.node.stop_with(libc::SIGTERM).success());
    // The record of what was accepted under the key, unreadable.
    {
        let db = sled::open(node.node.state_dir().join("db")).unwrap();
        db.open_tree("accepted")
            .unwrap()
            .insert("node.forgetful.svc", &b"\xffnot json"[..])
            .unwrap();
        db.flush().unwrap();
    }
    node.node.spawn();
    crate::cases::shipping::wait_node(&node.hub_url, "forgetful", "online").await;
    let (ok, text) = deploy(&node.hub_url, &node.echo_svc()).await;
    assert!(!ok, "deployed past an unreadable replay record: {text}");
    assert!(text.contains("replay_check_failed"), "{text}");
}

/// Leaves an object-store entry for `bytes` whose one chunk never arrives: what a
/// writer of the store can do to make every reader wait.
async fn plant_stuck_module(js: &async_nats::jetstream::Context, bytes: &[u8]) -> String {
    use base64::Engine as _;
    let digest = edgeleaf::shipping::modules::digest(bytes);
    let info = serde_json::json!({
        "name": digest, "bucket": "EDGELEAF_MODULES", "nuid": format!("stuck{}", &digest[..8]),
        "size": bytes.len(), "chunks": 1, "digest": "SHA-256=AAAA", "deleted": false,
    });
    let subject = format!(
        "$O.EDGELEAF_MODULES.M.{}",
        base64::engine::general_purpose::URL_SAFE.encode(&digest)
    );
    js.publish(subject, info.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    digest
}

#[tokio::test]
async fn a_module_whose_chunks_never_arrive_freezes_neither_deploy_nor_the_node() {
    let node = TrustingNode::start("patient").await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let js = async_nats::jetstream::new(hub.clone());
    let upper = std::fs::read(crate::harness::agent_wasm("upper-c")).unwrap();
    let echo = std::fs::read(crate::harness::agent_wasm("echo")).unwrap();
    let stuck_digest = plant_stuck_module(&js, &upper).await;
    plant_stuck_module(&js, &echo).await;

    // A signed deployment whose module never downloads.
    let key = edgeleaf::shipping::SecretKey::load(&node.key).unwrap();
    let mut stuck = spec("stuck", "node.patient.stuck", 1, Some(node.public.clone()));
    stuck.module = ModuleRef {
        digest: stuck_digest,
        size: upper.len() as u64,
    };
    deployments(&node.hub_url)
        .await
        .put(
            "node.patient.stuck",
            SignedDeployment::seal(&stuck, Some(&key)).to_bytes().into(),
        )
        .await
        .unwrap();

    // `deploy` finds echo's object broken, uploads it again, and the node runs echo
    // while the other download still hangs.
    let (ok, text) = deploy(&node.hub_url, &node.echo_svc()).await;
    assert!(ok, "{text}");
    assert!(text.contains("uploaded"), "{text}");
    assert!(text.contains("running"), "{text}");
    let failed = eventually(
        Duration::from_secs(60),
        "the stuck download given up",
        || async {
            status(&hub, "patient", "stuck")
                .await
                .filter(|s| s.state == "failed")
        },
    )
    .await;
    assert_eq!(failed.error.unwrap().code, "fetch_failed");

    // Later changes are still applied: an undeploy.
    let out = cli(&["undeploy", "svc", "--node", "patient", "-s", &node.hub_url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), "svc undeployed", || async {
        status(&hub, "patient", "svc").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn another_publisher_s_agent_of_the_same_name_starts_without_its_kv_data() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let dir = tempfile::tempdir().unwrap();
    let (key_a, public_a) = crate::harness::publisher(dir.path(), "a.key").await;
    let (key_b, public_b) = crate::harness::publisher(dir.path(), "b.key").await;
    let _node = crate::harness::Node::start(crate::harness::NodeSpec {
        id: "shared",
        url: Some(cluster.leaf.url()),
        extra: format!("\n[security]\ntrusted_publishers = [\"{public_a}\", \"{public_b}\"]\n"),
        ..Default::default()
    });
    crate::cases::shipping::wait_node(&hub_url, "shared", "online").await;
    let hostile = crate::harness::agent_wasm("hostile");
    let deploy_as = |key: std::path::PathBuf| {
        let (hostile, hub_url) = (hostile.clone(), hub_url.clone());
        async move {
            let args = [
                hostile.to_str().unwrap(),
                "--name",
                "vault",
                "--trigger",
                "own.vault",
                "--node",
                "shared",
                "--keep-kv",
                "--key",
                key.to_str().unwrap(),
            ];
            let (ok, text) = deploy(&hub_url, &args).await;
            assert!(ok, "{text}");
        }
    };
    let hub = async_nats::connect(&hub_url).await.unwrap();
    deploy_as(key_a.clone()).await;
    crate::harness::request_ok(&hub, "own.vault", "kvset:token=a-private").await;
    assert_eq!(
        crate::harness::request_ok(&hub, "own.vault", "kvget:token").await,
        "a-private"
    );
    // Publisher A again: its own data stays.
    deploy_as(key_a).await;
    assert_eq!(
        crate::harness::request_ok(&hub, "own.vault", "kvget:token").await,
        "a-private"
    );
    // Publisher B takes the name over: it does not read A's data.
    deploy_as(key_b).await;
    assert_eq!(
        crate::harness::request_ok(&hub, "own.vault", "kvget:token").await,
        "none"
    );
}
