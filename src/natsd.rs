//! Running `nats-server` processes as supervised children.
//!
//! Both the node (its leaf server) and `edgeleaf up` (a hub as well) need the same
//! thing: write a config, start the server, wait until it accepts clients, restart it
//! with capped backoff when it dies, stop it on shutdown, and never leave an orphan.
//! This module is that one piece; the callers only render configs.
//!
//! Orphans are prevented twice over: the child gets `PR_SET_PDEATHSIG` so the kernel
//! stops it when the supervising process dies (even by `kill -9`), and a pidfile in the
//! server's directory lets the next start find and stop a server that survived anyway.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::config::TlsFiles;

/// How long a server may take to accept clients after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// First restart delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long is considered healthy again: backoff resets.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Grace period between SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Finds `nats-server`: an explicit path, else `PATH`, else `/usr/sbin`.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_owned());
        }
        bail!(
            "nats-server not found at {} (leaf.nats_server)",
            p.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .context("nats-server not found on PATH or in /usr/sbin; install it (apt-get install nats-server) or set leaf.nats_server")
}

/// The files of one server, all in its own directory.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// One directory per server keeps a hub's and a leaf's files apart.
    pub dir: PathBuf,
}

impl ServerFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("nats-server.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }
    /// What the server printed before its logger took over (config errors).
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("nats-server.stderr")
    }
    pub fn jetstream(&self) -> PathBuf {
        self.dir.join("jetstream")
    }
}

/// Writes a file only its owner can read: a server config may carry credentials
/// (a hub URL with a password in it).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An older file keeps its mode on open; narrow it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` with an owner-only file in one step (written beside it, then
/// renamed): a reader sees the old file or the whole new one.
pub(crate) fn replace_private(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    write_private(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Quotes a string for the nats-server config format.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

fn common_header(out: &mut String, files: &ServerFiles, name: &str, listen: SocketAddr) {
    let _ = writeln!(
        out,
        "# written by edgeleaf; changes are overwritten at start"
    );
    let _ = writeln!(out, "server_name: {}", quote(name));
    let _ = writeln!(out, "listen: {}", quote(&listen.to_string()));
    let _ = writeln!(out, "log_file: {}", quote_path(&files.log()));
    let _ = writeln!(out, "logfile_size_limit: 10MB");
}

fn tls_block(out: &mut String, indent: &str, tls: &TlsFiles) {
    if tls.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}tls {{");
    for (key, path) in [
        ("ca_file", &tls.ca),
        ("cert_file", &tls.cert),
        ("key_file", &tls.key),
    ] {
        if let Some(p) = path {
            let _ = writeln!(out, "{indent}  {key}: {}", quote_path(p));
        }
    }
    let _ = writeln!(out, "{indent}}}");
}

/// The leaf's link to the hub.
#[derive(Debug, Clone)]
pub struct LeafRemote {
    /// The hub's servers: one, or each server of a hub cluster (the leaf moves to
    /// another when its link drops).
    pub urls: Vec<String>,
    pub creds: Option<PathBuf>,
    pub tls: TlsFiles,
}

/// One user of a server's client port. No `permissions`: everything.
#[derive(Clone)]
pub struct ClientUser {
    pub user: String,
    pub password: String,
    pub permissions: Option<Permissions>,
}

impl std::fmt::Debug for ClientUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUser")
            .field("user", &self.user)
            .field("password", &"***")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Subject permissions of a user: what it may publish and subscribe to. A deny
/// wins over an allow; a wildcard subscription that overlaps a deny is not sent the
/// denied messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
}

fn subject_list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn authorization_block(out: &mut String, users: &[ClientUser]) {
    if users.is_empty() {
        return;
    }
    let _ = writeln!(out, "authorization {{");
    let _ = writeln!(out, "  users = [");
    for u in users {
        let _ = write!(
            out,
            "    {{ user: {}, password: {}",
            quote(&u.user),
            quote(&u.password)
        );
        if let Some(p) = &u.permissions {
            let _ = write!(
                out,
                ", permissions: {{ publish: {{ allow: {}, deny: {} }}, subscribe: {{ allow: {}, deny: {} }} }}",
                subject_list(&p.publish_allow),
                subject_list(&p.publish_deny),
                subject_list(&p.subscribe_allow),
                subject_list(&p.subscribe_deny)
            );
        }
        let _ = writeln!(out, " }}");
    }
    let _ = writeln!(out, "  ]");
    let _ = writeln!(out, "}}");
}

/// Config of a leaf server: local clients on `listen` (logging in as one of `users`
/// when any are given), one remote to the hub, no JetStream of its own (clients
/// reach the hub's through its domain).
pub fn render_leaf(
    files: &ServerFiles,
    name: &str,
    listen: SocketAddr,
    users: &[ClientUser],
    remote: &LeafRemote,
) -> String {
    let mut out = String::new();
    common_header(&mut out, files, name, listen);
    authorization_block(&mut out, users);
    let _ = writeln!(out, "leafnodes {{");
    let _ = writeln!(out, "  reconnect: 1");
    let _ = writeln!(out, "  remotes = [ {{");
    let urls: Vec<String> = remote.urls.iter().map(|u| quote(u)).collect();
    let _ = writeln!(out, "    urls: [{}]", urls.join(", "));
    if let Some(creds) = &remote.creds {
        let _ = writeln!(out, "    credentials: {}", quote_path(creds));
    }
    tls_block(&mut out, "    ", &remote.tls);
    let _ = writeln!(out, "  }} ]");
    let _ = writeln!(out, "}}");
    out
}

/// Config of a single hub server with JetStream (file storage, `domain`) and a
/// leafnode listener.
pub fn render_hub(
    files: &ServerFiles,
    name: &str,
    listen: SocketAddr,
    leafnode_listen: SocketAddr,
    domain: &str,
) -> String {
    let mut out = String::new();
    common_header(&mut out, files, name, listen);
    let _ = writeln!(out, "jetstream {{");
    let _ = writeln!(out, "  store_dir: {}", quote_path(&files.jetstream()));
    let _ = writeln!(out, "  domain: {}", quote(domain));
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "leafnodes {{");
    let _ = writeln!(out, "  listen: {}", quote(&leafnode_listen.to_string()));
    let _ = writeln!(out, "}}");
    out
}

/// What to run: a role for messages, the binary, the files, the config text and the
/// client address used to tell when the server is ready.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// "hub" or "leaf": names the server in logs and errors.
    pub role: String,
    /// The config's `server_name`; readiness requires the server on `client_addr` to
    /// report it, so another server already on that port is not mistaken for ours.
    pub server_name: String,
    pub binary: PathBuf,
    pub files: ServerFiles,
    pub config: String,
    pub client_addr: SocketAddr,
}

