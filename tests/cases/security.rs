//! Issue 7: TLS and credentials on every link, against real servers that demand them.
//! Certificates are made in the test (rcgen); nkeys with the nkeys crate.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::{
    BIN, Node, NodeSpec, Pki, Server, cli, eventually, free_port, hub_init, next_json,
};

/// Every text a test saw: node logs, CLI output, replies. None may hold a secret.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    fn cli(&mut self, what: &str, out: &std::process::Output) {
        self.add(
            format!("{what} stdout"),
            String::from_utf8_lossy(&out.stdout),
        );
        self.add(
            format!("{what} stderr"),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    fn assert_no_secret(&self, secrets: &[&str]) {
        for (what, text) in &self.0 {
            for secret in secrets {
                assert!(!text.contains(secret), "{what} leaks a secret: {text}");
            }
        }
    }
}

fn args<'a>(base: &[&'a str], more: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(more.iter().map(String::as_str))
        .collect()
}

/// The node's log, once it says that it cannot connect (and why).
async fn refusal_logged(node: &Node) -> String {
    eventually(Duration::from_secs(20), "the refusal in the log", || {
        let log = node.log();
        async move { log.contains("cannot connect to NATS yet").then_some(log) }
    })
    .await
}

/// The `info` of a node whose leaf the hub refuses, asked on that leaf (the hub
/// cannot reach it), once it names a reason for the link being down.
async fn info_with_a_reason(node: &Node, leaf_port: u16) -> serde_json::Value {
    let url = node.local_url(leaf_port);
    let local = eventually(
        Duration::from_secs(30),
        "the refused node's leaf",
        || async { crate::harness::connect_url(&url).await.ok() },
    )
    .await;
    let subject = format!("edgeleaf.ctl.{}.info", node.id);
    eventually(Duration::from_secs(30), "info with a reason", || {
        let (local, subject) = (local.clone(), subject.clone());
        async move {
            let msg = local.request(subject, "".into()).await.ok()?;
            let info: serde_json::Value = serde_json::from_slice(&msg.payload).ok()?;
            info["ok"]["hub_link"]["reason"].is_string().then_some(info)
        }
    })
    .await
}

/// A hub with JetStream whose client port takes TLS only, verifying clients.
pub(crate) fn tls_hub(pki: &Pki) -> Server {
    let tls = pki.server_tls_block();
    Server::custom("tls-hub", false, |dir, port, _| {
        format!(
            "server_name: tls-hub\nlisten: 127.0.0.1:{port}\n{tls}\n\
             jetstream {{ store_dir: \"{}\", domain: hub }}\n",
            dir.join("js").display()
        )
    })
}

#[tokio::test]
async fn tls_node_and_cli_need_the_right_ca_and_say_why_otherwise() {
    let pki = Pki::new();
    let hub = tls_hub(&pki);
    let url = format!("tls://127.0.0.1:{}", hub.port);
    let flags = pki.cli_flags();

    let out = cli(&args(&["hub", "init", "-s", &url], &flags)).await;
    assert!(
        out.status.success(),
        "hub init over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the CLI is refused, and says where to look.
    let out = cli(&["nodes", "-s", &url]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to NATS") && stderr.contains("--tlsca"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let client = pki.client(&url).await;
    let mut heartbeats = client.subscribe("edgeleaf.hb.*").await.unwrap();
    client.flush().await.unwrap();
    let good = Node::start(NodeSpec {
        id: "tls-good",
        url: Some(url.clone()),
        nats: pki.node_tls("ca.pem"),
        ..Default::default()
    });
    let bad = Node::start(NodeSpec {
        id: "tls-bad",
        url: Some(url.clone()),
        nats: pki.node_tls("other-ca.pem"),
        ..Default::default()
    });
    let hb = next_json(&mut heartbeats).await;
    assert_eq!(hb["node_id"], "tls-good", "{hb}");

    // The node with the wrong CA keeps trying, and its log says why at once.
    let log = refusal_logged(&bad).await;
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(log.contains("tls.ca"), "{log}");
    // ... and nothing of it reached the hub.
    let listed = cli(&args(&["nodes", "-s", &url], &flags)).await;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("tls-good") && !listed.contains("tls-bad"),
        "{listed}"
    );
    drop(good);
}

#[tokio::test]
async fn leaf_links_over_tls_with_a_password_and_reports_a_refusal() {
    let pki = Pki::new();
    let (password, wrong) = ("leaf-pw-5f3a9c0e", "not-the-password-77d1");
    let tls = pki.server_tls_block();
    let hub = Server::custom("leaf-auth-hub", true, |dir, port, leafnode| {
        format!(
            "server_name: leaf-auth-hub\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: \"{}\", domain: hub }}\n\
             leafnodes {{ listen: 127.0.0.1:{}\n {tls}\n authorization {{ user: gw, password: \"{password}\" }} }}\n",
            dir.join("js").display(),
            leafnode.unwrap()
        )
    });
    hub_init(&hub.url()).await;
    let leafnode = hub.leafnode_port.unwrap();
    let client = async_nats::connect(hub.url()).await.unwrap();
    let mut heartbeats = client.subscribe("edgeleaf.hb.*").await.unwrap();
    client.flush().await.unwrap();
    let node = |id: &'static str, pw: &str| {
        let listen = free_port();
        let node = Node::start(NodeSpec {
            id,
            spawn_leaf: Some((listen, leafnode)),
            hub_url: Some(format!("nats-leaf://gw:{pw}@127.0.0.1:{leafnode}")),
            leaf: pki.node_tls("ca.pem"),
            ..Default::default()
        });
        (node, listen)
    };
    let (good, _) = node("leaf-good", password);
    let (bad, bad_listen) = node("leaf-bad", wrong);
    let mut seen = Seen::default();

    // Heartbeats only ever come from the node the hub let in.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let hb = loop {
        let hb = next_json(&mut heartbeats).await;
        assert_eq!(hb["node_id"], "leaf-good", "{hb}");
        if hb["hub_link"]["state"] == "up" {
            break hb;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hub link never up: {hb}"
        );
    };
    seen.add("heartbeat", hb.to_string());

    // The refused node still answers on its own leaf, and says why the hub is down.
    let info = info_with_a_reason(&bad, bad_listen).await;
    let reason = info["ok"]["hub_link"]["reason"].as_str().unwrap();
    assert_eq!(info["ok"]["hub_link"]["state"], "down", "{info}");
    assert!(reason.contains("Authorization Violation"), "{reason}");
    assert!(
        bad.log().contains("the leaf server reports"),
        "{}",
        bad.log()
    );
    seen.add("info", info.to_string());

    // The rendered leaf config holds the password: owner only.
    let conf = bad.state_dir().join("leaf/nats-server.conf");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", conf.display());
    seen.add("good log", good.log());
    seen.add("bad log", bad.log());
    seen.assert_no_secret(&[password, wrong]);
}

