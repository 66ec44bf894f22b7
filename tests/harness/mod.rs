//! Test harness: real nats-server hub and leaf on free loopback ports, each with its
//! own store directory, killed on drop; and the `edgeleaf` binary as a subprocess.
//!
//! The server configs are written here by hand, not with edgeleaf's own renderer, so
//! the node is tested against a hub it did not configure.

#![allow(dead_code)] // each test uses a different part

pub mod browser;
pub mod jwt;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_edgeleaf");

/// A port nobody listens on right now (the kernel picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub fn nats_server_bin() -> PathBuf {
    [
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
        "/usr/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("nats-server not installed (apt-get install nats-server)")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connect options that log in with the `user:password@` of `url` (async-nats
/// parses it but does not send it).
pub fn with_login(url: &str) -> async_nats::ConnectOptions {
    let addr: async_nats::ServerAddr = url.parse().expect("a NATS URL");
    match (addr.username(), addr.password()) {
        (Some(user), Some(password)) => {
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        }
        _ => async_nats::ConnectOptions::new(),
    }
}

/// Connects to `url`, logging in with the credentials in it.
pub async fn connect_url(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    with_login(url).connect(url).await
}

/// Polls `f` (blocking) until it returns `Some`, or gives `None` after `timeout`.
pub fn eventually_sync<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Is a process with this pid alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (or read from its pidfile).
    unsafe { libc::kill(pid as i32, sig) };
}

/// One nats-server process with its own directory; killed and deleted on drop.
pub struct Server {
    child: Child,
    /// To start the same server again (same ports, same store).
    name: String,
    pub dir: TempDir,
    pub port: u16,
    /// Only the hub listens for leafnodes.
    pub leafnode_port: Option<u16>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(
        name: &str,
        config: impl FnOnce(&Path) -> String,
        port: u16,
        leafnode_port: Option<u16>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edgeleaf-{name}-"))
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("server.conf"), config(dir.path())).unwrap();
        let child = Self::spawn(dir.path());
        let server = Self {
            child,
            name: name.to_owned(),
            dir,
            port,
            leafnode_port,
        };
        server.wait_ready(name);
        server
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        Command::new(nats_server_bin())
            .arg("-c")
            .arg(dir.join("server.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server")
    }