/// Live facts about a supervised server, shared with whoever reports on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerStatus {
    pub pid: Option<u32>,
    pub restarts: u64,
}

/// A running, supervised nats-server. Stop it with [`Supervisor::stop`]; dropping it
/// also stops it (the task sees its stop channel close).
pub struct Supervisor {
    status: Arc<Mutex<ServerStatus>>,
    /// Dropping or sending on it ends the supervision loop, which stops the server.
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Writes the config, stops a stale server left by an earlier run, starts the
    /// server and waits until it accepts clients.
    pub async fn start(spec: ServerSpec) -> Result<Self> {
        std::fs::create_dir_all(&spec.files.dir)
            .with_context(|| format!("cannot create {}", spec.files.dir.display()))?;
        write_private(&spec.files.config(), &spec.config)?;
        stop_stale(&spec).await;
        let child = spawn_ready(&spec).await?;
        let status = Arc::new(Mutex::new(ServerStatus {
            pid: child.id(),
            restarts: 0,
        }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(spec, child, status.clone(), stop_rx));
        Ok(Self {
            status,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// A handle that reads the status after the supervisor moved elsewhere.
    pub fn status_handle(&self) -> Arc<Mutex<ServerStatus>> {
        self.status.clone()
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period) and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn supervise(
    spec: ServerSpec,
    mut child: Child,
    status: Arc<Mutex<ServerStatus>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut started = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => {
                terminate(&spec, &mut child).await;
                set_pid(&status, None);
                return;
            }
            exit = child.wait() => {
                set_pid(&status, None);
                let _ = std::fs::remove_file(spec.files.pid());
                if started.elapsed() >= STABLE_AFTER {
                    backoff = MIN_BACKOFF;
                }
                tracing::warn!(
                    role = %spec.role,
                    status = %exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    tail = %log_tail(&spec.files),
                    "nats-server exited; restarting in {backoff:?}"
                );
                // Keep trying until it runs again or we are told to stop.
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let mut fresh = match spawn(&spec) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(role = %spec.role, "restart failed: {e:#}; retrying in {backoff:?}");
                            continue;
                        }
                    };
                    let ready = tokio::select! {
                        _ = &mut stop => {
                            terminate(&spec, &mut fresh).await;
                            return;
                        }
                        r = wait_ready(&spec, &mut fresh) => r,
                    };
                    match ready.map(|()| fresh) {
                        Ok(c) => {
                            child = c;
                            started = Instant::now();
                            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                            s.pid = child.id();
                            s.restarts += 1;
                            tracing::info!(role = %spec.role, pid = ?s.pid, restarts = s.restarts, "nats-server restarted");
                            break;
                        }
                        Err(e) => tracing::warn!(role = %spec.role, "restart failed: {e:#}; retrying in {backoff:?}"),
                    }
                }
            }
        }
    }
}

