//! [`Pkcs11Signer`]: a token's key pair behind `ca_core::signer::Signer`, with a pool of
//! sessions (a PKCS#11 session runs one operation at a time, so one per signing thread),
//! and the encodings between PKCS#11 and X.509.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ca_core::Error;
use ca_core::keys::KeyAlgorithm;
use ca_core::signer::Signer;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{SESSION_REOPENS, SIGN_CALLS, SIGN_ERRORS, Token, ck};
use crate::error::AppError;

/// DER of the named-curve OIDs in CKA_EC_PARAMS.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A private key in a token, found by CKA_LABEL, with its public key read once at open.
pub struct Pkcs11Signer {
    token: Arc<Token>,
    key_label: String,
    key_id: Vec<u8>,
    alg: KeyAlgorithm,
    public_raw: Vec<u8>,
    sessions: Vec<Mutex<KeySession>>,
    next: AtomicUsize,
}

/// A logged-in session and the private key's handle in it.
struct KeySession {
    session: Session,
    key: ObjectHandle,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer({}, key {:?} in token {:?})", self.alg, self.key_label, self.token.label)
    }
}

impl Pkcs11Signer {
    /// Find the key pair labelled `label` and open `sessions` sessions for it.
    pub(crate) fn open(token: Arc<Token>, label: &str, sessions: usize) -> Result<Self, AppError> {
        let first = token.session(false)?;
        let (key, key_id, key_type) = find_private(&token, &first, label)?;
        let public = find_public(&token, &first, label, &key_id)?;
        let (alg, public_raw) = public_key(&token, &first, public, key_type, label)?;
        let mut pool = vec![Mutex::new(KeySession { session: first, key })];
        for _ in 1..sessions.max(1) {
            let session = token.session(false)?;
            let (key, _, _) = find_private(&token, &session, label)?;
            pool.push(Mutex::new(KeySession { session, key }));
        }
        tracing::info!(
            token = %token.label, key = label, algorithm = %alg, sessions = pool.len(),
            "issuing key opened in the PKCS#11 token"
        );
        Ok(Pkcs11Signer {
            token,
            key_label: label.to_string(),
            key_id,
            alg,
            public_raw,
            sessions: pool,
            next: AtomicUsize::new(0),
        })
    }

    /// CKA_ID of the key pair (random, set at generation).
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// A free session, trying each once from a rotating start; else wait for the first.
    fn take(&self) -> MutexGuard<'_, KeySession> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.sessions[(start + i) % n].try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `op` on a session; when the token says the session is gone, open a new one in
    /// its place and run `op` once more.
    fn with_session<T>(&self, op: impl Fn(&KeySession) -> Result<T, CkError>) -> Result<T, Error> {
        let mut s = self.take();
        match op(&s) {
            Ok(v) => Ok(v),
            Err(e) if session_lost(&e) => {
                tracing::warn!(token = %self.token.label, key = %self.key_label, error = %ck(&e), "HSM session lost; reopening it");
                SESSION_REOPENS.fetch_add(1, Ordering::Relaxed);
                let session = self.token.session(false).map_err(|e| Error::Key(e.to_string()))?;
                let (key, _, _) = find_private(&self.token, &session, &self.key_label)
                    .map_err(|e| Error::Key(e.to_string()))?;
                *s = KeySession { session, key };
                op(&s).map_err(|e| self.sign_error(&e))
            }
            Err(e) => Err(self.sign_error(&e)),
        }
    }

    fn sign_error(&self, e: &CkError) -> Error {
        Error::Key(format!(
            "PKCS#11 signing with key {:?} in token {:?}: {}",
            self.key_label,
            self.token.label,
            ck(e)
        ))
    }
}

