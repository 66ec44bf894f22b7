//! One way to open a NATS connection, for the node and for the CLI, so both take the
//! same credentials and TLS options and fail with the same clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, ConnectErrorKind, ConnectOptions};

use crate::config::TlsFiles;

/// Where and how to connect. Secrets live here, so `Debug` hides them.
#[derive(Clone, Default)]
pub struct NatsTarget {
    pub url: String,
    pub creds: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Path to an nkey seed file.
    pub nkey: Option<PathBuf>,
    pub tls: TlsFiles,
    /// Reply inboxes under this prefix instead of `_INBOX`: a node uses
    /// `_INBOX_<id>`, so a hub can deliver to it only the replies meant for it.
    pub inbox_prefix: Option<String>,
    /// Messages buffered per subscription (`nats.subscription_capacity`).
    pub subscription_capacity: Option<usize>,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("url", &redact_url(&self.url))
            .field("creds", &self.creds)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey", &self.nkey)
            .field("tls", &self.tls)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// A daemon: wait for the server as long as it takes, reconnect forever.
    Forever,
    /// A CLI command: one attempt with a short timeout, then a clear error (once
    /// connected, it reconnects like any client).
    Once,
}

impl NatsTarget {
    /// Connects, naming the connection `name` on the server (visible in `connz`).
    ///
    /// A daemon ([`Persistence::Forever`]) first tries once, so that a refusal it
    /// will keep meeting (a wrong CA, bad credentials) is logged with its full reason
    /// right away; then it keeps trying in the background and returns at once.
    pub async fn connect(&self, name: &str, persistence: Persistence) -> Result<Client> {
        let url = redact_url(&self.url);
        let servers = server_addrs(&self.url)?;
        if persistence == Persistence::Forever {
            let once = self
                .options(name, Duration::from_secs(5))
                .await?
                .max_reconnects(None);
            match once.connect(servers.as_slice()).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    let reason = error_chain(&e);
                    tracing::warn!(
                        %url,
                        "cannot connect to NATS yet, will keep trying: {reason}{}",
                        hint(&e.kind(), &reason)
                    )
                }
            }
            let opts = self
                .options(name, Duration::from_secs(5))
                .await?
                .retry_on_initial_connect()
                .max_reconnects(None);
            return Ok(opts.connect(servers.as_slice()).await?);
        }
        let opts = self.options(name, Duration::from_secs(5)).await?;
        opts.connect(servers.as_slice()).await.map_err(|e| {
            let reason = error_chain(&e);
            anyhow::anyhow!(
                "cannot connect to NATS at {url}: {reason}{}",
                hint(&e.kind(), &reason)
            )
        })
    }

    /// Credentials, TLS and the event log; the same for every attempt.
    async fn options(&self, name: &str, timeout: Duration) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new().name(name).connection_timeout(timeout);
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        if let Some(capacity) = self.subscription_capacity {
            opts = opts.subscription_capacity(capacity);
        }
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("cannot read credentials file {}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        } else if let Some((user, password)) = url_login(&self.url) {
            // async-nats parses `user:password@` in a URL but never sends it.
            opts = match password {
                Some(password) => opts.user_and_password(user, password),
                None => opts.token(user),
            };
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read nkey seed file {}", path.display()))?;
            opts = opts.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &self.tls.ca {
            readable(ca, "TLS CA certificate")?;
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            readable(cert, "TLS client certificate")?;
            readable(key, "TLS client key")?;
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let url = redact_url(&self.url);
        // The client reports each failed attempt; say it once per distinct reason,
        // not every few seconds for as long as the server refuses.
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        Ok(opts.event_callback(move |event| {
            let url = url.clone();
            let last_error = last_error.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        last_error.lock().unwrap_or_else(|e| e.into_inner()).clear();
                        tracing::debug!(%url, "nats connected")
                    }
                    async_nats::Event::Disconnected => tracing::warn!(%url, "nats disconnected"),
                    // The client dropped a message: a subscription's buffer (65,536
                    // messages) overflowed. Count it and say so; it is data loss.
                    async_nats::Event::SlowConsumer(sid) => {
                        SLOW_CONSUMER_DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            %url,
                            subscription = sid,
                            "slow consumer: a message was dropped because a subscription's buffer was full"
                        )
                    }
                    async_nats::Event::ClientError(e) => {
                        let text = e.to_string();
                        let mut last = last_error.lock().unwrap_or_else(|e| e.into_inner());
                        if *last != text {
                            tracing::warn!(%url, "nats connection attempt failed: {text}");
                            *last = text;
                        }
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(%url, "nats server error: {e}")
                    }
                    other => tracing::debug!(%url, "nats: {other}"),
                }
            }
        }))
    }
}