fn set_pid(status: &Mutex<ServerStatus>, pid: Option<u32>) {
    status.lock().unwrap_or_else(|e| e.into_inner()).pid = pid;
}

/// Starts the server and waits until it greets a client as itself.
async fn spawn_ready(spec: &ServerSpec) -> Result<Child> {
    let mut child = spawn(spec)?;
    wait_ready(spec, &mut child).await?;
    Ok(child)
}

/// Starts the server process, after checking that its client port is free.
fn spawn(spec: &ServerSpec) -> Result<Child> {
    if let Err(e) = std::net::TcpListener::bind(spec.client_addr) {
        bail!(
            "{} nats-server cannot listen on {}: {e} (another process holds the port; pick another)",
            spec.role,
            spec.client_addr
        );
    }
    let stderr = std::fs::File::create(spec.files.stderr())
        .with_context(|| format!("cannot create {}", spec.files.stderr().display()))?;
    let mut cmd = Command::new(&spec.binary);
    cmd.arg("-c")
        .arg(spec.files.config())
        .stdin(Stdio::null())
        .stdout(stderr.try_clone()?)
        .stderr(stderr)
        // Own process group: a Ctrl-C in the terminal reaches us, and we stop the
        // server in order, instead of it dying under us and being "restarted".
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", spec.binary.display()))?;
    if let Some(pid) = child.id() {
        std::fs::write(spec.files.pid(), format!("{pid}\n"))
            .with_context(|| format!("cannot write {}", spec.files.pid().display()))?;
    }
    Ok(child)
}

/// Waits until the server greets clients; stops it if it never does.
async fn wait_ready(spec: &ServerSpec, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(exit) = child.try_wait()? {
            bail!(
                "{} nats-server exited at start ({exit}): {}",
                spec.role,
                log_tail(&spec.files)
            );
        }
        if greets(spec.client_addr, &spec.server_name).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            terminate(spec, child).await;
            bail!(
                "{} nats-server did not accept clients on {} within {READY_TIMEOUT:?}: {}",
                spec.role,
                spec.client_addr,
                log_tail(&spec.files)
            );
        }
        // Short: a node's start-up is mostly this wait (measured in BENCHMARKS.md).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True when the NATS server at `addr` greets a client with an INFO line naming
