//! External Account Binding (RFC 8555 7.3.4): a MAC, keyed by a secret the CA handed out
//! out of band, over the new account's public key. It ties the ACME account to an
//! existing customer identity (`kid`).

use ring::hmac;
use serde_json::Value;

use super::jws::{Flattened, required_str};
use super::{Jwk, JwsError, b64u_decode};
use crate::UnixSeconds;
use crate::event::Event;

/// The `externalAccountBinding` member of a newAccount payload, parsed, not yet verified.
#[derive(Debug, Clone)]
pub struct EabBinding {
    /// The key identifier the CA issued with the MAC key; the caller looks the key up by it.
    pub kid: String,
    alg: hmac::Algorithm,
    url: String,
    payload_jwk: Jwk,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl EabBinding {
    /// Parse the binding: a flattened JWS with alg HS256 (HS384/HS512 also accepted),
    /// protected header {alg, kid, url} and no nonce, whose payload is the account's JWK.
    pub fn parse(v: &Value) -> Result<EabBinding, JwsError> {
        let what = "externalAccountBinding";
        let f = Flattened::from_value(v).map_err(|e| prefix(what, e))?;
        let header = f.header().map_err(|e| prefix(what, e))?;
        let alg = match required_str(&header, "alg", what)? {
            "HS256" => hmac::HMAC_SHA256,
            "HS384" => hmac::HMAC_SHA384,
            "HS512" => hmac::HMAC_SHA512,
            other => {
                return Err(JwsError::Malformed(format!(
                    "{what} alg {other:?} is not a MAC algorithm; supported: HS256, HS384, HS512"
                )));
            }
        };
        // RFC 8555 7.3.4: the binding "MUST NOT contain a nonce"; it is not replay-protected
        // on its own but rides inside the outer JWS, which is.
        if header.contains_key("nonce") {
            return Err(JwsError::Malformed(format!("{what} must not contain a nonce")));
        }
        let kid = required_str(&header, "kid", what)?.to_owned();
        let url = required_str(&header, "url", what)?.to_owned();
        // A jwk in the binding's header would be meaningless; the key is the payload.
        if header.contains_key("jwk") {
            return Err(JwsError::Malformed(format!("{what} header must not contain \"jwk\"")));
        }
        let payload = b64u_decode(f.payload).map_err(|e| prefix(what, e))?;
        let payload: Value = serde_json::from_slice(&payload)
            .map_err(|e| JwsError::Malformed(format!("{what} payload is not JSON: {e}")))?;
        let payload_jwk = Jwk::from_json(&payload)?;
        let signature = f.signature().map_err(|e| prefix(what, e))?;
        Ok(EabBinding { kid, alg, url, payload_jwk, signing_input: f.signing_input(), signature })
    }

    /// Check: url == `expected_url` (the newAccount URL), payload JWK equals `account_key`,
    /// and the MAC verifies with `hmac_key` (raw key bytes, constant-time via ring).
    /// An empty `hmac_key` never verifies: that would be a missing secret, not a key.
    pub fn verify(&self, expected_url: &str, account_key: &Jwk, hmac_key: &[u8]) -> Result<(), JwsError> {
        if self.url != expected_url {
            return Err(JwsError::Malformed(format!(
                "externalAccountBinding url {:?} is not the newAccount URL {expected_url:?}",
                self.url
            )));
        }
        if &self.payload_jwk != account_key {
            return Err(JwsError::Malformed(
                "externalAccountBinding payload is not the account's public key".into(),
            ));
        }
        if hmac_key.is_empty() {
            return Err(JwsError::BadSignature);
        }
        let key = hmac::Key::new(self.alg, hmac_key);
        hmac::verify(&key, &self.signing_input, &self.signature).map_err(|_| JwsError::BadSignature)
    }
}

fn prefix(what: &str, e: JwsError) -> JwsError {
    match e {
        JwsError::Malformed(m) => JwsError::Malformed(format!("{what}: {m}")),
        other => other,
    }
}

/// An External Account Binding key's public part (the HMAC secret is kept apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabKey {
    pub kid: String,
    pub name: String,
    pub allowed_dns: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub profiles: Vec<String>,
    pub created_at: UnixSeconds,
    pub revoked: bool,
}

