//! `edgeleaf upgrade`: ship an edgeleaf binary to nodes, or send them back to the
//! binary they kept. The binary goes to the hub's object store, a signed
//! announcement to `EDGELEAF_UPGRADES`, and each node does the rest
//! (`node::upgrade`): download, check, trial, and exec, or the previous binary again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::ConnOpts;
use super::deploy::TargetOpts;
use super::rollout::Wave;
use crate::config::parse_duration;
use crate::hub;
use crate::protocol::{NodeRow, NodeStatus, UPGRADES_BUCKET, UpgradeOutcome};
use crate::shipping::upgrade::{UpgradeSpec, elf_arch};
use crate::shipping::{ModuleRef, SecretKey, Target};
use async_nats::jetstream::kv;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The edgeleaf binary for one architecture (its ELF header says which).
    #[arg(required_unless_present = "rollback", conflicts_with = "rollback")]
    binary: Option<PathBuf>,
    /// The version the binary reports (`BINARY --version` prints `edgeleaf V`). With
    /// --rollback: only nodes that run V go back.
    #[arg(
        long = "version",
        value_name = "V",
        required_unless_present = "rollback"
    )]
    version: Option<String>,
    /// Send the targeted nodes back to the binary they kept from their last upgrade
    /// (once: a node keeps one).
    #[arg(long)]
    rollback: bool,
    /// With --rollback: the architecture of the nodes to send back. Default: every
    /// architecture among the targeted nodes.
    #[arg(long, requires = "rollback")]
    arch: Option<String>,
    #[command(flatten)]
    target: TargetOpts,
    /// Publisher secret key (from `edgeleaf keys gen`); nodes never take an unsigned
    /// binary.
    #[arg(long, env = "EDGELEAF_KEY")]
    key: PathBuf,
    /// How long to wait for the online targeted nodes to report; 0 does not wait.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    wait: Duration,
    /// Print one JSON object: what was announced and each node's outcome (with
    /// --waves also the rollout's `outcome`, `reason` and `waves`).
    #[arg(long)]
    json: bool,
    /// Upgrade in waves over the online targeted nodes (sorted by id), like `deploy
    /// --waves`: each entry is how many nodes run the new binary once that wave
    /// passed, a count or a share (`1,10%,100%`). A wave whose node fails halts the
    /// rollout and sends that wave back.
    #[arg(long, value_name = "WAVES", conflicts_with = "rollback")]
    waves: Option<String>,
    /// How long each wave must stay up on the new binary before the next starts.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "waves")]
    bake: Duration,
}

/// One node's outcome.
#[derive(Debug, Serialize)]
struct NodeOutcome {
    node_id: String,
    /// `upgraded`, `rolled_back`, `failed` (it runs the previous binary again),
    /// `unchanged` (nothing to roll back to), `pending` (offline: converges when
    /// it returns) or `no_report`.
    outcome: String,
    /// The version it runs, as last reported.
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The version announced; empty for a rollback.
    version: String,
    arch: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    keys: Vec<String>,
    nodes: Vec<NodeOutcome>,
    /// With --waves: `completed` or `halted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waves: Option<Vec<Wave>>,
}

