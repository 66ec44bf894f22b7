//! The spawned leaf's client port: local applications log in as a user that can use
//! the agents but never act as the node, and `deploy --secret` pins each node's key.
//! (Before: any process on the device could publish the node's heartbeat with its
//! own encryption key and be sent the node's secrets.)

use std::time::Duration;

use futures::StreamExt;

use crate::cases::shipping::wait_node;
use crate::harness::{
    Node, NodeSpec, Server, agent_wasm, cli, eventually, free_port, publisher, trusting,
};

/// A hub, a publisher key, and node `id` with its own leaf, trusting that key.
struct Device {
    hub: Server,
    _keys: tempfile::TempDir,
    key: std::path::PathBuf,
    node: Node,
    listen: u16,
}

impl Device {
    async fn start(id: &'static str) -> Self {
        let hub = Server::hub();
        crate::harness::hub_init(&hub.url()).await;
        let keys = tempfile::tempdir().unwrap();
        let (key, public) = publisher(keys.path(), "pub.key").await;
        let listen = free_port();
        let node = Node::start(NodeSpec {
            id,
            spawn_leaf: Some((listen, hub.leafnode_port.unwrap())),
            extra: trusting(&public),
            ..Default::default()
        });
        wait_node(&hub.url(), id, "online").await;
        Self {
            hub,
            _keys: keys,
            key,
            node,
            listen,
        }
    }

    /// `edgeleaf deploy` of hostile.wasm as `vault` on `vault.<id>`, with a secret.
    async fn deploy_secret(&self, more: &[&str]) -> std::process::Output {
        let hub_url = self.hub.url();
        let trigger = format!("vault.{}", self.node.id);
        let hostile = agent_wasm("hostile");
        let mut args = vec![
            "deploy",
            hostile.to_str().unwrap(),
            "--name",
            "vault",
            "--trigger",
            &trigger,
            "--node",
            &self.node.id,
            "--secret",
            "api_token=sk-3c9d1f",
            "--key",
            self.key.to_str().unwrap(),
            "-s",
            &hub_url,
            "--wait",
            "30s",
        ];
        args.extend(more);
        cli(&args).await
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_local_client_uses_the_agents_but_cannot_act_as_the_node() {
    let device = Device::start("guarded").await;
    let hub = async_nats::connect(device.hub.url()).await.unwrap();
    let mut heartbeats = hub.subscribe("edgeleaf.hb.guarded").await.unwrap();
    let mut forged_telemetry = hub.subscribe("edgeleaf.*.guarded.>").await.unwrap();
    hub.flush().await.unwrap();

    // No login, or a wrong one: refused.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("127.0.0.1:{}", device.listen))
        .await;
    assert!(anonymous.is_err(), "the leaf let in a client with no login");
    let wrong = async_nats::ConnectOptions::with_user_and_password("local".into(), "guess".into())
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("127.0.0.1:{}", device.listen))
        .await;
    assert!(wrong.is_err(), "the leaf let in a wrong password");

    // The local user: its `>` subscription must never see the node's control
    // requests or the replies to the node's own requests.
    let local = crate::harness::connect_url(&device.node.local_url(device.listen))
        .await
        .expect("the local user logs in");
    let mut snoop = local.subscribe(">").await.unwrap();
    local.flush().await.unwrap();

    // It deploys nothing itself, but uses what is deployed: a secret-carrying
    // agent goes out (the node fetches it through its inbox meanwhile).
    let out = device.deploy_secret(&[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pinned the encryption key of guarded"),
        "{}",
        text(&out)
    );
    let reply = eventually(
        Duration::from_secs(20),
        "vault answering locally",
        || async {
            let msg = tokio::time::timeout(
                Duration::from_secs(1),
                local.request("vault.guarded", "echo:local".into()),
            )
            .await
            .ok()?
            .ok()?;
            Some(msg.payload)
        },
    )
    .await;
    assert_eq!(&reply[..], b"echo:local");
    let info = hub
        .request("edgeleaf.ctl.guarded.info", "".into())
        .await
        .unwrap();
    assert!(!info.payload.is_empty());

    // Posing as the node: a heartbeat with its own key, results, events, logs.
    for subject in [
        "edgeleaf.hb.guarded",
        "edgeleaf.res.guarded.vault",
        "edgeleaf.evt.guarded.started",
        "edgeleaf.log.guarded.vault",
    ] {
        let _ = local
            .publish(
                subject,
                r#"{"node_id":"guarded","forged":true,"enc_key":"x25519:00"}"#.into(),
            )
            .await;
    }
    // No JetStream, KV or object store at all.
    let js = async_nats::jetstream::with_domain(local.clone(), "hub");
    let kv = tokio::time::timeout(Duration::from_secs(5), async {
        let bucket = js.get_key_value("EDGELEAF_DEPLOYMENTS").await.ok()?;
        bucket.get("node.guarded.vault").await.ok()?
    })
    .await;
    assert!(
        !matches!(kv, Ok(Some(_))),
        "the local user read a deployment"
    );
    let _ = local
        .publish("$KV.EDGELEAF_STATUS.guarded.vault", "forged".into())
        .await;
    local.flush().await.unwrap();

    // Two real heartbeats later, nothing forged reached the hub.
    let mut real = 0;
    while real < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), heartbeats.next())
            .await
            .expect("heartbeats stopped")
            .unwrap();
        let hb: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert!(
            hb.get("forged").is_none(),
            "a forged heartbeat reached the hub: {hb}"
        );
        real += 1;
    }
    while let Ok(Some(msg)) =
        tokio::time::timeout(Duration::from_millis(200), forged_telemetry.next()).await
    {
        assert!(
            !String::from_utf8_lossy(&msg.payload).contains("forged"),
            "forged {} reached the hub",
            msg.subject
        );
    }
    // A tool on the device reads the running node's outbox as the local user.
    let state = device.node.state_dir();
    let out = cli(&["outbox", "--state-dir", state.to_str().unwrap(), "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let status = cli(&["agents", "--json", "-s", &device.hub.url()]).await;
    assert!(!text(&status).contains("forged"), "{}", text(&status));

    // What the local user's `>` saw: never a control request, never the node's inbox.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), snoop.next()).await {
        let subject = msg.subject.as_str();
        assert!(
            !subject.starts_with("edgeleaf.ctl.")
                && !subject.starts_with("edgeleaf.inv.")
                && !subject.starts_with("_INBOX_guarded.")
                && !subject.starts_with("$"),
            "the local user saw {subject}"
        );
    }
}

