//! Issue 16, logs: agent log lines and the node's own warnings are kept on the node
//! while the hub is unreachable, reach the hub's `EDGELEAF_LOGS` stream in order and
//! once, and `edgeleaf logs` shows them (history, `-f`, `--level`, `--domain`).

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::cases::outbox::connect_when_up;
use crate::harness::{
    BIN, Cluster, Node, NodeSpec, Server, agent_toml, agent_wasm, cli, eventually, free_port,
    request_ok, serving,
};

/// `edgeleaf logs … --json`, one value per line.
async fn logs_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", "--json"];
    all.extend_from_slice(args);
    let out = cli(&all).await;
    assert!(
        out.status.success(),
        "edgeleaf {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn messages(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect()
}

/// A node with its own leaf to `hub`, running the hostile agent as `h` on `logs.h`.
fn hostile_node(hub: &Server, id: &'static str, leaf_port: u16, more: &str) -> Node {
    Node::start(NodeSpec {
        id,
        spawn_leaf: Some((leaf_port, hub.leafnode_port.unwrap())),
        extra: more.to_owned() + &agent_toml("h", &agent_wasm("hostile"), &["logs.h"], ""),
        ..Default::default()
    })
}

#[tokio::test]
async fn lines_written_during_a_hub_outage_arrive_in_order_once() {
    let mut hub = Server::hub();
    let hub_url = hub.url();
    crate::harness::hub_init(&hub_url).await;
    let leaf_port = free_port();
    // A second agent whose module is not wasm: the node's warning about it is one
    // of its own lines (agent `_node`).
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), b"not wasm at all").unwrap();
    let node = hostile_node(
        &hub,
        "lg1",
        leaf_port,
        &agent_toml("broken", bad.path(), &["logs.broken"], ""),
    );
    let leaf = connect_when_up(&node.local_url(leaf_port)).await;
    serving(&leaf, "logs.h", "echo:up").await;
    assert_eq!(request_ok(&leaf, "logs.h", "say:before").await, "said");

    hub.kill();
    for i in 0..30 {
        assert_eq!(
            request_ok(&leaf, "logs.h", &format!("say:off-{i:02}")).await,
            "said"
        );
    }
    hub.restart();

    let mut expected = vec!["before".to_owned()];
    expected.extend((0..30).map(|i| format!("off-{i:02}")));
    let rows = eventually(Duration::from_secs(60), "lines on the hub", || async {
        let rows = logs_json(&["-s", &hub_url, "--node", "lg1", "--agent", "h"]).await;
        (rows.len() > expected.len()
            || messages(&rows).last().map(String::as_str) == Some("off-29"))
        .then_some(rows)
    })
    .await;
    let said: Vec<String> = messages(&rows)
        .into_iter()
        .filter(|m| m == "before" || m.starts_with("off-"))
        .collect();
    assert_eq!(said, expected, "every line once, in the order written");
    for row in &rows {
        assert_eq!(row["node"], "lg1");
        assert_eq!(row["agent"], "h");
        assert_eq!(row["level"], "info");
        assert!(row["at"].as_str().unwrap().ends_with('Z'), "{row}");
    }
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The node's own warning, under `_node`, found by level.
    let own = logs_json(&[
        "-s", &hub_url, "--node", "lg1", "--agent", "_node", "--level", "warn",
    ])
    .await;
    assert!(
        own.iter().any(|r| {
            let m = r["message"].as_str().unwrap();
            m.contains("agent not started") && m.contains("broken")
        }),
        "{own:?}"
    );
    assert!(
        own.iter()
            .all(|r| r["level"] == "warn" || r["level"] == "error")
    );

    // The plain text form names node, agent and level on each line.
    let out = cli(&["logs", "-s", &hub_url, "--node", "lg1", "--agent", "h"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(" lg1/h INFO  off-29") && l.ends_with("off-29")),
        "{text}"
    );
    drop(node);
}

