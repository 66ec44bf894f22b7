//! Issue 16, dashboard: the page in a real headless chromium against a real hub with
//! two nodes; its JSON API; and its access rules (loopback, token, read-only).

use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::browser::Browser;
use crate::harness::{
    BIN, Cluster, Node, NodeSpec, agent_toml, agent_wasm, cli, eventually, free_port, request_ok,
    serving,
};

/// A running `edgeleaf dashboard`, killed on drop.
struct Dashboard {
    child: tokio::process::Child,
    port: u16,
}

impl Dashboard {
    async fn start(hub_url: &str, more: &[&str]) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(BIN)
            .args([
                "dashboard",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "-s",
                hub_url,
            ])
            .args(more)
            .env_remove("NATS_URL")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(20), "dashboard listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A plain HTTP/1.1 request; (status, body).
fn http(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|h| h.starts_with("Host:")) {
        request += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for h in headers {
        request += &format!("{h}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_page_shows_both_nodes_and_turns_a_stopped_one_offline_without_a_reload() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let hub = async_nats::connect(&hub_url).await.unwrap();
    let _d1 = Node::start(NodeSpec {
        id: "d1",
        url: Some(cluster.leaf.url()),
        extra: agent_toml("h", &agent_wasm("hostile"), &["dash.h"], ""),
        ..Default::default()
    });
    let mut d2 = Node::start(NodeSpec {
        id: "d2",
        url: Some(cluster.leaf.url()),
        extra: agent_toml("echo", &agent_wasm("echo"), &["dash.echo"], ""),
        ..Default::default()
    });
    serving(&hub, "dash.h", "echo:up").await;
    serving(&hub, "dash.echo", "up").await;
    assert_eq!(
        request_ok(&hub, "dash.h", "say:hello from d1").await,
        "said"
    );

    let dashboard = Dashboard::start(&hub_url, &[]).await;
    let mut page = Browser::open(&format!("{}/?refresh=300", dashboard.url()));
    for node in ["d1", "d2"] {
        page.until(
            Duration::from_secs(30),
            &format!("{node} online"),
            &format!(
                "document.querySelector('#nodes tr[data-node=\"{node}\"] .status')?.textContent === 'online'"
            ),
        )
        .await;
    }
    page.until(
        Duration::from_secs(30),
        "agent h of d1 listed",
        "document.querySelector('#agents tr[data-node=\"d1\"][data-agent=\"h\"] .state')?.textContent === 'running'",
    )
    .await;
    // An agent's log lines, on a click.
    page.eval("document.querySelector('#agents tr[data-node=\"d1\"][data-agent=\"h\"]').click()");
    page.until(
        Duration::from_secs(30),
        "d1/h's log line",
        "document.getElementById('logs').textContent.includes('hello from d1')",
    )
    .await;
    // Events: each node's agent_started.
    page.until(
        Duration::from_secs(30),
        "agent_started events",
        "document.querySelectorAll('#events li[data-kind=\"agent_started\"]').length >= 2",
    )
    .await;

    // A mark the page keeps only if it is never reloaded.
    page.eval("window.__same_page = 'yes'");
    d2.stop_with(libc::SIGTERM);
    page.until(
        Duration::from_secs(60),
        "d2 offline",
        "document.querySelector('#nodes tr[data-node=\"d2\"] .status')?.textContent === 'offline'",
    )
    .await;
    assert_eq!(
        page.eval("window.__same_page"),
        "yes",
        "the page was reloaded"
    );
    assert_eq!(
        page.eval("document.querySelector('#nodes tr[data-node=\"d1\"] .status').textContent"),
        "online"
    );
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("dashboard.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(out) = std::env::var("EDGELEAF_SCREENSHOT_OUT") {
        std::fs::copy(&shot, out).unwrap();
    }

    // The API behind it, as scripts use it.
    let (status, body) = http(dashboard.port, "GET", "/api/nodes", &[]);
    assert_eq!(status, 200, "{body}");
    let rows: Vec<edgeleaf::protocol::NodeRow> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.node_id.as_str()).collect::<Vec<_>>(),
        ["d1", "d2"]
    );
    let (status, body) = http(dashboard.port, "GET", "/api/logs?node=d1&agent=h", &[]);
    assert_eq!(status, 200, "{body}");
    let lines: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(lines[0]["message"], "hello from d1", "{lines}");
    let (status, body) = http(dashboard.port, "GET", "/api/agents", &[]);
    assert_eq!(status, 200, "{body}");
    let agents: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["node_id"] == "d1" && a["agent"] == "h")
        .unwrap_or_else(|| panic!("{agents}"));
    assert_eq!(h["state"], "running");
    assert!(h["invocations"].as_u64().unwrap() >= 2, "{h}");
    let (status, body) = http(dashboard.port, "GET", "/api/events?node=d2&limit=1", &[]);
    assert_eq!(status, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last = &events.as_array().unwrap()[..];
    assert_eq!(last.len(), 1, "{events}");
    assert_eq!(last[0]["node_id"], "d2");
    assert!(last[0]["seq"].as_u64().is_some() && last[0]["received"].is_string());
    assert!(
        last[0]["kind"].is_string() && last[0]["at"].is_string(),
        "{events}"
    );
    assert_eq!(
        http(dashboard.port, "GET", "/api/events?limit=5000", &[]).0,
        400
    );
    let (status, body) = http(dashboard.port, "GET", "/api/logs?node=d1.%3E", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a single NATS token"), "{body}");
    // Read-only, and only for loopback names without a token.
    assert_eq!(http(dashboard.port, "POST", "/api/nodes", &[]).0, 405);
    let (status, body) = http(
        dashboard.port,
        "GET",
        "/api/nodes",
        &["Host: evil.example:80"],
    );
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn beyond_loopback_a_token_is_required() {
    let cluster = Cluster::start().await;
    let hub_url = cluster.hub.url();
    let out = cli(&["dashboard", "--listen", "0.0.0.0:0", "-s", &hub_url]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--token-file"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let out = cli(&[
        "dashboard",
        "--token-file",
        short.to_str().unwrap(),
        "-s",
        &hub_url,
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shorter than 16"),
        "{out:?}"
    );

    let token = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let dashboard = Dashboard::start(&hub_url, &["--token-file", file.to_str().unwrap()]).await;
    let port = dashboard.port;
    assert_eq!(http(port, "GET", "/api/nodes", &[]).0, 401);
    assert_eq!(
        http(
            port,
            "GET",
            "/api/nodes",
            &["Authorization: Bearer wrong-token-wrong-token"]
        )
        .0,
        401
    );
    let (status, body) = http(
        port,
        "GET",
        "/api/nodes",
        &[&format!("Authorization: Bearer {token}")],
    );
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert_eq!(
        http(port, "GET", &format!("/api/events?token={token}"), &[]).0,
        200
    );
    // The page itself holds no data and loads without the token.
    let (status, body) = http(port, "GET", "/", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("<title>edgeleaf fleet</title>"), "{body}");
    drop(dashboard.child);
}