#[tokio::test]
async fn deploy_secret_refuses_a_node_key_that_changed_until_accepted() {
    let mut device = Device::start("rekeyed").await;
    let out = device.deploy_secret(&[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let first_key = device.heartbeat_key().await;

    // The node comes back with another key (reinstalled, or an impostor).
    assert!(device.node.stop_with(libc::SIGTERM).success());
    std::fs::remove_file(device.node.state_dir().join("node.key")).unwrap();
    device.node.spawn();
    eventually(Duration::from_secs(30), "the new key reported", || async {
        let key = device.heartbeat_key().await;
        (key != first_key).then_some(())
    })
    .await;

    let out = device.deploy_secret(&[]).await;
    assert!(
        !out.status.success(),
        "sealed to a changed key: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("--accept-new-key rekeyed"),
        "{}",
        text(&out)
    );
    let out = device.deploy_secret(&["--accept-new-key", "rekeyed"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("accepted a new encryption key for rekeyed"));
    // Pinned now: the next deploy goes through without the flag.
    let out = device.deploy_secret(&[]).await;
    assert!(out.status.success(), "{}", text(&out));
}

impl Device {
    /// The encryption key in the node's newest heartbeat on the hub.
    async fn heartbeat_key(&self) -> String {
        let hub_url = self.hub.url();
        eventually(
            Duration::from_secs(20),
            "a heartbeat with a key",
            || async {
                let rows =
                    crate::harness::try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
                rows.as_array()?
                    .iter()
                    .find(|r| r["node_id"] == self.node.id && r["status"] == "online")?["heartbeat"]
                    ["enc_key"]
                    .as_str()
                    .map(str::to_owned)
            },
        )
        .await
    }
}
