//! Directory grants: what an agent may read and write on the device, capped by the
//! node's `[devices]`, and every way out of a grant refused by the sandbox.

use std::path::Path;

use crate::cases::shipping::{TrustingNode, deploy, status};
use crate::harness::{
    Cluster, Node, NodeSpec, agent_toml, agent_wasm, request_error, request_ok, serving,
};

/// `fs:`/`fswrite:` on `subject` must fail, with the sandbox's refusal.
async fn refused(hub: &async_nats::Client, subject: &str, mode: &str) -> String {
    let (code, message) = request_error(hub, subject, mode).await;
    assert_eq!(code, "agent_error", "{mode}: {message}");
    message
}

#[tokio::test]
async fn granted_directories_are_reachable_and_nothing_else() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let (ro, rw, outside) = (
        base.path().join("ro"),
        base.path().join("rw"),
        base.path().join("outside"),
    );
    for d in [&ro, &rw, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(ro.join("reading.txt"), "21.5").unwrap();
    std::fs::write(outside.join("secret.txt"), "s3cret").unwrap();
    let (ro_s, rw_s, out_s) = (
        ro.display().to_string(),
        rw.display().to_string(),
        outside.display().to_string(),
    );
    let extra = format!("\n[devices]\nread = [\"{ro_s}\"]\nwrite = [\"{rw_s}\"]\n")
        + &agent_toml(
            "files",
            &agent_wasm("hostile"),
            &["files.run"],
            &format!(
                "read = [\"{ro_s}\"]\nwrite = [\"{rw_s}\"]\nlimits = {{ timeout = \"1s\", max_concurrency = 1 }}"
            ),
        );
    let _node = Node::start(NodeSpec {
        id: "files",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "files.run", "echo:up").await;

    // Granted: read the read-only dir, write the read-write one.
    assert_eq!(
        request_ok(&hub, "files.run", &format!("fs:{ro_s}/reading.txt")).await,
        "21.5"
    );
    assert_eq!(
        request_ok(&hub, "files.run", &format!("fswrite:{rw_s}/out.txt=hello")).await,
        "written"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "hello"
    );
    assert_eq!(
        request_ok(&hub, "files.run", &format!("ls:{rw_s}")).await,
        "out.txt"
    );

    // Refused: writing the read-only dir, `..`, absolute paths elsewhere.
    refused(&hub, "files.run", &format!("fswrite:{ro_s}/x.txt=1")).await;
    assert!(!ro.join("x.txt").exists());
    refused(
        &hub,
        "files.run",
        &format!("fs:{ro_s}/../outside/secret.txt"),
    )
    .await;
    refused(&hub, "files.run", &format!("fs:{out_s}/secret.txt")).await;
    refused(&hub, "files.run", "fs:/etc/hostname").await;
    refused(&hub, "files.run", "ls:/").await;

    // Symlinks made after the agent was deployed, leading out: refused too.
    std::os::unix::fs::symlink(outside.join("secret.txt"), rw.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, rw.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", rw.join("rel.txt")).unwrap();
    for path in ["link.txt", "dirlink/secret.txt", "rel.txt"] {
        let message = refused(&hub, "files.run", &format!("fs:{rw_s}/{path}")).await;
        assert!(!message.contains("s3cret"), "{path}: {message}");
    }
    // A symlink that stays inside the grant is fine.
    std::os::unix::fs::symlink("out.txt", rw.join("inside.txt")).unwrap();
    assert_eq!(
        request_ok(&hub, "files.run", &format!("fs:{rw_s}/inside.txt")).await,
        "hello"
    );

    // A read that blocks (a FIFO nobody writes: a silent device) ends at the
    // deadline, and the agent's one instance is free again.
    let fifo = rw.join("silent");
    let c_path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let (code, message) = request_error(&hub, "files.run", &format!("fs:{}", fifo.display())).await;
    assert_eq!(code, "timeout", "{message}");
    assert_eq!(
        request_ok(&hub, "files.run", "echo:after").await,
        "echo:after"
    );
}

#[tokio::test]
async fn a_grant_outside_the_ceiling_is_forbidden_and_what_runs_stays() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let devices = format!("\n[devices]\nread = [\"{}\"]\n", allowed.path().display());
    let node = TrustingNode::start_with("granted", &devices).await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let with = |more: &[&str]| {
        let mut args = node.echo_svc();
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let grant = |dir: &Path| dir.display().to_string();

    let (ok, text) = deploy(&node.hub_url, &with(&["--read", &grant(allowed.path())])).await;
    assert!(ok, "{text}");
    serving(&hub, "granted.svc", "v1").await;

    for (flag, dir) in [
        ("--read", grant(other.path())),
        ("--read", "/etc".to_owned()),
        ("--write", grant(allowed.path())),
    ] {
        let (ok, text) = deploy(&node.hub_url, &with(&[flag, &dir])).await;
        assert!(!ok, "{flag} {dir}: {text}");
        assert!(text.contains("forbidden") && text.contains(&dir), "{text}");
        let st = status(&hub, "granted", "svc").await.unwrap();
        assert_eq!(st.state, "rejected", "{st:?}");
        assert_eq!(st.error.as_ref().unwrap().code, "forbidden", "{st:?}");
        // The first deployment still runs.
        assert_eq!(request_ok(&hub, "granted.svc", "still").await, "still");
    }

    // Spec-level mistakes are refused by deploy itself.
    for dir in ["relative/dir", "/a/../etc", "/"] {
        let (ok, text) = deploy(&node.hub_url, &with(&["--read", dir])).await;
        assert!(!ok && text.contains("invalid_spec"), "{dir}: {text}");
    }
}

/// The examples a device owner recognises: `cpu-temp` on a timer with a read grant
/// (a thermal zone stands in as a temp dir), and a C command reading a granted
/// file through its preopen.
#[tokio::test]
async fn the_cpu_temp_and_readfile_examples_read_granted_files() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let zone = tempfile::tempdir().unwrap();
    std::fs::write(zone.path().join("temp"), "48312\n").unwrap();
    let zone_s = zone.path().display().to_string();
    let mut alerts = hub.subscribe("alerts.cpu-temp").await.unwrap();
    hub.flush().await.unwrap();
    let extra = format!("\n[devices]\nread = [\"{zone_s}\"]\n")
        + &agent_toml(
            "cpu-temp",
            &agent_wasm("cpu-temp"),
            &[],
            &format!(
                "schedule = [\"@every 500ms\"]\nread = [\"{zone_s}\"]\n\
                 allow_publish = [\"sensors.>\", \"alerts.>\"]\n\
                 config = {{ path = \"{zone_s}/temp\", limit = \"40\" }}"
            ),
        )
        + &agent_toml(
            "readfile",
            &agent_wasm("readfile-c"),
            &["files.read"],
            &format!("read = [\"{zone_s}\"]"),
        );
    let _node = Node::start(NodeSpec {
        id: "thermal",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let alert = crate::harness::next_json(&mut alerts).await;
    assert_eq!(alert["celsius"], 48.312, "{alert}");
    assert_eq!(alert["alert"], true, "{alert}");
    assert!(alert["at"].as_str().unwrap().ends_with('Z'), "{alert}");

    let path = format!("{zone_s}/temp");
    let contents = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "readfile serving",
        || async {
            let msg = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                hub.request("files.read", path.clone().into()),
            )
            .await
            .ok()?
            .ok()?;
            msg.headers.is_none().then(|| msg.payload.to_vec())
        },
    )
    .await;
    assert_eq!(contents, b"48312\n");
    let (code, message) = request_error(&hub, "files.read", "/etc/hostname").await;
    assert_eq!(code, "exit", "{message}");
    assert!(message.contains("readfile-c: /etc/hostname"), "{message}");
}

/// A loopback "HTTP server" that answers every connection with `hello from
/// <port>` and counts them; `silent` ones accept and never answer.
pub(crate) async fn tcp_server(
    silent: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if silent {
                held.push(conn);
                continue;
            }
            // Read the request first: closing with it unread would reset the
            // connection under the reply.
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request).await;
            let reply = format!("HTTP/1.0 200 OK\r\n\r\nhello from {port}");
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn connect_reaches_only_the_granted_addresses() {
    use std::sync::atomic::Ordering::SeqCst;
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let (allowed, allowed_hits) = tcp_server(false).await;
    let (other, other_hits) = tcp_server(false).await;
    let (silent, _) = tcp_server(true).await;
    let extra =
        format!("\n[devices]\nconnect = [\"127.0.0.1:{allowed}\", \"127.0.0.0/8:{silent}\"]\n")
            + &agent_toml(
                "net",
                &agent_wasm("hostile"),
                &["net.run"],
                &format!(
                    "connect = [\"127.0.0.1:{allowed}\", \"127.0.0.1:{silent}\"]\n\
             limits = {{ timeout = \"1s\", max_concurrency = 1 }}"
                ),
            )
            + &agent_toml(
                "greedy",
                &agent_wasm("hostile"),
                &["greedy.run"],
                &format!("connect = [\"127.0.0.1:{other}\"]"),
            );
    let _node = Node::start(NodeSpec {
        id: "netnode",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "net.run", "echo:up").await;

    let reply = request_ok(&hub, "net.run", &format!("tcp:127.0.0.1:{allowed}")).await;
    assert!(reply.ends_with(&format!("hello from {allowed}")), "{reply}");
    assert_eq!(allowed_hits.load(SeqCst), 1);

    // Another port, another address: refused before any packet leaves.
    for target in [format!("127.0.0.1:{other}"), format!("127.0.0.2:{allowed}")] {
        let message = refused(&hub, "net.run", &format!("tcp:{target}")).await;
        assert!(message.contains("access-denied"), "{target}: {message}");
    }
    assert_eq!(
        other_hits.load(SeqCst),
        0,
        "a refused connect reached the server"
    );
    assert_eq!(allowed_hits.load(SeqCst), 1);

    // A peer that never answers: the deadline ends the read; the instance is free.
    let (code, message) = request_error(&hub, "net.run", &format!("tcp:127.0.0.1:{silent}")).await;
    assert_eq!(code, "timeout", "{message}");
    assert_eq!(
        request_ok(&hub, "net.run", "echo:after").await,
        "echo:after"
    );

    // A grant outside the ceiling does not load.
    let rows: Vec<edgeleaf::protocol::AgentInfo> =
        crate::harness::control(&hub, "netnode", "agents").await;
    let greedy = rows.iter().find(|a| a.name == "greedy").unwrap();
    assert_eq!(greedy.state, "failed", "{greedy:?}");
    let error = greedy.error.as_deref().unwrap();
    assert!(
        error.contains("forbidden") && error.contains(&other.to_string()),
        "{error}"
    );
    let net = rows.iter().find(|a| a.name == "net").unwrap();
    assert_eq!(net.connect.len(), 2, "{net:?}");
}

/// `wasi:http` under the same grants: granted addresses and names answer; other
/// ports, names and agents without grants are denied before anything is sent;
/// the deadline ends a request to a peer that never answers.
#[tokio::test]
async fn http_reaches_only_the_granted_hosts() {
    use std::sync::atomic::Ordering::SeqCst;
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let (allowed, allowed_hits) = tcp_server(false).await;
    let (named, named_hits) = tcp_server(false).await;
    let (other, other_hits) = tcp_server(false).await;
    let (silent, _) = tcp_server(true).await;
    let extra = format!(
        "\n[devices]\nconnect = [\"127.0.0.1:{allowed}\", \"localhost:{named}\", \"127.0.0.0/8:{silent}\"]\n"
    ) + &agent_toml(
        "web",
        &agent_wasm("hostile"),
        &["web.run"],
        &format!(
            "connect = [\"127.0.0.1:{allowed}\", \"localhost:{named}\", \"127.0.0.1:{silent}\"]\n\
             limits = {{ timeout = \"1s\", max_concurrency = 1 }}"
        ),
    ) + &agent_toml("nogrant", &agent_wasm("hostile"), &["nogrant.run"], "");
    let _node = Node::start(NodeSpec {
        id: "webnode",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "web.run", "echo:up").await;
    serving(&hub, "nogrant.run", "echo:up").await;

    let reply = request_ok(
        &hub,
        "web.run",
        &format!("http:http://127.0.0.1:{allowed}/status"),
    )
    .await;
    assert_eq!(reply, format!("200 hello from {allowed}"));
    let reply = request_ok(&hub, "web.run", &format!("http:http://localhost:{named}/")).await;
    assert_eq!(reply, format!("200 hello from {named}"));
    assert_eq!((allowed_hits.load(SeqCst), named_hits.load(SeqCst)), (1, 1));

    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://localhost:{other}/"),
        format!("https://127.0.0.1:{other}/"),
        format!("http://127.0.0.2:{allowed}/"),
        "http://example.com/".to_owned(),
    ] {
        let message = refused(&hub, "web.run", &format!("http:{url}")).await;
        assert!(message.contains("denied by the node"), "{url}: {message}");
    }
    let message = refused(
        &hub,
        "nogrant.run",
        &format!("http:http://127.0.0.1:{allowed}/"),
    )
    .await;
    assert!(message.contains("denied by the node"), "{message}");
    assert_eq!(
        other_hits.load(SeqCst),
        0,
        "a denied request reached the server"
    );
    assert_eq!((allowed_hits.load(SeqCst), named_hits.load(SeqCst)), (1, 1));

    let (code, message) =
        request_error(&hub, "web.run", &format!("http:http://127.0.0.1:{silent}/")).await;
    assert_eq!(code, "timeout", "{message}");
    assert_eq!(
        request_ok(&hub, "web.run", "echo:after").await,
        "echo:after"
    );
}

/// A pseudo-terminal pair: the test holds the master side, an agent opens the
/// slave by its path, as it would a USB serial adapter.
struct Pty {
    master: std::fs::File,
    _slave: std::fs::File,
    path: String,
}

fn pty() -> Pty {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: valid out-pointers; a 128-byte name buffer is what openpty writes.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            name.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty wrote a NUL-terminated name; the fds are ours.
    unsafe {
        Pty {
            path: std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned(),
            master: std::fs::File::from_raw_fd(master),
            _slave: std::fs::File::from_raw_fd(slave),
        }
    }
}

#[tokio::test]
async fn serial_ports_are_reachable_only_when_granted() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let device = pty();
    let other = pty();
    let (dev, oth) = (device.path.clone(), other.path.clone());
    let extra = format!("\n[devices]\nserial = [\"{dev}\"]\n")
        + &agent_toml(
            "modem",
            &agent_wasm("hostile"),
            &["modem.run"],
            &format!(
                "serial = [\"{dev}@115200\"]\nlimits = {{ timeout = \"5s\", max_concurrency = 1 }}"
            ),
        )
        + &agent_toml(
            "greedy",
            &agent_wasm("hostile"),
            &["greedy.run"],
            &format!("serial = [\"{oth}\"]"),
        );
    let _node = Node::start(NodeSpec {
        id: "serialnode",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "modem.run", "echo:up").await;

    // The device answers "pong" once it has read "ping".
    let mut master = device.master.try_clone().unwrap();
    let device_side = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !String::from_utf8_lossy(&seen).contains("ping") {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        master.write_all(b"pong").unwrap();
        seen
    });
    assert_eq!(
        request_ok(&hub, "modem.run", &format!("serial:{dev}=ping")).await,
        "pong"
    );
    assert_eq!(device_side.join().unwrap(), b"ping");

    // A port the spec does not grant, even one the agent can name.
    let message = refused(&hub, "modem.run", &format!("serial:{oth}=x")).await;
    assert!(message.contains("not granted"), "{message}");

    // A device that stays silent: the deadline ends the wait, the instance is free.
    let (code, message) = request_error(&hub, "modem.run", &format!("serialwait:{dev}")).await;
    assert_eq!(code, "timeout", "{message}");
    assert_eq!(
        request_ok(&hub, "modem.run", "echo:after").await,
        "echo:after"
    );

    // A grant the node does not list does not load.
    let rows: Vec<edgeleaf::protocol::AgentInfo> =
        crate::harness::control(&hub, "serialnode", "agents").await;
    let greedy = rows.iter().find(|a| a.name == "greedy").unwrap();
    let error = greedy.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("forbidden") && error.contains(&oth),
        "{greedy:?}"
    );
}

