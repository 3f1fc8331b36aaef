//! Issuers added by another instance (PostgreSQL backend: `ca rotate` on the writer). Each
//! `IssuingCaRotated` record this instance's replica receives is installed, without a
//! restart, as soon as its key is here: the key file copied into `keys/`, or the key in a
//! shared PKCS#11 token. Until then the record waits, `/readyz` names the key it needs,
//! and the install is retried every few seconds. Without this, an instance that took over
//! after a rotation would go on issuing from the old issuer.

use std::sync::Arc;
use std::time::Duration;

use ca_core::ca::IssuingCa;
use ca_core::event::{Event, IssuingCaRotated};
use futures::StreamExt;

use crate::app::{App, DataDir};
use crate::error::AppError;

const RETRY: Duration = Duration::from_secs(3);

/// Follow the log for rotations until shutdown.
pub fn start(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut records = Box::pin(app.store.watch(app.store.next_seq()));
        // Recorded between loading the issuers at start and the watch: wait for them too.
        let mut waiting: Vec<IssuingCaRotated> = match app.store.issuers() {
            Ok(all) => all.into_iter().filter(|r| app.authority.issuer(r.generation).is_none()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the recorded issuers failed");
                Vec::new()
            }
        };
        // Published at once: until they are installed this instance issues nothing.
        publish(&app, &waiting);
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                next = records.next() => match next {
                    Some(Ok(rec)) => {
                        if let Event::IssuingCaRotated(r) = &rec.event {
                            waiting.push(r.clone());
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "issuer follower stopped");
                        return;
                    }
                    None => return,
                },
                _ = tokio::time::sleep(RETRY), if !waiting.is_empty() => {}
            }
            if waiting.is_empty() {
                continue;
            }
            let mut still = Vec::new();
            for r in waiting.drain(..) {
                match install(&app, &r).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(
                            generation = r.generation,
                            key_ref = %r.key_ref,
                            error = %e,
                            "a recorded issuer's key is not on this instance yet; copy it from the writer"
                        );
                        still.push(r);
                    }
                }
            }
            waiting = still;
            publish(&app, &waiting);
        }
    });
}

/// What `/readyz` names and `App::newer_issuer_missing` refuses issuance for.
fn publish(app: &App, waiting: &[IssuingCaRotated]) {
    let mut w = app.issuers_waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *w = waiting.iter().map(|r| (r.generation, r.key_ref.clone())).collect();
}

/// Install `r` unless this instance has it (the writer that recorded it installs its own,
/// under the same lock).
async fn install(app: &Arc<App>, r: &IssuingCaRotated) -> Result<(), AppError> {
    let _one = app.rotate_lock.lock().await;
    if app.authority.issuer(r.generation).is_some() {
        return Ok(());
    }
    let (dd, config, key_ref) = (DataDir(app.data_dir.clone()), app.config.clone(), r.key_ref.clone());
    let signer =
        tokio::task::spawn_blocking(move || crate::issuer_keys::open_issuing_key(&dd, &config, &key_ref))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
    let root = app.authority.ca().root_der.clone();
    let ica =
        Arc::new(IssuingCa::new(r.certificate_der.clone(), root, signer)?.with_generation(r.generation));
    let newest = app.authority.issuers().iter().all(|c| c.generation < r.generation);
    if let Err(e) = app.revocation.add(ica.clone()).await {
        tracing::error!(error = %e, generation = r.generation, "starting the new issuer's CRLs/OCSP failed");
    }
    app.authority.install(ica.clone(), newest)?;
    if newest {
        crate::app::write_public_files(&DataDir(app.data_dir.clone()), &ica.root_der, &ica.cert_der)?;
    }
    tracing::info!(
        generation = r.generation,
        current = newest,
        "issuer recorded by another instance installed"
    );
    Ok(())
}
