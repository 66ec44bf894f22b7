//! Control-plane decoding: ping bodies, subject patterns and deployment KV keys,
//! with the properties the node relies on checked on every input.
#![no_main]

use std::collections::BTreeMap;

use edgeleaf::protocol::{PingRequest, check_agent_pattern, is_valid_pattern, subject_matches};
use edgeleaf::shipping::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A ping body from anyone on the leaf.
    if let Ok(req) = PingRequest::parse(data) {
        let tags = BTreeMap::from([("site".to_owned(), "a".to_owned())]);
        let _ = req.matches(&tags);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "pattern subject": the matcher and the escape check agree with each other.
    let (pattern, subject) = text.split_once(' ').unwrap_or((text, text));
    let literal = is_valid_pattern(subject) && !subject.split('.').any(|t| t == "*" || t == ">");
    if literal
        && subject_matches(pattern, subject)
        && check_agent_pattern(pattern, "edgeleaf").is_ok()
    {
        // An allowed pattern never reaches a reserved subject.
        let first = subject.split('.').next().unwrap_or_default();
        assert!(
            !first.starts_with('$') && first != "_INBOX" && first != "edgeleaf",
            "{pattern} matched {subject}"
        );
    }
    if literal && is_valid_pattern(pattern) && !pattern.contains(['*', '>']) {
        assert_eq!(subject_matches(pattern, subject), pattern == subject);
    }
    // A deployment key that parses is the key its target writes.
    if let Some((target, agent)) = Target::parse_key(text) {
        assert_eq!(target.key(&agent), text);
    }
});
