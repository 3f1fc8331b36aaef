//! Public keys in JWK form (RFC 7517/7518, OKP from RFC 8037): parsing, RFC 7638 thumbprints,
//! signature verification with `ring`, and comparison with an X.509 SubjectPublicKeyInfo.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value, json};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{JwsError, b64u, b64u_decode};

/// A public key from a JWS `jwk` header or stored with an account.
///
/// Only keys we can verify ACME signatures with are representable; sizes are checked when
/// parsing so a stored `Jwk` is always usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// P-256 or P-384; `x` and `y` are the fixed-size big-endian coordinates (32 or 48 bytes).
    Ec { crv: EcCurve, x: Vec<u8>, y: Vec<u8> },
    /// Modulus of 2048..=8192 bits; `n` and `e` big-endian with leading zero bytes stripped.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// OKP key on Ed25519: the 32-byte public key.
    Ed25519 { x: Vec<u8> },
}

/// The NIST curves ACME clients use for ECDSA account keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
        }
    }
    fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }
}

/// JWK members that hold private (or symmetric) key material. A client that sends one has
/// leaked its key to us, and we must not store it.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

impl Jwk {
    /// Parse a JWK object. Not an object -> `Malformed`; anything wrong with the key itself
    /// (unsupported type or curve, wrong sizes, private members) -> `BadPublicKey`.
    /// Optional members such as `alg`, `use`, `kid` are ignored.
    pub fn from_json(v: &Value) -> Result<Jwk, JwsError> {
        let obj = v.as_object().ok_or_else(|| JwsError::Malformed("jwk must be a JSON object".into()))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(bad_key(format!("jwk contains the private key member {m:?}")));
        }
        match str_member(obj, "kty")? {
            "EC" => {
                let crv = match str_member(obj, "crv")? {
                    "P-256" => EcCurve::P256,
                    "P-384" => EcCurve::P384,
                    other => {
                        return Err(bad_key(format!(
                            "unsupported EC curve {other:?}; supported: P-256, P-384"
                        )));
                    }
                };
                let x = bytes_member(obj, "x")?;
                let y = bytes_member(obj, "y")?;
                let want = crv.coordinate_len();
                if x.len() != want || y.len() != want {
                    return Err(bad_key(format!(
                        "{} coordinates must be {want} bytes each, got x {} and y {}",
                        crv.name(),
                        x.len(),
                        y.len()
                    )));
                }
                Ok(Jwk::Ec { crv, x, y })
            }
            "RSA" => {
                let n = strip_leading_zeros(bytes_member(obj, "n")?);
                let e = strip_leading_zeros(bytes_member(obj, "e")?);
                let n_bits = bit_len(&n);
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&n_bits) {
                    return Err(bad_key(format!(
                        "RSA modulus of {n_bits} bits; supported: {RSA_MIN_BITS} to {RSA_MAX_BITS}"
                    )));
                }
                // ring accepts odd exponents from 3 up to 33 bits; say so now rather than
                // failing every signature later.
                let e_odd = e.last().is_some_and(|b| b & 1 == 1);
                if !e_odd || e == [1] || bit_len(&e) > 33 {
                    return Err(bad_key(
                        "RSA public exponent must be odd, at least 3 and at most 33 bits".into(),
                    ));
                }
                Ok(Jwk::Rsa { n, e })
            }
            "OKP" => match str_member(obj, "crv")? {
                "Ed25519" => {
                    let x = bytes_member(obj, "x")?;
                    if x.len() != 32 {
                        return Err(bad_key(format!("Ed25519 key must be 32 bytes, got {}", x.len())));
                    }
                    Ok(Jwk::Ed25519 { x })
                }
                other => Err(bad_key(format!("unsupported OKP curve {other:?}; supported: Ed25519"))),
            },
            other => Err(bad_key(format!("unsupported key type {other:?}; supported: EC, RSA, OKP"))),
        }
    }

    /// The public JWK as JSON, with only the required members (the canonical form's members).
    pub fn to_json(&self) -> Value {
        match self {
            Jwk::Ec { crv, x, y } => json!({"kty": "EC", "crv": crv.name(), "x": b64u(x), "y": b64u(y)}),
            Jwk::Rsa { n, e } => json!({"kty": "RSA", "n": b64u(n), "e": b64u(e)}),
            Jwk::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(x)}),
        }
    }

    /// RFC 7638 canonical JSON: the required members only, lexicographic order, no whitespace.
    /// Every value is a fixed name or base64url text, so nothing needs escaping.
    pub fn canonical_json(&self) -> String {
        match self {
            Jwk::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, crv.name(), b64u(x), b64u(y))
            }
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64u(e), b64u(n)),
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64u(x)),
        }
    }

    /// RFC 7638 thumbprint: unpadded base64url of SHA-256(canonical_json).
    pub fn thumbprint(&self) -> String {
        b64u(ring::digest::digest(&ring::digest::SHA256, self.canonical_json().as_bytes()))
    }

    /// ACME key authorization: `token + "." + thumbprint` (RFC 8555 8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// Verify `sig` over `signing_input` with algorithm `alg` ("ES256", "ES384", "RS256", "EdDSA").
    /// The alg must match the key type (a mismatch is `BadSignatureAlgorithm`, as in Boulder);
    /// ECDSA signatures are the JWS fixed-size r||s form (RFC 7518 3.4), not DER.
    pub fn verify(&self, alg: &str, signing_input: &[u8], sig: &[u8]) -> Result<(), JwsError> {
        let ok = match (self, alg) {
            (Jwk::Ec { crv: EcCurve::P256, x, y }, "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, ec_point(x, y))
                    .verify(signing_input, sig)
            }
            (Jwk::Ec { crv: EcCurve::P384, x, y }, "ES384") => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, ec_point(x, y))
                    .verify(signing_input, sig)
            }
            (Jwk::Rsa { n, e }, "RS256") => RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                signing_input,
                sig,
            ),
            (Jwk::Ed25519 { x }, "EdDSA") => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(signing_input, sig)
            }
            _ => return Err(JwsError::BadSignatureAlgorithm { alg: alg.to_owned() }),
        };
        // ring does not say why: an off-curve EC point or a bad signature look the same.
        ok.map_err(|_| JwsError::BadSignature)
    }

    /// True when this key is the subject public key of a certificate/CSR: `spki_der` is a DER
    /// SubjectPublicKeyInfo. (Used by revokeCert signed with the certificate's own key.)
    /// Anything unparsable, trailing bytes included, is "no match".
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
            return false;
        };
        if !rest.is_empty() {
            return false;
        }
        let alg = &spki.algorithm.algorithm;
        let key_bits: &[u8] = &spki.subject_public_key.data;
        match self {
            Jwk::Ec { crv, x, y } => {
                let want_curve = match crv {
                    EcCurve::P256 => &OID_EC_P256,
                    EcCurve::P384 => &OID_NIST_EC_P384,
                };
                let curve_ok = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .is_some_and(|oid| &oid == want_curve);
                *alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve_ok && key_bits == ec_point(x, y).as_slice()
            }
            Jwk::Rsa { n, e } => {
                *alg == OID_PKCS1_RSAENCRYPTION
                    && match spki.parsed() {
                        Ok(PublicKey::RSA(k)) => {
                            strip_zeros(k.modulus) == n.as_slice() && strip_zeros(k.exponent) == e.as_slice()
                        }
                        _ => false,
                    }
            }
            // RFC 8410: id-Ed25519 (1.3.101.112) is both the key and the signature OID.
            Jwk::Ed25519 { x } => *alg == OID_SIG_ED25519 && key_bits == x.as_slice(),
        }
    }
}

