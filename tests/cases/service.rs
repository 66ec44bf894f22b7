//! Running under systemd (`Type=notify`, `WatchdogSec=`): the node reports ready,
//! pets the watchdog while healthy and says when it stops, over a real
//! `$NOTIFY_SOCKET` datagram socket as systemd provides it.

use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::harness::{Cluster, Node, NodeSpec};

async fn next(socket: &UnixDatagram, node: &Node) -> String {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        other => panic!(
            "no notification within 20s ({other:?}); log:\n{}",
            node.log()
        ),
    }
}

#[tokio::test]
async fn node_notifies_ready_pets_the_watchdog_and_says_stopping() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut node = Node::start(NodeSpec {
        id: "sd-node",
        url: Some(cluster.leaf.url()),
        // 400 ms: the node pets every 200 ms.
        env: &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")],
        ..Default::default()
    });

    let mut seen = Vec::new();
    while seen.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        seen.push(next(&socket, &node).await);
    }
    let ready = seen.iter().position(|m| m == "READY=1");
    assert!(ready.is_some(), "no READY=1 before the watchdog: {seen:?}");
    assert!(
        seen.iter().all(|m| m == "READY=1" || m == "WATCHDOG=1"),
        "{seen:?}"
    );

    // SIGTERM, as `systemctl stop` sends: STOPPING=1, then a clean exit.
    let stopping = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let n = socket.recv(&mut buf).await.unwrap();
            if &buf[..n] == b"STOPPING=1" {
                return;
            }
        }
    });
    let status = node.stop_with(libc::SIGTERM);
    assert!(status.success(), "node exited with {status}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("no STOPPING=1 after SIGTERM")
        .unwrap();
}
