//! Bad configuration stops the node at start with a message naming the key and file.

use crate::harness::BIN;

async fn node_with(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["node", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), stderr)
}

#[tokio::test]
async fn config_errors_name_the_key_and_the_file() {
    /// A config, environment variables, and what the error must mention.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "[leaf]\nhub_ulr = \"nats-leaf://h:7422\"\n",
            &[],
            &["FILE", "leaf.hub_ulr", "unknown field"],
        ),
        (
            "[heartbeat]\ninterval = \"ten\"\n",
            &[],
            &["FILE", "heartbeat.interval", "\"ten\""],
        ),
        (
            "[heartbeat]\ninterval = true\n",
            &[],
            &["FILE", "heartbeat.interval"],
        ),
        (
            "[node]\nid = \"has.dots\"\n",
            &[],
            &["FILE", "node.id", "token"],
        ),
        (
            "[leaf]\nspawn = true\n",
            &[],
            &["FILE", "leaf.hub_url", "required"],
        ),
        (
            "[limits]\nmax_memory = \"lots\"\n",
            &[],
            &["FILE", "limits.max_memory"],
        ),
        ("[surprise]\n", &[], &["FILE", "surprise"]),
        (
            "[[agents]]\nname = \"a\"\nwasm = \"a.wasm\"\ntriggers = [\"a.run\"]\nmax_invocations = 5\n",
            &[],
            &[
                "FILE",
                "agents",
                "max_invocations needs instances = \"warm\"",
            ],
        ),
        (
            "[[agents]]\nname = \"a\"\nwasm = \"a.wasm\"\ntriggers = [\"a.run\"]\ninstances = \"tepid\"\n",
            &[],
            &["FILE", "agents", "tepid"],
        ),
        ("[node\n", &[], &["FILE", "line 1"]),
        (
            "",
            &[("EDGELEAF_HEARTBEAT_INTERVAL", "soon")],
            &["heartbeat.interval", "EDGELEAF_HEARTBEAT_INTERVAL"],
        ),
    ];
    for (config, env, wanted) in cases {
        let (ok, stderr) = node_with(config, env).await;
        assert!(!ok, "accepted bad config {config:?}");
        for w in *wanted {
            assert!(
                stderr.contains(w),
                "for {config:?} {env:?}: {w:?} missing from: {stderr}"
            );
        }
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "error should be one line: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_shipped_example_config_checks() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "node",
            "--check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgeleaf.toml"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK: node gw-01"));
}
