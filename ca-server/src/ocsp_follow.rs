//! Delegated OCSP signers for an instance that does not write (PostgreSQL backend). It
//! signs OCSP answers only with a delegated signer (`revocation/signer.rs`), never with
//! the issuing key, so for every issuer it serves it makes a key here, has the writer
//! certify and log it (`CaAdmin.IssueOcspSigner`), and installs it; again at half its
//! lifetime. Until then it answers `tryLater` and `/readyz` says why.

use std::sync::Arc;
use std::time::Duration;

use ca_core::signer::SoftwareSigner;

use crate::app::App;
use crate::error::AppError;

/// How often to look for an issuer that needs a signer.
const EVERY: Duration = Duration::from_secs(1);
/// After a failed request (no writer yet, a takeover under way).
const RETRY: Duration = Duration::from_secs(3);

/// Keep every issuer's signer current until shutdown.
pub fn start(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let wait = match refresh(&app).await {
                Ok(()) => EVERY,
                Err(e) => {
                    tracing::warn!(error = %e, "getting a delegated OCSP signer from the writer failed; OCSP answers tryLater");
                    RETRY
                }
            };
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

async fn refresh(app: &App) -> Result<(), AppError> {
    for rv in app.revocation.wanting_signers() {
        let generation = rv.ca().generation;
        let url = app.store.writer_url().ok_or_else(|| {
            AppError::Store(ca_storage::StoreError::NotWriter {
                writer: None,
                why: "no writer with a known gRPC URL to issue a delegated OCSP signer".into(),
            })
        })?;
        // The CSR's names are not read: only its key is certified.
        let (key, csr) = ca_core::csr::self_request(&[])?;
        let der = crate::forward::ocsp_signer_at_writer(app, &url, csr, generation).await?;
        rv.install_signer(der, Arc::new(SoftwareSigner::from_pkcs8(&key)?))?;
    }
    Ok(())
}