#[tokio::test]
async fn password_token_and_nkey_auth_work_and_no_secret_is_ever_shown() {
    let (password, wrong, token) = ("alice-pw-93be1f", "wrong-pw-0c77aa", "tok-4e1d0b9a77");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let seed_file = keys.path().join("node.nk");
    std::fs::write(&seed_file, &seed).unwrap();
    std::fs::set_permissions(&seed_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = user.public_key();
    let hub = Server::custom("users-hub", false, |dir, port, _| {
        format!(
            "server_name: users-hub\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: \"{}\", domain: hub }}\n\
             authorization {{ users = [ {{ user: alice, password: \"{password}\" }}, {{ nkey: {public} }} ] }}\n",
            dir.join("js").display()
        )
    });
    let token_hub = Server::custom("token-hub", false, |_, port, _| {
        format!(
            "server_name: token-hub\nlisten: 127.0.0.1:{port}\nauthorization {{ token: \"{token}\" }}\n"
        )
    });
    let mut seen = Seen::default();
    let alice = ["--user", "alice", "--password", password];

    let out = cli(&[&["hub", "init", "-s", &hub.url()][..], &alice].concat()).await;
    seen.cli("hub init", &out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client =
        async_nats::ConnectOptions::with_user_and_password("alice".into(), password.into())
            .connect(hub.url())
            .await
            .unwrap();
    let token_client = async_nats::ConnectOptions::with_token(token.into())
        .connect(token_hub.url())
        .await
        .unwrap();
    let mut heartbeats = client.subscribe("edgeleaf.hb.*").await.unwrap();
    let mut token_heartbeats = token_client.subscribe("edgeleaf.hb.*").await.unwrap();
    client.flush().await.unwrap();
    token_client.flush().await.unwrap();

    let start = |id: &'static str, url: String, nats: String| {
        Node::start(NodeSpec {
            id,
            url: Some(url),
            nats,
            ..Default::default()
        })
    };
    let nodes = [
        start(
            "by-password",
            hub.url(),
            format!("user = \"alice\"\npassword = \"{password}\"\n"),
        ),
        start(
            "by-nkey",
            hub.url(),
            format!("nkey = \"{}\"\n", seed_file.display()),
        ),
        start(
            "by-token",
            token_hub.url(),
            format!("token = \"{token}\"\n"),
        ),
        start(
            "wrong-password",
            hub.url(),
            format!("user = \"alice\"\npassword = \"{wrong}\"\n"),
        ),
        start("no-credentials", hub.url(), String::new()),
    ];
    // `node` takes the CLI's connection flags (here, their variables) over [nats].
    let by_env = Node::start(NodeSpec {
        id: "by-env",
        url: Some(hub.url()),
        env: &[("NATS_USER", "alice"), ("NATS_PASSWORD", password)],
        ..Default::default()
    });
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 3 {
        let hb = next_json(&mut heartbeats).await;
        seen.add("heartbeat", hb.to_string());
        ids.insert(hb["node_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["by-env", "by-nkey", "by-password"]
    );
    let hb = next_json(&mut token_heartbeats).await;
    assert_eq!(hb["node_id"], "by-token");

    for refused in &nodes[3..] {
        let log = refusal_logged(refused).await;
        assert!(
            log.to_lowercase().contains("authorization violation"),
            "{log}"
        );
        assert!(log.contains("check the credentials"), "{log}");
    }

    // The CLI: the right password lists the nodes, a wrong one is refused by name.
    let out = cli(&[&["nodes", "-s", &hub.url()][..], &alice].concat()).await;
    seen.cli("nodes", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("by-password"));
    let out = cli(&[
        "nodes",
        "-s",
        &hub.url(),
        "--user",
        "alice",
        "--password",
        wrong,
    ])
    .await;
    seen.cli("nodes with a wrong password", &out);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("authorization violation"),
        "{stderr}"
    );
    let out = cli(&["nodes", "-s", &token_hub.url(), "--token", token]).await;
    seen.cli("nodes with a token", &out);
    let info = cli(&[&["nodes", "-s", &hub.url(), "--json"][..], &alice].concat()).await;
    seen.cli("nodes json", &info);
    let msg = client
        .request("edgeleaf.ctl.by-password.info", "".into())
        .await
        .unwrap();
    seen.add("info", String::from_utf8_lossy(&msg.payload));

    for node in nodes.iter().chain([&by_env]) {
        seen.add(format!("log of {}", node.id), node.log());
        let json = std::fs::read_to_string(node.state_dir().join("node.json")).unwrap_or_default();
        seen.add(format!("node.json of {}", node.id), json);
    }
    seen.assert_no_secret(&[password, wrong, token, &seed]);
}

/// `node --check` on a config file; (success, stdout, stderr).
async fn check(config: &str, mode: u32) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["node", "--check", "-c"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn plain_text_off_the_machine_warns_and_writable_secrets_are_refused() {
    // 192.0.2.0/24 is TEST-NET-1: `--check` never connects, so nothing is sent.
    let remote = "[nats]\nurl = \"nats://alice:pw-6a1c@192.0.2.10:4222\"\n";
    let (ok, stdout, stderr) = check(remote, 0o600).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("plain text") && stderr.contains("nats.url"),
        "{stderr}"
    );
    assert!(
        stdout.contains("nats://alice:***@192.0.2.10:4222"),
        "{stdout}"
    );
    assert!(!stdout.contains("pw-6a1c") && !stderr.contains("pw-6a1c"));

    let leaf = "[leaf]\nspawn = true\nhub_url = \"nats-leaf://hub.example:7422\"\n";
    let (ok, _, stderr) = check(leaf, 0o600).await;
    assert!(ok && stderr.contains("leaf.hub_url"), "{stderr}");
    let leaf_tls = format!("{leaf}tls = {{ ca = \"/etc/edgeleaf/ca.pem\" }}\n");
    let (ok, _, stderr) = check(&leaf_tls, 0o600).await;
    assert!(ok && !stderr.contains("plain text"), "{stderr}");
    let local = "[nats]\nurl = \"nats://127.0.0.1:4222\"\n";
    let (ok, _, stderr) = check(local, 0o644).await;
    assert!(ok && !stderr.contains("warning"), "{stderr}");

    // A config anyone may write is refused, and so is a secret file anyone may write.
    let (ok, _, stderr) = check(local, 0o666).await;
    assert!(!ok && stderr.contains("writable by every user"), "{stderr}");
    let keys = tempfile::tempdir().unwrap();
    let seed = keys.path().join("node.nk");
    std::fs::write(
        &seed,
        "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n",
    )
    .unwrap();
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o666)).unwrap();
    let config = format!("[nats]\nnkey = \"{}\"\n", seed.display());
    let (ok, _, stderr) = check(&config, 0o600).await;
    assert!(!ok && stderr.contains("nats.nkey"), "{stderr}");
    assert!(stderr.contains("writable by every user"), "{stderr}");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, stderr) = check(&config, 0o600).await;
    assert!(ok && stderr.contains("readable by every user"), "{stderr}");

    // A mistyped secret is reported by key, without its value.
    let (ok, _, stderr) = check("[nats]\npassword = 918273645\n", 0o600).await;
    assert!(!ok && stderr.contains("nats.password"), "{stderr}");
    assert!(!stderr.contains("918273645"), "{stderr}");
}

