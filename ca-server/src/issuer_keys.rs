//! Where issuing-CA keys live: the one seam between rotation and key storage. Software keys
//! are PKCS#8 files under `keys/` (0600, encrypted when `[ca] key_passphrase_*` is set); a
//! hardware backend plugs in here, behind the same `key_ref` strings.

use std::path::PathBuf;
use std::sync::Arc;

use ca_core::keys::{self, KeyAlgorithm};
use ca_core::signer::{Signer, SoftwareSigner};

use crate::app::{DataDir, write_secret};
use crate::config::CaConfig;
use crate::error::AppError;

/// The `key_ref` of generation `g`'s software key.
pub fn key_ref_for(generation: u32) -> String {
    format!("issuing-{generation}.key")
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

/// Generate the key of issuing CA `generation` (algorithm `alg`, the CA's), write it
/// (fsynced, 0600) and return it with its `key_ref`. Called before the rotation event.
pub fn new_issuing_key(
    dd: &DataDir,
    config: &CaConfig,
    alg: KeyAlgorithm,
    generation: u32,
) -> Result<(Arc<dyn Signer>, String), AppError> {
    let key_ref = key_ref_for(generation);
    let signer = write_key(dd, config, &key_file(dd, &key_ref)?, alg)?;
    Ok((signer, key_ref))
}

/// Open the key a rotation event's `key_ref` names.
pub fn open_issuing_key(dd: &DataDir, config: &CaConfig, key_ref: &str) -> Result<Arc<dyn Signer>, AppError> {
    let pass = crate::keyfiles::passphrase(config)?;
    let key = crate::keyfiles::read_key(&key_file(dd, key_ref)?, pass.as_ref())?;
    Ok(Arc::new(SoftwareSigner::from_pkcs8(key.der())?))
}

/// Generate (or replace) the pending key of `generation`, for a CSR the offline root signs.
pub fn new_pending_key(
    dd: &DataDir,
    config: &CaConfig,
    alg: KeyAlgorithm,
    generation: u32,
) -> Result<Arc<dyn Signer>, AppError> {
    write_key(dd, config, &pending_file(dd, generation), alg)
}

/// The pending key of `generation`, if a CSR was made for it.
pub fn open_pending_key(
    dd: &DataDir,
    config: &CaConfig,
    generation: u32,
) -> Result<Option<Arc<dyn Signer>>, AppError> {
    let path = pending_file(dd, generation);
    if !path.exists() {
        return Ok(None);
    }
    let pass = crate::keyfiles::passphrase(config)?;
    let key = crate::keyfiles::read_key(&path, pass.as_ref())?;
    Ok(Some(Arc::new(SoftwareSigner::from_pkcs8(key.der())?)))
}

/// Make the pending key of `generation` its issuing key (a rename, fsynced); returns the
/// `key_ref` to record.
pub fn promote_pending_key(dd: &DataDir, generation: u32) -> Result<String, AppError> {
    let key_ref = key_ref_for(generation);
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
    let pass = crate::keyfiles::passphrase(config)?;
    let key = crate::keyfiles::read_key(&path, pass.as_ref())?;
    Ok(Some(Arc::new(SoftwareSigner::from_pkcs8(key.der())?)))
}
