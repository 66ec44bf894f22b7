//! The `edgeleaf` binary: parse the command line, set up tracing, dispatch.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = edgeleaf::cli::parse();
    let filter = EnvFilter::try_from_env("EDGELEAF_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    // The node's own warnings and errors are also kept in its log store and sent
    // to the hub (agent `_node`), whatever EDGELEAF_LOG shows on stderr.
    // EDGELEAF_LOG_FORMAT=json: one JSON object per line (journald, log shippers).
    let format = std::env::var("EDGELEAF_LOG_FORMAT").unwrap_or_default();
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format.as_str() {
        "json" => lines.json().with_filter(filter).boxed(),
        "" | "text" => lines.with_filter(filter).boxed(),
        other => {
            eprintln!(
                "warning: EDGELEAF_LOG_FORMAT={other:?} is neither text nor json; using text"
            );
            lines.with_filter(filter).boxed()
        }
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(edgeleaf::host::log::NodeLogLayer.with_filter(LevelFilter::INFO))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(edgeleaf::cli::run(cli));
    // A blocking call an agent's deadline gave up on (a read from a silent device
    // in tokio's blocking pool) must not hold the process at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line, without the repeats that arise when an error's
/// message already includes its source's ("no responders: no responders").
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        for part in cause.to_string().split(": ") {
            if parts.last().map(String::as_str) != Some(part) {
                parts.push(part.to_owned());
            }
        }
    }
    parts.join(": ")
}
