//! Agent timers: ticks on the node's own clock, offline, across restarts with one
//! owed run and no catch-up storm, overlapping ticks skipped, and the deploy flags.

use std::time::Duration;

use edgeleaf::protocol::{AgentInfo, ResultRecord};
use jiff::Timestamp;

use crate::cases::outbox::stored_results;
use crate::cases::shipping::{TrustingNode, deploy};
use crate::harness::{
    Cluster, Node, NodeSpec, Server, agent_toml, agent_wasm, control, eventually, free_port,
    hub_init,
};

/// A timer run's payload, as the echo agent returned it.
#[derive(Debug)]
struct TimerPayload {
    scheduled_at: Timestamp,
    fired_at: Timestamp,
    tick: u64,
}

fn payload(record: &ResultRecord) -> TimerPayload {
    assert!(record.ok, "{record:?}");
    let v: serde_json::Value = serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
    let at = |key: &str| -> Timestamp {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing: {v}"))
            .parse()
            .unwrap()
    };
    TimerPayload {
        scheduled_at: at("scheduled_at"),
        fired_at: at("fired_at"),
        tick: v["tick"].as_u64().unwrap(),
    }
}

/// The timer runs of `agent` the hub stored for `node`.
async fn runs(hub_url: &str, node: &str, agent: &str) -> Vec<TimerPayload> {
    stored_results(hub_url, node)
        .await
        .into_iter()
        .filter(|(_, r)| r.agent == agent)
        .map(|(_, r)| {
            assert_eq!(r.subject, format!("edgeleaf.timer.{node}.{agent}"));
            payload(&r)
        })
        .collect()
}

#[tokio::test]
async fn timers_fire_offline_and_owe_one_run_after_downtime() {
    let mut hub = Server::hub();
    hub_init(&hub.url()).await;
    let mut node = Node::start(NodeSpec {
        id: "clock",
        spawn_leaf: Some((free_port(), hub.leafnode_port.unwrap())),
        extra: agent_toml(
            "ticker",
            &agent_wasm("echo"),
            &[],
            "schedule = [\"@every 1s\"]",
        ),
        ..Default::default()
    });
    let url = hub.url();
    eventually(Duration::from_secs(30), "two runs online", || async {
        (runs(&url, "clock", "ticker").await.len() >= 2).then_some(())
    })
    .await;

    // Offline: the hub goes away, the timer keeps its rhythm, the outbox keeps
    // the results.
    hub.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    hub.restart();
    let before_stop = eventually(
        Duration::from_secs(30),
        "offline runs delivered",
        || async {
            let runs = runs(&url, "clock", "ticker").await;
            (runs.len() >= 6).then_some(runs)
        },
    )
    .await;
    for (i, run) in before_stop.iter().enumerate() {
        assert_eq!(
            run.tick,
            i as u64 + 1,
            "a tick went missing: {before_stop:?}"
        );
        assert_eq!(run.scheduled_at.as_millisecond() % 1000, 0, "{run:?}");
        assert!(run.fired_at >= run.scheduled_at, "{run:?}");
    }

    // Down for four ticks: one run is owed, not four.
    node.stop_with(libc::SIGTERM);
    let stopped = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted = Timestamp::now();
    node.spawn();
    let all = eventually(
        Duration::from_secs(30),
        "runs after the restart",
        || async {
            let runs = runs(&url, "clock", "ticker").await;
            runs.iter()
                .any(|r| r.fired_at > restarted && r.scheduled_at > restarted)
                .then_some(runs)
        },
    )
    .await;
    let last_before = all
        .iter()
        .filter(|r| r.fired_at < stopped)
        .map(|r| r.scheduled_at)
        .max()
        .unwrap();
    let owed: Vec<&TimerPayload> = all
        .iter()
        .filter(|r| r.scheduled_at > last_before && r.scheduled_at < restarted)
        .collect();
    assert_eq!(owed.len(), 1, "runs for ticks missed while down: {owed:?}");
    assert!(owed[0].fired_at > restarted, "{owed:?}");
    assert_eq!(owed[0].tick, 1, "{owed:?}");
}

