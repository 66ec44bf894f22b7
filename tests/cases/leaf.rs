//! The node's own leaf server: restarted when it dies, never left behind.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{
    Node, NodeSpec, Server, alive, eventually, free_port, nats_server_bin, next_json, read_pid,
    signal,
};
use edgeleaf::protocol::Heartbeat;

fn spawning_node(hub: &Server, id: &str) -> Node {
    Node::start(NodeSpec {
        id,
        spawn_leaf: Some((free_port(), hub.leafnode_port.unwrap())),
        ..Default::default()
    })
}

async fn next_heartbeat(sub: &mut async_nats::Subscriber) -> Heartbeat {
    serde_json::from_value(next_json(sub).await).unwrap()
}

#[tokio::test]
async fn supervisor_restarts_a_killed_leaf_and_heartbeats_resume() {
    let hub = Server::hub();
    let client = async_nats::connect(hub.url()).await.unwrap();
    let mut hbs = client.subscribe("edgeleaf.hb.sup").await.unwrap();
    client.flush().await.unwrap();
    let mut node = spawning_node(&hub, "sup");
    let before = next_heartbeat(&mut hbs).await;
    let first_leaf = read_pid(&node.leaf_pidfile()).expect("no leaf pidfile");
    assert!(alive(first_leaf));

    signal(first_leaf, libc::SIGKILL);
    let second_leaf = eventually(Duration::from_secs(20), "a restarted leaf", || async {
        read_pid(&node.leaf_pidfile()).filter(|p| *p != first_leaf && alive(*p))
    })
    .await;
    // Heartbeats from the same node process arrive again through the new leaf.
    // (Heartbeats sent while the leaf was down are lost: they are fire and forget.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let hb = next_heartbeat(&mut hbs).await;
        if hb.seq > before.seq + 1 && hb.started_at == before.started_at {
            break hb;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat after the leaf restart"
        );
    };
    assert_eq!(after.node_id, "sup");
    let info: serde_json::Value = {
        let msg = client
            .request("edgeleaf.ctl.sup.info", "".into())
            .await
            .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    };
    assert_eq!(info["ok"]["leaf"]["spawned"], true);
    assert_eq!(info["ok"]["leaf"]["pid"], second_leaf);
    assert!(
        info["ok"]["leaf"]["restarts"].as_u64().unwrap() >= 1,
        "{info}"
    );

    let status = node.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(
        !alive(second_leaf),
        "leaf server {second_leaf} outlived its node"
    );
    assert!(
        !node.leaf_pidfile().exists(),
        "pidfile left after a clean stop"
    );
}

#[tokio::test]
async fn a_killed_node_takes_its_leaf_with_it() {
    let hub = Server::hub();
    let mut node = spawning_node(&hub, "doomed");
    let leaf = eventually(Duration::from_secs(20), "leaf pidfile", || async {
        read_pid(&node.leaf_pidfile()).filter(|p| alive(*p))
    })
    .await;
    node.stop_with(libc::SIGKILL);
    eventually(
        Duration::from_secs(10),
        "the orphaned leaf to die",
        || async { (!alive(leaf)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_stale_leaf_from_an_earlier_run_is_stopped() {
    let hub = Server::hub();
    let client = async_nats::connect(hub.url()).await.unwrap();
    let mut node = spawning_node(&hub, "stale");
    eventually(Duration::from_secs(20), "first leaf", || async {
        read_pid(&node.leaf_pidfile())
    })
    .await;
    assert!(node.stop_with(libc::SIGTERM).success());

    // Pretend the death signal never fired: a leaf server from the earlier run still
    // holds the port, its pid in the pidfile.
    let conf = node.state_dir().join("leaf/nats-server.conf");
    let mut stale = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(node.leaf_pidfile(), format!("{}\n", stale.id())).unwrap();
    let stale_pid = stale.id();
    eventually(Duration::from_secs(10), "stale server up", || async {
        std::fs::read_to_string(node.state_dir().join("leaf/nats-server.log"))
            .ok()
            .filter(|log| log.matches("Server is ready").count() >= 2)
    })
    .await;

    let mut hbs = client.subscribe("edgeleaf.hb.stale").await.unwrap();
    client.flush().await.unwrap();
    node.spawn();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = stale.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = stale.kill();
                let _ = stale.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some(),
        "the node did not stop the stale leaf server"
    );
    let hb = next_heartbeat(&mut hbs).await;
    assert_eq!(hb.node_id, "stale");
    let new_pid = read_pid(&node.leaf_pidfile()).unwrap();
    assert_ne!(new_pid, stale_pid);
    assert!(alive(new_pid));
    assert!(
        node.log().contains("stale"),
        "no word of the stale server in the log"
    );
}

#[tokio::test]
async fn a_second_node_on_the_same_state_dir_is_refused() {
    let hub = Server::hub();
    let node = Node::start(NodeSpec {
        id: "first",
        url: Some(hub.url()),
        ..Default::default()
    });
    eventually(Duration::from_secs(20), "first node's database", || async {
        node.log().contains("node running").then_some(())
    })
    .await;
    let out = tokio::process::Command::new(crate::harness::BIN)
        .args(["node", "-c"])
        .arg(node.dir.path().join("node.toml"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another edgeleaf process"), "{err}");
}
