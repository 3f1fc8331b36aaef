//! Key algorithms the CA can hold and key generation / import.

use std::fmt;

use rcgen::{KeyPair, SignatureAlgorithm};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A CA key algorithm. ECDSA P-256 is the default: fastest to sign with `ring` and
/// universally supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::Rsa4096 => "rsa4096",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            Error::Config(format!(
                "unknown key algorithm {s:?}; known: {}",
                Self::ALL.map(|a| a.name()).join(", ")
            ))
        })
    }

    /// The signature algorithm a key of this kind signs with.
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PKCS#8 private key. Its Debug output never shows the key.
pub struct Pkcs8Key(Vec<u8>);

impl Pkcs8Key {
    pub fn from_der(der: Vec<u8>) -> Self {
        Pkcs8Key(der)
    }
    pub fn der(&self) -> &[u8] {
        &self.0
    }
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.0.clone()))
    }
}

impl fmt::Debug for Pkcs8Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs8Key(<redacted>)")
    }
}

/// Generate a new key. RSA keys come from the `rsa` crate because `ring` signs with RSA
/// but cannot generate RSA keys.
pub fn generate(alg: KeyAlgorithm) -> Result<Pkcs8Key, Error> {
    if let Some(bits) = alg.rsa_bits() {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut RingRng(SystemRandom::new()), bits)
            .map_err(|e| Error::Key(format!("RSA key generation: {e}")))?;
        let der = key.to_pkcs8_der().map_err(|e| Error::Key(format!("RSA PKCS#8 encoding: {e}")))?;
        return Ok(Pkcs8Key(der.as_bytes().to_vec()));
    }
    let kp = KeyPair::generate_for(alg.signature_algorithm())?;
    Ok(Pkcs8Key(kp.serialize_der()))
}

/// Load a PKCS#8 key (PEM or DER) and tell which algorithm it is.
pub fn load(bytes: &[u8]) -> Result<(KeyPair, KeyAlgorithm), Error> {
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).map_err(|e| Error::Key(format!("bad PEM: {e}")))?;
        if p.tag() != "PRIVATE KEY" {
            return Err(Error::Key(format!(
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block, found {:?}",
                p.tag()
            )));
        }
        p.into_contents()
    } else {
        bytes.to_vec()
    };
    let kp = KeyPair::try_from(der.as_slice())
        .map_err(|e| Error::Key(format!("not a supported PKCS#8 key: {e}")))?;
    let alg = if kp.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
        KeyAlgorithm::EcdsaP256
    } else if kp.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
        KeyAlgorithm::EcdsaP384
    } else if kp.algorithm() == &rcgen::PKCS_ED25519 {
        KeyAlgorithm::Ed25519
    } else {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let k = rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| Error::Key(format!("RSA key: {e}")))?;
        match k.n().bits() {
            2048 => KeyAlgorithm::Rsa2048,
            3072 => KeyAlgorithm::Rsa3072,
            4096 => KeyAlgorithm::Rsa4096,
            b => {
                return Err(Error::Key(format!("RSA-{b} CA keys are not supported; use 2048, 3072 or 4096")));
            }
        }
    };
    Ok((kp, alg))
}

/// Adapts ring's CSPRNG to the `rand_core` traits the `rsa` crate wants.
struct RingRng(SystemRandom);

impl rsa::rand_core::RngCore for RingRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // The OS random source failing is not recoverable; key generation must not go on.
        #[allow(clippy::expect_used, reason = "no safe fallback for a broken CSPRNG")]
        self.0.fill(dest).expect("system random source failed");
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for RingRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_and_load_each_fast_algorithm() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519] {
            let k = generate(alg).unwrap();
            let (_, got) = load(k.to_pem().as_bytes()).unwrap();
            assert_eq!(got, alg);
            let (_, got) = load(k.der()).unwrap();
            assert_eq!(got, alg);
        }
    }

    #[test]
    fn rsa_2048_generates_and_loads() {
        let k = generate(KeyAlgorithm::Rsa2048).unwrap();
        assert_eq!(load(k.der()).unwrap().1, KeyAlgorithm::Rsa2048);
    }

    #[test]
    fn debug_does_not_leak_key() {
        let k = generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(format!("{k:?}"), "Pkcs8Key(<redacted>)");
    }
}
