//! Example agent: counts the messages it handles.
//!
//! Each message increments a `u64` kept in the agent's kv store (as decimal text) and
//! the reply is the new value as decimal text.
//!
//! Config:
//! * `key`: the kv key of the counter (default `count`);
//! * `per_subject`: `true` keeps one counter per trigger subject, under
//!   `<key>.<subject>` (default `false`: one counter for all subjects).

use edgeleaf_sdk::{Agent, Message, config, export_agent, kv};

struct Counter;

impl Agent for Counter {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        let mut key = config::get_or("key", "count");
        if config::parse_or("per_subject", false)? {
            key = format!("{key}.{}", msg.subject);
        }
        let current = match kv::get_string(&key)? {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("kv value under {key:?} is not a u64: {text:?}"))?,
        };
        let next = current
            .checked_add(1)
            .ok_or_else(|| format!("counter {key:?} would overflow u64"))?;
        let reply = next.to_string();
        kv::set(&key, &reply)?;
        Ok(reply.into_bytes())
    }
}

export_agent!(Counter);
