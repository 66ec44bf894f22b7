//! Staged rollouts (`deploy --waves`) over three real nodes on one hub: a version
//! that traps halts on the canary and is rolled back there, as does one the node
//! rejects; a good one passes every wave and ends on the broad key; a rollout is
//! followed and aborted from a second CLI; an undeploy in waves is aborted (the
//! canary runs the agent again) and then completes.

use std::process::Stdio;
use std::time::Duration;

use edgeleaf::protocol::{DEPLOYMENTS_BUCKET, DeployStatus};
use edgeleaf::shipping::SignedDeployment;
use futures::StreamExt;
use serde_json::Value;

use super::shipping::{deploy, status, wait_node};
use crate::harness::{
    BIN, Cluster, Node, NodeSpec, agent_wasm, cli, eventually, publisher, trusting,
};

struct Fleet {
    _cluster: Cluster,
    hub_url: String,
    hub: async_nats::Client,
    _keys: tempfile::TempDir,
    key: String,
    ids: [&'static str; 3],
    _nodes: Vec<Node>,
}

impl Fleet {
    /// Three nodes tagged site=lab, all running echo.wasm as `svc` version 1.
    async fn start(ids: [&'static str; 3]) -> Self {
        let cluster = Cluster::start().await;
        let hub_url = cluster.hub.url();
        let keys = tempfile::tempdir().unwrap();
        let (key, public) = publisher(keys.path(), "pub.key").await;
        let nodes: Vec<Node> = ids
            .iter()
            .map(|id| {
                Node::start(NodeSpec {
                    id,
                    url: Some(cluster.leaf.url()),
                    tags: &[("site", "lab")],
                    extra: trusting(&public),
                    ..Default::default()
                })
            })
            .collect();
        for id in ids {
            wait_node(&hub_url, id, "online").await;
        }
        let key = key.display().to_string();
        let echo = agent_wasm("echo").display().to_string();
        let (ok, out) = deploy(&hub_url, &svc(&echo, &key)).await;
        assert!(ok, "{out}");
        let hub = async_nats::connect(&hub_url).await.unwrap();
        let fleet = Self {
            _cluster: cluster,
            hub_url,
            hub,
            _keys: keys,
            key,
            ids,
            _nodes: nodes,
        };
        for id in ids {
            fleet.runs(id, 1).await;
        }
        fleet
    }

    /// Waits until `node` reports `svc` running `version`.
    async fn runs(&self, node: &str, version: u64) {
        eventually(
            Duration::from_secs(30),
            &format!("{node} runs svc version {version}"),
            || async {
                let s: DeployStatus = status(&self.hub, node, "svc").await?;
                (s.state == "running" && s.running_version == Some(version)).then_some(())
            },
        )
        .await;
    }

    /// `deploy FILE --name svc --tag site=lab --waves … --json`: (success, report).
    async fn roll_out(&self, file: &str, waves: &str, bake: &str) -> (bool, Value) {
        let mut args = vec!["deploy"];
        args.extend(svc(file, &self.key));
        args.extend([
            "--waves",
            waves,
            "--bake",
            bake,
            "--json",
            "-s",
            &self.hub_url,
            "--wait",
            "30s",
        ]);
        let out = cli(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| {
                panic!(
                    "no JSON report ({e}): {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (out.status.success(), report)
    }

    /// Every version ever written under `node.<id>.svc` (empty: never written).
    async fn node_key_history(&self, id: &str) -> Vec<u64> {
        let js = async_nats::jetstream::new(self.hub.clone());
        let bucket = js.get_key_value(DEPLOYMENTS_BUCKET).await.unwrap();
        let Ok(mut history) = bucket.history(format!("node.{id}.svc")).await else {
            return Vec::new();
        };
        let mut versions = Vec::new();
        while let Some(Ok(entry)) = history.next().await {
            versions.extend(SignedDeployment::peek_version(&entry.value));
        }
        versions
    }

    async fn key_version(&self, key: &str) -> Option<u64> {
        let js = async_nats::jetstream::new(self.hub.clone());
        let bucket = js.get_key_value(DEPLOYMENTS_BUCKET).await.unwrap();
        let raw = bucket.get(key).await.unwrap()?;
        SignedDeployment::peek_version(&raw)
    }
}

/// `FILE --name svc --trigger svc.in --tag site=lab --key KEY`: every deploy here.
fn svc<'a>(file: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        file,
        "--name",
        "svc",
        "--trigger",
        "svc.in",
        "--tag",
        "site=lab",
        "--key",
        key,
    ]
}

fn waves(report: &Value) -> Vec<(Vec<String>, String)> {
    report["waves"]
        .as_array()
        .unwrap_or_else(|| panic!("no waves: {report}"))
        .iter()
        .map(|w| {
            let nodes = w["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (nodes, w["outcome"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn failing_versions_halt_on_the_canary_and_are_rolled_back_there() {
    let fleet = Fleet::start(["rb-1", "rb-2", "rb-3"]).await;
    let [canary, b, c] = fleet.ids;

    // Traffic on every node during the bake: echo answers "trap", hostile traps.
    let traffic = {
        let hub = fleet.hub.clone();
        tokio::spawn(async move {
            loop {
                for id in [canary, b, c] {
                    let subject = format!("edgeleaf.inv.{id}.svc");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        hub.request(subject, "trap".into()),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let hostile = agent_wasm("hostile").display().to_string();
    let (ok, report) = fleet.roll_out(&hostile, "1,100%", "3s").await;
    assert!(!ok, "a trapping version passed: {report}");
    assert_eq!(report["outcome"], "halted", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("failed invocation"),
        "{report}"
    );
    assert_eq!(
        waves(&report),
        [
            (vec![canary.to_owned()], "rolled_back".to_owned()),
            (vec![b.to_owned(), c.to_owned()], "pending".to_owned()),
        ]
    );
    let bad_version = report["version"].as_u64().unwrap();
    assert_eq!(bad_version, 2);
    // The canary is back on version 1 from the tag key; the others never saw 2.
    fleet.runs(canary, 1).await;
    assert_eq!(fleet.key_version("node.rb-1.svc").await, None);
    assert_eq!(fleet.node_key_history(canary).await.first(), Some(&2));
    for other in [b, c] {
        assert!(fleet.node_key_history(other).await.is_empty());
        let s = status(&fleet.hub, other, "svc").await.unwrap();
        assert_eq!(s.running_version, Some(1), "{other}: {s:?}");
    }
    assert_eq!(fleet.key_version("tag.site.lab.svc").await, Some(1));
    traffic.abort();

    // A module the node refuses halts the same way, on the same canary.
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm not really").unwrap();
    let (ok, report) = fleet
        .roll_out(corrupt.to_str().unwrap(), "1,100%", "1s")
        .await;
    assert!(!ok, "a corrupt module passed: {report}");
    assert_eq!(report["outcome"], "halted", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.starts_with("wave 1: rb-1 "), "{reason}");
    assert_eq!(waves(&report)[0].1, "rolled_back");
    assert_eq!(waves(&report)[1].1, "pending");
    fleet.runs(canary, 1).await;
    for other in [b, c] {
        assert!(fleet.node_key_history(other).await.is_empty());
    }
}

#[tokio::test]
async fn a_rollout_is_followed_and_aborted_elsewhere_and_a_good_one_completes() {
    let fleet = Fleet::start(["ro-1", "ro-2", "ro-3"]).await;
    let [canary, b, c] = fleet.ids;
    let echo = agent_wasm("echo").display().to_string();

    // A long bake, driven by one CLI; a second one follows and aborts it.
    let driver = tokio::process::Command::new(BIN)
        .arg("deploy")
        .args(svc(&echo, &fleet.key))
        .args([
            "--config", "v=2", "--waves", "1,100%", "--bake", "120s", "--json",
        ])
        .args(["-s", &fleet.hub_url])
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status_now = || async {
        let out = cli(&["rollout", "status", "svc", "--json", "-s", &fleet.hub_url]).await;
        serde_json::from_slice::<Value>(&out.stdout).ok()
    };
    let baking = eventually(Duration::from_secs(30), "the canary baking", || async {
        let r = status_now().await?;
        (r["waves"][0]["outcome"] == "baking").then_some(r)
    })
    .await;
    assert_eq!(baking["outcome"], "running");
    assert_eq!(waves(&baking)[0].0, [canary]);
    fleet.runs(canary, 2).await;

    let out = cli(&[
        "rollout",
        "abort",
        "svc",
        "--key",
        &fleet.key,
        "--json",
        "-s",
        &fleet.hub_url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aborted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(aborted["outcome"], "aborted");
    assert_eq!(waves(&aborted)[0].1, "rolled_back");
    let driven = tokio::time::timeout(Duration::from_secs(20), driver.wait_with_output())
        .await
        .expect("the driving CLI did not stop after the abort")
        .unwrap();
    assert!(!driven.status.success());
    let last = String::from_utf8_lossy(&driven.stdout);
    assert!(last.contains("\"outcome\":\"aborted\""), "{last}");
    fleet.runs(canary, 1).await;

    // A good version goes through every wave and ends on the tag key alone.
    let (ok, report) = fleet.roll_out(&echo, "1,50%", "2s").await;
    assert!(ok, "{report}");
    assert_eq!(report["outcome"], "completed");
    let version = report["version"].as_u64().unwrap();
    assert_eq!(
        waves(&report),
        [
            (vec![canary.to_owned()], "passed".to_owned()),
            (vec![b.to_owned()], "passed".to_owned()),
            (vec![c.to_owned()], "passed".to_owned()),
        ]
    );
    assert_eq!(fleet.key_version("tag.site.lab.svc").await, Some(version));
    for id in fleet.ids {
        assert_eq!(fleet.key_version(&format!("node.{id}.svc")).await, None);
        fleet.runs(id, version).await;
    }
    let status_text = cli(&["rollout", "status", "svc", "-s", &fleet.hub_url]).await;
    let text = String::from_utf8_lossy(&status_text.stdout);
    assert!(
        text.contains(&format!("rollout of svc version {version}: completed")),
        "{text}"
    );

    // An undeploy in waves: the canary drops the agent, the others keep it, and an
    // abort brings it back there.
    let undeploy = |bake: &'static str| {
        tokio::process::Command::new(BIN)
            .args(["undeploy", "svc", "--tag", "site=lab", "--key", &fleet.key])
            .args(["--waves", "1,100%", "--bake", bake, "--json"])
            .args(["-s", &fleet.hub_url])
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let gone = |id: &'static str| {
        let hub = fleet.hub.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("svc gone from {id}"),
                || {
                    let hub = hub.clone();
                    async move { status(&hub, id, "svc").await.is_none().then_some(()) }
                },
            )
            .await
        }
    };
    let driver = undeploy("120s");
    let baking = eventually(
        Duration::from_secs(30),
        "the undeploy's canary baking",
        || async {
            let r = status_now().await?;
            (r["undeploy"] == true && r["waves"][0]["outcome"] == "baking").then_some(r)
        },
    )
    .await;
    assert_eq!(waves(&baking)[0].0, [canary]);
    gone(canary).await;
    for other in [b, c] {
        fleet.runs(other, version).await;
    }
    let out = cli(&[
        "rollout",
        "abort",
        "svc",
        "--key",
        &fleet.key,
        "-s",
        &fleet.hub_url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let driven = tokio::time::timeout(Duration::from_secs(20), driver.wait_with_output())
        .await
        .expect("the driving CLI did not stop after the abort")
        .unwrap();
    assert!(!driven.status.success());
    fleet.runs(canary, version).await;
    assert_eq!(fleet.key_version("node.ro-1.svc").await, None);

    // And one that completes: every node drops it, and no key is left.
    let done = undeploy("1s").wait_with_output().await.unwrap();
    let report: Value = serde_json::from_slice(&done.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&done.stderr)));
    assert!(done.status.success(), "{report}");
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(
        waves(&report),
        [
            (vec![canary.to_owned()], "passed".to_owned()),
            (vec![b.to_owned(), c.to_owned()], "passed".to_owned()),
        ]
    );
    for id in fleet.ids {
        gone(id).await;
        assert_eq!(fleet.key_version(&format!("node.{id}.svc")).await, None);
    }
    assert_eq!(fleet.key_version("tag.site.lab.svc").await, None);
}