#[tokio::test]
async fn follow_prints_new_lines_through_a_leaf_with_a_domain() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let node = Node::start(NodeSpec {
        id: "lg2",
        url: Some(cluster.leaf.url()),
        extra: agent_toml("h", &agent_wasm("hostile"), &["logs2.h"], ""),
        // Its own log in JSON Lines, as log shippers want it.
        env: &[("EDGELEAF_LOG_FORMAT", "json")],
        ..Default::default()
    });
    serving(&hub, "logs2.h", "echo:up").await;
    let leaf_url = cluster.leaf.url();
    let mut follower = tokio::process::Command::new(BIN)
        .args(["logs", "-f", "--json", "--node", "lg2", "--agent", "h"])
        .args(["--level", "warn", "-s", &leaf_url, "--domain", "hub"])
        .env_remove("NATS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    // Written after the follower started: it prints them as they arrive, warn and
    // error only.
    assert_eq!(request_ok(&hub, "logs2.h", "log").await, "logged");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("no line followed within 30s")
            .unwrap()
            .expect("logs -f ended");
        let row: Value = serde_json::from_str(&line).unwrap();
        seen.push((
            row["level"].as_str().unwrap().to_owned(),
            row["message"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("warn".to_owned(), "hostile: warn line".to_owned()),
            ("error".to_owned(), "hostile: error line".to_owned()),
        ]
    );
    // Still following: a second invocation's lines come too.
    assert_eq!(request_ok(&hub, "logs2.h", "log").await, "logged");
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("no second line")
        .unwrap()
        .unwrap();
    assert!(next.contains("hostile: warn line"), "{next}");
    follower.start_kill().unwrap();
    let _ = follower.wait().await;

    // Without -f the history ends by itself; every level is there.
    let all = logs_json(&[
        "-s", &leaf_url, "--domain", "hub", "--node", "lg2", "--agent", "h",
    ])
    .await;
    let levels: Vec<&str> = all.iter().map(|r| r["level"].as_str().unwrap()).collect();
    assert_eq!(
        levels,
        [
            "trace", "debug", "info", "warn", "error", "trace", "debug", "info", "warn", "error"
        ]
    );

    // EDGELEAF_LOG_FORMAT=json: every line the node wrote is one JSON object.
    let log = node.log();
    let objects: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o["fields"]["message"] == "node running" && o["level"] == "INFO"),
        "{log}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o["fields"]["message"] == "hostile: warn line" && o["level"] == "WARN"),
        "{log}"
    );
}

#[tokio::test]
async fn a_full_log_store_drops_the_oldest_and_counts() {
    let mut hub = Server::hub();
    let hub_url = hub.url();
    crate::harness::hub_init(&hub_url).await;
    let leaf_port = free_port();
    let node = hostile_node(&hub, "lg3", leaf_port, "\n[logs]\nmax_bytes = \"8KiB\"\n");
    let leaf = connect_when_up(&node.local_url(leaf_port)).await;
    serving(&leaf, "logs.h", "echo:up").await;

    hub.kill();
    // 40 lines of 1 KiB into 8 KiB: only the newest few can stay.
    assert_eq!(request_ok(&leaf, "logs.h", "logspam:40").await, "logged 40");
    hub.restart();

    let rows = eventually(
        Duration::from_secs(60),
        "the last line on the hub",
        || async {
            let rows = logs_json(&["-s", &hub_url, "--node", "lg3", "--agent", "h"]).await;
            messages(&rows)
                .iter()
                .any(|m| m.starts_with("00039 "))
                .then_some(rows)
        },
    )
    .await;
    let kept: Vec<u32> = messages(&rows)
        .iter()
        .filter_map(|m| m.split_once(' ')?.0.parse().ok())
        .collect();
    assert!(
        (1..20).contains(&kept.len()),
        "8 KiB keeps a few of 40 lines: {kept:?}"
    );
    let newest: Vec<u32> = (40 - kept.len() as u32..40).collect();
    assert_eq!(kept, newest, "the newest lines, in order");

    // Counted: in the node's heartbeat (the store's drops).
    let dropped = eventually(Duration::from_secs(30), "drops in a heartbeat", || async {
        let rows = crate::harness::try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
        let dropped = rows.as_array()?.iter().find(|r| r["node_id"] == "lg3")?["heartbeat"]["logs"]
            ["dropped"]
            .as_u64()?;
        (dropped > 0).then_some(dropped)
    })
    .await;
    assert!(
        dropped >= 40 - kept.len() as u64,
        "{dropped} dropped, {} kept",
        kept.len()
    );
}
