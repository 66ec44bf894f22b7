//! Issue 16: `--context NAME` / `$NATS_CONTEXT` read the nats CLI's context files;
//! here one with TLS files and a JetStream domain, against a hub that takes TLS only.

use std::time::Duration;

use crate::cases::security::tls_hub;
use crate::harness::{BIN, Node, NodeSpec, Pki, cli, eventually, free_port};

#[tokio::test]
async fn a_nats_context_with_tls_connects_the_cli_and_flags_win() {
    let pki = Pki::new();
    let hub = tls_hub(&pki);
    let url = format!("tls://127.0.0.1:{}", hub.port);
    let mut init = vec!["hub".to_owned(), "init".into(), "-s".into(), url.clone()];
    init.extend(pki.cli_flags());
    let out = cli(&init.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.status.success(), "{out:?}");
    let _node = Node::start(NodeSpec {
        id: "ctx-node",
        url: Some(url.clone()),
        nats: pki.node_tls("ca.pem"),
        ..Default::default()
    });

    let config = tempfile::tempdir().unwrap();
    let contexts = config.path().join("nats").join("context");
    std::fs::create_dir_all(&contexts).unwrap();
    // As `nats context save` writes it (fields edgeleaf does not use included).
    let context = serde_json::json!({
        "description": "the test hub", "url": url, "socks_proxy": "", "token": "",
        "user": "", "password": "", "creds": "", "nkey": "",
        "cert": pki.path("client.pem"), "key": pki.path("client-key.pem"),
        "ca": pki.path("ca.pem"), "nsc": "", "jetstream_domain": "hub",
        "jetstream_api_prefix": "", "jetstream_event_prefix": "", "inbox_prefix": "",
        "user_jwt": "", "color_scheme": "", "tls_first": false
    });
    std::fs::write(contexts.join("hubtls.json"), context.to_string()).unwrap();

    let run = |args: &[&str], context_env: Option<&str>| {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env_remove("NATS_URL")
            .env_remove("NATS_CONTEXT")
            .env("XDG_CONFIG_HOME", config.path());
        if let Some(name) = context_env {
            command.env("NATS_CONTEXT", name);
        }
        async move { command.output().await.unwrap() }
    };
    let node_ids = |out: &std::process::Output| -> Option<Vec<String>> {
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            rows.as_array()?
                .iter()
                .filter_map(|r| r["node_id"].as_str().map(str::to_owned))
                .collect(),
        )
    };

    let seen = eventually(
        Duration::from_secs(30),
        "the node, through the context",
        || {
            let out = run(&["--context", "hubtls", "nodes", "--json"], None);
            async move { node_ids(&out.await).filter(|ids| !ids.is_empty()) }
        },
    )
    .await;
    assert_eq!(seen, ["ctx-node"]);
    let out = run(&["nodes", "--json"], Some("hubtls")).await;
    assert_eq!(node_ids(&out), Some(vec!["ctx-node".to_owned()]), "{out:?}");

    // A flag wins over the context: here the server.
    let elsewhere = format!("nats://127.0.0.1:{}", free_port());
    let out = run(&["--context", "hubtls", "-s", &elsewhere, "nodes"], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&elsewhere),
        "{stderr}"
    );
    // Without the context the TLS-only hub refuses the CLI.
    let out = run(&["-s", &url, "nodes"], None).await;
    assert!(!out.status.success());

    let out = run(&["--context", "nope", "nodes"], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("\"nope\"") && stderr.contains("nope.json"),
        "{stderr}"
    );
}
