//! Key algorithms the CA can hold and key generation / import.

use std::fmt;

use rcgen::{KeyPair, SignatureAlgorithm};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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

/// A PKCS#8 private key. Its Debug output never shows the key; its bytes are zeroed on drop.
pub struct Pkcs8Key(Zeroizing<Vec<u8>>);

impl Pkcs8Key {
    pub fn from_der(der: Vec<u8>) -> Self {
        Pkcs8Key(Zeroizing::new(der))
    }
    pub fn der(&self) -> &[u8] {
        &self.0
    }
    /// The unencrypted `PRIVATE KEY` PEM (zeroed on drop).
    pub fn to_pem(&self) -> Zeroizing<String> {
        let p = pem::Pem::new("PRIVATE KEY", self.0.to_vec());
        let text = Zeroizing::new(pem::encode(&p));
        // The Pem's copy of the key is zeroed too.
        drop(Zeroizing::new(p.into_contents()));
        text
    }

    /// The key as encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY` PEM): PBES2 with
    /// PBKDF2-HMAC-SHA256 ([`PBKDF2_ITERATIONS`], 16-byte random salt) and AES-256-CBC.
    /// PBKDF2 rather than the `pkcs8` crate's scrypt default: OpenSSL refuses scrypt
    /// parameters above its 32 MiB memory limit, and `openssl pkey` must read these files.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<String, Error> {
        use pkcs8::pkcs5::pbes2;
        if passphrase.is_empty() {
            return Err(Error::Key("refusing to encrypt a key with an empty passphrase".into()));
        }
        let rng = SystemRandom::new();
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        rng.fill(&mut salt).map_err(|_| Error::Key("system random source failed".into()))?;
        rng.fill(&mut iv).map_err(|_| Error::Key("system random source failed".into()))?;
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
            .map_err(|e| Error::Key(format!("PBES2 parameters: {e}")))?;
        let info = pkcs8::PrivateKeyInfo::try_from(self.der())
            .map_err(|e| Error::Key(format!("not a PKCS#8 key: {e}")))?;
        let doc = info
            .encrypt_with_params(params, passphrase)
            .map_err(|e| Error::Key(format!("encrypting the key: {e}")))?;
        // The ciphertext is not secret; the SecretDocument zeroes its copy on drop.
        Ok(pem::encode(&pem::Pem::new(ENCRYPTED_PEM_TAG, doc.as_bytes().to_vec())))
    }
}

/// PBKDF2-HMAC-SHA256 iterations for encrypted keys (OWASP's 2023 figure for SHA-256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The PEM label of encrypted PKCS#8 (RFC 5958 / RFC 7468).
pub const ENCRYPTED_PEM_TAG: &str = "ENCRYPTED PRIVATE KEY";

/// Whether `bytes` is an `ENCRYPTED PRIVATE KEY` PEM file.
pub fn is_encrypted_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
}

/// Decrypt an `ENCRYPTED PRIVATE KEY` PEM (or encrypted PKCS#8 DER) with `passphrase`.
/// A wrong passphrase is [`Error::WrongPassphrase`]; the error never holds key bytes.
pub fn decrypt_pkcs8(bytes: &[u8], passphrase: &[u8]) -> Result<Pkcs8Key, Error> {
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).map_err(|e| Error::Key(format!("bad PEM: {e}")))?;
        if p.tag() != ENCRYPTED_PEM_TAG {
            return Err(Error::Key(format!(
                "expected an {ENCRYPTED_PEM_TAG:?} PEM block, found {:?}",
                p.tag()
            )));
        }
        p.into_contents()
    } else {
        bytes.to_vec()
    };
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| Error::Key(format!("not an encrypted PKCS#8 key: {e}")))?;
    // CBC padding catches most wrong passphrases; the rest decrypt to garbage, which the
    // PKCS#8 parse below refuses. Both are reported as a wrong passphrase.
    let doc = info.decrypt(passphrase).map_err(|_| Error::WrongPassphrase)?;
    let plain = Zeroizing::new(doc.as_bytes().to_vec());
    drop(doc);
    if pkcs8::PrivateKeyInfo::try_from(plain.as_slice()).is_err() {
        return Err(Error::WrongPassphrase);
    }
    Ok(Pkcs8Key(plain))
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
        return Ok(Pkcs8Key::from_der(der.as_bytes().to_vec()));
    }
    let kp = KeyPair::generate_for(alg.signature_algorithm())?;
    Ok(Pkcs8Key::from_der(kp.serialize_der()))
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
        Zeroizing::new(p.into_contents())
    } else {
        Zeroizing::new(bytes.to_vec())
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
    fn encrypted_pem_round_trips_and_loads() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let k = generate(alg).unwrap();
            let pem = k.to_encrypted_pem(b"correct horse").unwrap();
            assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{pem}");
            assert!(is_encrypted_pem(pem.as_bytes()));
            assert!(!is_encrypted_pem(k.to_pem().as_bytes()));
            let back = decrypt_pkcs8(pem.as_bytes(), b"correct horse").unwrap();
            assert_eq!(back.der(), k.der());
            assert_eq!(load(back.der()).unwrap().1, alg);
        }
    }

    #[test]
    fn wrong_passphrase_is_an_error_without_key_bytes() {
        let k = generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = k.to_encrypted_pem(b"right").unwrap();
        let err = decrypt_pkcs8(pem.as_bytes(), b"wrong").unwrap_err();
        assert!(matches!(err, Error::WrongPassphrase), "{err:?}");
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        assert!(!err.to_string().contains("right"));
        assert!(k.to_encrypted_pem(b"").is_err(), "an empty passphrase is refused");
        assert!(decrypt_pkcs8(k.to_pem().as_bytes(), b"right").is_err(), "a plain key is not encrypted");
        assert!(load(pem.as_bytes()).is_err(), "load wants a decrypted key");
    }

    #[test]
    fn debug_does_not_leak_key() {
        let k = generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(format!("{k:?}"), "Pkcs8Key(<redacted>)");
    }
}
