//! Outbound TCP grants (`connect`): checked against the node's `[devices] connect`
//! when the agent loads, and enforced by wasmtime-wasi's socket address check on
//! every connect, before any packet leaves. Only connecting is allowed (with the
//! implicit bind it needs): no listening, no accepting, no UDP, and no WASI name
//! lookup: the `dns` import resolves the names the grants contain, and no other.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::protocol::ConnectRule;
use crate::runtime::AgentError;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::dns::Host;

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
                        super::describe_ceiling(ceiling.iter().map(ToString::to_string))
                    ),
                ))
            }
        })
        .collect()
}

/// Lets a fresh instance connect where its grants allow; without grants TCP stays
/// off entirely. A connect to an address no address rule allows is checked
/// against the named rules of its port, resolved by the node at that moment.
pub fn apply(builder: &mut WasiCtxBuilder, rules: &Arc<[ConnectRule]>) {
    if rules.is_empty() {
        return;
    }
    let rules = rules.clone();
    builder
        .allow_tcp(true)
        .socket_addr_check(move |addr, usage| match usage {
            SocketAddrUse::TcpConnect => Box::pin(connect_allowed(rules.clone(), addr)),
            // The bind a connect makes implicitly: any local address, any port.
            SocketAddrUse::TcpBind => {
                let allowed = addr.ip().is_unspecified() && addr.port() == 0;
                Box::pin(std::future::ready(allowed))
            }
            _ => Box::pin(std::future::ready(false)),
        });
}

/// Whether `rules` let an agent connect to `addr`: an address rule covers it, or
/// one of the named rules of its port resolves (now, by the node) to it.
pub(crate) fn connect_allowed(
    rules: Arc<[ConnectRule]>,
    addr: SocketAddr,
) -> impl Future<Output = bool> + Send + Sync + 'static {
    let by_address = rules.iter().any(|r| r.allows(addr));
    let names: Vec<String> = if by_address {
        Vec::new()
    } else {
        rules
            .iter()
            .filter(|r| r.port == addr.port())
            .filter_map(|r| r.name().map(str::to_owned))
            .collect()
    };
    async move {
        if by_address {
            return true;
        }
        if names.is_empty() {
            return false;
        }
        tokio::task::spawn_blocking(move || {
            names
                .iter()
                .any(|name| lookup(name, addr.port()).is_ok_and(|found| found.contains(&addr)))
        })
        .await
        .unwrap_or(false)
    }
}

/// The addresses of `name` (the system resolver: /etc/hosts, DNS).
pub(crate) fn lookup(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((name, port).to_socket_addrs()?.collect())
}

impl Host for ComponentState {
    /// Resolves a name the agent's `connect` grants contain; refuses any other.
    async fn resolve(&mut self, name: String) -> Result<Vec<String>, String> {
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rule) = self.caps.connect.iter().find(|r| r.name() == Some(&wanted)) else {
            return Err(format!(
                "name {name} is not in this agent's connect grants (agents resolve only those)"
            ));
        };
        let port = rule.port;
        let found = tokio::task::spawn_blocking(move || lookup(&wanted, port))
            .await
            .map_err(|e| format!("resolving {name}: {e}"))?
            .map_err(|e| format!("resolving {name}: {e}"))?;
        let mut ips: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
        ips.dedup();
        Ok(ips)
    }
}
