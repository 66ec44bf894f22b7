//! Where results and events go: through the node's outbox (store-and-forward, the
//! daemon) or straight to NATS (`run-agent`, which has no hub to forward to).

use std::sync::Arc;

use async_nats::Client;

use crate::store::outbox::Outbox;

#[derive(Clone)]
pub enum Telemetry {
    /// Appended first, forwarded with JetStream acks by the forwarder.
    Outbox(Arc<Outbox>),
    /// Fire and forget.
    Direct(Client),
}

impl Telemetry {
    /// Records one message. In `sync` durability, returns once it is on disk.
    pub async fn emit(&self, subject: String, payload: Vec<u8>) {
        match self {
            Self::Outbox(outbox) => {
                if let Err(e) = outbox.append(&subject, &payload).await {
                    tracing::warn!(%subject, "not recorded: {e}");
                }
            }
            Self::Direct(client) => {
                if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                    tracing::warn!(%subject, "not published: {e}");
                }
            }
        }
    }
}
