//! The hub side, with no daemon of its own: the JetStream resources that carry
//! telemetry and shipping ([`init`]), and the fleet view read from them ([`fleet`]).

pub mod accounts;
pub mod fleet;
pub mod init;

use async_nats::Client;
use async_nats::jetstream::{self, Context};

/// A JetStream context on the hub: local when `domain` is `None` (connected to a hub
/// server), else through a leaf by the hub's domain.
pub fn jetstream(client: Client, domain: Option<&str>) -> Context {
    match domain {
        Some(d) => jetstream::with_domain(client, d),
        None => jetstream::new(client),
    }
}