/// Writes the signed announcement for `arch` under `kv_key`.
async fn announce(
    bucket: &kv::Store,
    key: &SecretKey,
    version: &str,
    arch: &str,
    module: Option<&ModuleRef>,
    kv_key: &str,
) -> Result<()> {
    let spec = UpgradeSpec::new(
        version.to_owned(),
        arch.to_owned(),
        module.cloned(),
        kv_key.to_owned(),
        key,
    );
    bucket
        .put(kv_key, spec.seal(key).into())
        .await
        .with_context(|| format!("cannot write {kv_key} in {UPGRADES_BUCKET}"))?;
    Ok(())
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let key = SecretKey::load(&args.key)?;
    let targets = args.target.targets()?;
    let client = conn.connect().await?;
    let js = hub::jetstream(client, conn.domain.as_deref());
    let bucket = js.get_key_value(UPGRADES_BUCKET).await.with_context(|| {
        format!("no {UPGRADES_BUCKET} bucket on the hub; run `edgeleaf hub init` (again) first")
    })?;
    let fleet = hub::fleet::nodes(&js, &conn.subjects()).await?;
    let targeted: Vec<&NodeRow> = fleet
        .iter()
        .filter(|n| {
            targets
                .iter()
                .any(|t| t.selects(&n.node_id, &n.heartbeat.tags))
        })
        .collect();

    let (version, arches, module) = match (&args.binary, &args.version) {
        (Some(path), Some(version)) => {
            let (arch, module) = check_binary(path, version, &targeted, &js).await?;
            (version.clone(), vec![arch], Some(module))
        }
        _ => {
            let arches: Vec<String> = match &args.arch {
                Some(a) => vec![a.clone()],
                None => {
                    let mut a: Vec<String> =
                        targeted.iter().map(|n| n.heartbeat.arch.clone()).collect();
                    a.sort();
                    a.dedup();
                    a
                }
            };
            if arches.is_empty() {
                bail!(
                    "no targeted node has sent a heartbeat: give --arch to roll back nodes not seen yet"
                );
            }
            (String::new(), arches, None)
        }
    };
    let before = snapshot(&targeted);
    let watched: Vec<&NodeRow> = targeted
        .into_iter()
        .filter(|n| arches.contains(&n.heartbeat.arch))
        .collect();
    if let (Some(waves), Some(module)) = (&args.waves, &module) {
        let hub = Hub {
            js: &js,
            conn,
            bucket: &bucket,
            key: &key,
            before: &before,
            wait: args.wait,
            json: args.json,
        };
        let arch = &arches[0];
        let keys: Vec<String> = targets.iter().map(|t| t.key(arch)).collect();
        let mut report = Report {
            version: version.clone(),
            arch: arches.clone(),
            digest: Some(module.digest.clone()),
            keys,
            nodes: Vec::new(),
            outcome: None,
            reason: None,
            waves: None,
        };
        return hub
            .roll(&mut report, module, waves, args.bake, &watched)
            .await;
    }
    let expect = Expect {
        version: &version,
        digest: module.as_ref().map(|m| m.digest.as_str()),
        rollback_of: args.version.as_deref().filter(|_| args.rollback),
    };
    let announced = expect.rollback_of.unwrap_or(&version);
    let mut keys = Vec::new();
    for arch in &arches {
        for target in &targets {
            let k = target.key(arch);
            announce(&bucket, &key, announced, arch, module.as_ref(), &k).await?;
            keys.push(k);
        }
    }
    if !args.json {
        let what = match (&module, &args.version) {
            (Some(_), _) => format!("edgeleaf {version}"),
            (None, Some(v)) => format!("rollback of {v}"),
            (None, None) => "rollback".into(),
        };
        eprintln!("announced {what} under {}", keys.join(", "));
        if watched.is_empty() {
            eprintln!(
                "no targeted node of that architecture has sent a heartbeat yet; they take it when they see it"
            );
        }
    }
    let nodes = wait(&js, conn, &watched, &expect, &before, args.wait).await?;
    let failed = nodes.iter().any(|n| n.outcome == "failed");
    let report = Report {
        version,
        arch: arches,
        digest: module.map(|m| m.digest),
        keys,
        nodes,
        outcome: None,
        reason: None,
        waves: None,
    };
    report.print(args.json)?;
    if failed {
        bail!("the upgrade failed on some nodes; they run their previous binary again");
    }
    Ok(())
}

impl Report {
    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        for n in &self.nodes {
            let reason = n
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            println!(
                "{:<20} {} (runs {}){reason}",
                n.node_id, n.outcome, n.version
            );
        }
        if let Some(outcome) = &self.outcome {
            let why = self
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!("upgrade to {}: {outcome}{why}", self.version);
            for (i, w) in self.waves.iter().flatten().enumerate() {
                println!("  wave {} {:<12} {}", i + 1, w.outcome, w.nodes.join(", "));
            }
        }
        Ok(())
    }
}

/// What `--waves` works with.
struct Hub<'a> {
    js: &'a async_nats::jetstream::Context,
    conn: &'a ConnOpts,
    bucket: &'a kv::Store,
    key: &'a SecretKey,
    before: &'a Before,
    wait: Duration,
    json: bool,
}

