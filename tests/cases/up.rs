//! `edgeleaf up` as a user runs it: a subprocess that comes up, supervises its
//! servers, and leaves nothing behind on Ctrl-C.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{alive, eventually, read_pid, signal, try_cli_json};

#[tokio::test]
async fn up_comes_online_survives_a_dead_hub_and_stops_clean_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let crate::harness::Up {
        child: mut up,
        hub_port,
        leaf_port,
    } = crate::harness::Up::spawn(&state, "up-node", Stdio::piped(), log.into());
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();

    let up_file: Value = eventually(Duration::from_secs(60), "up.json", || async {
        let text = std::fs::read_to_string(state.join("up.json")).ok()?;
        Some(serde_json::from_str(&text).expect("up.json is half-written"))
    })
    .await;
    let hub_url = format!("nats://127.0.0.1:{hub_port}");
    assert_eq!(up_file["hub_url"], hub_url.as_str());
    // The leaf demands a login: leaf_url carries the local user's, and works as is.
    let leaf_url = up_file["leaf_url"].as_str().unwrap().to_owned();
    assert!(
        leaf_url.starts_with("nats://local:")
            && leaf_url.ends_with(&format!("@127.0.0.1:{leaf_port}")),
        "{leaf_url}"
    );
    crate::harness::connect_url(&leaf_url)
        .await
        .expect("leaf_url logs in");
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("127.0.0.1:{leaf_port}"))
        .await;
    assert!(anonymous.is_err(), "the leaf let in a client with no login");
    let mode = std::fs::metadata(state.join("up.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "up.json holds a password but is mode {mode:o}"
    );
    assert_eq!(up_file["node_id"], "up-node");

    // The seq of up-node's last stored heartbeat, once it is online and past `after`.
    let online = |hub_url: String, after: u64| async move {
        let rows = try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
        rows.as_array()?
            .iter()
            .find(|r| r["node_id"] == "up-node" && r["status"] == "online")
            .and_then(|r| r["heartbeat"]["seq"].as_u64())
            .filter(|seq| *seq > after)
    };
    let seq = eventually(Duration::from_secs(20), "up-node online", || {
        online(hub_url.clone(), 0)
    })
    .await;

    // A hub that dies comes back on the same port with the same store.
    let hub_pidfile = state.join("hub/nats-server.pid");
    let leaf_pidfile = state.join("node/leaf/nats-server.pid");
    let hub_pid = read_pid(&hub_pidfile).expect("hub pidfile");
    signal(hub_pid, libc::SIGKILL);
    let new_hub = eventually(Duration::from_secs(20), "hub restarted", || async {
        read_pid(&hub_pidfile).filter(|p| *p != hub_pid && alive(*p))
    })
    .await;
    // Same store (the node is still listed) and new heartbeats reach it again.
    eventually(
        Duration::from_secs(30),
        "new heartbeats after the hub restart",
        || online(hub_url.clone(), seq + 1),
    )
    .await;
    let leaf_pid = read_pid(&leaf_pidfile).expect("leaf pidfile");
    assert!(alive(leaf_pid));

    signal(up.id().unwrap(), libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .unwrap_or_else(|_| panic!("up did not stop within 30s: {}", up_log()))
        .unwrap();
    assert!(status.success(), "up exited with {status}: {}", up_log());
    assert!(!alive(new_hub), "hub nats-server left running");
    assert!(!alive(leaf_pid), "leaf nats-server left running");
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut up.stdout.take().unwrap(), &mut stdout)
        .await
        .unwrap();
    assert!(
        stdout.contains(&hub_url),
        "up did not print the hub URL: {stdout}"
    );
    assert!(
        stdout.contains("nodes"),
        "up did not print the next commands: {stdout}"
    );
}