    /// Kills the server (SIGKILL): a crash, or a link cut from the device's side.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same server again, on the same ports with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready(&self.name.clone());
    }

    /// Waits until the server sends its INFO line to a client.
    fn wait_ready(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return;
                }
            }
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "{name} nats-server not ready: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A server with a config of the test's own: `config(dir, port, leafnode_port)`.
    /// `leafnodes` asks for a second free port for a leafnode listener.
    pub fn custom(
        name: &str,
        leafnodes: bool,
        config: impl FnOnce(&Path, u16, Option<u16>) -> String,
    ) -> Self {
        let port = free_port();
        let leafnode_port = leafnodes.then(free_port);
        Self::start(
            name,
            |dir| config(dir, port, leafnode_port),
            port,
            leafnode_port,
        )
    }

    /// A hub: JetStream (domain `hub`) and a leafnode listener.
    pub fn hub() -> Self {
        let (port, leafnode_port) = (free_port(), free_port());
        Self::start(
            "hub",
            |dir| {
                format!(
                    "server_name: test-hub\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\", domain: hub }}\n\
                     leafnodes {{ listen: 127.0.0.1:{leafnode_port} }}\n",
                    dir.join("js").display()
                )
            },
            port,
            Some(leafnode_port),
        )
    }

    /// A leaf without JetStream, linked to `hub`.
    pub fn leaf(hub: &Server) -> Self {
        let port = free_port();
        let remote = hub.leafnode_port.expect("not a hub");
        Self::start(
            "leaf",
            |_| {
                format!(
                    "server_name: test-leaf-{port}\nlisten: 127.0.0.1:{port}\n\
                     leafnodes {{ reconnect: 1, remotes = [ {{ url: \"nats-leaf://127.0.0.1:{remote}\" }} ] }}\n"
                )
            },
            port,
            None,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub, a leaf linked to it, and a client on each.
pub struct Cluster {
    pub hub: Server,
    pub leaf: Server,
}

impl Cluster {
    /// Starts both servers, creates the hub resources and waits until the leaf
    /// reaches the hub's JetStream.
    pub async fn start() -> Self {
        let hub = Server::hub();
        let leaf = Server::leaf(&hub);
        let cluster = Self { hub, leaf };
        hub_init(&cluster.hub.url()).await;
        cluster.wait_linked().await;
        cluster
    }

    pub async fn wait_linked(&self) {
        let client = async_nats::connect(self.leaf.url()).await.unwrap();
        eventually(Duration::from_secs(20), "leaf linked to hub", || {
            let client = client.clone();
            async move {
                let reply = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.request("$JS.hub.API.INFO", "".into()),
                )
                .await;
                matches!(reply, Ok(Ok(_))).then_some(())
            }
        })
        .await;
    }
}

/// `edgeleaf up` as a user runs it, on free loopback ports, with its state in
/// `state` and a 1 s heartbeat. Killed on drop.
pub struct Up {
    pub child: tokio::process::Child,
    pub hub_port: u16,
    pub leaf_port: u16,
}

impl Up {
    pub fn spawn(state: &Path, node_id: &str, stdout: Stdio, stderr: Stdio) -> Self {
        let (hub_port, leaf_port, leafnode_port) = (free_port(), free_port(), free_port());
        let child = tokio::process::Command::new(BIN)
            .arg("up")
            .arg("--state-dir")
            .arg(state)
            .args(["--hub-port", &hub_port.to_string()])
            .args(["--leaf-port", &leaf_port.to_string()])
            .args(["--hub-leafnode-port", &leafnode_port.to_string()])
            .args(["--heartbeat-interval", "1s", "--node-id", node_id])
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            child,
            hub_port,
            leaf_port,
        }
    }
}

