//! One node must not be able to exhaust the hub: `hub init` sizes every stream and
//! bucket, and telemetry is kept per node and agent, so a flood evicts only the
//! flooder's own records. (Before: an 18 MB status value was accepted, and one
//! node could fill the shared telemetry stream and evict everyone's data.)

use crate::harness::{Server, cli};

#[tokio::test]
async fn hub_init_bounds_buckets_and_keeps_telemetry_fair_per_node() {
    let hub = Server::hub();
    let url = hub.url();
    let out = cli(&["hub", "init", "--telemetry-per-subject", "3", "-s", &url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Idempotent, and the second run updates what exists.
    let out = cli(&[
        "hub",
        "init",
        "--telemetry-per-subject",
        "3",
        "--json",
        "-s",
        &url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("updated"));

    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // A status value far above what a node writes is refused.
    let status = js.get_key_value("EDGELEAF_STATUS").await.unwrap();
    let refused = status.put("n1.echo", vec![b'x'; 100 * 1024].into()).await;
    assert!(refused.is_err(), "a 100 KiB status value was stored");
    status.put("n1.echo", "{}".into()).await.unwrap();

    // A node flooding its results evicts only its own.
    for i in 0..10 {
        js.publish("edgeleaf.res.flood.a", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.publish("edgeleaf.res.quiet.a", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    for i in 0..10 {
        js.publish("edgeleaf.res.flood.a", format!("late {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut telemetry = js.get_stream("EDGELEAF_TELEMETRY").await.unwrap();
    let info = telemetry.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 4, "{:?}", info.state);
    let quiet = telemetry
        .get_last_raw_message_by_subject("edgeleaf.res.quiet.a")
        .await
        .unwrap();
    assert_eq!(&quiet.payload[..], b"kept");
    assert_eq!(info.config.max_message_size, 1 << 20);

    // Every bucket and stream carries a size limit.
    for name in [
        "EDGELEAF_TELEMETRY",
        "EDGELEAF_HEARTBEATS",
        "KV_EDGELEAF_DEPLOYMENTS",
        "KV_EDGELEAF_STATUS",
        "KV_EDGELEAF_NODE_KEYS",
        "OBJ_EDGELEAF_MODULES",
    ] {
        let config = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
        assert!(
            config.max_bytes > 0 || config.max_message_size > 0,
            "{name} is unbounded"
        );
        assert!(
            config.max_consumers > 0,
            "{name} takes any number of consumers"
        );
    }
}
