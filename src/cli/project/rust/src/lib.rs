//! {{name}}: an edgeleaf agent. The node calls `handle` once per message on one of
//! its triggers (and on `edgeleaf.inv.<node>.{{name}}`), each time in a fresh instance.

use edgeleaf_sdk::{Agent, Message, export_agent, log};

struct {{type}};

impl Agent for {{type}} {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        log::info(format!(
            "{{name}} got {} bytes on {}",
            msg.payload.len(),
            msg.subject
        ));
        // The reply: sent back when the sender waits for one, and recorded as the
        // invocation's result. An `Err` is reported as the agent's own failure.
        Ok(msg.payload)
    }
}

export_agent!({{type}});