#[tokio::test]
async fn agents_see_no_files_no_environment_and_only_their_own_kv() {
    let cluster = crate::harness::Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let hostile = crate::harness::agent_wasm("hostile");
    let extra = [
        crate::harness::agent_toml("h-a", &hostile, &["sandbox.a"], ""),
        crate::harness::agent_toml("h-b", &hostile, &["sandbox.b"], ""),
    ]
    .concat();
    let node = Node::start(NodeSpec {
        id: "sandbox",
        url: Some(cluster.leaf.url()),
        extra,
        env: &[("EDGELEAF_TEST_SECRET", "env-secret-1b2c")],
        ..Default::default()
    });
    eventually(Duration::from_secs(60), "both agents loaded", || async {
        let rows: Vec<serde_json::Value> =
            crate::harness::try_control(&hub, "sandbox", "agents").await?;
        (rows.iter().filter(|r| r["state"] == "running").count() == 2).then_some(())
    })
    .await;
    let ok = |subject: &'static str, body: String| {
        let hub = hub.clone();
        async move { crate::harness::request_ok(&hub, subject, &body).await }
    };

    // No files: not the node's database, not /etc, not even a listing of /.
    let db = node.state_dir().join("db").display().to_string();
    for path in [db.as_str(), "/etc/passwd", "/proc/self/environ", "."] {
        let (code, message) =
            crate::harness::request_error(&hub, "sandbox.a", &format!("fs:{path}")).await;
        assert_eq!(code, "agent_error", "{path}: {message}");
        assert!(message.starts_with("fs: "), "{path}: {message}");
    }
    let (_, message) = crate::harness::request_error(&hub, "sandbox.a", "ls:/").await;
    assert!(message.starts_with("ls: "), "{message}");

    // No environment: the node's own variables stay outside.
    assert_eq!(ok("sandbox.a", "env".into()).await, "env:0 ");

    // Its own kv only: b cannot see a's key, by name or by listing.
    assert_eq!(ok("sandbox.a", "kvset:token=a-only".into()).await, "stored");
    assert_eq!(ok("sandbox.a", "kvget:token".into()).await, "a-only");
    assert_eq!(ok("sandbox.b", "kvget:token".into()).await, "none");
    assert_eq!(ok("sandbox.b", "kvlist:".into()).await, "");
    for key in ["agent_kv/h-a/token", "../h-a/token", "h-a.token"] {
        assert_eq!(
            ok("sandbox.b", format!("kvget:{key}")).await,
            "none",
            "{key}"
        );
    }
}