#[tokio::test]
async fn a_tick_while_the_last_run_still_runs_is_skipped_and_counted() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = agent_toml(
        "slowtick",
        &agent_wasm("hostile"),
        &[],
        "schedule = [\"@every 200ms\"]\nconfig = { on_timer = \"sleep:700\" }\nlimits = { timeout = \"5s\" }",
    );
    let _node = Node::start(NodeSpec {
        id: "overlap",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    let info: AgentInfo = eventually(Duration::from_secs(30), "skipped ticks", || async {
        let rows: Vec<AgentInfo> = control(&hub, "overlap", "agents").await;
        let row = rows.into_iter().find(|a| a.name == "slowtick")?;
        (row.invocations >= 3 && row.skipped_ticks >= 6).then_some(row)
    })
    .await;
    assert_eq!(info.schedule, ["@every 200ms"]);
    assert!(
        info.next_run.is_some() && info.last_run.is_some(),
        "{info:?}"
    );
    // Each run takes 700 ms of 200 ms ticks: most ticks are skipped, and no run
    // ever overlaps another (each would be a result; there are as many results as
    // invocations, and invocations stay well below ticks).
    assert!(
        info.skipped_ticks >= 2 * info.invocations.saturating_sub(1),
        "{info:?}"
    );
    assert_eq!(info.failures, 0, "{info:?}");
}

#[tokio::test]
async fn deploy_every_and_cron_ship_a_timer_agent() {
    let node = TrustingNode::start("timed").await;
    let hub = async_nats::connect(&node.hub_url).await.unwrap();
    let svc = node.echo_svc();
    let trigger = svc.iter().position(|a| a == "--trigger").unwrap();
    // A timer agent needs no trigger.
    let mut timer_only: Vec<String> = svc[..trigger].to_vec();
    timer_only.extend_from_slice(&svc[trigger + 2..]);

    let mut bad = timer_only.clone();
    bad.extend(["--cron".into(), "61 * * * *".into()]);
    let (ok, text) = deploy(&node.hub_url, &bad).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("61 * * * *") && text.contains("minute"),
        "{text}"
    );

    let (ok, text) = deploy(&node.hub_url, &timer_only).await;
    assert!(!ok, "{text}");
    assert!(text.contains("--trigger"), "{text}");

    let mut good = timer_only.clone();
    good.extend(["--every", "500ms", "--cron", "0 0 1 1 *", "--jitter", "10%"].map(String::from));
    let (ok, text) = deploy(&node.hub_url, &good).await;
    assert!(ok, "{text}");
    let mut results = hub.subscribe("edgeleaf.res.timed.svc").await.unwrap();
    let record: ResultRecord =
        serde_json::from_value(crate::harness::next_json(&mut results).await).unwrap();
    assert_eq!(record.subject, "edgeleaf.timer.timed.svc");
    let run = payload(&record);
    // The tick is on a 500 ms boundary; the jitter moves the run, not the tick.
    assert_eq!(run.scheduled_at.as_millisecond() % 500, 0, "{run:?}");
    let rows = crate::harness::cli_json(&["agents", "--json", "-s", &node.hub_url]).await;
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "svc")
        .unwrap()
        .clone();
    assert_eq!(
        row["schedule"],
        serde_json::json!(["@every 500ms", "0 0 1 1 *"])
    );
    assert!(row["next_run"].is_string(), "{row}");
}

/// A node told to stop while a timer run is in progress lets the run finish (within
/// the agent's deadline, as an invocation in flight) and records its result before
/// it exits, instead of cutting it off unrecorded.
#[tokio::test]
async fn a_timer_run_in_progress_finishes_and_is_recorded_when_the_node_stops() {
    let cluster = Cluster::start().await;
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let extra = agent_toml(
        "longrun",
        &agent_wasm("hostile"),
        &[],
        "schedule = [\"@every 200ms\"]\nconfig = { on_timer = \"sleep:1500\" }\nlimits = { timeout = \"5s\" }",
    );
    let mut node = Node::start(NodeSpec {
        id: "stopping",
        url: Some(cluster.leaf.url()),
        extra,
        ..Default::default()
    });
    // A tick skipped before any run completed: the first run is in progress.
    eventually(Duration::from_secs(30), "first run in progress", || async {
        let rows: Vec<AgentInfo> = control(&hub, "stopping", "agents").await;
        let row = rows.into_iter().find(|a| a.name == "longrun")?;
        (row.invocations == 0 && row.skipped_ticks >= 1).then_some(())
    })
    .await;
    assert!(node.stop_with(libc::SIGTERM).success());

    // Its result is on the hub, or in the outbox the node left behind.
    let on_hub: Vec<ResultRecord> = stored_results(&cluster.hub.url(), "stopping")
        .await
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.agent == "longrun")
        .collect();
    let waiting: Vec<ResultRecord> = crate::cases::outbox::left_in_outbox(&node.state_dir())
        .into_iter()
        .filter(|e| e.subject == "edgeleaf.res.stopping.longrun")
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    let all: Vec<&ResultRecord> = on_hub.iter().chain(&waiting).collect();
    assert_eq!(all.len(), 1, "the run in progress, recorded once: {all:?}");
    assert!(all[0].ok, "it ran to its end: {:?}", all[0]);
    assert_eq!(all[0].output.as_deref(), Some("slept"));
    assert_eq!(all[0].subject, "edgeleaf.timer.stopping.longrun");
}
