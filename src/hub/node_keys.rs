//! Trust on first use for the keys secrets are sealed to.
//!
//! `deploy --secret` seals each value to the encryption key a node reports in its
//! heartbeat. Whoever can publish that heartbeat chooses the key, so the first key
//! seen for a node is pinned in `EDGELEAF_NODE_KEYS` (hub users write it; under
//! `hub accounts` no node can) and a different one later is refused until the
//! operator accepts it by name: a reinstalled node, or someone posing as it.

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;

use crate::protocol::NODE_KEYS_BUCKET;

/// What pinning did for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The key matched the pinned one.
    Known,
    /// No key was pinned: this one is now.
    First,
    /// The key differed and the operator accepted the new one.
    Replaced,
}

/// Checks each `(node id, key)` against the pinned keys, pins first-seen ones, and
/// replaces a changed one only for a node in `accept_new`. Fails, naming every node
/// whose key changed, before anything is written for any of them.
pub async fn check_and_pin(
    js: &Context,
    nodes: &[(String, String)],
    accept_new: &[String],
) -> Result<Vec<(String, Pin)>> {
    let bucket = js
        .get_key_value(NODE_KEYS_BUCKET)
        .await
        .map_err(|e| super::opening(&format!("{NODE_KEYS_BUCKET} bucket"), e))?;
    let mut plan = Vec::new();
    let mut changed = Vec::new();
    for (id, key) in nodes {
        let pinned = bucket
            .get(id)
            .await
            .with_context(|| format!("cannot read the pinned key of {id}"))?;
        let pin = match pinned {
            None => Pin::First,
            Some(p) if p.as_ref() == key.as_bytes() => Pin::Known,
            Some(_) if accept_new.contains(id) => Pin::Replaced,
            Some(p) => {
                changed.push(format!(
                    "{id} (pinned {}, now {})",
                    short(&String::from_utf8_lossy(&p)),
                    short(key)
                ));
                continue;
            }
        };
        plan.push((id.clone(), key.clone(), pin));
    }
    if !changed.is_empty() {
        let ids: Vec<&str> = changed
            .iter()
            .filter_map(|c| c.split_whitespace().next())
            .collect();
        bail!(
            "the encryption key of {} changed since it was first used: a reinstalled node, \
             or something posing as it. Nothing was deployed. Check the node, then deploy \
             again with --accept-new-key {}",
            changed.join(", "),
            ids.join(" --accept-new-key ")
        );
    }
    let mut out = Vec::new();
    for (id, key, pin) in plan {
        if pin != Pin::Known {
            bucket
                .put(&id, key.into_bytes().into())
                .await
                .with_context(|| format!("cannot pin the key of {id}"))?;
        }
        out.push((id, pin));
    }
    Ok(out)
}

/// The start of a key, enough to tell two apart in a message.
fn short(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}
