//! The hub side, with no daemon of its own: the JetStream resources that carry
//! telemetry and shipping ([`init`]), the fleet view read from them ([`fleet`]), and
//! the node keys secrets are sealed to ([`node_keys`]).

pub mod accounts;
pub mod fleet;
pub mod init;
pub mod node_keys;

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
