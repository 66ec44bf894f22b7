//! `edgeleaf node`: run the daemon.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Node config file (TOML). Without it: defaults plus EDGELEAF_* variables.
    #[arg(short, long, env = "EDGELEAF_CONFIG")]
    config: Option<PathBuf>,
    /// Only check the config, print the result and exit.
    #[arg(long)]
    check: bool,
}

pub async fn run(args: Args, conn: &super::ConnOpts) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    // Connection flags override the config's [nats], like -s overrides nats.url.
    // Credentials replace credentials as a whole: a creds file from the config and
    // a password from NATS_PASSWORD would otherwise both be sent.
    let n = &mut config.nats;
    if conn.creds.is_some()
        || conn.user.is_some()
        || conn.password.is_some()
        || conn.token.is_some()
        || conn.nkey.is_some()
    {
        (n.creds, n.user, n.password, n.token, n.nkey) = (None, None, None, None, None);
    }
    for (flag, value) in [
        (&mut n.url, &conn.server),
        (&mut n.user, &conn.user),
        (&mut n.password, &conn.password),
        (&mut n.token, &conn.token),
    ] {
        if value.is_some() {
            *flag = value.clone();
        }
    }
    for (flag, value) in [
        (&mut n.creds, &conn.creds),
        (&mut n.nkey, &conn.nkey),
        (&mut n.tls.ca, &conn.tlsca),
        (&mut n.tls.cert, &conn.tlscert),
        (&mut n.tls.key, &conn.tlskey),
    ] {
        if value.is_some() {
            *flag = value.clone();
        }
    }
    let config = config.validate("(with command-line flags)")?;
    config.check_secret_files()?;
    let warnings = config.warnings(args.config.as_deref());
    if args.check {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "config OK: node {} ({}), nats {}, leaf spawn {}",
            config.node.id,
            config.node.name,
            crate::connect::redact_url(&config.nats_url()),
            config.leaf.spawn
        );
        return Ok(());
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // The installed binary hands over to an accepted upgrade here (exec: no return).
    crate::node::upgrade::launch(&config.node.state_dir)?;
    // One signal handler for the node's whole life: a SIGTERM while the node stops
    // for an upgrade, or during the trial, is not lost.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    match crate::node::run_upgradable(config.clone(), stopped).await? {
        Some(trial) => crate::node::upgrade::try_binary(&config, trial, stop_rx).await,
        None => Ok(()),
    }
}
