//! Flattened JSON JWS (RFC 7515 7.2.2) as ACME uses it (RFC 8555 6.2): parse strictly,
//! then verify with the key the caller chose (the `jwk` header's or the account's).

use serde_json::{Map, Value};

use super::{Jwk, b64u_decode};

/// The JWS algorithms we verify, in the order we advertise them (RFC 8555 6.2 asks for
/// this list in a badSignatureAlgorithm problem's `algorithms` field).
pub const SUPPORTED_ALGS: [&str; 4] = ["ES256", "ES384", "RS256", "EdDSA"];

/// Errors, each naming what was wrong. The HTTP layer maps them to ACME problem types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// -> urn:ietf:params:acme:error:malformed
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// -> badSignatureAlgorithm. Also used when a supported alg does not fit the key type.
    #[error(
        "signature algorithm {alg:?} is not supported or does not match the key; supported: ES256 (P-256), ES384 (P-384), RS256 (RSA), EdDSA (Ed25519)"
    )]
    BadSignatureAlgorithm { alg: String },
    /// -> badPublicKey
    #[error("bad public key: {0}")]
    BadPublicKey(String),
    /// -> malformed (RFC 8555 6.2, as Boulder does)
    #[error("JWS signature does not verify")]
    BadSignature,
}

fn malformed(msg: impl Into<String>) -> JwsError {
    JwsError::Malformed(msg.into())
}

/// A flattened JSON JWS as ACME uses it. Parsed, not yet verified.
#[derive(Debug, Clone)]
pub struct Jws {
    pub protected: Protected,
    /// Decoded payload bytes; empty for POST-as-GET (payload "").
    pub payload: Vec<u8>,
    /// b64(protected) + "." + b64(payload), exactly as received: what was signed.
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// The protected header members ACME uses.
#[derive(Debug, Clone)]
pub struct Protected {
    pub alg: String,
    pub nonce: Option<String>,
    pub url: String,
    pub kid: Option<String>,
    pub jwk: Option<Jwk>,
    /// The raw "jwk" JSON object as received (the account stores it), when present.
    pub jwk_json: Option<Value>,
}

/// The three members of a flattened JWS, still base64url. Shared with the EAB parser,
/// whose binding is a flattened JWS too.
pub(crate) struct Flattened<'a> {
    pub protected: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

impl<'a> Flattened<'a> {
    /// Exactly `protected`, `payload`, `signature`, all strings. An unprotected `header`
    /// is refused by name: ACME forbids it (RFC 8555 6.2) and it is a classic way to smuggle
    /// parameters past the signature.
    pub(crate) fn from_value(v: &'a Value) -> Result<Flattened<'a>, JwsError> {
        let obj = v.as_object().ok_or_else(|| malformed("a JWS must be a JSON object"))?;
        for k in obj.keys() {
            match k.as_str() {
                "protected" | "payload" | "signature" => {}
                "header" => return Err(malformed("unprotected header members are not allowed")),
                "signatures" => return Err(malformed("the general JWS JSON serialization is not supported")),
                other => return Err(malformed(format!("unexpected member {other:?}"))),
            }
        }
        Ok(Flattened {
            protected: required_str(obj, "protected", "JWS")?,
            payload: required_str(obj, "payload", "JWS")?,
            signature: required_str(obj, "signature", "JWS")?,
        })
    }

    pub(crate) fn signing_input(&self) -> Vec<u8> {
        [self.protected.as_bytes(), b".", self.payload.as_bytes()].concat()
    }

    /// Decode the protected header into a JSON object. `crit` and `b64` (RFC 7797) change
    /// how the JWS must be processed; we support neither, so they are refused, not ignored.
    pub(crate) fn header(&self) -> Result<Map<String, Value>, JwsError> {
        let bytes = b64u_decode(self.protected).map_err(|e| malformed(format!("protected header: {e}")))?;
        let header: Value = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("protected header is not JSON: {e}")))?;
        let Value::Object(header) = header else {
            return Err(malformed("protected header must be a JSON object"));
        };
        for refused in ["crit", "b64"] {
            if header.contains_key(refused) {
                return Err(malformed(format!("protected header member {refused:?} is not supported")));
            }
        }
        Ok(header)
    }

    pub(crate) fn signature(&self) -> Result<Vec<u8>, JwsError> {
        let sig = b64u_decode(self.signature).map_err(|e| malformed(format!("signature: {e}")))?;
        if sig.is_empty() {
            return Err(malformed("empty signature"));
        }
        Ok(sig)
    }
}