/// `edgeleaf hub init` against `url`, asserting success.
pub async fn hub_init(url: &str) {
    let out = cli(&["hub", "init", "-s", url]).await;
    assert!(
        out.status.success(),
        "hub init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI to completion.
pub async fn cli(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("edgeleaf CLI did not finish within 60s")
        .expect("cannot run edgeleaf")
}

/// Waits until a node has started (or failed) its static agents.
pub async fn agents_settled(
    hub: &async_nats::Client,
    node: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(60), "agents loaded", || async {
        let rows: Vec<serde_json::Value> = control(hub, node, "agents").await;
        (rows.len() == count).then_some(rows)
    })
    .await
}

/// Runs `edgeleaf ARGS` and returns its stdout, asserting success.
pub async fn cli_ok(args: &[&str]) -> String {
    let out = cli(args).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "edgeleaf {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs the CLI and parses its stdout as JSON.
pub async fn cli_json(args: &[&str]) -> serde_json::Value {
    let out = cli(args).await;
    assert!(
        out.status.success(),
        "edgeleaf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "edgeleaf {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A publisher key made with `edgeleaf keys gen`; returns (secret key path, public key).
pub async fn publisher(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = cli(&["keys", "gen", "--out", path.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    (path, public)
}

pub fn trusting(public: &str) -> String {
    format!("\n[security]\ntrusted_publishers = [\"{public}\"]\n")
}

/// An `[[agents]]` table for a node config.
pub fn agent_toml(name: &str, wasm: &Path, triggers: &[&str], more: &str) -> String {
    format!(
        "\n[[agents]]\nname = \"{name}\"\nwasm = \"{}\"\ntriggers = [{}]\n{more}\n",
        wasm.display(),
        triggers
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The command that runs a node: this build's binary, or `$EDGELEAF_CROSS_NODE_BIN` (a
/// binary for another architecture) run by `$EDGELEAF_CROSS_NODE_RUNNER` (e.g.
/// `qemu-aarch64-static`), as `scripts/cross-smoke.sh` sets them.
pub fn node_command() -> Command {
    let bin = std::env::var("EDGELEAF_CROSS_NODE_BIN").unwrap_or_else(|_| BIN.to_owned());
    let runner = std::env::var("EDGELEAF_CROSS_NODE_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

/// The edgeleaf node built without a compiler (`--no-default-features`):
/// `$EDGELEAF_RUNTIME_ONLY_BIN` as `scripts/test.sh` builds it, or else built here
/// once into a target dir of its own (slow: a second build of the dependencies).
pub fn runtime_only_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("EDGELEAF_RUNTIME_ONLY_BIN") {
                return PathBuf::from(bin);
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let dir = root.join("target/runtime-only-tests");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--locked",
                    "--no-default-features",
                    "--bin",
                    "edgeleaf",
                ])
                .arg("--target-dir")
                .arg(&dir)
                .current_dir(root)
                .status()
                .expect("cannot run cargo");
            assert!(status.success(), "the runtime-only build failed");
            dir.join("debug/edgeleaf")
        })
        .clone()
}

/// A running `edgeleaf node`, with its config and state in a temp dir. Killed on drop.
pub struct Node {
    child: Option<Child>,
    pub dir: TempDir,
    pub id: String,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
}

/// What a test node needs to know; the rest of the config is written by `Node::start`.
pub struct NodeSpec<'a> {
    pub id: &'a str,
    /// `[nats] url`, for a node that uses an existing leaf.
    pub url: Option<String>,
    /// `(listen port, hub leafnode port)` for a node that spawns its own leaf.
    pub spawn_leaf: Option<(u16, u16)>,
    pub tags: &'a [(&'a str, &'a str)],
    pub interval: &'a str,
    /// The leaf's `hub_url`, when not the plain `nats-leaf://127.0.0.1:<port>` of
    /// `spawn_leaf` (e.g. with a user and password in it).
    pub hub_url: Option<String>,
    /// More lines for the `[nats]` section (credentials, TLS).
    pub nats: String,
    /// More lines for the `[leaf]` section (credentials, TLS).
    pub leaf: String,
    /// Appended to the config as is (e.g. `[[agents]]` tables).
    pub extra: String,
    /// Extra environment for the node process.
    pub env: &'a [(&'a str, &'a str)],
    /// Another edgeleaf binary for this node (e.g. [`runtime_only_bin`]).
    pub bin: Option<PathBuf>,
}

impl Default for NodeSpec<'_> {
    fn default() -> Self {
        Self {
            id: "n1",
            url: None,
            spawn_leaf: None,
            tags: &[],
            interval: "1s",
            hub_url: None,
            nats: String::new(),
            leaf: String::new(),
            extra: String::new(),
            env: &[],
            bin: None,
        }
    }
}

impl Node {
    pub fn start(spec: NodeSpec<'_>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("edgeleaf-node-")
            .tempdir()
            .unwrap();
        let mut toml = format!(
            "[node]\nid = \"{}\"\nstate_dir = \"{}\"\ntags = {{ {} }}\n[heartbeat]\ninterval = \"{}\"\n",
            spec.id,
            dir.path().join("state").display(),
            spec.tags
                .iter()
                .map(|(k, v)| format!("{k} = \"{v}\""))
                .collect::<Vec<_>>()
                .join(", "),
            spec.interval
        );
        if spec.url.is_some() || !spec.nats.is_empty() {
            toml += "[nats]\n";
            if let Some(url) = &spec.url {
                toml += &format!("url = \"{url}\"\n");
            }
            toml += &spec.nats;
            toml += "\n";
        }
        if let Some((listen, hub_leafnode)) = spec.spawn_leaf {
            let hub_url = spec
                .hub_url
                .clone()
                .unwrap_or_else(|| format!("nats-leaf://127.0.0.1:{hub_leafnode}"));
            toml += &format!(
                "[leaf]\nspawn = true\nlisten = \"127.0.0.1:{listen}\"\nhub_url = \"{hub_url}\"\n{}\n",
                spec.leaf
            );
        }
        toml += &spec.extra;
        std::fs::write(dir.path().join("node.toml"), toml).unwrap();
        let mut node = Self {
            child: None,
            dir,
            id: spec.id.to_owned(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            bin: spec.bin,
        };
        node.spawn();
        node
    }

    /// (Re)starts the process with the same config and state.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))
            .unwrap();
        let mut command = match &self.bin {
            Some(bin) => Command::new(bin),
            None => node_command(),
        };
        let child = command
            .args(["node", "-c"])
            .arg(self.dir.path().join("node.toml"))
            .env("EDGELEAF_LOG", "info,edgeleaf=debug")
            .env_remove("NATS_URL")
            .env_remove("EDGELEAF_CROSS_NODE_BIN")
            .env_remove("EDGELEAF_CROSS_NODE_RUNNER")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start edgeleaf node");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node not running").id()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A login to this node's spawned leaf on `port`: the local applications' user,
    /// or (`as_node`) the node's own, as a tampered device could read it.
    pub fn leaf_url(&self, port: u16, as_node: bool) -> String {
        let path = self.state_dir().join("leaf-users.json");
        let logins: serde_json::Value = eventually_sync(Duration::from_secs(20), || {
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
        })
        .unwrap_or_else(|| panic!("no {}", path.display()));
        let (user, password) = match as_node {
            true => ("edgeleaf-node", &logins["node_password"]),
            false => ("local", &logins["local_password"]),
        };
        format!(
            "nats://{user}:{}@127.0.0.1:{port}",
            password.as_str().expect("a password")
        )
    }

    /// The local applications' URL of this node's spawned leaf on `port`.
    pub fn local_url(&self, port: u16) -> String {
        self.leaf_url(port, false)
    }

    pub fn leaf_pidfile(&self) -> PathBuf {
        self.state_dir().join("leaf/nats-server.pid")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    pub fn stop_with(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("node not running");
        signal(child.id(), sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node did not stop within 20s after signal {sig}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first so the node stops its leaf server; then make sure.
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- node {} log ---\n{}", self.id, self.log());
        }
    }
}

/// A test PKI in a temp dir: a CA, a server certificate for 127.0.0.1 and
/// localhost, a client certificate, and a second CA that signed neither.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::Builder::new()
            .prefix("edgeleaf-pki-")
            .tempdir()
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, issuer) = ca("edgeleaf test CA");
        let (other_cert, _) = ca("some other CA");
        write("ca.pem", ca_cert.pem());
        write("other-ca.pem", other_cert.pem());
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["edgeleaf-client".to_owned()]),
        ] {
            let params = CertificateParams::new(sans).unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A nats-server `tls { }` block with the server certificate, verifying clients.
    pub fn server_tls_block(&self) -> String {
        format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 5 }}",
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem")
        )
    }

    /// A node's `tls = { ... }` with `ca_file` as the CA and the client certificate.
    pub fn node_tls(&self, ca_file: &str) -> String {
        format!(
            "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n",
            self.path(ca_file),
            self.path("client.pem"),
            self.path("client-key.pem")
        )
    }

    /// The CLI's `--tlsca/--tlscert/--tlskey` flags.
    pub fn cli_flags(&self) -> Vec<String> {
        vec![
            "--tlsca".into(),
            self.path("ca.pem"),
            "--tlscert".into(),
            self.path("client.pem"),
            "--tlskey".into(),
            self.path("client-key.pem"),
        ]
    }

    /// A test client with the CA and the client certificate.
    pub async fn client(&self, url: &str) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .add_root_certificates(self.path("ca.pem").into())
            .add_client_certificate(
                self.path("client.pem").into(),
                self.path("client-key.pem").into(),
            )
            .require_tls(true)
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("test client cannot connect to {url} with TLS: {e}"))
    }
}