impl Signer for Pkcs11Signer {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.alg
    }
    fn public_key_raw(&self) -> &[u8] {
        &self.public_raw
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        SIGN_CALLS.fetch_add(1, Ordering::Relaxed);
        let out = match self.alg {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                // CKM_ECDSA signs a digest; hashing here keeps the token's work minimal.
                let (hash, field) = if self.alg == KeyAlgorithm::EcdsaP256 {
                    (&ring::digest::SHA256, 32)
                } else {
                    (&ring::digest::SHA384, 48)
                };
                let digest = ring::digest::digest(hash, msg);
                self.with_session(|s| s.session.sign(&Mechanism::Ecdsa, s.key, digest.as_ref()))
                    .and_then(|raw| ecdsa_raw_to_der(&raw, field))
            }
            _ => self.with_session(|s| s.session.sign(&Mechanism::Sha256RsaPkcs, s.key, msg)),
        };
        if out.is_err() {
            SIGN_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

/// Errors after which the session (not the key or the request) is what is broken.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

fn find_private(
    token: &Token,
    s: &Session,
    label: &str,
) -> Result<(ObjectHandle, Vec<u8>, KeyType), AppError> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token.error("finding the private key", &e))?;
    let key = match found.as_slice() {
        [k] => *k,
        [] => {
            return Err(AppError::Config(format!(
                "PKCS#11 token {:?} holds no private key labelled {:?} (create it with `ca-server init --pkcs11`)",
                token.label, label
            )));
        }
        _ => {
            return Err(AppError::Config(format!(
                "PKCS#11 token {:?} holds {} private keys labelled {:?}; the label must name one key",
                token.label,
                found.len(),
                label
            )));
        }
    };
    let attrs = s
        .get_attributes(key, &[AttributeType::Id, AttributeType::KeyType])
        .map_err(|e| token.error("reading the private key's attributes", &e))?;
    let mut id = Vec::new();
    let mut kt = None;
    for a in attrs {
        match a {
            Attribute::Id(v) => id = v,
            Attribute::KeyType(t) => kt = Some(t),
            _ => {}
        }
    }
    let kt = kt.ok_or_else(|| {
        AppError::Config(format!("key {label:?} in token {:?} has no CKA_KEY_TYPE", token.label))
    })?;
    Ok((key, id, kt))
}

fn find_public(token: &Token, s: &Session, label: &str, id: &[u8]) -> Result<ObjectHandle, AppError> {
    let mut template =
        vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Label(label.as_bytes().to_vec())];
    if !id.is_empty() {
        template.push(Attribute::Id(id.to_vec()));
    }
    let found = s.find_objects(&template).map_err(|e| token.error("finding the public key", &e))?;
    found.first().copied().ok_or_else(|| {
        AppError::Config(format!(
            "PKCS#11 token {:?} holds a private key labelled {label:?} but no public key with that label and CKA_ID",
            token.label
        ))
    })
}

/// The key's algorithm and its subjectPublicKey contents (EC point, or PKCS#1 RSAPublicKey).
fn public_key(
    token: &Token,
    s: &Session,
    public: ObjectHandle,
    kt: KeyType,
    label: &str,
) -> Result<(KeyAlgorithm, Vec<u8>), AppError> {
    let unsupported = |what: String| {
        AppError::Config(format!(
            "key {label:?} in token {:?}: {what}; supported: EC P-256/P-384, RSA 2048/3072/4096",
            token.label
        ))
    };
    if kt == KeyType::EC {
        let attrs = s
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|e| token.error("reading the public key", &e))?;
        let (mut params, mut point) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::EcParams(v) => params = v,
                Attribute::EcPoint(v) => point = v,
                _ => {}
            }
        }
        let (alg, field) = match params.as_slice() {
            P256_PARAMS => (KeyAlgorithm::EcdsaP256, 32),
            P384_PARAMS => (KeyAlgorithm::EcdsaP384, 48),
            _ => return Err(unsupported(format!("EC parameters {}", hex::encode(&params)))),
        };
        let raw = ec_point(&point, field).map_err(|e| unsupported(e.to_string()))?;
        Ok((alg, raw))
    } else if kt == KeyType::RSA {
        let attrs = s
            .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
            .map_err(|e| token.error("reading the public key", &e))?;
        let (mut n, mut e) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = v,
                Attribute::PublicExponent(v) => e = v,
                _ => {}
            }
        }
        let bits = n.iter().position(|b| *b != 0).map_or(0, |i| (n.len() - i) * 8);
        let alg = match bits {
            2048 => KeyAlgorithm::Rsa2048,
            3072 => KeyAlgorithm::Rsa3072,
            4096 => KeyAlgorithm::Rsa4096,
            _ => return Err(unsupported(format!("an RSA modulus of {bits} bits"))),
        };
        Ok((alg, rsa_public_key_der(&n, &e)))
    } else {
        Err(unsupported(format!("key type {kt}")))
    }
}

/// The uncompressed point from CKA_EC_POINT: the standard wraps it in a DER OCTET STRING,
/// some tokens give it bare.
pub(crate) fn ec_point(v: &[u8], field: usize) -> Result<Vec<u8>, Error> {
    let want = 1 + 2 * field;
    let bad = || Error::Key(format!("CKA_EC_POINT is not an uncompressed {}-byte point", want));
    if v.len() == want && v[0] == 0x04 {
        return Ok(v.to_vec());
    }
    let inner = match v {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => return Err(bad()),
    };
    if inner.len() == want && inner[0] == 0x04 { Ok(inner.to_vec()) } else { Err(bad()) }
}

