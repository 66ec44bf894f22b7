//! `kv` import: the agent's own tree (see [`crate::store::agent_kv`]). A refusal for
//! quota is remembered, so an invocation that then fails is reported as `quota`.

use crate::runtime::AgentError;
use crate::runtime::component::ComponentState;
use crate::runtime::component::edgeleaf::agent::kv::Host;
use crate::store::agent_kv::KvError;

impl ComponentState {
    fn kv_result<T>(&mut self, r: Result<T, KvError>) -> Result<T, String> {
        r.map_err(|e| {
            if let KvError::Quota(m) = &e {
                self.refused = Some(AgentError::new("quota", m.clone()));
            }
            e.to_string()
        })
    }
}

impl Host for ComponentState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let r = self.caps.kv.get(&key);
        self.kv_result(r)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let r = self.caps.kv.set(&key, &value);
        self.kv_result(r)
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        let r = self.caps.kv.delete(&key);
        self.kv_result(r)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        let r = self.caps.kv.list_keys(&prefix);
        self.kv_result(r)
    }
}