/// it `server_name`.
pub async fn greets(addr: SocketAddr, server_name: &str) -> bool {
    let probe = async {
        let s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.ok()?;
        let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?).ok()?;
        Some(info.get("server_name")?.as_str()? == server_name)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

async fn terminate(spec: &ServerSpec, child: &mut Child) {
    let pid = child.id();
    if stop_child(child, STOP_GRACE).await {
        tracing::warn!(role = %spec.role, pid, "nats-server ignored SIGTERM; killing it");
    }
    let _ = std::fs::remove_file(spec.files.pid());
}

/// Makes a child the kernel sends SIGTERM once we are gone (should we die without
/// stopping it). The kernel sends it when the thread that forked the child exits:
/// tokio's worker threads live as long as the runtime, and this is never called
/// from a blocking-pool thread (those exit when idle).
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`. Returns whether it had to
/// be killed.
pub(crate) async fn stop_child(child: &mut Child, grace: Duration) -> bool {
    let Some(pid) = child.id() else {
        return false;
    };
    // SAFETY: signalling our own child by pid, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        return false;
    }
    let _ = child.kill().await;
    true
}

/// Stops a server that an earlier run of ours left behind (we were `kill -9`ed and
/// the death signal did not fire, e.g. the server was re-parented in between). Only
/// a process whose command line names our config file is touched: pids get reused.
async fn stop_stale(spec: &ServerSpec) {
    let Some(pid) = std::fs::read_to_string(spec.files.pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !is_our_server(pid, &spec.files.config()) {
        let _ = std::fs::remove_file(spec.files.pid());
        return;
    }
    tracing::warn!(role = %spec.role, pid, "stopping a stale nats-server left by an earlier run");
    // SAFETY: plain kill(2) on a pid we verified through /proc.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while is_our_server(pid, &spec.files.config()) {
        if Instant::now() > deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(spec.files.pid());
}

/// Is `pid` a live (not zombie) process started with `config` on its command line?
pub fn is_our_server(pid: i32, config: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    let wanted = config.as_os_str().as_encoded_bytes();
    !zombie && cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

/// The last error the server logged since it last started: for a leaf whose link
/// is down, why the hub refuses it (a TLS or authorization failure) or cannot be
/// reached. Reads only the end of the log. (No line tells a working link from a
/// refused one on the leaf's side: 2.9 logs "Leafnode connection created" before the
/// hub authenticates it. So ask only while the link is known to be down.)
pub fn last_error(files: &ServerFiles) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut file = std::fs::File::open(files.log()).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .rev()
        // An error of an earlier run of the server (the log is appended to) is not
        // why the link is down now.
        .take_while(|line| !line.contains("Starting nats-server"))
        // Only the leafnode link's errors: not a local client's.
        .filter(|line| line.contains("eafnode") || line.contains(" lid:"))
        .find_map(|line| line.split_once("[ERR] "))
        .map(|(_, message)| message.trim().to_owned())
}

/// The last lines the server wrote, to explain why it stopped.
fn log_tail(files: &ServerFiles) -> String {
    let mut lines: Vec<String> = Vec::new();
    for path in [files.stderr(), files.log()] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            lines.extend(text.lines().rev().take(3).map(str::to_owned));
        }
        if !lines.is_empty() {
            break;
        }
    }
    if lines.is_empty() {
        return format!("(no output; see {})", files.log().display());
    }
    lines.reverse();
    lines.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_is_the_newest_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles::new(dir.path());
        assert_eq!(last_error(&files), None, "no log yet");
        let log = |lines: &[&str]| std::fs::write(files.log(), lines.join("\n") + "\n").unwrap();
        log(&[
            "[1] 2026/11/26 05:00:00.000000 [INF] Starting nats-server",
            "[1] 2026/11/26 05:00:01.000000 [ERR] 127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'",
            "[1] 2026/11/26 05:00:02.000000 [ERR] 127.0.0.1:7422 - lid:2 - TLS leafnode handshake error: x509: certificate signed by unknown authority",
        ]);
        assert_eq!(
            last_error(&files).as_deref(),
            Some(
                "127.0.0.1:7422 - lid:2 - TLS leafnode handshake error: x509: certificate signed by unknown authority"
            )
        );
        log(&[
            "[1] 2026/11/26 05:00:01.000000 [ERR] 127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'",
            "[1] 2026/11/26 05:00:03.000000 [INF] 127.0.0.1:7422 - lid:3 - Leafnode connection created for account: $G",
        ]);
        assert_eq!(
            last_error(&files).as_deref(),
            Some("127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'"),
            "logged before the hub authenticates, 'connection created' proves nothing"
        );
        log(&[
            "[1] 2026/11/26 05:00:01.000000 [ERR] 127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'",
            "[1] 2026/11/26 05:00:02.000000 [ERR] 127.0.0.1:40000 - cid:9 - maximum payload exceeded",
        ]);
        assert_eq!(
            last_error(&files).as_deref(),
            Some("127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'"),
            "a local client's error is not the link's"
        );
        log(&[
            "[1] 2026/11/25 05:00:01.000000 [ERR] 127.0.0.1:7422 - lid:1 - Leafnode Error 'Authorization Violation'",
            "[2] 2026/11/26 05:00:00.000000 [INF] Starting nats-server",
            "[2] 2026/11/26 05:00:00.000000 [INF]   Version:  2.9.10",
        ]);
        assert_eq!(last_error(&files), None, "an earlier run's error");
    }

    #[test]
    fn leaf_config_carries_remote_credentials_and_tls() {
        let files = ServerFiles::new("/state/leaf");
        let text = render_leaf(
            &files,
            "leaf-gw1",
            "127.0.0.1:4222".parse().unwrap(),
            &[
                ClientUser {
                    user: "node".into(),
                    password: "pw\"1".into(),
                    permissions: None,
                },
                ClientUser {
                    user: "local".into(),
                    password: "pw2".into(),
                    permissions: Some(Permissions {
                        publish_allow: vec![">".into()],
                        publish_deny: vec!["$JS.>".into(), "edgeleaf.hb.>".into()],
                        subscribe_allow: vec![">".into()],
                        subscribe_deny: vec!["_INBOX_gw1.>".into()],
                    }),
                },
            ],
            &LeafRemote {
                urls: vec!["nats-leaf://hub:7422".into()],
                creds: Some("/etc/leaf.creds".into()),
                tls: TlsFiles {
                    ca: Some("/etc/ca.pem".into()),
                    ..Default::default()
                },
            },
        );
        assert!(text.contains("urls: [\"nats-leaf://hub:7422\"]"), "{text}");
        assert!(text.contains("credentials: \"/etc/leaf.creds\""), "{text}");
        assert!(text.contains("ca_file: \"/etc/ca.pem\""), "{text}");
        assert!(!text.contains("jetstream"), "{text}");
        assert!(
            text.contains(r#"{ user: "node", password: "pw\"1" }"#),
            "{text}"
        );
        assert!(
            text.contains(r#"publish: { allow: [">"], deny: ["$JS.>", "edgeleaf.hb.>"] }"#),
            "{text}"
        );
        assert!(
            text.contains(r#"subscribe: { allow: [">"], deny: ["_INBOX_gw1.>"] }"#),
            "{text}"
        );
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
