//! Self-update (`edgeleaf upgrade`) with real nodes on one hub: this build, stamped
//! with another version, replaces a node's binary in place (same pid) and is sent
//! back with `--rollback`; a binary that fails to start is rolled back by the node
//! on its own and halts `--waves` on the canary; the CLI refuses a binary for
//! another architecture or one that reports another version, and waves carry a
//! good one to every node and onto the broad key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::shipping::wait_node;
use crate::harness::{
    BIN, Cluster, Node, NodeSpec, agent_toml, agent_wasm, cli, eventually, publisher, trusting,
};

/// This build's binary, stripped (a quarter of the size to ship) and stamped with
/// `version`.
fn stamped(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("edgeleaf-{version}"));
    let out = std::process::Command::new("strip")
        .arg("-o")
        .arg(&path)
        .arg(BIN)
        .output()
        .expect("strip (binutils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = std::fs::read(&path).unwrap();
    edgeleaf::version::stamp(&mut bytes, version).unwrap();
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A real executable that prints `edgeleaf <version>` for `--version`, as a good
/// build would, and fails with a message for anything else.
fn broken(dir: &Path, version: &str) -> PathBuf {
    let src = dir.join("broken.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("edgeleaf " VERSION);
        return 0;
    }
    fprintf(stderr, "broken build: cannot start\n");
    return 3;
}
"#,
    )
    .unwrap();
    let path = dir.join("edgeleaf-broken");
    let out = std::process::Command::new("cc")
        .arg(format!("-DVERSION=\"{version}\""))
        .arg("-o")
        .arg(&path)
        .arg(&src)
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

struct Site {
    _cluster: Cluster,
    hub_url: String,
    hub: async_nats::Client,
    dir: tempfile::TempDir,
    key: String,
    nodes: Vec<Node>,
}

impl Site {
    /// Nodes trusting one publisher, each running `echo` on `demo.<id>`.
    async fn start(ids: &[&str]) -> Self {
        Self::start_with(ids, &[]).await
    }

    /// The same, with `env` for the first node.
    async fn start_with(ids: &[&str], env: &[(&str, &str)]) -> Self {
        let cluster = Cluster::start().await;
        let hub_url = cluster.hub.url();
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = publisher(dir.path(), "pub.key").await;
        let nodes: Vec<Node> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let echo = agent_toml("echo", &agent_wasm("echo"), &[&format!("demo.{id}")], "");
                Node::start(NodeSpec {
                    id,
                    env: if i == 0 { env } else { &[] },
                    url: Some(cluster.leaf.url()),
                    extra: format!(
                        "{}\n[upgrade]\nhealth_timeout = \"40s\"\n{echo}",
                        trusting(&public)
                    ),
                    ..Default::default()
                })
            })
            .collect();
        for id in ids {
            wait_node(&hub_url, id, "online").await;
        }
        let hub = async_nats::connect(&hub_url).await.unwrap();
        let site = Self {
            _cluster: cluster,
            hub_url,
            hub,
            dir,
            key: key.display().to_string(),
            nodes,
        };
        for id in ids {
            site.echoes(id).await;
        }
        site
    }

    /// `edgeleaf upgrade ARGS --key … -s hub --json`: (success, report, stderr).
    async fn upgrade(&self, args: &[&str]) -> (bool, Value, String) {
        let mut all = vec!["upgrade"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--key",
            &self.key,
            "-s",
            &self.hub_url,
            "--json",
            "--wait",
            "50s",
        ]);
        let out = cli(&all).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), report, stderr)
    }

    /// The node's last heartbeat, as `nodes --json` shows it.
    async fn heartbeat(&self, id: &str) -> Value {
        let out = cli(&["nodes", "--json", "-s", &self.hub_url]).await;
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["node_id"] == id)
            .unwrap_or_else(|| panic!("no row for {id}"))["heartbeat"]
            .clone()
    }

    /// Waits until the node's echo agent answers.
    async fn echoes(&self, id: &str) {
        let subject = format!("demo.{id}");
        eventually(
            Duration::from_secs(30),
            &format!("echo on {id}"),
            || async {
                let reply = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.hub.request(subject.clone(), "ping".into()),
                )
                .await
                .ok()?
                .ok()?;
                (reply.payload.as_ref() == b"ping").then_some(())
            },
        )
        .await;
    }
}