/// `http-poll` on a timer with a connect grant: forwards the endpoint's body when
/// it changes, and only then.
#[tokio::test]
async fn the_http_poll_example_forwards_changes_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::sync::Arc::new(std::sync::Mutex::new(r#"{"power_w":1200}"#.to_owned()));
    let serving_body = body.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            // The whole request head, as a server would.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let now = serving_body.lock().unwrap().clone();
            let reply = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{now}");
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    let mut changes = hub.subscribe("plant.inverter").await.unwrap();
    hub.flush().await.unwrap();
    let extra = format!("\n[devices]\nconnect = [\"127.0.0.1:{port}\"]\n")
        + &agent_toml(
            "inverter",
            &agent_wasm("http-poll"),
            &[],
            &format!(
                "schedule = [\"@every 300ms\"]\nconnect = [\"127.0.0.1:{port}\"]\n\
                 allow_publish = [\"plant.>\"]\n\
                 config = {{ url = \"http://127.0.0.1:{port}/status.json\", subject = \"plant.inverter\" }}"
            ),
        );
    let _node = Node::start(NodeSpec {
        id: "poller",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    assert_eq!(next_text(&mut changes).await, r#"{"power_w":1200}"#);
    // Several more polls of the same body…
    crate::harness::eventually(std::time::Duration::from_secs(20), "more polls", || async {
        let rows: Vec<edgeleaf::protocol::AgentInfo> =
            crate::harness::control(&hub, "poller", "agents").await;
        let row = rows.into_iter().find(|a| a.name == "inverter")?;
        (row.invocations >= 4 && row.failures == 0).then_some(())
    })
    .await;
    // …then a change: the next message forwarded is the new body, none repeated.
    *body.lock().unwrap() = r#"{"power_w":900}"#.to_owned();
    assert_eq!(next_text(&mut changes).await, r#"{"power_w":900}"#);
}

/// The next message's payload as text, within 20 s.
async fn next_text(sub: &mut async_nats::Subscriber) -> String {
    use futures::StreamExt;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
        .await
        .expect("no message within 20 s")
        .unwrap();
    String::from_utf8_lossy(&msg.payload).into_owned()
}

/// A DNS name in `connect`: the node resolves it (here `localhost`, from
/// /etc/hosts), for its port only; names not granted resolve to nothing.
#[tokio::test]
async fn connect_by_name_resolves_only_granted_names() {
    use std::sync::atomic::Ordering::SeqCst;
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let (named, named_hits) = tcp_server(false).await;
    let (other, other_hits) = tcp_server(false).await;
    let extra = format!("\n[devices]\nconnect = [\"localhost:{named}\"]\n")
        + &agent_toml(
            "byname",
            &agent_wasm("hostile"),
            &["byname.run"],
            &format!("connect = [\"LOCALHOST:{named}\"]"),
        );
    let _node = Node::start(NodeSpec {
        id: "namenode",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    serving(&hub, "byname.run", "echo:up").await;
    let reply = request_ok(&hub, "byname.run", &format!("tcp:localhost:{named}")).await;
    assert!(reply.ends_with(&format!("hello from {named}")), "{reply}");
    assert_eq!(named_hits.load(SeqCst), 1);
    // The granted name on another port: resolved, but the connect is refused.
    let message = refused(&hub, "byname.run", &format!("tcp:localhost:{other}")).await;
    assert!(message.contains("access-denied"), "{message}");
    // A name no grant contains is not resolved at all.
    let message = refused(&hub, "byname.run", "tcp:example.com:80").await;
    assert!(
        message.contains("not in this agent's connect grants"),
        "{message}"
    );
    assert_eq!(other_hits.load(SeqCst), 0);
}
