//! Outbound TCP grants (`connect`): checked against the node's `[devices] connect`
//! when the agent loads, and enforced by wasmtime-wasi's socket address check on
//! every connect, before any packet leaves. Only connecting is allowed (with the
//! implicit bind it needs): no listening, no accepting, no UDP, no name lookup.

use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::protocol::ConnectRule;
use crate::runtime::AgentError;

/// Parses a spec's `connect` entries and checks each lies within one of the
/// ceiling's (same port, address or block inside). Refusals are `forbidden`.
pub fn resolve(
    agent: &str,
    grants: &[String],
    ceiling: &[String],
) -> Result<Vec<ConnectRule>, AgentError> {
    let ceiling: Vec<ConnectRule> = ceiling
        .iter()
        .filter_map(|c| ConnectRule::parse(c).ok())
        .collect();
    grants
        .iter()
        .map(|entry| {
            let rule = ConnectRule::parse(entry)
                .map_err(|e| AgentError::new("invalid_spec", format!("agent {agent}: {e}")))?;
            if ceiling.iter().any(|c| c.covers(&rule)) {
                Ok(rule)
            } else {
                Err(AgentError::new(
                    "forbidden",
                    format!(
                        "agent {agent}: connect grant {entry} is outside this node's [devices] connect ({})",
                        if ceiling.is_empty() {
                            "which allows nothing".to_owned()
                        } else {
                            ceiling
                                .iter()
                                .map(|c| format!("{}:{}", c.net, c.port))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ))
            }
        })
        .collect()
}

/// Lets a fresh instance connect where its grants allow; without grants TCP stays
/// off entirely.
pub fn apply(builder: &mut WasiCtxBuilder, rules: &Arc<[ConnectRule]>) {
    if rules.is_empty() {
        return;
    }
    let rules = rules.clone();
    builder
        .allow_tcp(true)
        .socket_addr_check(move |addr, usage| {
            let allowed = match usage {
                SocketAddrUse::TcpConnect => rules.iter().any(|r| r.allows(addr)),
                // The bind a connect makes implicitly: any local address, any port.
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { allowed })
        });
}
