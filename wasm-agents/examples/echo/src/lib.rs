//! Example agent: replies with the payload unchanged.

use edgeleaf_sdk::{Agent, Message, export_agent};

struct Echo;

impl Agent for Echo {
    fn handle(msg: Message) -> Result<Vec<u8>, String> {
        Ok(msg.payload)
    }
}

export_agent!(Echo);
