//! Writing agents outside this repository: `edgeleaf new` and `edgeleaf build` in
//! every language, deployed to a real node and invoked; `edgeleaf dev` against
//! `edgeleaf up`, following edits; and the exact advice when a toolchain is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edgeleaf::protocol::{ERROR_HEADER, LogLine};
use futures::StreamExt;

use super::shipping::TrustingNode;
use crate::harness::{BIN, eventually, request_ok, signal};

/// Runs the CLI with more time than `harness::cli` gives (builds and compiles of
/// 12-18 MB components take a while on a loaded 2-core machine).
async fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env_remove("NATS_URL").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("edgeleaf did not finish within 600 s")
        .expect("cannot run edgeleaf")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `edgeleaf new --lang LANG NAME --dir DIR/NAME`; returns the project directory.
async fn new_project(dir: &Path, lang: &str, name: &str) -> PathBuf {
    let project = dir.join(name);
    let out = run(
        &[
            "new",
            "--lang",
            lang,
            name,
            "--dir",
            project.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "new failed: {}", text(&out));
    assert!(project.join("edgeleaf.toml").is_file());
    assert!(project.join("README.md").is_file());
    project
}

/// `edgeleaf build DIR`: its last line is the module's path, which holds wasm.
async fn build(project: &Path, name: &str) -> PathBuf {
    // Rust: share the guest workspace's target dir, where wasm-agents/build.sh has
    // already built std and the SDK's dependencies with the same settings.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-agents/target");
    let out = run(
        &["build", project.to_str().unwrap()],
        &[("CARGO_TARGET_DIR", target.to_str().unwrap())],
    )
    .await;
    assert!(out.status.success(), "build failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let expected = project.join("dist").join(format!("{name}.wasm"));
    assert_eq!(Path::new(last), expected, "{}", text(&out));
    let wasm = std::fs::read(&expected).unwrap();
    assert_eq!(&wasm[..4], b"\0asm", "{} is not wasm", expected.display());
    expected
}

/// Deploys `wasm` as `name` on `trigger` (plus `more` flags) to the node, signed.
async fn deploy(node: &TrustingNode, wasm: &Path, name: &str, trigger: &str, more: &[&str]) {
    let key = node.key.display().to_string();
    let mut args = vec![
        "deploy",
        wasm.to_str().unwrap(),
        "--name",
        name,
        "--trigger",
        trigger,
        "--node",
        &node.node.id,
        "--key",
        &key,
        "-s",
        &node.hub_url,
        "--wait",
        "300s",
    ];
    args.extend_from_slice(more);
    let out = run(&args, &[]).await;
    assert!(out.status.success(), "deploy failed: {}", text(&out));
    assert!(text(&out).contains("running version 1"), "{}", text(&out));
}

/// The next log line of `sub` (30 s at most).
async fn next_log(sub: &mut async_nats::Subscriber) -> LogLine {
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("no log line within 30 s")
        .unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

/// `new` → `build` → deploy → invoke, and the log line the template writes.
async fn a_new_agent_runs_on_a_node(lang: &str, node_id: &'static str) -> TrustingNode {
    a_new_agent_runs_on(lang, node_id, "").await
}

/// The same, on a node with `extra` lines in its config.
async fn a_new_agent_runs_on(lang: &str, node_id: &'static str, extra: &str) -> TrustingNode {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hello-{lang}");
    let project = new_project(dir.path(), lang, &name).await;
    let wasm = build(&project, &name).await;

    let node = TrustingNode::start_with(node_id, extra).await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let mut logs = hub
        .subscribe(format!("edgeleaf.log.{node_id}.{name}"))
        .await
        .unwrap();
    let trigger = format!("{name}.in");
    deploy(&node, &wasm, &name, &trigger, &[]).await;
    let reply = request_ok(&hub, &trigger, "hello from a test").await;
    assert_eq!(reply, "hello from a test");
    let line = next_log(&mut logs).await;
    assert_eq!(line.level, "info");
    assert_eq!(
        line.message,
        format!("{name} got 17 bytes on {trigger}"),
        "{line:?}"
    );
    node
}

#[tokio::test]
async fn a_new_rust_agent_builds_and_runs_on_a_node() {
    a_new_agent_runs_on_a_node("rust", "author-rs").await;
}

#[tokio::test]
async fn a_new_c_agent_builds_and_runs_on_a_node() {
    a_new_agent_runs_on_a_node("c", "author-c").await;
}

#[tokio::test]
async fn python_agents_build_and_run_on_a_node() {
    let node = a_new_agent_runs_on_a_node("python", "author-py").await;
    the_greeter_example_runs(&node, "greeter-py", "greet.py").await;
}

#[tokio::test]
async fn javascript_agents_build_and_run_on_a_node() {
    let (port, hits) = super::devices::tcp_server(false).await;
    let devices = format!("\n[devices]\nconnect = [\"127.0.0.1:{port}\"]\n");
    let node = a_new_agent_runs_on("js", "author-js", &devices).await;
    the_greeter_example_runs(&node, "greeter-js", "greet.js").await;

    // An async handle with fetch: outbound HTTP through the connect grant only.
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "js", "fetcher").await;
    std::fs::write(
        project.join("app.js"),
        "export async function handle(msg) {\n\
         \x20 const res = await fetch(new TextDecoder().decode(msg.payload));\n\
         \x20 return new TextEncoder().encode(`${res.status} ${await res.text()}`);\n\
         }\n",
    )
    .unwrap();
    let wasm = build(&project, "fetcher").await;
    let grant = format!("127.0.0.1:{port}");
    deploy(&node, &wasm, "fetcher", "fetch.js", &["--connect", &grant]).await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(
        request_ok(&hub, "fetch.js", &url).await,
        format!("200 hello from {port}")
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let (other, other_hits) = super::devices::tcp_server(false).await;
    let reply =
        crate::harness::request(&hub, "fetch.js", &format!("http://127.0.0.1:{other}/")).await;
    assert!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(ERROR_HEADER))
            .is_some(),
        "an ungranted fetch answered: {:?}",
        reply.payload
    );
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// The example in wasm-agents/examples/ uses kv, config, messaging and log.
async fn the_greeter_example_runs(node: &TrustingNode, name: &str, trigger: &str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("wasm-agents/examples")
        .join(name);
    let wasm = build(&example, name).await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let mut sent = hub.subscribe("greetings.sent").await.unwrap();
    let flags = [
        "--allow-publish",
        "greetings.sent",
        "--config",
        "greeting=hej",
    ];
    deploy(node, &wasm, name, trigger, &flags).await;
    assert_eq!(request_ok(&hub, trigger, "ana").await, "hej, ana! (#1)");
    assert_eq!(request_ok(&hub, trigger, " bo ").await, "hej, bo! (#2)");
    let published = tokio::time::timeout(Duration::from_secs(10), sent.next())
        .await
        .expect("nothing on greetings.sent")
        .unwrap();
    assert_eq!(published.payload.as_ref(), b"ana");
    // Not UTF-8: the agent's own error, and the count is untouched.
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        hub.request(trigger.to_owned(), vec![b'x', 0xff].into()),
    )
    .await
    .unwrap()
    .unwrap();
    let code = reply.headers.as_ref().and_then(|h| h.get(ERROR_HEADER));
    assert_eq!(code.map(|c| c.as_str()), Some("agent_error"));
    assert!(
        String::from_utf8_lossy(&reply.payload).contains("not UTF-8"),
        "{:?}",
        reply.payload
    );
    assert_eq!(request_ok(&hub, trigger, "cy").await, "hej, cy! (#3)");
}

/// `edgeleaf dev` against `edgeleaf up`: deploys, prints results and logs, follows
/// an edit, keeps the running version through a build that fails, stops on SIGINT.
#[tokio::test]
async fn dev_deploys_follows_edits_and_survives_a_broken_build() {
    let dir = tempfile::tempdir().unwrap();
    // dev finds .edgeleaf/up.json in a directory above the project.
    let state = dir.path().join(".edgeleaf");
    let up_log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let crate::harness::Up {
        child: mut up,
        hub_port,
        ..
    } = crate::harness::Up::spawn(&state, "dev-node", Stdio::null(), up_log.into());
    let up_json = state.join("up.json");
    eventually(Duration::from_secs(60), "up.json", || async {
        up_json.is_file().then_some(())
    })
    .await;
    let hub_url = format!("nats://127.0.0.1:{hub_port}");

    let project = new_project(dir.path(), "c", "hello-dev").await;
    let (out, err) = (dir.path().join("dev.out"), dir.path().join("dev.err"));
    let mut dev = tokio::process::Command::new(BIN)
        .arg("dev")
        .current_dir(&project)
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let printed = |what: String| {
        let (out, err) = (out.clone(), err.clone());
        async move {
            eventually(Duration::from_secs(90), &what, || async {
                let all = read(&out) + &read(&err);
                all.contains(&what).then_some(())
            })
            .await
        }
    };
    printed("dev-node             running version 1".into()).await;

    let hub = async_nats::connect(&hub_url).await.unwrap();
    assert_eq!(request_ok(&hub, "hello-dev.in", "one").await, "one");
    printed("result ok".into()).await;
    printed("on hello-dev.in: one".into()).await;
    printed("log info: hello-dev got 3 bytes on hello-dev.in".into()).await;

    // An edit: every reply now starts with "v2:".
    let source = project.join("agent.c");
    let code = std::fs::read_to_string(&source).unwrap();
    let edited = code.replacen(
        "size_t n, total = 0;",
        "size_t n, total = 0;\n    fputs(\"v2:\", stdout);",
        1,
    );
    assert_ne!(
        edited, code,
        "the template changed: update this test's edit"
    );
    std::fs::write(&source, &edited).unwrap();
    printed("dev-node             running version 2".into()).await;
    assert_eq!(request_ok(&hub, "hello-dev.in", "two").await, "v2:two");

    // A broken edit: the build fails, version 2 keeps answering.
    std::fs::write(&source, "this is not C\n").unwrap();
    printed("clang failed".into()).await;
    printed("waiting for a change".into()).await;
    assert_eq!(request_ok(&hub, "hello-dev.in", "three").await, "v2:three");
    assert!(!read(&out).contains("running version 3"), "{}", read(&out));

    signal(dev.id().unwrap(), libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait())
        .await
        .expect("dev did not stop on SIGINT")
        .unwrap();
    assert!(status.success(), "dev exited with {status}: {}", read(&err));
    assert!(read(&err).contains("stays deployed"), "{}", read(&err));

    signal(up.id().unwrap(), libc::SIGINT);
    let _ = tokio::time::timeout(Duration::from_secs(30), up.wait()).await;
}

/// With no toolchain on PATH (and none in the places `build` looks), each language
/// fails with the command that installs what is missing, and writes no module.
#[tokio::test]
async fn a_missing_toolchain_is_named_with_the_command_that_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (home, bare, with_node) = (
        dir.path().join("home"),
        dir.path().join("bare"),
        dir.path().join("with-node"),
    );
    for d in [&home, &bare, &with_node] {
        std::fs::create_dir_all(d).unwrap();
    }
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node is on PATH");
    std::os::unix::fs::symlink(node, with_node.join("node")).unwrap();

    let cases: [(&str, &Path, &[&str]); 5] = [
        (
            "python",
            &bare,
            &[
                "componentize-py is missing",
                "python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1",
            ],
        ),
        (
            "js",
            &bare,
            &["node is missing", "apt-get install -y nodejs npm"],
        ),
        (
            "js",
            &with_node,
            &[
                "componentize-js is missing",
                "npm install --save-dev @bytecodealliance/componentize-js@0.23.0",
            ],
        ),
        (
            "c",
            &bare,
            &["C toolchain is incomplete", "apt-get install -y clang"],
        ),
        (
            "rust",
            &bare,
            &[
                "no toolchain for wasm32-wasip2",
                "rustup target add wasm32-wasip2",
                "cargo install --locked wasm-component-ld",
            ],
        ),
    ];
    for (i, (lang, path, expected)) in cases.into_iter().enumerate() {
        let name = format!("missing{i}");
        let project = new_project(dir.path(), lang, &name).await;
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("build")
            .arg(&project)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home);
        let out = cmd.output().await.unwrap();
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{lang}: built without a toolchain: {all}"
        );
        for e in expected {
            assert!(all.contains(e), "{lang}: no {e:?} in: {all}");
        }
        assert!(!project.join("dist").join(format!("{name}.wasm")).exists());
    }
}