/// The next message on `sub` as JSON; panics after 20 s.
pub async fn next_json(sub: &mut async_nats::Subscriber) -> serde_json::Value {
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("no message within 20s")
        .expect("subscription closed");
    serde_json::from_slice(&msg.payload).expect("message is not JSON")
}

/// Like [`cli_json`], but `None` when the command fails (e.g. a server is restarting).
pub async fn try_cli_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = cli(args).await;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The built agent `name` (`wasm-agents/dist/<name>.wasm`). The first call in a test
/// run builds every agent from source with `wasm-agents/build.sh` (quick when
/// nothing changed); later calls reuse that build. `scripts/test.sh` builds them
/// before `cargo test` and sets `EDGELEAF_AGENTS_BUILT=1` to skip this.
pub fn agent_wasm(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dist = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("EDGELEAF_AGENTS_BUILT").is_some() {
            return Ok(root.join("wasm-agents/dist"));
        }
        let out = Command::new("bash")
            .arg(root.join("wasm-agents/build.sh"))
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run wasm-agents/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "wasm-agents/build.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(root.join("wasm-agents/dist"))
    });
    let path = dist
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Waits (30 s at most) until a request on `subject` with `body` is answered with
/// `body` itself: an echoing agent is serving there.
pub async fn serving(client: &async_nats::Client, subject: &str, body: &str) {
    serving_within(client, subject, body, Duration::from_secs(30)).await
}