/// The binary a process runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_replaces_the_binary_in_place_and_rollback_returns_to_it() {
    // systemd's notification socket, as `Type=notify` gives it.
    let sockets = tempfile::tempdir().unwrap();
    let notify_path = sockets.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let notified = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = tokio::spawn({
        let notified = notified.clone();
        async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = notify.recv(&mut buf).await {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg != "WATCHDOG=1" {
                    notified.lock().unwrap().push(msg);
                }
            }
        }
    });
    let mut site = Site::start_with(
        &["up1", "up2"],
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .await;
    let old = edgeleaf::version::version();
    let new = format!("{old}-up.1");
    let binary = stamped(site.dir.path(), &new);
    let pid = site.nodes[0].pid();
    let before = exe(pid);
    let mut events = site.hub.subscribe("edgeleaf.evt.up1.>").await.unwrap();

    let (ok, report, stderr) = site
        .upgrade(&[binary.to_str().unwrap(), "--version", &new, "--node", "up1"])
        .await;
    assert!(ok, "{stderr}\n{}", site.nodes[0].log());
    assert_eq!(report["version"], new.as_str(), "{report}");
    assert_eq!(report["arch"], serde_json::json!([std::env::consts::ARCH]));
    assert_eq!(report["nodes"][0]["node_id"], "up1", "{report}");
    assert_eq!(report["nodes"][0]["outcome"], "upgraded", "{report}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 1, "{report}");

    // The same process, now running the staged binary: exec in place.
    assert!(crate::harness::alive(pid));
    let now = exe(pid);
    let staging = std::fs::canonicalize(site.nodes[0].state_dir().join("upgrade")).unwrap();
    assert_eq!(now.parent(), Some(staging.as_path()), "{}", now.display());
    let name = now.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("edgeleaf-{new}-")), "{name}");
    // What systemd heard: ready, reloading while the new binary is on trial, ready
    // again from the same main process, and never stopping.
    eventually(
        Duration::from_secs(10),
        "READY=1 after the upgrade",
        || async { (notified.lock().unwrap().len() >= 3).then_some(()) },
    )
    .await;
    let seen = notified.lock().unwrap().clone();
    assert_eq!(seen[0], "READY=1", "{seen:?}");
    assert_eq!(
        seen[1],
        format!("RELOADING=1\nSTATUS=trying edgeleaf {new}"),
        "{seen:?}"
    );
    assert_eq!(seen[2], "READY=1", "{seen:?}");
    reader.abort();
    let hb = site.heartbeat("up1").await;
    assert_eq!(hb["version"], new.as_str(), "{hb}");
    assert_eq!(hb["upgrade"]["previous"], old, "{hb}");
    assert_eq!(hb["upgrade"]["last"]["outcome"], "succeeded", "{hb}");
    assert_eq!(hb["upgrade"]["last"]["from"], old, "{hb}");
    site.echoes("up1").await;
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let msg = events.next().await.unwrap();
            if msg.subject.as_str() == "edgeleaf.evt.up1.upgrade_succeeded" {
                return serde_json::from_slice::<Value>(&msg.payload).unwrap();
            }
        }
    })
    .await
    .expect("an upgrade_succeeded event");
    assert!(event["message"].as_str().unwrap().contains(&new), "{event}");
    // The node not targeted is untouched.
    assert_eq!(site.heartbeat("up2").await["version"], old);

    // A restart (a reboot: systemd starts the installed binary) hands over to the
    // accepted upgrade again.
    assert!(site.nodes[0].stop_with(libc::SIGTERM).success());
    site.nodes[0].spawn();
    let pid = site.nodes[0].pid();
    eventually(
        Duration::from_secs(20),
        "the restarted node runs the upgrade",
        || async { (std::fs::read_link(format!("/proc/{pid}/exe")).ok()? == now).then_some(()) },
    )
    .await;
    site.echoes("up1").await;
    assert_eq!(site.heartbeat("up1").await["version"], new.as_str());

    // Announced again: nothing to do.
    let (ok, report, stderr) = site
        .upgrade(&[binary.to_str().unwrap(), "--version", &new, "--node", "up1"])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(report["nodes"][0]["outcome"], "unchanged", "{report}");

    // Back to the kept binary: the same process again.
    let (ok, report, stderr) = site.upgrade(&["--rollback", "--node", "up1"]).await;
    assert!(ok, "{stderr}\n{}", site.nodes[0].log());
    assert_eq!(report["nodes"][0]["outcome"], "rolled_back", "{report}");
    assert_eq!(exe(pid), before);
    let hb = site.heartbeat("up1").await;
    assert_eq!(hb["version"], old, "{hb}");
    assert_eq!(hb["upgrade"]["last"]["outcome"], "rolled_back", "{hb}");
    assert!(
        hb["upgrade"].get("previous").is_none(),
        "one rollback only: {hb}"
    );
    site.echoes("up1").await;
    // The staged binary is gone from the state dir.
    assert!(!now.exists());

    // A second rollback has nothing to go back to.
    let (ok, report, stderr) = site.upgrade(&["--rollback", "--node", "up1"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(report["nodes"][0]["outcome"], "unchanged", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_fails_to_start_is_rolled_back_by_the_node_and_halts_the_waves() {
    let site = Site::start(&["bad1", "bad2", "bad3"]).await;
    let old = edgeleaf::version::version();
    let new = format!("{old}-broken");
    let binary = broken(site.dir.path(), &new);
    let pid = site.nodes[0].pid();
    let before = exe(pid);

    // In waves: the canary (bad1, first by id) fails, and the others never see it.
    let (ok, report, stderr) = site
        .upgrade(&[
            binary.to_str().unwrap(),
            "--version",
            &new,
            "--all",
            "--waves",
            "1,100%",
            "--bake",
            "1s",
        ])
        .await;
    assert!(!ok, "{report}");
    assert!(stderr.contains("the upgrade halted in wave 1"), "{stderr}");
    assert_eq!(report["outcome"], "halted", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("wave 1: bad1 failed"),
        "{report}"
    );
    assert_eq!(
        report["waves"],
        serde_json::json!([
            {"nodes": ["bad1"], "outcome": "rolled_back"},
            {"nodes": ["bad2", "bad3"], "outcome": "pending"},
        ])
    );
    assert_eq!(report["nodes"].as_array().unwrap().len(), 1, "{report}");
    let node = &report["nodes"][0];
    assert_eq!(node["outcome"], "failed", "{report}");
    assert_eq!(node["version"], old, "{report}");
    let reason = node["reason"].as_str().unwrap();
    assert!(
        reason.contains("before it was healthy") && reason.contains("broken build: cannot start"),
        "{reason}"
    );

    // The same process runs the binary it ran before, with its agent.
    assert!(crate::harness::alive(pid));
    assert_eq!(exe(pid), before);
    let hb = site.heartbeat("bad1").await;
    assert_eq!(hb["version"], old, "{hb}");
    assert_eq!(hb["upgrade"]["last"]["outcome"], "failed", "{hb}");
    assert!(hb["upgrade"].get("staged").is_none(), "{hb}");
    let table = cli(&["nodes", "-s", &site.hub_url]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bad1 ") && l.contains(&format!("failed {new}"))),
        "{table}"
    );
    site.echoes("bad1").await;

    // A refused binary is not tried again: the node stays as it is.
    let (ok, report, _) = site
        .upgrade(&[
            binary.to_str().unwrap(),
            "--version",
            &new,
            "--node",
            "bad1",
        ])
        .await;
    assert!(!ok);
    assert_eq!(report["nodes"][0]["outcome"], "failed", "{report}");
    assert_eq!(exe(pid), before);
    let log = site.nodes[0].log();
    assert_eq!(log.matches("trying edgeleaf").count(), 1, "{log}");

    // The halted rollout wrote no broad key and left the others alone.
    let js = async_nats::jetstream::new(site.hub.clone());
    let bucket = js.get_key_value("EDGELEAF_UPGRADES").await.unwrap();
    let arch = std::env::consts::ARCH;
    assert!(bucket.get(format!("all.{arch}")).await.unwrap().is_none());
    for node in &site.nodes[1..] {
        assert_eq!(site.heartbeat(&node.id).await["version"], old);
        assert!(
            !node.log().contains("downloading edgeleaf"),
            "{}",
            node.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_foreign_binary_and_waves_carry_a_good_one() {
    let site = Site::start(&["chk1", "chk2"]).await;
    let old = edgeleaf::version::version();
    let dir = site.dir.path();
    let binary = stamped(dir, &format!("{old}-a"));

    // It says it is another version than the one announced.
    let (ok, _, stderr) = site
        .upgrade(&[
            binary.to_str().unwrap(),
            "--version",
            &format!("{old}-b"),
            "--node",
            "chk1",
        ])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "prints \"edgeleaf {old}-a\", not \"edgeleaf {old}-b\""
        )),
        "{stderr}"
    );

    // Its ELF header says aarch64 (or x86_64 on an aarch64 host).
    let mut bytes = std::fs::read(&binary).unwrap();
    let (machine, arch) = match std::env::consts::ARCH {
        "x86_64" => (183u16, "aarch64"),
        _ => (62u16, "x86_64"),
    };
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    let other = dir.join("other-arch");
    std::fs::write(&other, bytes).unwrap();
    let (ok, _, stderr) = site
        .upgrade(&[other.to_str().unwrap(), "--version", old, "--node", "chk1"])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "is built for {arch}, and no targeted node runs on {arch}: chk1 ({})",
            std::env::consts::ARCH
        )),
        "{stderr}"
    );

    // Not an executable at all.
    let script = dir.join("script");
    std::fs::write(&script, "#!/bin/sh\necho edgeleaf 9\n").unwrap();
    let (ok, _, stderr) = site
        .upgrade(&[script.to_str().unwrap(), "--version", "9", "--node", "chk1"])
        .await;
    assert!(!ok);
    assert!(stderr.contains("not an ELF executable"), "{stderr}");

    // Nothing was announced, and the node runs as it did.
    let hb = site.heartbeat("chk1").await;
    assert_eq!(hb["version"], old, "{hb}");
    assert!(hb["upgrade"].get("last").is_none(), "{hb}");

    // The good binary in waves: both pass, and the broad key ends with it.
    let good = format!("{old}-a");
    let (ok, report, stderr) = site
        .upgrade(&[
            binary.to_str().unwrap(),
            "--version",
            &good,
            "--all",
            "--waves",
            "1,100%",
            "--bake",
            "1s",
        ])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(
        report["waves"],
        serde_json::json!([
            {"nodes": ["chk1"], "outcome": "passed"},
            {"nodes": ["chk2"], "outcome": "passed"},
        ])
    );
    for id in ["chk1", "chk2"] {
        assert_eq!(site.heartbeat(id).await["version"], good.as_str());
    }
    let js = async_nats::jetstream::new(site.hub.clone());
    let bucket = js.get_key_value("EDGELEAF_UPGRADES").await.unwrap();
    let arch = std::env::consts::ARCH;
    let raw = bucket
        .get(format!("all.{arch}"))
        .await
        .unwrap()
        .expect("the broad key");
    let envelope: Value = serde_json::from_slice(&raw).unwrap();
    let spec = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        envelope["spec"].as_str().unwrap(),
    )
    .unwrap();
    let spec: Value = serde_json::from_slice(&spec).unwrap();
    assert_eq!(spec["version"], good.as_str());
    for id in ["chk1", "chk2"] {
        assert!(
            bucket
                .get(format!("node.{id}.{arch}"))
                .await
                .unwrap()
                .is_none()
        );
    }
}