#[tokio::test]
async fn subjects_that_escape_the_agent_namespace_are_refused_at_deploy() {
    let cluster = crate::harness::Cluster::start().await;
    let hub_url = cluster.hub.url();
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = crate::harness::publisher(keys.path(), "pub.key").await;
    let _node = Node::start(NodeSpec {
        id: "esc",
        url: Some(cluster.leaf.url()),
        extra: crate::harness::trusting(&public),
        ..Default::default()
    });
    let echo = crate::harness::agent_wasm("echo");
    let echo = echo.to_str().unwrap();
    let escapes = [
        ">",
        "*.x",
        "$SYS.>",
        "$JS.API.>",
        "$KV.EDGELEAF_DEPLOYMENTS.>",
        "_INBOX.>",
        "edgeleaf.ctl.other.info",
        "edgeleaf.hb.other",
    ];
    // The CLI refuses them before anything is written.
    for subject in escapes {
        for flag in ["--trigger", "--allow-publish"] {
            let mut args = vec![
                "deploy", echo, "--name", "esc", "--node", "esc", "-s", &hub_url, "--key",
            ];
            args.push(key_path.to_str().unwrap());
            if flag == "--allow-publish" {
                args.extend(["--trigger", "esc.ok"]);
            }
            args.extend([flag, subject]);
            let out = cli(&args).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{flag} {subject} accepted");
            assert!(stderr.contains(subject), "{flag} {subject}: {stderr}");
        }
    }
    // A spec signed by a trusted key but written past the CLI is refused by the node.
    let secret = edgeleaf::shipping::SecretKey::load(&key_path).unwrap();
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let js = async_nats::jetstream::new(hub.clone());
    let kv = js.get_key_value("EDGELEAF_DEPLOYMENTS").await.unwrap();
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    for (version, subject) in (1u64..).zip(escapes) {
        let spec = edgeleaf::shipping::DeploymentSpec {
            agent: edgeleaf::protocol::AgentSpec {
                name: "esc".into(),
                triggers: vec!["esc.ok".into()],
                limits: Default::default(),
                allow_publish: vec![subject.into()],
                config: Default::default(),
                ..Default::default()
            },
            module: edgeleaf::shipping::ModuleRef {
                digest: "00".repeat(32),
                size: 10,
            },
            version,
            issued_at: "2026-11-26T00:00:00Z".into(),
            nonce: format!("n{version}"),
            target: "node.esc.esc".into(),
            publisher: Some(secret.public().to_string()),
            keep_kv: false,
            secrets: Default::default(),
            absent: false,
            artifacts: Default::default(),
        };
        let sealed = edgeleaf::shipping::SignedDeployment::seal(&spec, Some(&secret));
        kv.put("node.esc.esc", sealed.to_bytes().into())
            .await
            .unwrap();
        let report: serde_json::Value =
            eventually(Duration::from_secs(20), "the node's verdict", || async {
                let raw = status.get("esc.esc").await.ok()??;
                let report: serde_json::Value = serde_json::from_slice(&raw).ok()?;
                (report["version"] == version).then_some(report)
            })
            .await;
        assert_eq!(report["state"], "rejected", "{subject}: {report}");
        assert_eq!(report["error"]["code"], "forbidden", "{subject}: {report}");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(message.contains(subject), "{subject}: {message}");
    }
}

/// Everything that arrives on `sub` within `window`, as text.
async fn drain(sub: &mut async_nats::Subscriber, window: Duration) -> Vec<String> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push(format!(
            "{} {}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        ));
    }
    out
}

