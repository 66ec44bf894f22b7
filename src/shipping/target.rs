//! Where a deployment is aimed, and the KV keys that say so:
//! `node.<id>.<agent>`, `tag.<key>.<value>.<agent>`, `all.<agent>`.
//! When several aim the same agent name at one node, the most specific wins:
//! node > tag > all (between two tags, the smaller key).

use std::collections::BTreeMap;

use crate::protocol::is_token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(String),
    Tag(String, String),
    All,
}

impl Target {
    /// The KV key for `agent` under this target.
    pub fn key(&self, agent: &str) -> String {
        match self {
            Self::Node(id) => format!("node.{id}.{agent}"),
            Self::Tag(k, v) => format!("tag.{k}.{v}.{agent}"),
            Self::All => format!("all.{agent}"),
        }
    }

    /// Splits a KV key into its target and agent name.
    pub fn parse_key(key: &str) -> Option<(Self, String)> {
        let parts: Vec<&str> = key.split('.').collect();
        let (target, agent) = match parts.as_slice() {
            ["node", id, agent] => (Self::Node((*id).to_owned()), *agent),
            ["tag", k, v, agent] => (Self::Tag((*k).to_owned(), (*v).to_owned()), *agent),
            ["all", agent] => (Self::All, *agent),
            _ => return None,
        };
        parts
            .iter()
            .all(|p| is_token(p))
            .then(|| (target, agent.to_owned()))
    }

    /// Does this target select a node with this id and these tags?
    pub fn selects(&self, node_id: &str, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Node(id) => id == node_id,
            Self::Tag(k, v) => tags.get(k) == Some(v),
            Self::All => true,
        }
    }

    /// Higher wins.
    pub fn specificity(&self) -> u8 {
        match self {
            Self::Node(_) => 2,
            Self::Tag(..) => 1,
            Self::All => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for t in [
            Target::Node("gw1".into()),
            Target::Tag("site".into(), "a".into()),
            Target::All,
        ] {
            assert_eq!(
                Target::parse_key(&t.key("echo")),
                Some((t.clone(), "echo".into()))
            );
        }
        assert_eq!(Target::parse_key("node.x"), None);
        assert_eq!(Target::parse_key("bogus.x.y"), None);
        let tags = [("site".to_owned(), "a".to_owned())].into();
        assert!(Target::Tag("site".into(), "a".into()).selects("n", &tags));
        assert!(!Target::Tag("site".into(), "b".into()).selects("n", &tags));
        assert!(Target::Node("n".into()).specificity() > Target::All.specificity());
    }
}
