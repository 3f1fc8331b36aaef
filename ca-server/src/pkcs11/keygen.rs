//! Key pair generation inside the token: the private half is a token object that is
//! private, sensitive and never extractable, so its bytes never leave the HSM.

use ca_core::keys::KeyAlgorithm;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::types::Ulong;
use ring::rand::{SecureRandom, SystemRandom};

use super::signer::{P256_PARAMS, P384_PARAMS};
use super::{Token, ck};
use crate::error::AppError;

/// Refuse what we do not generate in a token (before anything touches it).
pub(crate) fn check_algorithm(alg: KeyAlgorithm) -> Result<(), AppError> {
    if alg == KeyAlgorithm::Ed25519 {
        return Err(AppError::Config(
            "ed25519 is not supported for a PKCS#11 issuing key (few tokens implement it); \
             choose ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or rsa4096"
                .into(),
        ));
    }
    Ok(())
}

/// Generate a key pair labelled `label` with a random CKA_ID. Refused when any object
/// (of any class) already carries that label.
pub(crate) fn generate_pair(token: &Token, label: &str, alg: KeyAlgorithm) -> Result<(), AppError> {
    check_algorithm(alg)?;
    let session = token.session(true)?;
    let existing = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| token.error("searching for the key label", &e))?;
    if !existing.is_empty() {
        return Err(AppError::Config(format!(
            "PKCS#11 token {:?} already holds an object labelled {label:?}; refusing to generate \
             another key with that label (choose another [ca.pkcs11] key_label)",
            token.label
        )));
    }
    let mut id = vec![0u8; 16];
    SystemRandom::new().fill(&mut id).map_err(|_| AppError::Config("system random source failed".into()))?;
    let (mechanism, mut public) = match alg {
        KeyAlgorithm::EcdsaP256 => {
            (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P256_PARAMS.to_vec())])
        }
        KeyAlgorithm::EcdsaP384 => {
            (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P384_PARAMS.to_vec())])
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let bits: u64 = match alg {
                KeyAlgorithm::Rsa2048 => 2048,
                KeyAlgorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(Ulong::from(bits)),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            )
        }
        KeyAlgorithm::Ed25519 => return check_algorithm(alg),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ]);
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    session.generate_key_pair(&mechanism, &public, &private).map_err(|e| {
        AppError::Config(format!("PKCS#11 token {:?}: generating a {alg} key pair: {}", token.label, ck(&e)))
    })?;
    Ok(())
}