#[tokio::test]
async fn per_node_accounts_keep_each_node_to_its_own_subjects() {
    let out = cli(&[
        "hub",
        "accounts",
        "--node",
        "acct-a:pw-a-71f0",
        "--node",
        "acct-b:pw-b-0d9e",
        "--hub-user",
        "ops:ops-pw-55c1",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accounts = String::from_utf8(out.stdout).unwrap();
    let hub = Server::custom("accounts-hub", true, |dir, port, leafnode| {
        std::fs::write(dir.join("accounts.conf"), &accounts).unwrap();
        format!(
            "server_name: accounts-hub\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: \"{}\", domain: hub }}\n\
             leafnodes {{ listen: 127.0.0.1:{} }}\ninclude \"accounts.conf\"\n",
            dir.join("js").display(),
            leafnode.unwrap()
        )
    });
    let url = hub.url();
    let ops = ["--user", "ops", "--password", "ops-pw-55c1"];
    let with_ops =
        |args: &[&str]| -> Vec<String> { args.iter().chain(&ops).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs).await
    };
    let out = run(with_ops(&["hub", "init", "-s", &url])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = crate::harness::publisher(keys.path(), "pub.key").await;
    let leafnode = hub.leafnode_port.unwrap();
    let start = |id: &'static str, password: &str| {
        let listen = free_port();
        let node = Node::start(NodeSpec {
            id,
            spawn_leaf: Some((listen, leafnode)),
            hub_url: Some(format!("nats-leaf://{id}:{password}@127.0.0.1:{leafnode}")),
            extra: crate::harness::trusting(&public),
            ..Default::default()
        });
        (node, listen)
    };
    let (a, a_listen) = start("acct-a", "pw-a-71f0");
    let (b, b_listen) = start("acct-b", "pw-b-0d9e");

    let hub_client =
        async_nats::ConnectOptions::with_user_and_password("ops".into(), "ops-pw-55c1".into())
            .connect(&url)
            .await
            .unwrap();
    eventually(Duration::from_secs(30), "both nodes online", || async {
        let out = run(with_ops(&["nodes", "--json", "-s", &url])).await;
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (rows
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "online" && r["heartbeat"]["hub_link"]["state"] == "up")
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // Broadcast ping: each node answers through its own account.
    let out = run(with_ops(&["ping", "-s", &url, "--json"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("acct-a") && text.contains("acct-b"),
        "ping: {text}"
    );

    // A signed deployment reaches node a: the deployments bucket's changes, the
    // module download and its own status key all pass through its account. (Within
    // 10 s: without the changes, the node would only find it at its 30 s re-read.)
    let echo = crate::harness::agent_wasm("echo");
    let out = run(with_ops(&[
        "deploy",
        echo.to_str().unwrap(),
        "--name",
        "echo",
        "--trigger",
        "dev.acct-a.echo",
        "--capability",
        "mirror",
        "--node",
        "acct-a",
        "--key",
        key_path.to_str().unwrap(),
        "-s",
        &url,
        "--wait",
        "10s",
    ]))
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("running"),
        "deploy: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Hub to agent on its allotted namespace, and the direct invoke subject.
    let reply = crate::harness::request_ok(&hub_client, "dev.acct-a.echo", "hello a").await;
    assert_eq!(reply, "hello a");
    let out = run(with_ops(&[
        "invoke", "--node", "acct-a", "--agent", "echo", "direct", "-s", &url,
    ]))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "direct");
    // Discovery and workloads through the accounts: the query reaches every node,
    // the card and the result come back through a's.
    let out = run(with_ops(&["discover", "mirror", "--json", "-s", &url])).await;
    let cards: Vec<edgeleaf::protocol::AgentCard> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("discover: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        cards.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["acct-a.echo"]
    );
    let out = run(with_ops(&[
        "work",
        "--location",
        "acct-a",
        "--capability",
        "mirror",
        "by workload",
        "-s",
        &url,
    ]))
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "by workload",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The services API through the accounts: a's INFO, by its id.
    let info = hub_client
        .request("$SRV.INFO.edgeleaf-node.acct-a", "".into())
        .await
        .unwrap();
    let info: async_nats::service::Info = serde_json::from_slice(&info.payload).unwrap();
    assert!(
        info.endpoints
            .iter()
            .any(|e| e.subject == "edgeleaf.inv.acct-a.echo"),
        "{info:?}"
    );
    // The result reached the hub's telemetry stream through the node's account.
    let js = async_nats::jetstream::new(hub_client.clone());
    let telemetry = js.get_stream("EDGELEAF_TELEMETRY").await.unwrap();
    eventually(Duration::from_secs(20), "a's result on the hub", || async {
        telemetry
            .get_last_raw_message_by_subject("edgeleaf.res.acct-a.echo")
            .await
            .ok()
    })
    .await;

    // Now a's device misbehaves: a client on its leaf poses as node b.
    let mut hub_sees = hub_client.subscribe(">").await.unwrap();
    hub_client.flush().await.unwrap();
    let rogue_url = a.leaf_url(a_listen, true);
    let rogue = crate::harness::with_login(&rogue_url)
        .custom_inbox_prefix("_INBOX.rogue")
        .connect(&rogue_url)
        .await
        .unwrap();
    let mut sniff = rogue.subscribe("_INBOX.>").await.unwrap();
    let mut sniff_ctl = rogue.subscribe("edgeleaf.ctl.acct-b.>").await.unwrap();
    rogue.flush().await.unwrap();
    for subject in [
        "edgeleaf.hb.acct-b",
        "edgeleaf.res.acct-b.echo",
        "edgeleaf.evt.acct-b.started",
        "edgeleaf.log.acct-b.echo",
        "up.acct-b.alerts",
        "fleet.forged",
        // A card in b's name, and a workload for b's location.
        "discovery.agents.echo.acct-b.echo",
        "edge.acct-b.workloads",
    ] {
        rogue
            .publish(subject, "{\"forged\": true}".into())
            .await
            .unwrap();
    }
    rogue.flush().await.unwrap();
    let rogue_js = async_nats::jetstream::with_domain(rogue.clone(), "hub");
    let put = async {
        let status = rogue_js.get_key_value("EDGELEAF_STATUS").await.ok()?;
        status
            .put("acct-b.echo", "{\"forged\": true}".into())
            .await
            .ok()
    };
    let put = tokio::time::timeout(Duration::from_secs(5), put).await;
    assert!(!matches!(put, Ok(Some(_))), "a wrote b's status key");
    let delete = tokio::time::timeout(
        Duration::from_secs(5),
        rogue_js.delete_stream("EDGELEAF_TELEMETRY"),
    )
    .await;
    assert!(
        !matches!(delete, Ok(Ok(_))),
        "a deleted the telemetry stream"
    );
    // A push consumer delivers on a subject its creator names: a's own event,
    // stored in the telemetry stream, delivered as b's heartbeat?
    let ack = rogue_js
        .publish("edgeleaf.evt.acct-a.forged", "{\"forged\": true}".into())
        .await;
    if let Ok(ack) = ack {
        let _ = tokio::time::timeout(Duration::from_secs(5), ack).await;
    }
    // (nats-server 2.9 creates it, but the delivery does not reach b's heartbeat
    // subject on the hub: checked below with everything else a's leaf sent.)
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        rogue_js.create_consumer_on_stream(
            async_nats::jetstream::consumer::push::Config {
                deliver_subject: "edgeleaf.hb.acct-b".into(),
                filter_subject: "edgeleaf.evt.acct-a.forged".into(),
                ..Default::default()
            },
            "EDGELEAF_TELEMETRY",
        ),
    )
    .await;
    // b keeps answering its own control subject; a's leaf sees neither the request
    // nor the reply.
    let info = crate::harness::request_ok(&hub_client, "edgeleaf.ctl.acct-b.info", "").await;
    assert!(info.contains("acct-b"), "{info}");

    let seen = drain(&mut hub_sees, Duration::from_secs(2)).await;
    // Anything "forged" on the hub, other than a's own event and the API traffic
    // that stored and asked for it.
    let forged: Vec<&String> = seen
        .iter()
        .filter(|m| m.contains("forged"))
        .filter(|m| !m.starts_with("edgeleaf.evt.acct-a.") && !m.starts_with("$JS"))
        .filter(|m| !m.starts_with("_R_") && !m.starts_with("_INBOX"))
        .collect();
    assert!(forged.is_empty(), "forgeries reached the hub: {forged:?}");
    let heartbeats = js.get_stream("EDGELEAF_HEARTBEATS").await.unwrap();
    let last_b = heartbeats
        .get_last_raw_message_by_subject("edgeleaf.hb.acct-b")
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&last_b.payload).contains("forged"),
        "b's stored heartbeat is a's forgery"
    );
    assert!(
        js.get_stream("EDGELEAF_TELEMETRY").await.is_ok(),
        "telemetry stream gone"
    );
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    let b_status = status.get("acct-b.echo").await.unwrap();
    assert!(b_status.is_none(), "{b_status:?}");
    // Replies on a's leaf are a's own (its node's and the rogue's), never b's or
    // a hub client's.
    let sniffed = drain(&mut sniff, Duration::from_millis(200)).await;
    let others: Vec<&String> = sniffed
        .iter()
        .filter(|m| !m.starts_with("_INBOX.acct-a.") && !m.starts_with("_INBOX.rogue."))
        .collect();
    assert!(
        others.is_empty(),
        "a's leaf saw others' replies: {others:?}"
    );
    let sniffed = drain(&mut sniff_ctl, Duration::from_millis(200)).await;
    assert!(sniffed.is_empty(), "a's leaf saw b's control: {sniffed:?}");

    // a cannot publish into b's inbox (where b's deployments and modules arrive);
    // the hub can.
    let b_url = b.leaf_url(b_listen, true);
    let b_inbox_client = crate::harness::connect_url(&b_url).await.unwrap();
    let mut b_inbox = b_inbox_client.subscribe("_INBOX_acct-b.>").await.unwrap();
    b_inbox_client.flush().await.unwrap();
    rogue
        .publish("_INBOX_acct-b.injected", "forged".into())
        .await
        .unwrap();
    rogue
        .publish("_INBOX.acct-b.injected", "forged".into())
        .await
        .unwrap();
    rogue.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub_client
        .publish("_INBOX_acct-b.from-hub", "hub".into())
        .await
        .unwrap();
    hub_client.flush().await.unwrap();
    let got = drain(&mut b_inbox, Duration::from_secs(1)).await;
    assert!(
        got.iter().any(|m| m.starts_with("_INBOX_acct-b.from-hub")),
        "the hub's delivery to b's inbox did not arrive: {got:?}"
    );
    assert!(
        got.iter().all(|m| !m.contains("injected")),
        "a published into b's inbox: {got:?}"
    );
    drop(a);
}

#[tokio::test]
async fn shipped_hub_config_is_current_and_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let shipped = std::fs::read_to_string(root.join("hub-accounts.conf")).unwrap();
    let (made_with, body) = shipped.split_once('\n').unwrap();
    let args: Vec<&str> = made_with
        .strip_prefix("# Made with: edgeleaf ")
        .expect("first line says how the file was made")
        .split_whitespace()
        .collect();
    let out = cli(&args).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        body,
        "config/hub-accounts.conf is stale: regenerate it with the command on its first line"
    );

    // hub.conf with this machine's paths (certificates from a test PKI) passes
    // nats-server's own check.
    // So do hub.conf and hub-cluster.conf (one server of a three-server hub).
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hub-accounts.conf"), shipped).unwrap();
    for name in ["hub.conf", "hub-cluster.conf"] {
        let hub = std::fs::read_to_string(root.join(name))
            .unwrap()
            .replace("/etc/nats/hub.pem", &pki.path("server.pem"))
            .replace("/etc/nats/hub-key.pem", &pki.path("server-key.pem"))
            .replace("/etc/nats/ca.pem", &pki.path("ca.pem"))
            .replace("/var/lib/nats", &dir.path().display().to_string());
        std::fs::write(dir.path().join(name), hub).unwrap();
        let check = std::process::Command::new(crate::harness::nats_server_bin())
            .arg("-c")
            .arg(dir.path().join(name))
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "config/{name}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[tokio::test]
async fn secrets_open_only_on_their_node_and_are_never_shown_or_stored_in_clear() {
    let cluster = crate::harness::Cluster::start().await;
    let hub_url = cluster.hub.url();
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = crate::harness::publisher(keys.path(), "pub.key").await;
    let trust = crate::harness::trusting(&public);
    let vault = Node::start(NodeSpec {
        id: "vault",
        url: Some(cluster.leaf.url()),
        extra: trust.clone(),
        ..Default::default()
    });
    let hub = async_nats::connect(&hub_url).await.unwrap();
    eventually(Duration::from_secs(20), "vault's key reported", || async {
        let rows = crate::harness::try_cli_json(&["nodes", "--json", "-s", &hub_url]).await?;
        rows.as_array()?
            .iter()
            .any(|r| {
                r["node_id"] == "vault"
                    && r["heartbeat"]["enc_key"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("x25519:"))
            })
            .then_some(())
    })
    .await;
    let secret = "sk-live-7d1e0c55aa";
    let secret_file = keys.path().join("db-password");
    let file_secret = "db-pw-0a9b8c7d";
    std::fs::write(&secret_file, format!("{file_secret}\n")).unwrap();
    let hostile = crate::harness::agent_wasm("hostile");
    let mut seen = Seen::default();
    let deploy = |name: &'static str, target: &'static [&'static str]| {
        let hostile = hostile.clone();
        let key_path = key_path.clone();
        let secret_file = secret_file.clone();
        let hub_url = hub_url.clone();
        async move {
            let mut args: Vec<String> = vec![
                "deploy".into(),
                hostile.display().to_string(),
                "--name".into(),
                name.into(),
                "--trigger".into(),
                format!("vault.{name}"),
                "--config".into(),
                "mode=plain".into(),
                "--secret".into(),
                format!("api_token={secret}"),
                "--secret".into(),
                format!("db_password=@{}", secret_file.display()),
                "--key".into(),
                key_path.display().to_string(),
                "-s".into(),
                hub_url,
                "--wait".into(),
                "20s".into(),
            ];
            args.extend(target.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&refs).await
        }
    };
    let out = deploy("keeper", &["--node", "vault"]).await;
    seen.cli("deploy", &out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed to vault"));

    // The agent gets the values, like config (it answers with their hash: its
    // results are telemetry, which must not hold them either).
    let ask = |what: &'static str| crate::harness::request_ok(&hub, "vault.keeper", what);
    assert_eq!(ask("confighash:api_token").await, fnv1a(secret));
    assert_eq!(ask("confighash:db_password").await, fnv1a(file_secret));
    assert_eq!(ask("config:mode").await, "plain");

    // In transit and at rest they are sealed: the bucket's envelope (the spec
    // decoded), and every file of the node's state dir.
    let js = async_nats::jetstream::new(hub.clone());
    let raw = js
        .get_key_value("EDGELEAF_DEPLOYMENTS")
        .await
        .unwrap()
        .get("node.vault.keeper")
        .await
        .unwrap()
        .unwrap();
    let spec = edgeleaf::shipping::SignedDeployment::peek_spec(&raw).unwrap();
    assert_eq!(spec.secrets.len(), 2);
    seen.add("the deployment", serde_json::to_string(&spec).unwrap());
    seen.add("the envelope", String::from_utf8_lossy(&raw));
    for entry in walk(&vault.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for s in [secret, file_secret] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a secret in clear",
                entry.display()
            );
        }
    }
    let key_mode = std::fs::metadata(vault.state_dir().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // A node that had not reported when a deploy was made cannot open it, and says so.
    let out = deploy("shared", &["--all"]).await;
    seen.cli("deploy --all", &out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let late = Node::start(NodeSpec {
        id: "late",
        url: Some(cluster.leaf.url()),
        extra: trust,
        ..Default::default()
    });
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    let report: serde_json::Value =
        eventually(Duration::from_secs(30), "late's verdict", || async {
            let raw = status.get("late.shared").await.ok()??;
            serde_json::from_slice(&raw).ok()
        })
        .await;
    assert_eq!(report["state"], "rejected", "{report}");
    assert_eq!(report["error"]["code"], "secret_unavailable", "{report}");
    assert_eq!(
        crate::harness::request_ok(&hub, "vault.shared", "confighash:api_token").await,
        fnv1a(secret)
    );

    // Shown nowhere: agents, info, status, events, logs, CLI output.
    let out = cli(&["agents", "--json", "-s", &hub_url]).await;
    seen.cli("agents", &out);
    let info = crate::harness::request_ok(&hub, "edgeleaf.ctl.vault.agents", "").await;
    seen.add("ctl agents", info);
    let info = crate::harness::request_ok(&hub, "edgeleaf.ctl.vault.info", "").await;
    seen.add("ctl info", info);
    for key in ["vault.keeper", "vault.shared", "late.shared"] {
        let raw = status.get(key).await.unwrap().unwrap_or_default();
        seen.add(format!("status {key}"), String::from_utf8_lossy(&raw));
    }
    let telemetry = js.get_stream("EDGELEAF_TELEMETRY").await.unwrap();
    for seq in 1..=telemetry.cached_info().state.last_sequence {
        if let Ok(msg) = telemetry.get_raw_message(seq).await {
            seen.add(
                format!("telemetry {seq}"),
                String::from_utf8_lossy(&msg.payload),
            );
        }
    }
    seen.add("vault log", vault.log());
    seen.add("late log", late.log());
    seen.assert_no_secret(&[secret, file_secret]);
}

/// FNV-1a 64 as the hostile agent's `confighash` computes it.
fn fnv1a(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn creds_files_work_for_the_node_and_its_leaf_on_an_operator_mode_hub() {
    use crate::harness::jwt::Operator;
    let mut operator = Operator::new();
    let edge = operator.account("EDGE", true);
    let stranger = Operator::new().account("STRANGER", false);
    let creds = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = creds.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    };
    let ops = write("ops.creds", edge.user_creds("ops"));
    let node_creds = write("node.creds", edge.user_creds("node"));
    let leaf_creds = write("leaf.creds", edge.user_creds("leaf"));
    let bad_creds = write("bad.creds", stranger.user_creds("intruder"));
    let seeds: Vec<String> = [&node_creds, &leaf_creds, &bad_creds]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .find(|l| l.starts_with("SU"))
                .expect("a user seed in the creds file")
                .to_owned()
        })
        .collect();
    let operator_config = operator.server_config();
    let hub = Server::custom("jwt-hub", true, |dir, port, leafnode| {
        format!(
            "server_name: jwt-hub\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: \"{}\", domain: hub }}\n\
             leafnodes {{ listen: 127.0.0.1:{} }}\n{operator_config}\n",
            dir.join("js").display(),
            leafnode.unwrap()
        )
    });
    let out = cli(&["hub", "init", "-s", &hub.url(), "--creds", &ops]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = async_nats::ConnectOptions::with_credentials_file(&ops)
        .await
        .unwrap()
        .connect(hub.url())
        .await
        .unwrap();
    let mut heartbeats = client.subscribe("edgeleaf.hb.*").await.unwrap();
    client.flush().await.unwrap();

    let leafnode = hub.leafnode_port.unwrap();
    let direct = Node::start(NodeSpec {
        id: "jwt-direct",
        url: Some(hub.url()),
        nats: format!("creds = \"{node_creds}\"\n"),
        ..Default::default()
    });
    let leafed = Node::start(NodeSpec {
        id: "jwt-leaf",
        spawn_leaf: Some((free_port(), leafnode)),
        leaf: format!("creds = \"{leaf_creds}\"\n"),
        ..Default::default()
    });
    let refused_listen = free_port();
    let refused_leaf = Node::start(NodeSpec {
        id: "jwt-refused-leaf",
        spawn_leaf: Some((refused_listen, leafnode)),
        leaf: format!("creds = \"{bad_creds}\"\n"),
        ..Default::default()
    });
    let refused = Node::start(NodeSpec {
        id: "jwt-refused",
        url: Some(hub.url()),
        nats: format!("creds = \"{bad_creds}\"\n"),
        ..Default::default()
    });

    // Both good nodes report, the one behind its leaf with the hub link up.
    let mut up = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while up.len() < 2 {
        let hb = next_json(&mut heartbeats).await;
        let id = hb["node_id"].as_str().unwrap().to_owned();
        assert!(id == "jwt-direct" || id == "jwt-leaf", "{hb}");
        if hb["hub_link"]["state"] == "up" {
            up.insert(id);
        }
        assert!(std::time::Instant::now() < deadline, "{up:?}");
    }

    // A stranger's creds: refused directly, and on the leaf link, each saying why.
    let log = refusal_logged(&refused).await;
    assert!(
        log.to_lowercase().contains("authorization violation"),
        "{log}"
    );
    let info = info_with_a_reason(&refused_leaf, refused_listen).await;
    let reason = info["ok"]["hub_link"]["reason"].as_str().unwrap();
    assert!(reason.contains("Authorization Violation"), "{reason}");

    let mut seen = Seen::default();
    for node in [&direct, &leafed, &refused_leaf, &refused] {
        seen.add(format!("log of {}", node.id), node.log());
    }
    seen.add("info", info.to_string());
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    seen.assert_no_secret(&seeds);
}