/// [`serving`], waiting up to `timeout`.
pub async fn serving_within(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
    timeout: Duration,
) {
    eventually(timeout, &format!("{subject} serving"), || async {
        let msg = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(subject.to_owned(), body.to_owned().into()),
        )
        .await
        .ok()?
        .ok()?;
        (msg.payload.as_ref() == body.as_bytes()).then_some(())
    })
    .await;
}

/// One request, bounded: panics when nothing answers within 20 s.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> async_nats::Message {
    tokio::time::timeout(
        Duration::from_secs(20),
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("no reply on {subject} within 20s"))
    .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"))
}

/// A request that expects an error reply: returns (code, message).
pub async fn request_error(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> (String, String) {
    let msg = request(client, subject, body).await;
    let code = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(edgeleaf::protocol::ERROR_HEADER))
        .map(|v| v.to_string())
        .unwrap_or_else(|| {
            panic!(
                "expected an error reply on {subject}, got {:?}",
                String::from_utf8_lossy(&msg.payload)
            )
        });
    (code, String::from_utf8_lossy(&msg.payload).into_owned())
}

/// A request that expects a successful reply: returns its body as text.
pub async fn request_ok(client: &async_nats::Client, subject: &str, body: &str) -> String {
    let msg = request(client, subject, body).await;
    if let Some(code) = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(edgeleaf::protocol::ERROR_HEADER))
    {
        panic!(
            "{subject}: error {code}: {}",
            String::from_utf8_lossy(&msg.payload)
        );
    }
    String::from_utf8_lossy(&msg.payload).into_owned()
}

/// Asks a node for `ctl.<node>.<what>` through the hub, once it answers.
pub async fn control<T: serde::de::DeserializeOwned>(
    hub: &async_nats::Client,
    node: &str,
    what: &str,
) -> T {
    eventually(Duration::from_secs(20), "control reply", || {
        try_control(hub, node, what)
    })
    .await
}

/// One `ctl.<node>.<what>` request (1 s): `None` if nobody answered in time; panics
/// on an error reply or a reply that is not JSON.
pub async fn try_control<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    node: &str,
    what: &str,
) -> Option<T> {
    let msg = tokio::time::timeout(
        Duration::from_secs(1),
        client.request(format!("edgeleaf.ctl.{node}.{what}"), "".into()),
    )
    .await
    .ok()?
    .ok()?;
    match serde_json::from_slice(&msg.payload).expect("control reply is not JSON") {
        edgeleaf::protocol::ControlReply::Ok(v) => Some(v),
        edgeleaf::protocol::ControlReply::Error(e) => panic!("{what} failed: {e:?}"),
    }
}
