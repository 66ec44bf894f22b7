//! A hub of three servers in one JetStream cluster: every stream and bucket kept
//! three times, a leaf that knows each server, and one server killed under load.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use edgeleaf::protocol::OutboxStats;

use crate::cases::outbox::{connect_when_up, served, stored_results};
use crate::cases::shipping::{status, wait_node};
use crate::harness::{
    Node, NodeSpec, Server, agent_toml, agent_wasm, cli, eventually, free_port, publisher,
    serving_within, trusting, try_control,
};

/// Three hub servers routed to each other, each with JetStream (domain `hub`), a
/// leafnode listener and a monitoring port (to see which one holds the leaf).
struct HubCluster {
    servers: Vec<Option<Server>>,
    http_ports: Vec<u16>,
}

impl HubCluster {
    /// The first server is the seed the other two route to (they learn each other
    /// from it). Each server's ports are taken just before it starts, so that no
    /// other test takes them in between.
    fn start() -> Self {
        let mut servers = Vec::new();
        let mut http_ports = Vec::new();
        let mut seed = None;
        for i in 0..3 {
            let (route, http) = (free_port(), free_port());
            // The seed lists itself: JetStream wants a route, and a server skips its own.
            let routes = format!("\"nats-route://127.0.0.1:{}\"", seed.unwrap_or(route));
            servers.push(Some(Server::custom("hub", true, move |dir, port, leafnodes| {
                format!(
                    "server_name: hub-{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: \"{}\", domain: hub }}\n\
                     leafnodes {{ listen: 127.0.0.1:{} }}\n\
                     cluster {{ name: edgeleaf-hub, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                    dir.join("js").display(),
                    leafnodes.unwrap()
                )
            })));
            http_ports.push(http);
            seed.get_or_insert(route);
        }
        Self {
            servers,
            http_ports,
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Leafnode connections server `i` holds, from its `/leafz` page.
    fn leafnodes(&self, i: usize) -> u64 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http_ports[i])) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /leafz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
            .and_then(|v| v["leafnodes"].as_u64())
            .unwrap_or(0)
    }

    /// Which live server the leaf is linked to.
    async fn linked(&self) -> usize {
        eventually(
            Duration::from_secs(30),
            "the leaf linked to a hub server",
            || async { self.live().map(|(i, _)| i).find(|&i| self.leafnodes(i) > 0) },
        )
        .await
    }
}

#[tokio::test]
async fn a_hub_server_dies_under_load_and_nothing_is_lost_or_duplicated() {
    let mut hub = HubCluster::start();
    let urls: Vec<String> = hub.live().map(|(_, s)| s.url()).collect();
    // Every server's client URL as one list (`-s a,b,c`), the dead one too later.
    let all = urls.join(",");
    // The cluster elects its JetStream meta leader in the first seconds.
    eventually(Duration::from_secs(30), "hub init --replicas 3", || async {
        let out = cli(&["hub", "init", "--replicas", "3", "-s", &all]).await;
        out.status.success().then_some(())
    })
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(urls[0].as_str()).await.unwrap());
    for name in ["EDGELEAF_TELEMETRY", "KV_EDGELEAF_DEPLOYMENTS"] {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        assert_eq!(
            info.cluster.map(|c| c.replicas.len()),
            Some(2),
            "{name}: a leader and two replicas"
        );
    }

    let keys = tempfile::tempdir().unwrap();
    let (key, public) = publisher(keys.path(), "pub.key").await;
    let leafnode_urls: Vec<String> = hub
        .live()
        .map(|(_, s)| format!("nats-leaf://127.0.0.1:{}", s.leafnode_port.unwrap()))
        .collect();
    let leaf_port = free_port();
    let node = Node::start(NodeSpec {
        id: "ha",
        spawn_leaf: Some((leaf_port, 0)),
        hub_url: Some(leafnode_urls.join(",")),
        extra: trusting(&public) + &agent_toml("echo", &agent_wasm("echo"), &["load.echo"], ""),
        ..Default::default()
    });
    let leaf = connect_when_up(&node.local_url(leaf_port)).await;
    served(&leaf).await;
    wait_node(&all, "ha", "online").await;
    let first = hub.linked().await;

    // Load from a local client on the leaf: 3,000 requests, each answered by the
    // agent and recorded for the hub. The server the leaf is linked to dies a
    // third of the way in.
    let load = {
        let leaf = leaf.clone();
        tokio::spawn(async move {
            for i in 0..3000 {
                leaf.publish("load.echo", format!("m{i:04}").into())
                    .await
                    .unwrap();
                if i % 50 == 49 {
                    leaf.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            leaf.flush().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    hub.servers[first].take().unwrap().kill();
    load.await.unwrap();

    let second = hub.linked().await;
    assert_ne!(second, first, "the leaf moved to another hub server");
    let drained = eventually(Duration::from_secs(90), "outbox drained", || async {
        try_control::<OutboxStats>(&leaf, "ha", "outbox")
            .await
            .filter(|s| s.depth == 0 && s.appended >= 3000)
    })
    .await;
    assert_eq!(drained.dropped, 0);

    let survivor = hub.servers[second].as_ref().unwrap().url();
    let stored = stored_results(&survivor, "ha").await;
    assert_eq!(
        crate::cases::outbox::numbered_outputs(&stored),
        crate::cases::outbox::numbered(3000),
        "every result on the stream exactly once"
    );
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stored in the node's order, no duplicates"
    );

    // Deployments still reach the node (its watch moved with the leaf), and a CLI
    // given every server's URL, the dead one too, still works, once the cluster
    // has a leader for each stream again.
    let client = async_nats::connect(survivor.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for name in [
        "KV_EDGELEAF_DEPLOYMENTS",
        "OBJ_EDGELEAF_MODULES",
        "KV_EDGELEAF_STATUS",
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("{name} has a leader"),
            || async {
                let info = js.get_stream(name).await.ok()?.info().await.ok()?.clone();
                info.cluster?.leader.filter(|l| !l.is_empty())
            },
        )
        .await;
    }
    let out = cli(&[
        "deploy",
        agent_wasm("echo").to_str().unwrap(),
        "--name",
        "svc",
        "--trigger",
        "ha.svc",
        "--node",
        "ha",
        "--key",
        key.to_str().unwrap(),
        "--wait",
        "0s",
        "-s",
        &all,
    ])
    .await;
    assert!(
        out.status.success(),
        "deploy after the server died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nats-server 2.9 (Debian's) may place the node's new consumers on the dead
    // server (each such try times out and is tried again), so this can take a while.
    serving_within(&client, "ha.svc", "after", Duration::from_secs(120)).await;
    let running = eventually(Duration::from_secs(60), "svc reported running", || async {
        status(&client, "ha", "svc")
            .await
            .filter(|s| s.state == "running")
    })
    .await;
    assert_eq!(running.version, Some(1));
    wait_node(&all, "ha", "online").await;
}
