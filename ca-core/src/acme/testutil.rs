//! Test keys that sign like an ACME client (instant-acme, certbot): ring for EC and
//! Ed25519, an `rsa`-crate key signed through ring for RS256.

use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::b64u;
use crate::keys::{KeyAlgorithm, generate};

pub(crate) enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

pub(crate) struct TestKey {
    pub alg: &'static str,
    pub pkcs8: Vec<u8>,
    pub jwk: Value,
    signer: Signer,
}

impl TestKey {
    pub fn es256() -> TestKey {
        Self::ec("ES256", &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    pub fn es384() -> TestKey {
        Self::ec("ES384", &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ec(alg: &'static str, sig: &'static signature::EcdsaSigningAlgorithm, crv: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(sig, &rng).unwrap().as_ref().to_vec();
        let kp = EcdsaKeyPair::from_pkcs8(sig, &pkcs8, &rng).unwrap();
        let point = kp.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let jwk = json!({
            "kty": "EC", "crv": crv,
            "x": b64u(&point[1..1 + half]), "y": b64u(&point[1 + half..]),
        });
        TestKey { alg, pkcs8, jwk, signer: Signer::Ec(kp) }
    }

    pub fn ed25519() -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref().to_vec();
        let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(kp.public_key())});
        TestKey { alg: "EdDSA", pkcs8, jwk, signer: Signer::Ed(kp) }
    }

    /// One RSA-2048 key per test binary: generating it is the slow part.
    pub fn rs256() -> TestKey {
        static PKCS8: OnceLock<Vec<u8>> = OnceLock::new();
        let pkcs8 = PKCS8.get_or_init(|| generate(KeyAlgorithm::Rsa2048).unwrap().der().to_vec()).clone();
        let kp = RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
        let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
        let jwk = json!({"kty": "RSA", "n": b64u(&parts.n), "e": b64u(&parts.e)});
        TestKey { alg: "RS256", pkcs8, jwk, signer: Signer::Rsa(kp) }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ec(kp) => kp.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).unwrap();
                sig
            }
        }
    }

    /// The protected header a client sends for newAccount (with `jwk`).
    pub fn header_jwk(&self, url: &str) -> Value {
        json!({"alg": self.alg, "nonce": "n0nce", "url": url, "jwk": self.jwk})
    }

    /// A flattened JWS body signed by this key over the given header and payload.
    pub fn jws(&self, header: &Value, payload: &[u8]) -> Vec<u8> {
        let p = b64u(header.to_string());
        let pl = b64u(payload);
        let sig = self.sign(format!("{p}.{pl}").as_bytes());
        body(&p, &pl, &sig)
    }
}

pub(crate) fn body(protected: &str, payload: &str, sig: &[u8]) -> Vec<u8> {
    json!({"protected": protected, "payload": payload, "signature": b64u(sig)}).to_string().into_bytes()
}