/// Messages this process's NATS clients dropped because a subscription's buffer was
/// full: async-nats reports each such drop as one event.
static SLOW_CONSUMER_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many messages were dropped so far (see [`SLOW_CONSUMER_DROPS`]). A lower bound:
/// when the client's own event queue is full, it drops the event too.
pub fn slow_consumer_drops() -> u64 {
    SLOW_CONSUMER_DROPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A file the client will need, checked up front so the error names it (the
/// client's own error would only say "tls error").
fn readable(path: &Path, what: &str) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The error and its sources, one after another: rustls' reason is a few levels down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

/// What to look at, for the refusals a config can cause. A rejected certificate
/// comes back as an I/O error, so the message counts too.
fn hint(kind: &ConnectErrorKind, message: &str) -> &'static str {
    let tls = message.contains("certificate") || message.contains("TLS");
    match kind {
        ConnectErrorKind::Tls | ConnectErrorKind::Io if tls => {
            " (check the CA that signed the server's certificate (tls.ca / --tlsca), \
             that the server's certificate names the host or IP in the URL, and the \
             client certificate if the server verifies clients)"
        }
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            " (check the credentials: creds, user and password, token or nkey)"
        }
        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => {
            " (is the server running and reachable at that address?)"
        }
        _ => "",
    }
}

/// The servers of a URL list (`nats://a:4222,nats://b:4222`): a client tries them
/// in turn and reconnects to any of them (one hub cluster, several servers).
pub fn server_addrs(list: &str) -> Result<Vec<async_nats::ServerAddr>> {
    let servers: Vec<async_nats::ServerAddr> = crate::config::split_urls(list)
        .iter()
        .map(|one| {
            one.parse()
                .map_err(|e| anyhow::anyhow!("{:?} is not a NATS URL: {e}", redact_url(one)))
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(!servers.is_empty(), "no NATS server URL given");
    Ok(servers)
}

/// `url` with the password (or token) of any `user:password@` part replaced by
/// `***`, for logs, replies and errors. Lists (`a,b`) are redacted item by item.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, one),
            };
            // NATS URLs have no path, so everything before the last '@' is user
            // info, whatever characters the password holds ('@', '/', ...).
            let rest = match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) if !user.contains('/') => format!("{user}:***@{host}"),
                    _ => format!("***@{host}"),
                },
                None => rest.to_owned(),
            };
            match scheme {
                Some(s) => format!("{s}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `user:password@` (or `token@`) of the first server of `url`, if any.
fn url_login(url: &str) -> Option<(String, Option<String>)> {
    let first = url.split(',').next()?.trim();
    let addr: async_nats::ServerAddr = first.parse().ok()?;
    let user = addr.username()?.to_owned();
    Some((user, addr.password().map(str::to_owned)))
}

/// The host of one NATS URL, without user info, port or IPv6 brackets.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether every server of `url` is this machine.
pub fn is_loopback_url(url: &str) -> bool {
    url.split(',').all(|one| {
        let host = url_host(one.trim());
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// A warning when `url` leaves the machine in plain text: its scheme does not ask
/// for TLS and no TLS files are configured. `key` names the setting.
pub fn plaintext_warning(key: &str, url: &str, tls: &TlsFiles) -> Option<String> {
    let tls_scheme = url
        .split(',')
        .all(|one| matches!(one.trim().split_once("://"), Some(("tls" | "wss", _))));
    (!is_loopback_url(url) && !tls_scheme && tls.is_empty()).then(|| {
        format!(
            "{key} {} is not a loopback address and TLS is not configured: messages and \
             credentials cross the network in plain text (set a CA in the tls section, \
             or use a tls:// URL)",
            redact_url(url)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_in_urls_are_used() {
        assert_eq!(
            url_login("nats://local:pw1@127.0.0.1:4222,nats://other:x@h:1"),
            Some(("local".into(), Some("pw1".into())))
        );
        assert_eq!(url_login("nats://tok@h:1"), Some(("tok".into(), None)));
        assert_eq!(url_login("nats://127.0.0.1:4222"), None);
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("nats://alice:s3cret@hub.example:4222"),
            "nats://alice:***@hub.example:4222"
        );
        assert_eq!(redact_url("nats://tok3n@hub:4222"), "nats://***@hub:4222");
        assert_eq!(
            redact_url("nats://a:x@h1:1,nats://h2:2"),
            "nats://a:***@h1:1,nats://h2:2"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://alice:p@ss@hub:4222"),
            "nats://alice:***@hub:4222"
        );
        assert_eq!(
            redact_url("nats://alice:p/ss@hub:4222"),
            "nats://alice:***@hub:4222"
        );
        assert_eq!(redact_url("nats://a/b:pw@hub:4222"), "nats://***@hub:4222");
    }

    #[test]
    fn loopback_and_plaintext() {
        for url in [
            "nats://127.0.0.1:4222",
            "nats://localhost:4222",
            "nats://[::1]:4222",
            "nats://u:p@127.0.0.2:1",
            "127.0.0.1:4222",
        ] {
            assert!(is_loopback_url(url), "{url}");
            assert_eq!(
                plaintext_warning("nats.url", url, &TlsFiles::default()),
                None
            );
        }
        let url = "nats://u:pw@192.0.2.10:4222";
        assert!(!is_loopback_url(url));
        let warning = plaintext_warning("nats.url", url, &TlsFiles::default()).unwrap();
        assert!(
            warning.contains("plain text") && !warning.contains("pw@"),
            "{warning}"
        );
        assert!(!is_loopback_url("nats://127.0.0.1:1,nats://hub.example:1"));
        assert_eq!(
            plaintext_warning("x", "tls://hub.example:4222", &TlsFiles::default()),
            None
        );
        let tls = TlsFiles {
            ca: Some("/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            plaintext_warning("x", "nats://hub.example:4222", &tls),
            None
        );
    }
}
