//! Example agent: polls an HTTP endpoint on the local network and forwards changes.
//!
//! Each run GETs `url` (plain HTTP/1.0; a host name must be one of the agent's
//! `--connect` grants, which the node resolves), and
//! when the body differs from the last one seen (kept in kv as its FNV-1a hash)
//! publishes it on `subject`. Deploy it with a timer and a connect grant:
//!
//! ```sh
//! edgeleaf deploy http-poll.wasm --name inverter --every 30s \
//!     --connect 192.168.1.20:80 --config url=http://192.168.1.20/status.json \
//!     --allow-publish 'plant.>' --config subject=plant.inverter --node gw-01 --key publisher.key
//! ```
//!
//! with `[devices] connect = ["192.168.1.0/24:80"]` on the device.
//! Result of a run: `{"changed":true,"status":200,"bytes":512}`.
//!
//! Config: `url` (required, `http://HOST[:PORT]/path`), `subject` (default
//! `http-poll.changes`). A non-2xx status, an unreachable or refused endpoint and
//! a malformed URL are `Err`s that name it.

use std::io::{Read, Write};

use edgeleaf_sdk::{Agent, Message, config, export_agent, kv, messaging, net};

/// Largest body kept (bytes); more is an error, not a silent cut.
const MAX_BODY: usize = 512 << 10;

struct HttpPoll;

/// `http://host[:port]/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url {url:?}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (addr, path) = split_url(url)?;
    let mut stream = net::TcpStream::connect(&addr).map_err(|e| format!("GET {url}: {e}"))?;
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut reply = Vec::new();
    Read::by_ref(&mut stream)
        .take((MAX_BODY + 16 * 1024) as u64)
        .read_to_end(&mut reply)
        .map_err(|e| format!("GET {url}: {e}"))?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET {url}: no HTTP header in the reply"))?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {url}: bad status line {:?}", head.lines().next()))?;
    let body = reply[split + 4..].to_vec();
    if body.len() > MAX_BODY {
        return Err(format!("GET {url}: body above {MAX_BODY} bytes"));
    }
    Ok((status, body))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Agent for HttpPoll {
    fn handle(_msg: Message) -> Result<Vec<u8>, String> {
        let url = config::get("url").ok_or("config \"url\" is not set (http://HOST[:PORT]/path)")?;
        let (status, body) = get(&url)?;
        if !(200..300).contains(&status) {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let hash = format!("{:016x}", fnv1a(&body));
        let changed = kv::get_string("last")?.as_deref() != Some(hash.as_str());
        if changed {
            messaging::publish(&config::get_or("subject", "http-poll.changes"), &body)?;
            kv::set("last", &hash)?;
        }
        Ok(format!("{{\"changed\":{changed},\"status\":{status},\"bytes\":{}}}", body.len()).into_bytes())
    }
}

export_agent!(HttpPoll);
