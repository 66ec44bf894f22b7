//! edgeleaf: a runtime for WASM agents on edge hosts.
//!
//! One node runs per host, next to a local nats-server that is a leaf node of a
//! central hub. The module map, from the wire inwards:
//!
//! - [`protocol`]: subjects and wire types; imports nothing else of the crate but
//!   [`schedule`], so the node and the CLI share one truth.
//! - [`config`]: the node's TOML, environment overrides, validation that names keys.
//! - [`connect`]: one way to open a NATS connection (credentials, TLS) for all callers.
//! - [`natsd`]: nats-server children — configs, readiness, restarts, no orphans. Used by
//!   the node for its leaf and by `edgeleaf up` for a hub as well.
//! - [`store`]: the node's sled database.
//! - [`runtime`]: wasmtime — the engine, the compiled-code cache, agents of both
//!   kinds (components of the `edgeleaf:agent` world, WASI preview1 commands).
//! - [`host`]: what agents can reach, one capability per file.
//! - [`schedule`]: agent timers (`@every`, cron) and when they fire next.
//! - [`node`]: the daemon — leaf supervision, heartbeats, hub-link probing, control.
//! - [`hub`]: hub-side resources and the fleet view, without a hub daemon.
//! - [`shipping`]: publisher keys, signed deployment specs, targets, module upload
//!   and fetch.
//! - [`cli`]: one file per subcommand; talks to nodes over NATS only.
//! - [`shutdown`]: the graceful-shutdown plumbing every long-lived task uses.
#![deny(rustdoc::broken_intra_doc_links)]

pub mod cli;
pub mod config;
pub mod connect;
pub mod host;
pub mod hub;
pub mod natsd;
pub mod node;
pub mod protocol;
pub mod runtime;
pub mod schedule;
pub mod shipping;
pub mod shutdown;
pub mod store;
pub mod version;
