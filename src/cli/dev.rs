//! `edgeleaf dev [DIR]`: the inner loop of writing an agent. Builds the project,
//! deploys it to one node (the one `edgeleaf up` runs, by default, with its publisher
//! key), then rebuilds and redeploys on every change to the project's files, and
//! prints each invocation's result and log line as the hub receives them, until
//! Ctrl-C. A build that fails, or a version the node refuses, leaves the running
//! version in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use super::ConnOpts;
use super::deploy::{Release, print_outcome, wait_for_nodes};
use super::project::{MANIFEST, Project};
use super::up::UpFile;
use crate::config::parse_duration;
use crate::protocol::{LogLine, ResultRecord};
use crate::shipping::{SecretKey, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory (with an edgeleaf.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The up.json of the `edgeleaf up` to deploy to: its hub URL, node and publisher
    /// key, wherever -s, --node and --key do not give them. Default: the first
    /// `.edgeleaf/up.json` in the current directory or one above it.
    #[arg(long, value_name = "FILE")]
    up: Option<PathBuf>,
    /// The node to deploy to. Default: up.json's.
    #[arg(long)]
    node: Option<String>,
    /// Publisher secret key the node trusts. Default: up.json's.
    #[arg(long)]
    key: Option<PathBuf>,
    /// How long to wait for the node to run each version.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    wait: Duration,
    /// How often to look for changed files.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    poll: Duration,
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let (conn, node, key) = resolve(&args, conn)?;
    let mut project = Project::load(&args.dir)?;
    let name = project.agent.name.clone();
    let client = conn.connect().await?;
    let js = crate::hub::jetstream(client.clone(), conn.domain.as_deref());
    let subjects = conn.subjects();
    // What the agent does, as it reaches the hub (results and logs are forwarded
    // by the node's outbox, so they arrive even after a hub outage).
    let results = client.subscribe(subjects.result(&node, &name)).await?;
    let logs = client.subscribe(subjects.log(&node, &name)).await?;
    let printer = tokio::spawn(print_activity(results, logs));
    eprintln!(
        "dev: {name} in {} → node {node} on {}; Ctrl-C stops",
        args.dir.display(),
        conn.url()
    );

    let signal = crate::shutdown::signal();
    tokio::pin!(signal);
    let mut seen = fingerprint(&args.dir);
    let mut deployed: Option<(String, String)> = None;
    let mut changed = true;
    loop {
        if changed {
            changed = false;
            let cycle = cycle(&args, &conn, &js, &mut project, &node, &key, &mut deployed);
            tokio::select! {
                outcome = cycle => {
                    if let Err(e) = outcome {
                        eprintln!("dev: {e:#}\ndev: waiting for a change");
                    }
                }
                _ = &mut signal => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(args.poll) => {
                let now = fingerprint(&args.dir);
                if now != seen {
                    seen = now;
                    changed = true;
                }
            }
            _ = &mut signal => break,
        }
    }
    printer.abort();
    eprintln!(
        "dev: stopped; {name} stays deployed on {node} (`edgeleaf undeploy {name} --node {node}` removes it)"
    );
    Ok(())
}

/// One round: reload the manifest, build, and deploy when the module or the spec
/// changed since the last deploy.
async fn cycle(
    args: &Args,
    conn: &ConnOpts,
    js: &async_nats::jetstream::Context,
    project: &mut Project,
    node: &str,
    key: &SecretKey,
    deployed: &mut Option<(String, String)>,
) -> Result<()> {
    let reloaded = Project::load(&args.dir)?;
    if reloaded.agent.name != project.agent.name {
        bail!(
            "{MANIFEST}: the agent's name changed to {:?}; restart `edgeleaf dev` to follow it",
            reloaded.agent.name
        );
    }
    let (reloaded, built) = tokio::task::spawn_blocking(move || {
        let built = reloaded.build();
        (reloaded, built)
    })
    .await?;
    *project = reloaded;
    let wasm_path = built?;
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let spec = project.agent.spec();
    spec.check(&conn.prefix)
        .map_err(|e| anyhow::anyhow!("{MANIFEST}: {}: {}", e.code, e.message))?;
    let this = (
        crate::shipping::modules::digest(&wasm),
        serde_json::to_string(&spec)?,
    );
    if deployed.as_ref() == Some(&this) {
        eprintln!("dev: the module and its spec did not change; nothing to deploy");
        return Ok(());
    }
    let targets = [Target::Node(node.to_owned())];
    let written = Release {
        agent: &spec,
        wasm: &wasm,
        key: Some(key),
        targets: &targets,
        set_version: None,
        keep_kv: false,
        sealed: Vec::new(),
        artifacts: Default::default(),
        quiet: false,
    }
    .write(js)
    .await?;
    let outcomes = wait_for_nodes(
        js,
        conn,
        &targets,
        &spec.name,
        written.version,
        &written.envelopes,
        args.wait,
    )
    .await?;
    for o in &outcomes {
        print_outcome(o);
    }
    if outcomes.iter().all(|o| o.state == "running") {
        *deployed = Some(this);
    }
    Ok(())
}

/// The connection (up.json's hub unless -s is given), the node and the key.
fn resolve(args: &Args, conn: &ConnOpts) -> Result<(ConnOpts, String, SecretKey)> {
    let path = match &args.up {
        Some(path) => Some(path.clone()),
        None => std::env::current_dir()?
            .ancestors()
            .map(|d| d.join(".edgeleaf/up.json"))
            .find(|p| p.is_file()),
    };
    let up: Option<UpFile> = match &path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not an up.json", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        },
        None => None,
    };
    let missing = |what: &str| {
        let looked = match &path {
            Some(path) => format!("{} does not exist", path.display()),
            None => "no .edgeleaf/up.json here or in a directory above".to_owned(),
        };
        anyhow::anyhow!(
            "no {what}: {looked}. Start `edgeleaf up` (or give --up FILE), or give -s URL, \
             --node ID and --key FILE"
        )
    };
    let mut conn = conn.clone();
    if conn.server.is_none() {
        let up = up.as_ref().ok_or_else(|| missing("hub URL (-s)"))?;
        conn.server = Some(up.hub_url.clone());
    }
    let node = match (&args.node, &up) {
        (Some(node), _) => node.clone(),
        (None, Some(up)) => up.node_id.clone(),
        (None, None) => return Err(missing("node (--node)")),
    };
    if !crate::protocol::is_token(&node) {
        bail!("--node {node:?} is not a node id (a single NATS token)");
    }
    let key_path = match (&args.key, &up) {
        (Some(path), _) => path.clone(),
        (None, Some(up)) => up.publisher_key.clone(),
        (None, None) => return Err(missing("publisher key (--key)")),
    };
    Ok((conn, node, SecretKey::load(&key_path)?))
}

/// Prints result records and log lines until the subscriptions end.
async fn print_activity(results: async_nats::Subscriber, logs: async_nats::Subscriber) {
    enum Seen {
        Result(ResultRecord),
        Log(LogLine),
    }
    let results = results
        .filter_map(|m| async move { serde_json::from_slice(&m.payload).ok().map(Seen::Result) });
    let logs =
        logs.filter_map(|m| async move { serde_json::from_slice(&m.payload).ok().map(Seen::Log) });
    let mut both = futures::stream::select(Box::pin(results), Box::pin(logs));
    while let Some(seen) = both.next().await {
        match seen {
            Seen::Result(r) => println!("{}", result_line(&r)),
            Seen::Log(l) => println!("log {}: {}", l.level, l.message),
        }
    }
}

/// `result ok (1.2 ms) on hello.in: <output>` / `result failed (…): code: message`.
fn result_line(r: &ResultRecord) -> String {
    let took = format!("{:.1} ms", r.duration_us as f64 / 1000.0);
    match (&r.error, r.ok) {
        (Some(e), _) => format!(
            "result failed ({took}) on {}: {}: {}",
            r.subject, e.code, e.message
        ),
        (None, false) => format!("result failed ({took}) on {}", r.subject),
        (None, true) => {
            let output = match (&r.output, &r.output_base64) {
                (Some(text), _) => shorten(text),
                (None, Some(_)) => format!("<{} bytes, not UTF-8>", r.output_size),
                (None, None) => String::new(),
            };
            format!("result ok ({took}) on {}: {output}", r.subject)
        }
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// Every source file's path, modification time and size: what a rebuild depends
/// on. Build outputs and tool directories are left out.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    const SKIP: &[&str] = &["dist", "target", "node_modules", "__pycache__"];
    const MAX_FILES: usize = 10_000;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || SKIP.contains(&name.as_ref()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if out.len() < MAX_FILES {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((entry.path(), modified, meta.len()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_sees_edits_but_not_build_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "a").unwrap();
        std::fs::create_dir_all(dir.path().join("dist")).unwrap();
        let before = fingerprint(dir.path());
        std::fs::write(dir.path().join("dist/x.wasm"), "built").unwrap();
        std::fs::create_dir_all(dir.path().join(".venv")).unwrap();
        std::fs::write(dir.path().join(".venv/y"), "tool").unwrap();
        assert_eq!(fingerprint(dir.path()), before);
        std::fs::write(dir.path().join("app.py"), "ab").unwrap();
        assert_ne!(fingerprint(dir.path()), before);
    }

    #[test]
    fn results_read_as_one_line() {
        let mut r = ResultRecord {
            node_id: "n".into(),
            agent: "a".into(),
            subject: "a.in".into(),
            at: String::new(),
            duration_us: 1500,
            ok: true,
            output_size: 2,
            output: Some("hi".into()),
            output_base64: None,
            error: None,
            output_truncated: false,
            task_id: None,
        };
        assert_eq!(result_line(&r), "result ok (1.5 ms) on a.in: hi");
        r.ok = false;
        r.error = Some(crate::protocol::ErrorBody::new("agent_error", "boom"));
        assert_eq!(
            result_line(&r),
            "result failed (1.5 ms) on a.in: agent_error: boom"
        );
    }
}
