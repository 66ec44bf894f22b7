//! The node's config file: any text gives a config or an error, never a panic.
#![no_main]

use edgeleaf::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = [(
            "EDGELEAF_NODE_ID".to_owned(),
            text.lines().next().unwrap_or_default().to_owned(),
        )];
        let _ = Config::from_toml(text, "fuzz.toml", []);
        let _ = Config::from_toml(text, "fuzz.toml", env);
    }
});
