//! One way to open a NATS connection, for the node and for the CLI, so both take the
//! same credentials and TLS options and fail with the same clear errors.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, ConnectOptions};

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
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("url", &self.url)
            .field("creds", &self.creds)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey", &self.nkey)
            .field("tls", &self.tls)
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
    pub async fn connect(&self, name: &str, persistence: Persistence) -> Result<Client> {
        let mut opts = ConnectOptions::new().name(name);
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("cannot read credentials file {}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
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
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        opts = match persistence {
            Persistence::Forever => opts.retry_on_initial_connect().max_reconnects(None),
            Persistence::Once => opts.connection_timeout(Duration::from_secs(5)),
        };
        let url = self.url.clone();
        let event_url = url.clone();
        opts = opts.event_callback(move |event| {
            let url = event_url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::debug!(%url, "nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!(%url, "nats disconnected"),
                    // The client dropped messages: a subscription's buffer (65,536
                    // messages) overflowed. Say so loudly; it is data loss.
                    async_nats::Event::SlowConsumer(sid) => tracing::warn!(
                        %url,
                        subscription = sid,
                        "slow consumer: messages dropped because a subscription's buffer was full"
                    ),
                    other => tracing::debug!(%url, "nats: {other}"),
                }
            }
        });
        opts.connect(url.as_str())
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))
    }
}
