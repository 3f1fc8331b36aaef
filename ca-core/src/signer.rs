//! Signing through a trait, so a software key today and an HSM/KMS key tomorrow look the
//! same to the certificate, CRL and OCSP builders.

use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::Error;
use crate::keys::KeyAlgorithm;

/// A private key that can sign. Implementations must be cheap to call concurrently.
pub trait Signer: Send + Sync {
    /// The key's algorithm (decides the signatureAlgorithm of what it signs).
    fn key_algorithm(&self) -> KeyAlgorithm;
    /// The subjectPublicKey BIT STRING contents of the key.
    fn public_key_raw(&self) -> &[u8];
    /// Sign `msg` (the signature algorithm hashes it).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error>;

    /// DER SubjectPublicKeyInfo of the key.
    fn spki_der(&self) -> Vec<u8> {
        SignerRef::subject_public_key_info_of(self.key_algorithm(), self.public_key_raw())
    }
}

/// A key held in process memory, signing with `ring`.
pub struct SoftwareSigner {
    key: KeyPair,
    alg: KeyAlgorithm,
}

impl SoftwareSigner {
    /// From PKCS#8 PEM or DER.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, Error> {
        let (key, alg) = crate::keys::load(bytes)?;
        Ok(Self { key, alg })
    }
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareSigner({})", self.alg)
    }
}

impl Signer for SoftwareSigner {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.alg
    }
    fn public_key_raw(&self) -> &[u8] {
        self.key.der_bytes()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        SigningKey::sign(&self.key, msg).map_err(|e| Error::Key(format!("signing failed: {e}")))
    }
}

/// Adapter that lets rcgen sign through any [`Signer`].
#[derive(Clone)]
pub struct SignerRef(pub Arc<dyn Signer>);

impl SignerRef {
    fn subject_public_key_info_of(alg: KeyAlgorithm, raw: &[u8]) -> Vec<u8> {
        struct Pk<'a>(KeyAlgorithm, &'a [u8]);
        impl PublicKeyData for Pk<'_> {
            fn der_bytes(&self) -> &[u8] {
                self.1
            }
            fn algorithm(&self) -> &'static SignatureAlgorithm {
                self.0.signature_algorithm()
            }
        }
        Pk(alg, raw).subject_public_key_info()
    }
}

impl PublicKeyData for SignerRef {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.key_algorithm().signature_algorithm()
    }
}

impl SigningKey for SignerRef {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}