impl Hub<'_> {
    /// Moves the online nodes of `watched` to the binary wave by wave; once every
    /// wave passed, the targets' keys get it and the waves' node keys go.
    async fn roll(
        &self,
        report: &mut Report,
        module: &ModuleRef,
        spec: &str,
        bake: Duration,
        watched: &[&NodeRow],
    ) -> Result<()> {
        let mut online: Vec<&NodeRow> = watched
            .iter()
            .copied()
            .filter(|n| n.status == NodeStatus::Online)
            .collect();
        online.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        if online.is_empty() {
            bail!(
                "no online node is targeted: --waves needs nodes to watch (without it, offline nodes converge when they return)"
            );
        }
        let waves = super::rollout::split_waves(spec, &online)?;
        report.waves = Some(
            waves
                .iter()
                .map(|w| Wave {
                    nodes: w.iter().map(|n| n.node_id.clone()).collect(),
                    outcome: "pending".into(),
                })
                .collect(),
        );
        let arch = report.arch[0].clone();
        let version = report.version.clone();
        for (i, wave) in waves.iter().enumerate() {
            if !self.json {
                let ids: Vec<&str> = wave.iter().map(|n| n.node_id.as_str()).collect();
                eprintln!("wave {}: {}", i + 1, ids.join(", "));
            }
            // Each node's own key, with what it held before (put back on a halt).
            let mut prior = BTreeMap::new();
            for n in wave {
                let k = Target::Node(n.node_id.clone()).key(&arch);
                prior.insert(k.clone(), self.bucket.get(&k).await?);
                announce(self.bucket, self.key, &version, &arch, Some(module), &k).await?;
            }
            let expect = Expect {
                version: &version,
                digest: Some(&module.digest),
                rollback_of: None,
            };
            let outcomes = wait(self.js, self.conn, wave, &expect, self.before, self.wait).await?;
            let bad = outcomes
                .iter()
                .find(|o| o.outcome != "upgraded" && o.outcome != "unchanged");
            let why = match bad {
                Some(o) => Some(format!(
                    "{} {}{}",
                    o.node_id,
                    o.outcome,
                    o.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                )),
                None => self.bake(wave, &version, bake).await?,
            };
            report.nodes.extend(outcomes);
            let waves = report.waves.as_mut().expect("set above");
            if let Some(why) = why {
                self.send_back(wave, &arch, &version, prior).await?;
                waves[i].outcome = "rolled_back".into();
                report.outcome = Some("halted".into());
                report.reason = Some(format!("wave {}: {why}", i + 1));
                report.print(self.json)?;
                bail!("the upgrade halted in wave {}: {why}", i + 1);
            }
            waves[i].outcome = "passed".into();
        }
        // Every wave passed: the broad keys, then the waves' own keys go.
        for k in &report.keys {
            announce(self.bucket, self.key, &version, &arch, Some(module), k).await?;
        }
        for n in &online {
            let k = Target::Node(n.node_id.clone()).key(&arch);
            if !report.keys.contains(&k) {
                self.bucket
                    .delete(&k)
                    .await
                    .with_context(|| format!("cannot delete {k}"))?;
            }
        }
        report.outcome = Some("completed".into());
        report.print(self.json)
    }

    /// Watches a wave for `bake`: each node must stay online on `version`.
    async fn bake(
        &self,
        wave: &[&NodeRow],
        version: &str,
        bake: Duration,
    ) -> Result<Option<String>> {
        let until = Instant::now() + bake;
        loop {
            let fleet = hub::fleet::nodes(self.js, &self.conn.subjects()).await?;
            for n in wave {
                match fleet.iter().find(|r| r.node_id == n.node_id) {
                    Some(r) if r.status == NodeStatus::Offline => {
                        return Ok(Some(format!("{} went offline during the bake", n.node_id)));
                    }
                    Some(r) if r.heartbeat.version != version => {
                        return Ok(Some(format!(
                            "{} runs {} again during the bake",
                            n.node_id, r.heartbeat.version
                        )));
                    }
                    _ => {}
                }
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_secs(1).min(until - Instant::now())).await;
        }
    }

    /// A halted wave's nodes: those on the new binary (or on their way to it) roll
    /// back to the one they kept, then every node key of the wave is put back as it
    /// was.
    async fn send_back(
        &self,
        wave: &[&NodeRow],
        arch: &str,
        version: &str,
        prior: BTreeMap<String, Option<bytes::Bytes>>,
    ) -> Result<()> {
        let fleet = hub::fleet::nodes(self.js, &self.conn.subjects()).await?;
        let now: Vec<&NodeRow> = fleet
            .iter()
            .filter(|r| wave.iter().any(|n| n.node_id == r.node_id))
            .collect();
        // A rollback of this version only: a node that never ran it stays.
        for n in wave {
            let k = Target::Node(n.node_id.clone()).key(arch);
            announce(self.bucket, self.key, version, arch, None, &k).await?;
        }
        let expect = Expect {
            version: "",
            digest: None,
            rollback_of: Some(version),
        };
        for o in wait(
            self.js,
            self.conn,
            &now,
            &expect,
            &snapshot(&now),
            self.wait,
        )
        .await?
        {
            if o.outcome != "rolled_back" && o.outcome != "unchanged" {
                eprintln!(
                    "warning: {} did not roll back ({}); see `edgeleaf nodes`",
                    o.node_id, o.outcome
                );
            }
        }
        for (k, raw) in prior {
            match raw {
                Some(raw) => {
                    self.bucket
                        .put(&k, raw)
                        .await
                        .with_context(|| format!("cannot put {k} back"))?;
                }
                None => {
                    self.bucket
                        .delete(&k)
                        .await
                        .with_context(|| format!("cannot delete {k}"))?;
                }
            }
        }
        Ok(())
    }
}