pub fn fold_eab<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<EabKey> {
    let mut key: Option<EabKey> = None;
    for e in events {
        match (e, key.as_mut()) {
            (Event::EabKeyCreated(c), None) => {
                key = Some(EabKey {
                    kid: c.kid.clone(),
                    name: c.name.clone(),
                    allowed_dns: c.allowed_dns.clone(),
                    allowed_ips: c.allowed_ips.clone(),
                    profiles: c.profiles.clone(),
                    created_at: c.created_at,
                    revoked: false,
                })
            }
            (Event::EabKeyRevoked(_), Some(k)) => k.revoked = true,
            _ => {}
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::b64u;
    use super::super::testutil::TestKey;
    use super::*;

    const URL: &str = "https://ca.example/acme/new-account";
    const MAC_KEY: &[u8] = b"an out-of-band secret of 32 byte";

    /// A binding as a client builds it (RFC 8555 7.3.4 example shape).
    fn binding(header: Value, account_jwk: &Value, mac_alg: hmac::Algorithm, mac_key: &[u8]) -> Value {
        let p = b64u(header.to_string());
        let pl = b64u(account_jwk.to_string());
        let tag = hmac::sign(&hmac::Key::new(mac_alg, mac_key), format!("{p}.{pl}").as_bytes());
        json!({"protected": p, "payload": pl, "signature": b64u(tag)})
    }

    fn hs256_header() -> Value {
        json!({"alg": "HS256", "kid": "kid-1", "url": URL})
    }

    #[test]
    fn hs256_binding_verifies() {
        let key = TestKey::es256();
        let account = Jwk::from_json(&key.jwk).unwrap();
        let b = EabBinding::parse(&binding(hs256_header(), &key.jwk, hmac::HMAC_SHA256, MAC_KEY)).unwrap();
        assert_eq!(b.kid, "kid-1");
        b.verify(URL, &account, MAC_KEY).unwrap();
    }

    #[test]
    fn hs384_and_hs512_verify() {
        let key = TestKey::ed25519();
        let account = Jwk::from_json(&key.jwk).unwrap();
        for (name, alg) in [("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
            let header = json!({"alg": name, "kid": "kid-1", "url": URL});
            let b = EabBinding::parse(&binding(header, &key.jwk, alg, MAC_KEY)).unwrap();
            b.verify(URL, &account, MAC_KEY).unwrap();
        }
        // The header's alg decides: an HS512 tag under an HS256 header does not verify.
        let b = EabBinding::parse(&binding(hs256_header(), &key.jwk, hmac::HMAC_SHA512, MAC_KEY)).unwrap();
        assert_eq!(b.verify(URL, &account, MAC_KEY), Err(JwsError::BadSignature));
    }

    #[test]
    fn wrong_mac_key_is_bad_signature() {
        let key = TestKey::es256();
        let account = Jwk::from_json(&key.jwk).unwrap();
        let b = EabBinding::parse(&binding(hs256_header(), &key.jwk, hmac::HMAC_SHA256, MAC_KEY)).unwrap();
        assert_eq!(b.verify(URL, &account, b"another secret"), Err(JwsError::BadSignature));
        assert_eq!(b.verify(URL, &account, b""), Err(JwsError::BadSignature));
    }

    #[test]
    fn different_url_is_refused() {
        let key = TestKey::es256();
        let account = Jwk::from_json(&key.jwk).unwrap();
        let b = EabBinding::parse(&binding(hs256_header(), &key.jwk, hmac::HMAC_SHA256, MAC_KEY)).unwrap();
        let err = b.verify("https://other.example/acme/new-account", &account, MAC_KEY).unwrap_err();
        assert!(matches!(err, JwsError::Malformed(m) if m.contains("url")));
    }

    #[test]
    fn payload_must_be_the_account_key() {
        let key = TestKey::es256();
        let other = Jwk::from_json(&TestKey::es256().jwk).unwrap();
        let b = EabBinding::parse(&binding(hs256_header(), &key.jwk, hmac::HMAC_SHA256, MAC_KEY)).unwrap();
        assert!(matches!(b.verify(URL, &other, MAC_KEY), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn header_rules() {
        let jwk = TestKey::es256().jwk;
        for (name, header) in [
            ("nonce", json!({"alg": "HS256", "kid": "k", "url": URL, "nonce": "n"})),
            ("no kid", json!({"alg": "HS256", "url": URL})),
            ("no url", json!({"alg": "HS256", "kid": "k"})),
            ("ES256", json!({"alg": "ES256", "kid": "k", "url": URL})),
            ("none", json!({"alg": "none", "kid": "k", "url": URL})),
            ("jwk", json!({"alg": "HS256", "kid": "k", "url": URL, "jwk": jwk})),
            ("crit", json!({"alg": "HS256", "kid": "k", "url": URL, "crit": []})),
        ] {
            let v = binding(header, &jwk, hmac::HMAC_SHA256, MAC_KEY);
            assert!(matches!(EabBinding::parse(&v), Err(JwsError::Malformed(_))), "{name}");
        }
        let mut v = binding(hs256_header(), &jwk, hmac::HMAC_SHA256, MAC_KEY);
        v["header"] = json!({});
        assert!(matches!(EabBinding::parse(&v), Err(JwsError::Malformed(_))));
        let v = binding(hs256_header(), &json!("not a key"), hmac::HMAC_SHA256, MAC_KEY);
        assert!(matches!(EabBinding::parse(&v), Err(JwsError::Malformed(_))));
        assert!(EabBinding::parse(&json!("eab")).is_err());
    }
}
