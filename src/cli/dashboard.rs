//! `edgeleaf dashboard`: a read-only web page of the fleet, served from the binary
//! (plain HTML, CSS and JavaScript embedded at build time: no CDN, works offline),
//! and the JSON endpoints behind it:
//!
//! | path | what |
//! |---|---|
//! | `/api/nodes` | the rows of `nodes --json` |
//! | `/api/agents[?node=ID]` | the rows of `agents --json` |
//! | `/api/events[?node=ID&limit=N]` | the newest events (`EventRecord` + `seq`, `received`) |
//! | `/api/logs?node=ID&agent=NAME[&limit=N]` | the newest log lines, as `logs --json` prints them |
//!
//! It reads through the hub only and never writes. It binds loopback by default;
//! any other address needs a token (`--token-file`), which every API request must
//! present (`Authorization: Bearer …`, or `?token=…` as the page passes it on).
//! Without a token only loopback `Host` names are answered, so a web page elsewhere
//! cannot read the fleet through the operator's browser (DNS rebinding).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use super::ConnOpts;
use crate::connect::Persistence;
use crate::hub;
use crate::protocol::{LOGS_STREAM, LogLine, Subjects, TELEMETRY_STREAM, is_token};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// How far back events and log lines are looked for.
const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// API requests served at once: each one reads from the hub.
const API_AT_ONCE: usize = 4;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on. Loopback by default; any other address needs a token.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// File holding the token API requests must present (`Authorization: Bearer
    /// TOKEN`, or open the page as `/?token=TOKEN`). Required when --listen is not a
    /// loopback address.
    #[arg(long, value_name = "FILE", env = "EDGELEAF_DASHBOARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

struct Dashboard {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
    token: Option<String>,
    /// The port served, for the `Host` check.
    port: u16,
    api: tokio::sync::Semaphore,
}

/// The token in `path`: its first line, which must not be empty.
fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        anyhow::bail!(
            "the token in {} is shorter than 16 characters; use a long random one (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(token)
}

pub async fn run(args: Args, conn: &ConnOpts) -> Result<()> {
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    if !args.listen.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "--listen {} is not a loopback address: anyone who can reach it would see the fleet; give --token-file FILE (or listen on 127.0.0.1)",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let client = conn
        .target()
        .connect("edgeleaf-dashboard", Persistence::Forever)
        .await?;
    let dashboard = Arc::new(Dashboard {
        js: hub::jetstream(client.clone(), conn.domain.as_deref()),
        client,
        subjects: conn.subjects(),
        token,
        port: addr.port(),
        api: tokio::sync::Semaphore::new(API_AT_ONCE),
    });
    println!(
        "dashboard on http://{addr}/{}",
        if dashboard.token.is_some() {
            "?token=<the token>"
        } else {
            ""
        }
    );
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!("dashboard: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, Infallible>(dashboard.handle(req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("dashboard connection: {e}");
            }
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type)
            .unwrap_or(header::HeaderValue::from_static("text/plain")),
    );
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    h.insert("x-content-type-options", "nosniff".parse().expect("static"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'"
            .parse()
            .expect("static"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    let body = serde_json::json!({ "error": message.to_string() });
    reply(status, "application/json", body.to_string())
}

/// `a == b` in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The query's `key=value` pairs (values are single tokens or numbers here, so no
/// decoding beyond that is needed; anything else is refused by the caller).
fn query(req: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

impl Dashboard {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Reply {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "the dashboard is read-only");
        }
        if self.token.is_none() && !self.loopback_host(&req) {
            return error(
                StatusCode::FORBIDDEN,
                "without a token only loopback Host names are served",
            );
        }
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
            "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
            "/style.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
            api if api.starts_with("/api/") => {
                let q = query(&req);
                if let Some(token) = &self.token {
                    let bearer = req
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "));
                    let given = bearer.or(q
                        .iter()
                        .find(|(k, _)| k == "token")
                        .map(|(_, v)| v.as_str()));
                    if !given.is_some_and(|g| same_secret(g, token)) {
                        return error(StatusCode::UNAUTHORIZED, "a valid token is required");
                    }
                }
                let Ok(_permit) = self.api.acquire().await else {
                    return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
                };
                match self.api(api, &q).await {
                    Ok(Some(body)) => reply(StatusCode::OK, "application/json", body),
                    Ok(None) => error(StatusCode::NOT_FOUND, format!("no endpoint {api}")),
                    Err(e) if e.is::<BadRequest>() => error(StatusCode::BAD_REQUEST, e),
                    Err(e) => error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
                }
            }
            _ => error(StatusCode::NOT_FOUND, format!("nothing at {path}")),
        }
    }

    fn loopback_host(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return false;
        };
        let port = self.port.to_string();
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|name| host == format!("{name}:{port}"))
    }

    /// The JSON of one endpoint; `None` for an unknown one.
    async fn api(&self, path: &str, q: &[(String, String)]) -> Result<Option<String>> {
        let param = |name: &str| -> Result<Option<&str>> {
            match q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()) {
                Some("") | None => Ok(None),
                Some(v) if is_token(v) => Ok(Some(v)),
                Some(v) => {
                    Err(BadRequest(format!("{name}={v:?} is not a single NATS token")).into())
                }
            }
        };
        let limit = match q.iter().find(|(k, _)| k == "limit") {
            Some((_, v)) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| BadRequest(format!("limit={v:?} is not a number from 1 to 1000")))?,
            None => 100,
        };
        let p = self.subjects.prefix();
        let body = match path {
            "/api/nodes" => {
                serde_json::to_string(&hub::fleet::nodes(&self.js, &self.subjects).await?)?
            }
            "/api/agents" => serde_json::to_string(
                &hub::fleet::agents(&self.client, &self.js, &self.subjects, param("node")?).await?,
            )?,
            "/api/events" => {
                let filter = format!("{p}.evt.{}.*", param("node")?.unwrap_or("*"));
                let stored =
                    hub::fleet::recent(&self.js, TELEMETRY_STREAM, filter, WINDOW, limit).await?;
                let rows: Vec<serde_json::Value> = stored
                    .iter()
                    .filter_map(|m| {
                        let mut v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
                        let o = v.as_object_mut()?;
                        o.insert("seq".into(), m.seq.into());
                        o.insert("received".into(), rfc3339(m.received).into());
                        Some(v)
                    })
                    .collect();
                serde_json::to_string(&rows)?
            }
            "/api/logs" => {
                let filter = format!(
                    "{p}.log.{}.{}",
                    param("node")?.unwrap_or("*"),
                    param("agent")?.unwrap_or("*")
                );
                let stored =
                    hub::fleet::recent(&self.js, LOGS_STREAM, filter, WINDOW, limit).await?;
                let rows: Vec<super::logs::Row> = stored
                    .iter()
                    .filter_map(|m| {
                        let line: LogLine = serde_json::from_slice(&m.payload).ok()?;
                        Some(super::logs::Row::new(line, m.seq, m.received))
                    })
                    .collect();
                serde_json::to_string(&rows)?
            }
            _ => return Ok(None),
        };
        Ok(Some(body))
    }
}

/// A request the dashboard refuses as malformed (400, not 502).
#[derive(Debug)]
struct BadRequest(String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abcdef", "abcdef"));
        assert!(!same_secret("abcdef", "abcdeg"));
        assert!(!same_secret("abc", "abcdef"));
    }
}
