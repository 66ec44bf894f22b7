//! Example agent: polls an HTTP endpoint on the local network and forwards changes.
//!
//! Each run GETs `url` with the SDK's `http` (wasi:http; the host and port must be
//! one of the agent's `--connect` grants, a name among them resolved by the node), and
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
//! Config: `url` (required, `http://HOST[:PORT]/path` or `https://…`), `subject` (default
//! `http-poll.changes`). A non-2xx status, an unreachable or refused endpoint and
//! a malformed URL are `Err`s that name it.

use edgeleaf_sdk::{Agent, Message, config, export_agent, http, kv, messaging};

struct HttpPoll;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Agent for HttpPoll {
    fn handle(_msg: Message) -> Result<Vec<u8>, String> {
        let url = config::get("url").ok_or("config \"url\" is not set (http://HOST[:PORT]/path)")?;
        let response = http::get(&url)?;
        let (status, body) = (response.status, response.body);
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