pub(crate) fn required_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<&'a str, JwsError> {
    optional_str(obj, name, what)?.ok_or_else(|| malformed(format!("{what} is missing {name:?}")))
}

pub(crate) fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<Option<&'a str>, JwsError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{what} member {name:?} must be a string"))),
    }
}

/// "none" and MACs are refused outright: a MAC key would be a shared secret, and ACME
/// requires an asymmetric signature (RFC 8555 6.2).
fn check_alg(alg: &str) -> Result<(), JwsError> {
    if SUPPORTED_ALGS.contains(&alg) {
        Ok(())
    } else {
        Err(JwsError::BadSignatureAlgorithm { alg: alg.to_owned() })
    }
}

impl Jws {
    /// Parse a request body: a JSON object with exactly `protected`, `payload`, `signature`
    /// (base64url, padded or not); a protected header with `alg` and `url` and exactly one of
    /// `jwk` / `kid`; `alg` one of [`SUPPORTED_ALGS`]; no `crit` or `b64`. Unknown header
    /// members are ignored (RFC 7515 4). serde_json keeps the last of duplicate members,
    /// which RFC 7515 section 4 permits. Body size is limited by the caller.
    pub fn parse(body: &[u8]) -> Result<Jws, JwsError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| malformed(format!("body is not JSON: {e}")))?;
        let f = Flattened::from_value(&v)?;
        let header = f.header()?;
        let alg = required_str(&header, "alg", "protected header")?;
        check_alg(alg)?;
        let url = required_str(&header, "url", "protected header")?;
        if url.is_empty() {
            return Err(malformed("protected header \"url\" is empty"));
        }
        let nonce = optional_str(&header, "nonce", "protected header")?;
        let kid = optional_str(&header, "kid", "protected header")?;
        let jwk_json = header.get("jwk");
        let jwk = match (jwk_json, kid) {
            (Some(j), None) => Some(Jwk::from_json(j)?),
            (None, Some(_)) => None,
            (Some(_), Some(_)) => return Err(malformed("protected header has both \"jwk\" and \"kid\"")),
            (None, None) => return Err(malformed("protected header needs one of \"jwk\" or \"kid\"")),
        };
        let payload = b64u_decode(f.payload).map_err(|e| malformed(format!("payload: {e}")))?;
        let signature = f.signature()?;
        Ok(Jws {
            protected: Protected {
                alg: alg.to_owned(),
                nonce: nonce.map(str::to_owned),
                url: url.to_owned(),
                kid: kid.map(str::to_owned),
                jwk,
                jwk_json: jwk_json.cloned(),
            },
            payload,
            signing_input: f.signing_input(),
            signature,
        })
    }

    /// Verify the signature with `key` (the `jwk` header's key, or the account's key for `kid`).
    pub fn verify(&self, key: &Jwk) -> Result<(), JwsError> {
        key.verify(&self.protected.alg, &self.signing_input, &self.signature)
    }

    /// The payload as JSON; an empty (POST-as-GET) payload is an error here.
    pub fn payload_json(&self) -> Result<Value, JwsError> {
        if self.payload.is_empty() {
            return Err(malformed("expected a JSON payload"));
        }
        serde_json::from_slice(&self.payload).map_err(|e| malformed(format!("payload is not JSON: {e}")))
    }

    /// POST-as-GET (RFC 8555 6.3): the payload is the empty string.
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::b64u;
    use super::super::testutil::{TestKey, body};
    use super::*;

    const URL: &str = "https://ca.example/acme/new-account";

    fn all_keys() -> [TestKey; 4] {
        [TestKey::es256(), TestKey::es384(), TestKey::ed25519(), TestKey::rs256()]
    }

    #[test]
    fn signed_by_each_algorithm_parses_and_verifies() {
        for key in all_keys() {
            let payload = br#"{"termsOfServiceAgreed":true}"#;
            let jws = Jws::parse(&key.jws(&key.header_jwk(URL), payload)).unwrap();
            assert_eq!(jws.protected.alg, key.alg);
            assert_eq!(jws.protected.url, URL);
            assert_eq!(jws.protected.nonce.as_deref(), Some("n0nce"));
            assert_eq!(jws.protected.jwk_json.as_ref(), Some(&key.jwk));
            let jwk = jws.protected.jwk.clone().unwrap();
            jws.verify(&jwk).unwrap();
            assert_eq!(jws.payload_json().unwrap(), json!({"termsOfServiceAgreed": true}));
            assert!(!jws.is_post_as_get());
        }
    }

    #[test]
    fn kid_post_as_get_verifies_with_account_key() {
        let key = TestKey::es256();
        let header =
            json!({"alg": "ES256", "nonce": "n", "url": URL, "kid": "https://ca.example/acme/acct/1"});
        let jws = Jws::parse(&key.jws(&header, b"")).unwrap();
        assert!(jws.is_post_as_get());
        assert_eq!(jws.protected.kid.as_deref(), Some("https://ca.example/acme/acct/1"));
        assert!(jws.protected.jwk.is_none() && jws.protected.jwk_json.is_none());
        jws.verify(&Jwk::from_json(&key.jwk).unwrap()).unwrap();
        assert_eq!(jws.payload_json().unwrap_err(), JwsError::Malformed("expected a JSON payload".into()));
        // Another account's key does not verify it.
        assert_eq!(jws.verify(&Jwk::from_json(&TestKey::es256().jwk).unwrap()), Err(JwsError::BadSignature));
    }

    /// A flipped signature bit, or a payload other than the signed one, does not verify.
    #[test]
    fn tampering_is_bad_signature() {
        for key in all_keys() {
            let good: Value = serde_json::from_slice(&key.jws(&key.header_jwk(URL), b"{}")).unwrap();
            let mut flipped = good.clone();
            let mut sig = b64u_decode(good["signature"].as_str().unwrap()).unwrap();
            sig[5] ^= 0x10;
            flipped["signature"] = json!(b64u(&sig));
            let mut changed = good.clone();
            changed["payload"] = json!(b64u(b"{\"a\":1}"));
            for v in [flipped, changed] {
                let jws = Jws::parse(v.to_string().as_bytes()).unwrap();
                let verdict = jws.verify(jws.protected.jwk.as_ref().unwrap());
                assert_eq!(verdict, Err(JwsError::BadSignature), "{}", key.alg);
            }
        }
    }

    #[test]
    fn rs256_header_with_ec_key_is_refused() {
        let key = TestKey::es256();
        let mut header = key.header_jwk(URL);
        header["alg"] = json!("RS256");
        let jws = Jws::parse(&key.jws(&header, b"{}")).unwrap();
        assert_eq!(
            jws.verify(jws.protected.jwk.as_ref().unwrap()),
            Err(JwsError::BadSignatureAlgorithm { alg: "RS256".into() })
        );
    }

    #[test]
    fn jwk_and_kid_exactly_one() {
        let key = TestKey::es256();
        let mut both = key.header_jwk(URL);
        both["kid"] = json!("https://ca.example/acme/acct/1");
        assert!(
            matches!(Jws::parse(&key.jws(&both, b"{}")), Err(JwsError::Malformed(m)) if m.contains("both"))
        );
        let neither = json!({"alg": "ES256", "nonce": "n", "url": URL});
        assert!(matches!(Jws::parse(&key.jws(&neither, b"{}")), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn none_hmac_and_unknown_algs_are_bad_signature_algorithm() {
        let key = TestKey::es256();
        for alg in ["none", "HS256", "HS512", "PS256", "ES512", "es256", ""] {
            let mut header = key.header_jwk(URL);
            header["alg"] = json!(alg);
            assert_eq!(
                Jws::parse(&key.jws(&header, b"{}")).unwrap_err(),
                JwsError::BadSignatureAlgorithm { alg: alg.into() }
            );
        }
        let msg = JwsError::BadSignatureAlgorithm { alg: "none".into() }.to_string();
        assert!(SUPPORTED_ALGS.iter().all(|a| msg.contains(a)), "{msg}");
    }

    #[test]
    fn private_key_in_header_is_bad_public_key() {
        let key = TestKey::es256();
        let mut header = key.header_jwk(URL);
        header["jwk"]["d"] = json!(b64u([7; 32]));
        assert!(matches!(Jws::parse(&key.jws(&header, b"{}")), Err(JwsError::BadPublicKey(_))));
    }

    #[test]
    fn rsa_1024_header_key_is_bad_public_key() {
        let key = TestKey::es256();
        let mut header = key.header_jwk(URL);
        header["alg"] = json!("RS256");
        header["jwk"] = json!({"kty": "RSA", "n": b64u([0xd1; 128]), "e": "AQAB"});
        assert!(
            matches!(Jws::parse(&key.jws(&header, b"{}")), Err(JwsError::BadPublicKey(m)) if m.contains("1024"))
        );
    }

    #[test]
    fn padded_base64_is_accepted() {
        use base64::Engine as _;
        let padded = |b: &[u8]| base64::engine::general_purpose::URL_SAFE.encode(b);
        let key = TestKey::es256();
        // A header whose JSON length is not a multiple of 3, so its encoding is padded.
        let header = (0..3)
            .map(|i| {
                let mut h = key.header_jwk(URL);
                h["x"] = json!("a".repeat(i));
                h.to_string()
            })
            .find(|h| h.len() % 3 != 0)
            .unwrap();
        let p = padded(header.as_bytes());
        let pl = padded(br#"{"ab":1}"#);
        let sig = key.sign(format!("{p}.{pl}").as_bytes());
        let s = padded(&sig); // 64 bytes: "=="
        assert!(p.ends_with('=') && pl.ends_with('=') && s.ends_with("=="));
        let v = json!({"protected": p, "payload": pl, "signature": s});
        let jws = Jws::parse(v.to_string().as_bytes()).unwrap();
        jws.verify(jws.protected.jwk.as_ref().unwrap()).unwrap();
        assert_eq!(jws.payload_json().unwrap(), json!({"ab": 1}));
        // The signature covers the text as sent: the unpadded form of the same parts does not verify.
        let unpadded = body(p.trim_end_matches('='), pl.trim_end_matches('='), &sig);
        let jws = Jws::parse(&unpadded).unwrap();
        assert_eq!(jws.verify(jws.protected.jwk.as_ref().unwrap()), Err(JwsError::BadSignature));
    }

    #[test]
    fn structural_rules() {
        let key = TestKey::es256();
        let good: Value = serde_json::from_slice(&key.jws(&key.header_jwk(URL), b"{}")).unwrap();
        let with = |k: &str, v: Value| {
            let mut g = good.clone();
            g[k] = v;
            g.to_string().into_bytes()
        };
        let without = |k: &str| {
            let mut g = good.clone();
            g.as_object_mut().unwrap().remove(k);
            g.to_string().into_bytes()
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("header", with("header", json!({"alg": "ES256"}))),
            ("extra", with("extra", json!(1))),
            ("signatures", with("signatures", json!([]))),
            ("no protected", without("protected")),
            ("no payload", without("payload")),
            ("no signature", without("signature")),
            ("numeric payload", with("payload", json!(1))),
            ("empty signature", with("signature", json!(""))),
            ("array", b"[]".to_vec()),
            ("not json", b"protected.payload.signature".to_vec()),
        ];
        for (name, body) in cases {
            assert!(matches!(Jws::parse(&body), Err(JwsError::Malformed(_))), "{name}");
        }
        for (name, header) in [
            ("crit", json!({"alg": "ES256", "url": URL, "jwk": key.jwk, "crit": ["b64"]})),
            ("b64", json!({"alg": "ES256", "url": URL, "jwk": key.jwk, "b64": false})),
            ("no url", json!({"alg": "ES256", "jwk": key.jwk})),
            ("empty url", json!({"alg": "ES256", "url": "", "jwk": key.jwk})),
            ("numeric url", json!({"alg": "ES256", "url": 1, "jwk": key.jwk})),
            ("no alg", json!({"url": URL, "jwk": key.jwk})),
            ("numeric nonce", json!({"alg": "ES256", "url": URL, "jwk": key.jwk, "nonce": 1})),
            ("jwk not an object", json!({"alg": "ES256", "url": URL, "jwk": "k"})),
            ("header array", json!(["alg"])),
        ] {
            assert!(matches!(Jws::parse(&key.jws(&header, b"{}")), Err(JwsError::Malformed(_))), "{name}");
        }
    }

    /// Truncations, single-byte changes and random bytes of a valid JWS: errors, never panics.
    #[test]
    fn garbage_never_panics() {
        use ring::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        for key in all_keys() {
            let good = key.jws(&key.header_jwk(URL), br#"{"contact":["mailto:a@example.org"]}"#);
            let jwk = Jwk::from_json(&key.jwk).unwrap();
            let try_it = |b: &[u8]| {
                if let Ok(jws) = Jws::parse(b) {
                    let _ = jws.verify(&jwk);
                    let _ = jws.payload_json();
                }
            };
            for n in 0..good.len() {
                try_it(&good[..n]);
            }
            let mut rand = [0u8; 4096];
            rng.fill(&mut rand).unwrap();
            for i in 0..good.len() {
                let mut b = good.clone();
                b[i] = rand[i % rand.len()];
                try_it(&b);
            }
            for len in [0, 1, 2, 16, 300, 4096] {
                try_it(&rand[..len]);
            }
        }
    }
}
