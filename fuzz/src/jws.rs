//! ACME request authentication: the flattened JWS ([`Jws::parse`]), its key ([`Jwk`]) and
//! signature check, and External Account Bindings ([`EabBinding`]). The input is a request
//! body; when it is JSON it is also tried as a bare JWK and as a binding.

use ca_core::acme::{EabBinding, Jwk, Jws, JwsError, SUPPORTED_ALGS};
use serde_json::Value;

/// The newAccount URL the EAB check expects (the seeds use it).
pub const NEW_ACCOUNT_URL: &str = "https://ca.example/acme/new-account";
/// The HMAC key the seeds' bindings were made with.
pub const EAB_HMAC_KEY: &[u8] = b"fuzzing-eab-hmac-key-32-bytes!!!";

pub fn run(data: &[u8]) {
    if let Ok(jws) = Jws::parse(data) {
        authenticated(&jws);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(k) = Jwk::from_json(&v) {
            jwk_properties(&k);
        }
        eab(&v, None);
    }
}

/// What the server does with a parsed JWS: verify it with the `jwk` header's key, read the
/// payload, and for newAccount check a binding in it.
pub fn authenticated(jws: &Jws) {
    let p = &jws.protected;
    assert!(SUPPORTED_ALGS.contains(&p.alg.as_str()), "alg {:?} passed parse", p.alg);
    assert!(p.jwk.is_some() != p.kid.is_some(), "exactly one of jwk and kid");
    assert!(!p.url.is_empty());
    assert_eq!(p.jwk.is_some(), p.jwk_json.is_some());
    if let Some(k) = &p.jwk {
        jwk_properties(k);
        match jws.verify(k) {
            Ok(()) | Err(JwsError::BadSignature | JwsError::BadSignatureAlgorithm { .. }) => {}
            Err(e) => panic!("verify may only fail as a bad signature or algorithm, got {e:?}"),
        }
    }
    if let Ok(payload) = jws.payload_json() {
        assert!(!jws.is_post_as_get());
        if let Some(b) = payload.get("externalAccountBinding") {
            eab(b, p.jwk.as_ref());
        }
    }
}

/// Parse a binding; when it parses, check it against `account_key` (or its own payload key)
/// with the seeds' HMAC key and with an empty one, which must never verify.
pub fn eab(v: &Value, account_key: Option<&Jwk>) {
    let Ok(b) = EabBinding::parse(v) else { return };
    let _ = b.kid.len();
    // The binding's own payload key, re-read from the JSON, is the one a matching account has.
    let own = v
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| ca_core::acme::b64u_decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .and_then(|p| Jwk::from_json(&p).ok());
    for key in [account_key, own.as_ref()].into_iter().flatten() {
        let _ = b.verify(NEW_ACCOUNT_URL, key, EAB_HMAC_KEY);
        assert!(b.verify(NEW_ACCOUNT_URL, key, b"").is_err(), "an empty HMAC key verified");
    }
}

/// Invariants of a parsed key: its JSON form parses back to it, the thumbprint is a
/// base64url SHA-256, and verification with junk fails cleanly for every algorithm.
pub fn jwk_properties(k: &Jwk) {
    assert_eq!(Jwk::from_json(&k.to_json()).as_ref(), Ok(k), "to_json does not round-trip");
    let canonical: Value = match serde_json::from_str(&k.canonical_json()) {
        Ok(v) => v,
        Err(e) => panic!("canonical JSON is not JSON: {e}"),
    };
    assert_eq!(canonical, k.to_json());
    assert_eq!(k.thumbprint().len(), 43);
    for alg in SUPPORTED_ALGS {
        assert!(k.verify(alg, b"signing input", &[0u8; 64]).is_err());
    }
    assert!(!k.matches_spki(&[]));
}