/// PKCS#11 gives ECDSA signatures as r‖s (each `field` bytes); X.509 wants the DER
/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8], field: usize) -> Result<Vec<u8>, Error> {
    if raw.len() != 2 * field {
        return Err(Error::Key(format!(
            "the token returned a {}-byte ECDSA signature, expected {}",
            raw.len(),
            2 * field
        )));
    }
    let mut body = der_uint(&raw[..field]);
    body.extend(der_uint(&raw[field..]));
    Ok(der_tlv(0x30, &body))
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub(crate) fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_uint(n);
    body.extend(der_uint(e));
    der_tlv(0x30, &body)
}

/// A non-negative big-endian integer as DER INTEGER (minimal, with a 0 when the top bit is set).
fn der_uint(v: &[u8]) -> Vec<u8> {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    let mut content = Vec::with_capacity(v.len() - start + 1);
    if start == v.len() || v[start] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&v[start..]);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair};

    /// ring's fixed-width signatures are PKCS#11's r‖s; after conversion ring's ASN.1
    /// verifier (what X.509 checkers do) must accept them.
    #[test]
    fn raw_ecdsa_signatures_convert_to_what_x509_verifiers_accept() {
        let rng = SystemRandom::new();
        let cases = [
            (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &signature::ECDSA_P256_SHA256_ASN1, 32),
            (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &signature::ECDSA_P384_SHA384_ASN1, 48),
        ];
        for (signing, verifying, field) in cases {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
            let public = key.public_key().as_ref().to_vec();
            // Many signatures, so r or s with a high bit set or a leading zero byte occur.
            for i in 0..64u32 {
                let msg = format!("tbs {i}");
                let raw = key.sign(&rng, msg.as_bytes()).unwrap();
                let der = ecdsa_raw_to_der(raw.as_ref(), field).unwrap();
                signature::UnparsedPublicKey::new(verifying, &public)
                    .verify(msg.as_bytes(), &der)
                    .unwrap_or_else(|_| panic!("signature {i} (field {field}) does not verify"));
                // The wrapped and bare CKA_EC_POINT forms both give the point.
                let mut wrapped = vec![0x04, public.len() as u8];
                wrapped.extend_from_slice(&public);
                assert_eq!(ec_point(&wrapped, field).unwrap(), public);
                assert_eq!(ec_point(&public, field).unwrap(), public);
            }
        }
        assert!(ecdsa_raw_to_der(&[1; 63], 32).is_err());
        assert!(ec_point(&[0x04, 0x02, 0x04, 0x00], 32).is_err());
    }

    /// Our RSAPublicKey from (modulus, exponent) is byte for byte what a software key of the
    /// same numbers reports, and ring verifies with it.
    #[test]
    fn rsa_public_key_is_pkcs1_der() {
        let key = ca_core::keys::generate(KeyAlgorithm::Rsa2048).unwrap();
        let soft = ca_core::signer::SoftwareSigner::from_pkcs8(key.der()).unwrap();
        let expected = soft.public_key_raw().to_vec();
        let (n, e) = parse_rsa_public(&expected);
        assert_eq!(rsa_public_key_der(&n, &e), expected);
        let sig = soft.sign(b"tbs").unwrap();
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, rsa_public_key_der(&n, &e))
            .verify(b"tbs", &sig)
            .unwrap();
        // Leading zeros are dropped, a set top bit gets its zero.
        assert_eq!(der_uint(&[0, 0, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0x01, 0x00, 0x01]), [0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(der_uint(&[0, 0]), [0x02, 0x01, 0x00]);
    }

    /// (modulus, exponent) as unsigned big-endian bytes, from a PKCS#1 DER we did not write.
    fn parse_rsa_public(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        fn tlv(b: &[u8]) -> (&[u8], &[u8]) {
            let (len, hdr) = if b[1] < 0x80 {
                (usize::from(b[1]), 2)
            } else {
                let k = usize::from(b[1] & 0x7f);
                (b[2..2 + k].iter().fold(0usize, |a, x| a << 8 | usize::from(*x)), 2 + k)
            };
            (&b[hdr..hdr + len], &b[hdr + len..])
        }
        let (seq, _) = tlv(der);
        let (n, rest) = tlv(seq);
        let (e, _) = tlv(rest);
        let strip = |v: &[u8]| v.iter().skip_while(|b| **b == 0).copied().collect::<Vec<u8>>();
        // Hand the encoder a leading zero, as a token may.
        let mut n_padded = vec![0];
        n_padded.extend(strip(n));
        (n_padded, strip(e))
    }
}
