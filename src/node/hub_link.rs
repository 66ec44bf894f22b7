//! Is the hub reachable, not only the leaf? The node only sees its leaf server, which
//! answers even when its link to the hub is down, so the node asks the hub's
//! JetStream (by its domain, through the leaf) for account info: an answer means up;
//! "no responders" or silence means down.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;

use super::NodeState;
use crate::protocol::LinkState;
use crate::shutdown::Shutdown;

/// How long a probe may take before the hub counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probe period while the link is down: notice its return quickly.
const WHILE_DOWN: Duration = Duration::from_secs(1);
/// Longest probe period while the link is up.
const WHILE_UP: Duration = Duration::from_secs(5);

pub(super) async fn run(state: Arc<NodeState>, client: Client, mut shutdown: Shutdown) {
    let up_period = state.config.heartbeat.interval.min(WHILE_UP);
    loop {
        probe(&state, &client).await;
        let period = match state.hub_link().state {
            LinkState::Up => up_period,
            LinkState::Down => WHILE_DOWN,
        };
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Probes once and records the result, logging changes.
pub(super) async fn probe(state: &NodeState, client: &Client) {
    let subject = format!("$JS.{}.API.INFO", state.config.leaf.domain);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.request(subject, "".into())).await;
    let new = match reply {
        Ok(Ok(_)) => LinkState::Up,
        _ => LinkState::Down,
    };
    if new == LinkState::Down && state.leaf.is_some() {
        // The leaf answers even when the hub refuses it; its log says why.
        if let Some(reason) = crate::natsd::last_error(&super::leaf::files(&state.config))
            && state.set_hub_link_reason(reason.clone())
        {
            tracing::warn!("hub link down; the leaf server reports: {reason}");
        }
    }
    if let Some(link) = state.set_hub_link(new) {
        match (link.state, reply) {
            (LinkState::Up, _) => tracing::info!("hub link up"),
            (LinkState::Down, Ok(Err(e))) => tracing::warn!("hub link down: {e}"),
            (LinkState::Down, _) => {
                tracing::warn!("hub link down: no reply within {PROBE_TIMEOUT:?}")
            }
        }
    }
}
