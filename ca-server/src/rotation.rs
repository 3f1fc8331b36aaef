//! Issuing-CA rollover on a running server: a new issuing CA from the root key in the data
//! dir (`RotateIssuer`), or, with an offline root, a pending key and its CSR
//! (`CreateIssuerCsr`) and then the certificate the root signed (`ImportIssuer`). Each
//! rotation writes the key (fsynced) before it appends `IssuingCaRotated`, and switches
//! issuance only once that event is durable. `App::rotate_lock` serializes them.

use std::sync::Arc;

use ca_core::ca::IssuingCa;
use ca_core::event::{Event, IssuingCaRotated};
use ca_core::rotation;

use crate::app::{App, DataDir, now_unix, write_public_files};
use crate::error::AppError;
use crate::issuer_keys;

/// What to say when the root key is not on the server.
const OFFLINE_ROOT_HINT: &str = "the root key is not on this server (offline root): run \
     `ca-server ca rotate --csr-out FILE`, sign FILE with the root, then \
     `ca-server ca rotate --import-signed CERT`";

impl App {
    /// One past the highest generation recorded in the log (the log, not memory, is the
    /// authority: a recorded rotation that failed to switch must not be reused).
    fn next_generation(&self) -> Result<u32, AppError> {
        let logged = self.store.issuers()?.iter().map(|r| r.generation).max().unwrap_or(0);
        let known = self.authority.issuers().iter().map(|c| c.generation).max().unwrap_or(0);
        Ok(logged.max(known) + 1)
    }

    fn dd(&self) -> DataDir {
        DataDir(self.data_dir.clone())
    }

    /// `RotateIssuer`: a new key, its certificate signed by the root key in `keys/`, the
    /// event, then the switch. `FAILED_PRECONDITION` without a root key on the server.
    pub async fn rotate_issuer(self: &Arc<Self>) -> Result<Arc<IssuingCa>, AppError> {
        let _one = self.rotate_lock.lock().await;
        let generation = self.next_generation()?;
        let current = self.authority.ca();
        let (dd, cfg) = (self.dd(), self.config.clone());
        let (ica, key_ref) = tokio::task::spawn_blocking(move || -> Result<(IssuingCa, String), AppError> {
            let root = issuer_keys::root_key(&dd, &cfg.ca)?
                .ok_or_else(|| AppError::FailedPrecondition(OFFLINE_ROOT_HINT.into()))?;
            let alg = current.signer().key_algorithm();
            let (key, key_ref) = issuer_keys::new_issuing_key(&dd, &cfg, alg, generation)?;
            let der = rotation::sign_issuer(
                &current.root_der,
                root,
                key.clone(),
                &cfg.ca.name,
                generation,
                time::OffsetDateTime::now_utc(),
            )?;
            let ica = IssuingCa::new(der, current.root_der.clone(), key)?.with_generation(generation);
            Ok((ica, key_ref))
        })
        .await
        .map_err(|e| AppError::Io(e.to_string()))??;
        self.record_and_switch(ica, key_ref).await
    }

    /// `CreateIssuerCsr`: generate (or replace) the next generation's pending key and
    /// return its CSR (PEM) with that generation.
    pub async fn create_issuer_csr(self: &Arc<Self>) -> Result<(String, u32), AppError> {
        let _one = self.rotate_lock.lock().await;
        let generation = self.next_generation()?;
        let alg = self.authority.ca().signer().key_algorithm();
        let (dd, cfg) = (self.dd(), self.config.clone());
        let csr = tokio::task::spawn_blocking(move || -> Result<String, AppError> {
            let key = issuer_keys::new_pending_key(&dd, &cfg, alg, generation)?;
            Ok(rotation::issuer_csr(key, &cfg.ca.name, generation)?)
        })
        .await
        .map_err(|e| AppError::Io(e.to_string()))??;
        tracing::info!(generation, "pending issuing key generated; its CSR goes to the offline root");
        Ok((csr, generation))
    }

    /// `ImportIssuer`: the certificate the root signed for the pending key (PEM or DER);
    /// checked (a CA, for the pending key, signed by the recorded root), then recorded and
    /// switched to.
    pub async fn import_issuer(self: &Arc<Self>, cert: &[u8]) -> Result<Arc<IssuingCa>, AppError> {
        let _one = self.rotate_lock.lock().await;
        let generation = self.next_generation()?;
        let der = match std::str::from_utf8(cert).ok().filter(|s| s.contains("-----BEGIN")) {
            Some(pem) => ca_core::ca::pem_certs(pem)?
                .into_iter()
                .next()
                .ok_or_else(|| AppError::InvalidArgument("no CERTIFICATE in the PEM".into()))?,
            None => cert.to_vec(),
        };
        let root_der = self.authority.ca().root_der.clone();
        let key = issuer_keys::open_pending_key(&self.dd(), &self.config, generation)?.ok_or_else(|| {
            AppError::FailedPrecondition(format!(
                "no pending key for issuer generation {generation}: run `ca-server ca rotate --csr-out FILE` first"
            ))
        })?;
        rotation::check_signed_issuer(&der, &root_der, key.public_key_raw(), now_unix())
            .map_err(|e| AppError::InvalidArgument(e.to_string()))?;
        let ica = IssuingCa::new(der, root_der, key)?.with_generation(generation);
        let key_ref = issuer_keys::promote_pending_key(&self.dd(), &self.config, generation)?;
        self.record_and_switch(ica, key_ref).await
    }

    /// Append `IssuingCaRotated` (its key is already on disk), start the new issuer's
    /// CRLs/OCSP, then make it the one that issues and point the data dir's public files
    /// at it. Certificates signed meanwhile by the old issuer finish with it.
    async fn record_and_switch(
        self: &Arc<Self>,
        ica: IssuingCa,
        key_ref: String,
    ) -> Result<Arc<IssuingCa>, AppError> {
        let ica = Arc::new(ica);
        self.store
            .append(vec![Event::IssuingCaRotated(IssuingCaRotated {
                generation: ica.generation,
                certificate_der: ica.cert_der.clone(),
                key_ref,
            })])
            .await?;
        // The rotation is recorded: switch even if the new issuer's first CRL publication
        // fails (its CRLs are then published on the first fetch).
        if let Err(e) = self.revocation.add(ica.clone()).await {
            tracing::error!(error = %e, generation = ica.generation, "starting the new issuer's CRLs/OCSP failed");
        }
        self.authority.install(ica.clone(), true)?;
        write_public_files(&self.dd(), &ica.root_der, &ica.cert_der)?;
        tracing::info!(
            generation = ica.generation,
            subject = %ica.subject,
            not_after = ica.not_after,
            "issuing CA rotated; new certificates are signed by it"
        );
        Ok(ica)
    }
}
