//! `config` import: the agent's config map from its spec, read-only.

use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::config::Host;

impl Host for ComponentState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.caps.config.get(&key).cloned()
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        self.caps
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
