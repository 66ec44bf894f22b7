//! Deployment envelopes as a node reads them from the hub's KV bucket: never a
//! panic, and whatever `open` accepts is exactly what a trusted publisher signed.
#![no_main]

use std::sync::OnceLock;

use edgeleaf::shipping::{DeploymentSpec, SecretKey, SignedDeployment, TrustPolicy};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

fuzz_target!(|data: &[u8]| {
    let strict = TrustPolicy {
        trusted: vec![key().public()],
        ..TrustPolicy::default()
    };
    let open = TrustPolicy {
        allow_unsigned: true,
        ..strict.clone()
    };
    // Raw envelopes: nothing the fuzzer writes carries a valid signature by our key.
    assert!(SignedDeployment::open(data, "node.n1.echo", &strict).is_err());
    if let Ok(spec) = SignedDeployment::open(data, "node.n1.echo", &open) {
        assert_eq!(spec.target, "node.n1.echo");
        let _ = spec.agent.check("edgeleaf");
    }
    let _ = SignedDeployment::peek_spec(data);
    let _ = SignedDeployment::peek_version(data);

    // Raw specs: sealed by the trusted key they open to the same spec, under its
    // own target only.
    if let Ok(mut spec) = serde_json::from_slice::<DeploymentSpec>(data) {
        spec.publisher = Some(key().public().to_string());
        let raw = SignedDeployment::seal(&spec, Some(key())).to_bytes();
        let back = SignedDeployment::open(&raw, &spec.target, &strict).expect("own seal opens");
        assert_eq!(back, spec);
        let other = format!("{}x", spec.target);
        assert!(SignedDeployment::open(&raw, &other, &strict).is_err());
        if let Ok(()) = spec.agent.check("edgeleaf") {
            assert!(!spec.agent.triggers.is_empty());
        }
    }
});
