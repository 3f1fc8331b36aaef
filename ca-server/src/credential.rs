//! The admin client credential in the data dir (`admin.pem`, `admin.key`): what
//! `ca-server client` and `ca-server acme` present to the gRPC listener. Written by `init`
//! and, when missing or expired, by `serve` at start.

use std::path::Path;
use std::sync::Arc;

use ca_core::event::{CertificateIssued, Event};
use ca_core::issue::Authority;
use ca_storage::EventStore;

use crate::app::{App, DataDir, now_unix, write_atomic, write_secret};
use crate::error::AppError;

/// The credential's identity: a URI SAN (the default policy allows `spiffe://` URIs).
pub const ADMIN_IDENTITY: &str = "spiffe://ca-server/admin";
/// Its profile (clientAuth only); the certificate gets the profile's maximum lifetime.
pub const ADMIN_PROFILE: &str = "client";
/// The requester recorded in its `CertificateIssued` event.
const REQUESTER: &str = "ca-server:admin-credential";

/// Whether `dir` holds an admin key and a certificate that has not expired.
pub fn is_current(dir: &Path, now: i64) -> bool {
    let dd = DataDir(dir.to_path_buf());
    if !dd.admin_key().exists() {
        return false;
    }
    let Ok(text) = std::fs::read(dd.admin_pem()) else { return false };
    let Some(leaf) = pem::parse_many(&text).ok().and_then(|v| v.into_iter().next()) else { return false };
    match x509_parser::parse_x509_certificate(leaf.contents()) {
        Ok((_, c)) => c.validity().not_after.timestamp() > now,
        Err(_) => false,
    }
}

/// A fresh key, written 0600 before anything refers to it; returns the CSR.
fn new_key(dd: &DataDir) -> Result<Vec<u8>, AppError> {
    let (key, csr) = ca_core::csr::self_request(&[ADMIN_IDENTITY.to_string()])?;
    // Pkcs8Key zeroes the key bytes on drop, its PEM too.
    let key = ca_core::keys::Pkcs8Key::from_der(key);
    write_secret(&dd.admin_key(), key.to_pem().as_bytes())?;
    Ok(csr)
}

/// Sign without the name policy (the CA's own credential), for the profile's maximum.
fn sign(authority: &Authority, csr: &[u8], now: i64) -> Result<CertificateIssued, AppError> {
    let checked = ca_core::csr::check(csr, authority.policy())?;
    let (_, p) = authority.profiles().get(ADMIN_PROFILE).map_err(|e| {
        AppError::Config(format!(
            "the admin credential needs the `{ADMIN_PROFILE}` profile (clientAuth): {e}"
        ))
    })?;
    Ok(authority.sign_checked(&checked, ADMIN_PROFILE, p.max_validity_secs, REQUESTER, now)?)
}

fn write_cert(dd: &DataDir, der: &[u8], chain_pem: &str) -> Result<(), AppError> {
    let mut text = ca_core::ca::der_to_pem(der);
    text.push_str(chain_pem);
    write_atomic(&dd.admin_pem(), text.as_bytes(), 0o644)
}

/// `init`: sign offline and append the certificate's event before writing `admin.pem`.
pub fn issue_offline(store: &EventStore, dir: &Path, authority: &Authority) -> Result<(), AppError> {
    let dd = DataDir(dir.to_path_buf());
    let csr = new_key(&dd)?;
    let issued = sign(authority, &csr, now_unix())?;
    let der = issued.certificate_der.clone();
    store.append_blocking(vec![Event::CertificateIssued(issued)])?;
    write_cert(&dd, &der, &authority.ca().chain_pem)
}

/// `serve`: issue a new credential through the issuance path when the data dir holds
/// none or only an expired one. Returns whether it did.
pub async fn ensure(app: &Arc<App>) -> Result<bool, AppError> {
    if is_current(&app.data_dir, now_unix()) {
        return Ok(false);
    }
    let dd = DataDir(app.data_dir.clone());
    let csr = new_key(&dd)?;
    let (der, generation) = app
        .issue_with(
            move |a| sign(a, &csr, now_unix()),
            |issued| (vec![], (issued.certificate_der.clone(), issued.issuer_generation)),
        )
        .await?;
    write_cert(&dd, &der, &app.issuer_of(generation).chain_pem)?;
    Ok(true)
}
