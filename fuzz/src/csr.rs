//! CSR intake as the gRPC SignCsr and ACME finalize paths run it: PEM or DER to DER, then
//! parse, key checks, self-signature, names ([`ca_core::csr::check`]), then the policy's
//! name rules.

use std::sync::OnceLock;

use ca_core::csr::{self, MAX_CSR_BYTES};
use ca_core::policy::{Policy, PolicyConfig};

/// A policy that lets every key type through and allows wide name rules, so the fuzzer
/// gets past the key checks to the signature and name code.
pub fn permissive_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let cfg = PolicyConfig {
            allowed_dns: [".com", ".org", ".net", ".internal", ".local", ".test", ".example", "localhost"]
                .map(String::from)
                .to_vec(),
            allowed_ips: vec!["0.0.0.0/0".into(), "::/0".into()],
            allowed_uri_prefixes: vec![String::new()],
            allow_wildcard_names: true,
            max_names: 10_000,
            ..PolicyConfig::default()
        };
        match Policy::new(cfg) {
            Ok(p) => p,
            Err(e) => panic!("the fuzz policy must be valid: {e}"),
        }
    })
}

pub fn run(data: &[u8]) {
    if let Ok(der) = csr::csr_der(data) {
        assert!(der.len() <= MAX_CSR_BYTES);
    }
    check(data);
}

/// [`csr::check`] and the name rules; shared with the `acme_json` target's finalize.
pub fn check(bytes: &[u8]) {
    let policy = permissive_policy();
    let Ok(checked) = csr::check(bytes, policy) else { return };
    // Names come back deduplicated.
    for (i, n) in checked.names.iter().enumerate() {
        assert!(!checked.names[..i].contains(n), "duplicate name {n}");
        let _ = n.to_string();
    }
    let _ = policy.check_names(&checked.names);
    let _ = Policy::new(PolicyConfig::default()).map(|p| p.check_names(&checked.names));
}
