//! Outbound HTTP (`wasi:http/outgoing-handler`) under the agent's `connect`
//! grants: a request's authority must be one the grants allow before anything is
//! resolved or sent, exactly as for a TCP connect (see [`super::net`]). An IP
//! literal is checked against the address rules (and the named rules of its
//! port, resolved by the node); a name must be one of the grants' names on that
//! port. Anything else is `HTTP-request-denied` for the guest and a warning in the
//! node's log naming the agent and the authority. HTTPS verifies the server against the
//! webpki (Mozilla) roots built into the binary.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::uri::Scheme;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::protocol::ConnectRule;
use crate::runtime::component::ComponentState;

/// An instance's HTTP context: the wasi-http state and the grants it checks.
pub struct HttpState {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl HttpState {
    pub fn new(caps: &crate::host::Capabilities) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                rules: caps.connect.clone(),
                agent: caps.log.agent().into(),
            },
        }
    }
}

struct Hooks {
    rules: Arc<[ConnectRule]>,
    agent: Arc<str>,
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

type Sending = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sending {
        drop(fut);
        let rules = self.rules.clone();
        let agent = self.agent.clone();
        Box::new(async move {
            let target = Target::of(request.uri())?;
            if !target.allowed(&rules).await {
                tracing::warn!(
                    %agent,
                    "HTTP request to {} denied: not in the agent's connect grants",
                    target.authority
                );
                return Err(Error::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(http_body_util::BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Where a request goes: host and port as the connect check sees them.
struct Target {
    authority: String,
    host: Host,
    port: u16,
}

enum Host {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl Target {
    fn of(uri: &http::Uri) -> Result<Self, Error> {
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        // `user@host`: refused rather than guessed at.
        if authority.as_str().contains('@') {
            return Err(Error::HttpRequestUriInvalid);
        }
        let port = authority.port_u16().unwrap_or(match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => 443,
            _ => 80,
        });
        let host = authority.host();
        let host = match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        };
        Ok(Self {
            authority: authority.to_string(),
            host,
            port,
        })
    }

    async fn allowed(&self, rules: &Arc<[ConnectRule]>) -> bool {
        match &self.host {
            Host::Ip(ip) => {
                super::net::connect_allowed(rules.clone(), SocketAddr::new(*ip, self.port)).await
            }
            Host::Name(name) => rules
                .iter()
                .any(|r| r.port == self.port && r.name() == Some(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Arc<[ConnectRule]> {
        entries
            .iter()
            .map(|e| ConnectRule::parse(e).unwrap())
            .collect()
    }

    async fn allowed(rules: &Arc<[ConnectRule]>, uri: &str) -> Result<bool, String> {
        let target = Target::of(&uri.parse().unwrap()).map_err(|e| e.to_string())?;
        Ok(target.allowed(rules).await)
    }

    #[tokio::test]
    async fn authorities_are_checked_like_connects() {
        let rules = rules(&["10.0.0.0/24:80", "plc.local:8443", "[::1]:9000"]);
        assert_eq!(allowed(&rules, "http://10.0.0.7/status").await, Ok(true));
        assert_eq!(allowed(&rules, "http://10.0.0.7:81/").await, Ok(false));
        assert_eq!(
            allowed(&rules, "https://10.0.0.7/").await,
            Ok(false),
            "443 not 80"
        );
        assert_eq!(allowed(&rules, "https://PLC.local.:8443/x").await, Ok(true));
        assert_eq!(allowed(&rules, "http://plc.local/").await, Ok(false));
        assert_eq!(allowed(&rules, "http://other.local:8443/").await, Ok(false));
        assert_eq!(allowed(&rules, "http://[::1]:9000/").await, Ok(true));
        assert!(allowed(&rules, "http://me@10.0.0.7/").await.is_err());
    }
}
