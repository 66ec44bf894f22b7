//! `--context NAME` / `$NATS_CONTEXT`: the nats CLI's saved connections
//! (`$XDG_CONFIG_HOME/nats/context/NAME.json`, by default under `~/.config`), so an
//! operator who set up `nats context save hub …` connects edgeleaf the same way.
//! Every value a flag (or its environment variable) gives wins over the context's.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::ConnOpts;

/// The fields of a nats CLI context edgeleaf uses; the rest (description, colours,
/// SOCKS proxy …) are ignored. Empty strings mean "not set", as in the nats CLI.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NatsContext {
    pub url: String,
    pub token: String,
    pub user: String,
    pub password: String,
    pub creds: String,
    pub nkey: String,
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub jetstream_domain: String,
    pub inbox_prefix: String,
}

/// Where the nats CLI keeps its contexts.
fn directory() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(".config"),
    };
    Ok(base.join("nats").join("context"))
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .context("cannot find the nats contexts: $HOME is not set")
}

/// The file of context `name`.
pub fn path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        anyhow::bail!("{name:?} is not a context name (no path separators, not starting with '.')");
    }
    Ok(directory()?.join(format!("{name}.json")))
}

pub fn load(name: &str) -> Result<NatsContext> {
    let path = path(name)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read nats context {name:?} ({}); `nats context ls` lists the saved ones",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("nats context {} is not valid JSON", path.display()))
}

/// A path as the nats CLI writes them: `~/…` is under $HOME.
fn expand(value: &str) -> Result<PathBuf> {
    Ok(match value.strip_prefix("~/") {
        Some(rest) => home()?.join(rest),
        None => Path::new(value).to_owned(),
    })
}

impl ConnOpts {
    /// These options with what `--context` (or `$NATS_CONTEXT`) names filled in
    /// where no flag gave a value; unchanged without a context.
    pub fn with_context(mut self) -> Result<Self> {
        let Some(name) = self.context.clone() else {
            return Ok(self);
        };
        let c = load(&name)?;
        let text = |v: &String| (!v.is_empty()).then(|| v.clone());
        let file = |v: &String| (!v.is_empty()).then(|| expand(v)).transpose();
        // A login given on the command line replaces the context's login as a
        // whole: a --user must not be paired with the context's token.
        let login_given = self.creds.is_some()
            || self.user.is_some()
            || self.token.is_some()
            || self.nkey.is_some();
        self.server = self.server.or(text(&c.url));
        if !login_given {
            self.creds = file(&c.creds)?;
            self.user = text(&c.user);
            self.password = self.password.or(text(&c.password));
            self.token = text(&c.token);
            self.nkey = file(&c.nkey)?;
        }
        self.tlsca = match self.tlsca {
            Some(ca) => Some(ca),
            None => file(&c.ca)?,
        };
        if self.tlscert.is_none() && self.tlskey.is_none() {
            self.tlscert = file(&c.cert)?;
            self.tlskey = file(&c.key)?;
        }
        self.domain = self.domain.or(text(&c.jetstream_domain));
        self.inbox_prefix = self.inbox_prefix.or(text(&c.inbox_prefix));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_cannot_leave_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_nats_cli_format_parses_and_ignores_what_edgeleaf_does_not_use() {
        let c: NatsContext = serde_json::from_str(
            r#"{"description":"hub","url":"tls://hub:4222","token":"","user":"","password":"",
                "creds":"~/hub.creds","nkey":"","cert":"","key":"","ca":"/etc/ca.pem",
                "nsc":"","jetstream_domain":"hub","jetstream_api_prefix":"",
                "jetstream_event_prefix":"","inbox_prefix":"_INBOX_ops","user_jwt":"",
                "color_scheme":"","tls_first":false,"windows_cert_store":"",
                "windows_cert_match_by":"","windows_cert_match":"","windows_ca_certs_match":[]}"#,
        )
        .unwrap();
        assert_eq!(c.url, "tls://hub:4222");
        assert_eq!(c.jetstream_domain, "hub");
        assert_eq!(c.inbox_prefix, "_INBOX_ops");
        assert!(c.token.is_empty());
    }
}
