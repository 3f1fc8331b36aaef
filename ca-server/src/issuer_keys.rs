//! Where issuing-CA keys live: the one seam between rotation and key storage. Software keys
//! are PKCS#8 files under `keys/` (0600, encrypted when `[ca] key_passphrase_*` is set),
//! named by a `key_ref` like `issuing-2.key`; with `[ca.pkcs11]` the key pair is made in the
//! token, labelled `<key_label>-g<generation>`, and its `key_ref` is `pkcs11:<label>`.

use std::path::PathBuf;
use std::sync::Arc;

use ca_core::keys::{self, KeyAlgorithm};
use ca_core::signer::{Signer, SoftwareSigner};

use crate::app::{DataDir, write_secret};
use crate::config::{CaConfig, Config};
use crate::error::AppError;

/// The `key_ref` prefix of a key in the `[ca.pkcs11]` token.
const PKCS11_PREFIX: &str = "pkcs11:";

/// The `key_ref` of generation `g`'s software key.
fn file_ref_for(generation: u32) -> String {
    format!("issuing-{generation}.key")
}

/// The token label of generation `g`'s key.
fn token_label_for(config: &Config, generation: u32) -> Option<String> {
    config.ca.pkcs11.as_ref().map(|p| format!("{}-g{generation}", p.key_label))
}

/// A pending key (offline-root rotation): generated for a CSR, installed by the import.
fn pending_file(dd: &DataDir, generation: u32) -> PathBuf {
    dd.keys().join(format!("issuing-{generation}.pending.key"))
}

/// The file a `key_ref` names: a plain file name under `keys/`, nothing else.
fn key_file(dd: &DataDir, key_ref: &str) -> Result<PathBuf, AppError> {
    let plain = !key_ref.is_empty()
        && key_ref.ends_with(".key")
        && key_ref.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !key_ref.starts_with('.');
    if !plain {
        return Err(AppError::Config(format!(
            "issuer key_ref {key_ref:?} is not a key file name under keys/"
        )));
    }
    Ok(dd.keys().join(key_ref))
}

fn write_key(
    dd: &DataDir,
    config: &CaConfig,
    path: &std::path::Path,
    alg: KeyAlgorithm,
) -> Result<Arc<dyn Signer>, AppError> {
    let pass = crate::keyfiles::passphrase(config)?;
    let key = keys::generate(alg)?;
    std::fs::create_dir_all(dd.keys())?;
    write_secret(path, crate::keyfiles::encode_key(&key, pass.as_ref())?.as_bytes())?;
    // The directory entry too: the key must survive a crash once the event refers to it.
    std::fs::File::open(dd.keys())?.sync_all()?;
    Ok(Arc::new(SoftwareSigner::from_pkcs8(key.der())?))
}

fn read_key(config: &CaConfig, path: &std::path::Path) -> Result<Arc<dyn Signer>, AppError> {
    let pass = crate::keyfiles::passphrase(config)?;
    let key = crate::keyfiles::read_key(path, pass.as_ref())?;
    Ok(Arc::new(SoftwareSigner::from_pkcs8(key.der())?))
}

/// Generate the key of issuing CA `generation` (algorithm `alg`, the CA's) and return it
/// with its `key_ref`: in the token with `[ca.pkcs11]`, else a file (fsynced, 0600).
/// Called before the rotation event, so the event never names a key that is not kept.
pub fn new_issuing_key(
    dd: &DataDir,
    config: &Config,
    alg: KeyAlgorithm,
    generation: u32,
) -> Result<(Arc<dyn Signer>, String), AppError> {
    if let Some(label) = token_label_for(config, generation) {
        let signer = crate::pkcs11::generate_key(config, &label, alg)?;
        return Ok((signer, format!("{PKCS11_PREFIX}{label}")));
    }
    let key_ref = file_ref_for(generation);
    let signer = write_key(dd, &config.ca, &key_file(dd, &key_ref)?, alg)?;
    Ok((signer, key_ref))
}

/// Open the key a rotation event's `key_ref` names.
pub fn open_issuing_key(dd: &DataDir, config: &Config, key_ref: &str) -> Result<Arc<dyn Signer>, AppError> {
    match key_ref.strip_prefix(PKCS11_PREFIX) {
        Some(label) => crate::pkcs11::open_key(config, label),
        None => read_key(&config.ca, &key_file(dd, key_ref)?),
    }
}

/// Generate (or replace) the pending key of `generation`, for a CSR the offline root
/// signs. In a token the pending key is already the final one (`<key_label>-g<n>`): a
/// second CSR for the same generation reuses it rather than leaving orphans in the token.
pub fn new_pending_key(
    dd: &DataDir,
    config: &Config,
    alg: KeyAlgorithm,
    generation: u32,
) -> Result<Arc<dyn Signer>, AppError> {
    if let Some(label) = token_label_for(config, generation) {
        return match crate::pkcs11::open_key(config, &label) {
            Ok(signer) => Ok(signer),
            Err(_) => crate::pkcs11::generate_key(config, &label, alg),
        };
    }
    write_key(dd, &config.ca, &pending_file(dd, generation), alg)
}

/// The pending key of `generation`, if a CSR was made for it.
pub fn open_pending_key(
    dd: &DataDir,
    config: &Config,
    generation: u32,
) -> Result<Option<Arc<dyn Signer>>, AppError> {
    if let Some(label) = token_label_for(config, generation) {
        return Ok(crate::pkcs11::open_key(config, &label).ok());
    }
    let path = pending_file(dd, generation);
    if !path.exists() {
        return Ok(None);
    }
    read_key(&config.ca, &path).map(Some)
}

/// Make the pending key of `generation` its issuing key (a file rename, fsynced; nothing to
/// do in a token); returns the `key_ref` to record.
pub fn promote_pending_key(dd: &DataDir, config: &Config, generation: u32) -> Result<String, AppError> {
    if let Some(label) = token_label_for(config, generation) {
        return Ok(format!("{PKCS11_PREFIX}{label}"));
    }
    let key_ref = file_ref_for(generation);
    std::fs::rename(pending_file(dd, generation), key_file(dd, &key_ref)?)?;
    std::fs::File::open(dd.keys())?.sync_all()?;
    Ok(key_ref)
}

/// The root key, when it is kept on the server (`keys/root.key`); `None` with an offline root.
pub fn root_key(dd: &DataDir, config: &CaConfig) -> Result<Option<Arc<dyn Signer>>, AppError> {
    let path = dd.root_key();
    if !path.exists() {
        return Ok(None);
    }
    read_key(config, &path).map(Some)
}