fn bad_key(msg: String) -> JwsError {
    JwsError::BadPublicKey(msg)
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, JwsError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad_key(format!("jwk member {name:?} must be a string"))),
        None => Err(bad_key(format!("jwk is missing {name:?}"))),
    }
}

fn bytes_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JwsError> {
    b64u_decode(str_member(obj, name)?).map_err(|_| bad_key(format!("jwk member {name:?} is not base64url")))
}

/// The uncompressed SEC1 point ring and X.509 use: 0x04 || x || y.
fn ec_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + x.len() + y.len());
    p.push(0x04);
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    p
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    // `start` is at most `b.len()`, so the slice is in bounds (empty for all zeros).
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn strip_leading_zeros(b: Vec<u8>) -> Vec<u8> {
    strip_zeros(&b).to_vec()
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn bit_len(b: &[u8]) -> usize {
    match b.first() {
        Some(&first) => b.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;
    use serde_json::json;

    use super::super::testutil::TestKey;
    use super::*;

    /// The RSA key of RFC 7638 section 3.1.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn rfc7638_thumbprint_vector() {
        let v = json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
        let k = Jwk::from_json(&v).unwrap();
        assert_eq!(k.canonical_json(), format!(r#"{{"e":"AQAB","kty":"RSA","n":"{RFC7638_N}"}}"#));
        assert_eq!(k.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(k.key_authorization("tok"), "tok.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn canonical_json_orders_members_and_round_trips() {
        for key in [TestKey::es256(), TestKey::es384(), TestKey::ed25519()] {
            let k = Jwk::from_json(&key.jwk).unwrap();
            let canon: Value = serde_json::from_str(&k.canonical_json()).unwrap();
            assert_eq!(canon, key.jwk);
            assert_eq!(k.to_json(), key.jwk);
            assert_eq!(Jwk::from_json(&k.to_json()).unwrap(), k);
            let names: Vec<_> = canon.as_object().unwrap().keys().cloned().collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert!(!k.canonical_json().contains(' '));
        }
    }

    #[test]
    fn rsa_leading_zeros_are_stripped() {
        let mut n = b64u_decode(RFC7638_N).unwrap();
        n.insert(0, 0);
        let padded = Jwk::from_json(&json!({"kty": "RSA", "n": b64u(&n), "e": "AAEAAQ"})).unwrap();
        let plain = Jwk::from_json(&json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})).unwrap();
        assert_eq!(padded, plain);
        assert_eq!(padded.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn private_key_members_are_refused() {
        let mut v = TestKey::es256().jwk;
        v["d"] = json!("AAAA");
        assert!(matches!(Jwk::from_json(&v), Err(JwsError::BadPublicKey(m)) if m.contains("\"d\"")));
        let v = json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "p": "AQAB"});
        assert!(matches!(Jwk::from_json(&v), Err(JwsError::BadPublicKey(_))));
    }

    #[test]
    fn unsupported_or_wrong_sized_keys_are_bad_public_keys() {
        let n1024 = b64u([0xc5; 128]);
        let n9000 = b64u([0xc5; 1125]);
        let bad = [
            json!({"kty": "RSA", "n": n1024, "e": "AQAB"}),
            json!({"kty": "RSA", "n": n9000, "e": "AQAB"}),
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQ"}),
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAA"}),
            json!({"kty": "RSA", "n": RFC7638_N}),
            json!({"kty": "EC", "crv": "P-256", "x": b64u([1; 31]), "y": b64u([1; 32])}),
            json!({"kty": "EC", "crv": "P-384", "x": b64u([1; 32]), "y": b64u([1; 32])}),
            json!({"kty": "EC", "crv": "P-521", "x": b64u([1; 66]), "y": b64u([1; 66])}),
            json!({"kty": "OKP", "crv": "X25519", "x": b64u([1; 32])}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64u([1; 31])}),
            json!({"kty": "oct", "k": "AAAA"}),
            json!({"kty": "oct"}),
            json!({"kty": 1}),
            json!({"crv": "P-256"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "not base64!"}),
        ];
        for v in bad {
            assert!(matches!(Jwk::from_json(&v), Err(JwsError::BadPublicKey(_))), "{v}");
        }
        assert!(matches!(Jwk::from_json(&json!("RSA")), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn alg_must_match_key_type() {
        let ec = Jwk::from_json(&TestKey::es256().jwk).unwrap();
        for alg in ["RS256", "ES384", "EdDSA", "HS256", "none"] {
            assert_eq!(
                ec.verify(alg, b"x", &[0; 64]),
                Err(JwsError::BadSignatureAlgorithm { alg: alg.into() })
            );
        }
        let ed = Jwk::from_json(&TestKey::ed25519().jwk).unwrap();
        assert!(matches!(ed.verify("ES256", b"x", &[0; 64]), Err(JwsError::BadSignatureAlgorithm { .. })));
    }

    #[test]
    fn off_curve_point_does_not_verify_or_panic() {
        let v = json!({"kty": "EC", "crv": "P-256", "x": b64u([1; 32]), "y": b64u([1; 32])});
        let k = Jwk::from_json(&v).unwrap();
        assert_eq!(k.verify("ES256", b"x", &[1; 64]), Err(JwsError::BadSignature));
        assert_eq!(k.verify("ES256", b"x", &[]), Err(JwsError::BadSignature));
    }

    #[test]
    fn matches_spki_of_same_key_only() {
        let keys = [TestKey::es256(), TestKey::es384(), TestKey::ed25519(), TestKey::rs256()];
        let spkis: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| rcgen::KeyPair::try_from(k.pkcs8.as_slice()).unwrap().subject_public_key_info())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let jwk = Jwk::from_json(&key.jwk).unwrap();
            for (j, spki) in spkis.iter().enumerate() {
                assert_eq!(jwk.matches_spki(spki), i == j, "key {} vs spki {}", key.alg, keys[j].alg);
            }
            // Another key of the same type does not match.
            let other = match key.alg {
                "ES256" => TestKey::es256(),
                "ES384" => TestKey::es384(),
                _ => TestKey::ed25519(),
            };
            if key.alg != "RS256" {
                let other_spki =
                    rcgen::KeyPair::try_from(other.pkcs8.as_slice()).unwrap().subject_public_key_info();
                assert!(!jwk.matches_spki(&other_spki));
            }
            // Truncated or extended DER is no match, and no panic.
            let spki = &spkis[i];
            assert!(!jwk.matches_spki(&spki[..spki.len() - 1]));
            assert!(!jwk.matches_spki(&[spki.as_slice(), &[0]].concat()));
            assert!(!jwk.matches_spki(&[]));
        }
        // An RSA key with a different modulus does not match the RSA SPKI.
        let rfc = Jwk::from_json(&json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})).unwrap();
        assert!(!rfc.matches_spki(&spkis[3]));
    }
}
