//! One oversized result must not stop telemetry: records are capped below the
//! server's message size, and one the hub refuses anyway is set aside, counted and
//! reported while everything after it flows. (Before: a 700 KB reply of `"` made a
//! 1.4 MB record that the forwarder retried forever, and nothing after it arrived.)

use std::time::Duration;

use edgeleaf::protocol::OutboxStats;

use crate::harness::{
    Cluster, Node, NodeSpec, agent_toml, agent_wasm, control, eventually, request,
};

/// The newest record on `subject` in the hub's telemetry stream.
async fn last_record(
    js: &async_nats::jetstream::Context,
    subject: &str,
) -> Option<serde_json::Value> {
    let stream = js.get_stream("EDGELEAF_TELEMETRY").await.ok()?;
    let msg = stream.get_last_raw_message_by_subject(subject).await.ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

#[tokio::test]
async fn oversized_results_are_capped_and_refused_records_set_aside() {
    let cluster = Cluster::start().await;
    let _node = Node::start(NodeSpec {
        id: "chatty",
        url: Some(cluster.leaf.url()),
        extra: agent_toml(
            "hostile",
            &agent_wasm("hostile"),
            &["chatty.hostile"],
            "[agents.limits]\nmax_output = \"2MiB\"\nmemory = \"32MiB\"",
        ),
        ..Default::default()
    });
    let hub = async_nats::connect(cluster.hub.url()).await.unwrap();
    let js = async_nats::jetstream::new(hub.clone());
    let result_subject = "edgeleaf.res.chatty.hostile";

    eventually(Duration::from_secs(20), "hostile serving", || async {
        let reply = tokio::time::timeout(
            Duration::from_secs(1),
            hub.request("chatty.hostile", "echo:ready".into()),
        )
        .await;
        matches!(reply, Ok(Ok(_))).then_some(())
    })
    .await;

    // 700 KB of `"`: 1.4 MB as JSON, above the 1 MiB max_payload.
    let reply = request(&hub, "chatty.hostile", "quotes:700000").await;
    assert_eq!(reply.payload.len(), 700_000);
    let record = eventually(Duration::from_secs(20), "the capped record", || async {
        last_record(&js, result_subject)
            .await
            .filter(|r| r["output_size"] == 700_000)
    })
    .await;
    assert_eq!(
        record["output_truncated"], true,
        "{}",
        record["output_size"]
    );
    let kept = record["output"].as_str().unwrap().len();
    assert!(kept > 100_000 && kept < 700_000, "kept {kept} bytes");

    // A hub whose stream takes less than the server's max_payload refuses records
    // for good: set aside, and what follows still arrives.
    let mut config = js
        .get_stream("EDGELEAF_TELEMETRY")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_message_size = 64 * 1024;
    js.update_stream(config).await.unwrap();
    request(&hub, "chatty.hostile", "quotes:100000").await;
    request(&hub, "chatty.hostile", "echo:after the refused one").await;
    eventually(Duration::from_secs(20), "the next record", || async {
        last_record(&js, result_subject)
            .await
            .filter(|r| r["output"] == "echo:after the refused one")
    })
    .await;
    let stats: OutboxStats = control(&hub, "chatty", "outbox").await;
    assert_eq!(stats.set_aside, 1, "{stats:?}");
    let event = eventually(Duration::from_secs(20), "the set-aside event", || async {
        last_record(&js, "edgeleaf.evt.chatty.outbox_set_aside").await
    })
    .await;
    assert!(
        event["message"].as_str().unwrap().contains(result_subject),
        "{event}"
    );
}