/// Checks the binary against the version and the targeted nodes, and uploads it.
async fn check_binary(
    path: &PathBuf,
    version: &str,
    targeted: &[&NodeRow],
    js: &async_nats::jetstream::Context,
) -> Result<(String, ModuleRef)> {
    if !crate::version::valid(version) {
        bail!(
            "--version {version:?} is not a version (digits first, then letters, digits, . + - _)"
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let arch = elf_arch(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let other: Vec<String> = targeted
        .iter()
        .filter(|n| n.heartbeat.arch != arch)
        .map(|n| format!("{} ({})", n.node_id, n.heartbeat.arch))
        .collect();
    if !targeted.is_empty() && other.len() == targeted.len() {
        bail!(
            "{} is built for {arch}, and no targeted node runs on {arch}: {}",
            path.display(),
            other.join(", ")
        );
    }
    if !other.is_empty() {
        eprintln!(
            "warning: not for these targeted nodes (another architecture): {}",
            other.join(", ")
        );
    }
    // Where the binary runs here, check what it says before a fleet does.
    if arch == std::env::consts::ARCH {
        crate::shipping::upgrade::check_runs(path, version).await?;
    }
    let digest = super::deploy::upload_object(js, "binary", &bytes).await?;
    Ok((
        arch.to_owned(),
        ModuleRef {
            digest,
            size: bytes.len() as u64,
        },
    ))
}

/// Each node's version and last upgrade outcome when the CLI started: a later
/// outcome is one that differs.
type Before = BTreeMap<String, (String, Option<UpgradeOutcome>)>;

fn snapshot(nodes: &[&NodeRow]) -> Before {
    nodes
        .iter()
        .map(|n| {
            let hb = &n.heartbeat;
            (
                n.node_id.clone(),
                (hb.version.clone(), hb.upgrade.last.clone()),
            )
        })
        .collect()
}

/// What the CLI waits for: `version` running (its binary: `digest`), or, with
/// `version` empty, a rollback (of nodes running `rollback_of`, when given).
struct Expect<'a> {
    version: &'a str,
    digest: Option<&'a str>,
    rollback_of: Option<&'a str>,
}

/// Follows the nodes' heartbeats until each online one reported its outcome, or
/// `wait` ran out.
async fn wait(
    js: &async_nats::jetstream::Context,
    conn: &ConnOpts,
    nodes: &[&NodeRow],
    expect: &Expect<'_>,
    before: &Before,
    wait: Duration,
) -> Result<Vec<NodeOutcome>> {
    let deadline = Instant::now() + wait;
    let mut out: BTreeMap<String, NodeOutcome> = BTreeMap::new();
    for n in nodes {
        if n.status == NodeStatus::Offline {
            out.insert(n.node_id.clone(), outcome(n, "pending", None));
        }
    }
    loop {
        let fleet = hub::fleet::nodes(js, &conn.subjects()).await?;
        for n in &fleet {
            if !nodes.iter().any(|t| t.node_id == n.node_id) || out.contains_key(&n.node_id) {
                continue;
            }
            if let Some(done) = settled(n, expect, before.get(&n.node_id)) {
                out.insert(n.node_id.clone(), done);
            }
        }
        if out.len() == nodes.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in nodes {
        out.entry(n.node_id.clone())
            .or_insert_with(|| outcome(n, "no_report", None));
    }
    Ok(out.into_values().collect())
}

fn outcome(n: &NodeRow, what: &str, reason: Option<String>) -> NodeOutcome {
    NodeOutcome {
        node_id: n.node_id.clone(),
        outcome: what.to_owned(),
        version: n.heartbeat.version.clone(),
        reason,
    }
}

/// The node's outcome, once its heartbeat shows one. Never while a binary is on
/// trial there. An upgrade: the version running (`upgraded`, or `unchanged` if it
/// ran before), or a failed outcome for it, new since the CLI started or for this
/// very binary (refused earlier). A rollback: a new `rolled_back` or `failed`
/// outcome, or `unchanged` for a node not running the version rolled back, or with
/// nothing kept.
fn settled(
    n: &NodeRow,
    expect: &Expect<'_>,
    before: Option<&(String, Option<UpgradeOutcome>)>,
) -> Option<NodeOutcome> {
    let hb = &n.heartbeat;
    if hb.upgrade.staged.is_some() {
        return None;
    }
    let last = hb.upgrade.last.as_ref();
    let (before_version, before_last) = match before {
        Some((v, l)) => (Some(v.as_str()), l.as_ref()),
        None => (None, None),
    };
    let new_last = last.filter(|l| Some(*l) != before_last);
    if expect.version.is_empty() {
        return match new_last {
            Some(l) if l.outcome == "rolled_back" => Some(outcome(n, "rolled_back", None)),
            Some(l) if l.outcome == "failed" => Some(outcome(n, "failed", l.reason.clone())),
            _ => match expect.rollback_of {
                Some(v) if hb.version != v => Some(outcome(
                    n,
                    "unchanged",
                    Some(format!("runs {}, not {v}", hb.version)),
                )),
                _ if hb.upgrade.previous.is_none() => Some(outcome(
                    n,
                    "unchanged",
                    Some("nothing to roll back to".into()),
                )),
                _ => None,
            },
        };
    }
    if hb.version == expect.version {
        let already = before_version == Some(expect.version);
        return Some(outcome(
            n,
            if already { "unchanged" } else { "upgraded" },
            None,
        ));
    }
    match last {
        Some(l)
            if l.version == expect.version
                && l.outcome == "failed"
                && (new_last.is_some() || l.digest.as_deref() == expect.digest) =>
        {
            Some(outcome(n, "failed", l.reason.clone()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UpgradeInfo;

    fn row(version: &str, upgrade: UpgradeInfo) -> NodeRow {
        let mut heartbeat: crate::protocol::Heartbeat = serde_json::from_value(serde_json::json!({
            "node_id": "n1", "name": "n1", "version": version, "os": "linux", "arch": "x86_64",
            "tags": {}, "started_at": "2026-12-04T00:00:00Z", "uptime_s": 1, "seq": 1,
            "interval_s": 1.0, "cpu_pct": 0.0, "load1": 0.0, "mem_used": 0, "mem_total": 0,
            "disk_free": 0, "agents": {"running": 1, "failed": 0}, "invocations": 0,
            "outbox": {"depth": 0, "oldest_age_s": 0, "dropped": 0},
            "hub_link": {"state": "up", "since": "2026-12-04T00:00:00Z"},
            "wasm_compiler": "cranelift"
        }))
        .unwrap();
        heartbeat.upgrade = upgrade;
        NodeRow {
            node_id: "n1".into(),
            status: NodeStatus::Online,
            last_seen: String::new(),
            age_s: 0.0,
            heartbeat,
        }
    }

    fn last(version: &str, digest: &str, outcome: &str, at: &str) -> Option<UpgradeOutcome> {
        Some(UpgradeOutcome {
            version: version.into(),
            digest: Some(digest.into()),
            from: "1.0".into(),
            outcome: outcome.into(),
            reason: Some("why".into()),
            at: at.into(),
        })
    }

    fn of(o: Option<NodeOutcome>) -> Option<String> {
        o.map(|o| o.outcome)
    }

    const UP: Expect = Expect {
        version: "2.0",
        digest: Some("d2"),
        rollback_of: None,
    };

    #[test]
    fn an_upgrade_settles_on_the_version_or_on_a_failure_of_this_binary() {
        let before = ("1.0".to_owned(), None);
        let quiet = UpgradeInfo::default();
        assert_eq!(
            of(settled(&row("1.0", quiet.clone()), &UP, Some(&before))),
            None
        );
        assert_eq!(
            of(settled(&row("2.0", quiet.clone()), &UP, Some(&before))).as_deref(),
            Some("upgraded")
        );
        let again = ("2.0".to_owned(), None);
        assert_eq!(
            of(settled(&row("2.0", quiet), &UP, Some(&again))).as_deref(),
            Some("unchanged")
        );
        // On trial: not yet, whatever the version says.
        let trial = UpgradeInfo {
            staged: Some("2.0".into()),
            ..Default::default()
        };
        assert_eq!(of(settled(&row("2.0", trial), &UP, Some(&before))), None);
        // A failure: of this binary (even one from before), or a new one.
        let failed = UpgradeInfo {
            last: last("2.0", "d2", "failed", "t1"),
            ..Default::default()
        };
        let old_failure = ("1.0".to_owned(), failed.last.clone());
        assert_eq!(
            of(settled(
                &row("1.0", failed.clone()),
                &UP,
                Some(&old_failure)
            ))
            .as_deref(),
            Some("failed")
        );
        // An old failure of another build of 2.0 says nothing about this one.
        let other_build = UpgradeInfo {
            last: last("2.0", "d-old", "failed", "t0"),
            ..Default::default()
        };
        let before_other = ("1.0".to_owned(), other_build.last.clone());
        assert_eq!(
            of(settled(&row("1.0", other_build), &UP, Some(&before_other))),
            None
        );
        assert_eq!(
            of(settled(&row("1.0", failed), &UP, Some(&before_other))).as_deref(),
            Some("failed")
        );
    }

    #[test]
    fn a_rollback_settles_on_a_new_outcome_or_on_nothing_to_do() {
        let back = Expect {
            version: "",
            digest: None,
            rollback_of: Some("2.0"),
        };
        let kept = UpgradeInfo {
            previous: Some("1.0".into()),
            last: last("2.0", "d2", "succeeded", "t1"),
            ..Default::default()
        };
        let before = ("2.0".to_owned(), kept.last.clone());
        assert_eq!(
            of(settled(&row("2.0", kept.clone()), &back, Some(&before))),
            None
        );
        let rolled = UpgradeInfo {
            last: last("1.0", "d1", "rolled_back", "t2"),
            ..Default::default()
        };
        assert_eq!(
            of(settled(&row("1.0", rolled), &back, Some(&before))).as_deref(),
            Some("rolled_back")
        );
        let failed = UpgradeInfo {
            previous: Some("1.0".into()),
            last: last("1.0", "d1", "failed", "t2"),
            ..Default::default()
        };
        assert_eq!(
            of(settled(&row("2.0", failed), &back, Some(&before))).as_deref(),
            Some("failed")
        );
        // A node on another version, or with nothing kept, stays as it is.
        let elsewhere = ("1.5".to_owned(), None);
        assert_eq!(
            of(settled(&row("1.5", kept), &back, Some(&elsewhere))).as_deref(),
            Some("unchanged")
        );
        let any = Expect {
            rollback_of: None,
            ..back
        };
        let nothing = ("2.0".to_owned(), None);
        assert_eq!(
            of(settled(
                &row("2.0", UpgradeInfo::default()),
                &any,
                Some(&nothing)
            ))
            .as_deref(),
            Some("unchanged")
        );
    }
}
