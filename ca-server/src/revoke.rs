//! The one revocation path, shared by gRPC `Revoke` and ACME revokeCert: check, append
//! `CertificateRevoked` durably, tell the OCSP/CRL side (`revocation.rs`) before the
//! caller hears back, so the next OCSP answer and CRL say revoked.

use std::sync::atomic::Ordering;

use ca_core::Serial;
use ca_core::event::RevocationReason;
use ca_core::projection::{CertEntry, decide_revoke};
use ca_storage::CertRecord;

use crate::app::{App, now_unix};
use crate::error::AppError;

/// A revocation request, already decoded from its frontend.
pub struct RevokeRequest<'a> {
    pub serial: &'a Serial,
    pub reason: RevocationReason,
    pub invalidity_date: Option<i64>,
    pub requester: &'a str,
}

impl App {
    /// Revoke once `authorize` accepts the certificate's record (gRPC: anyone for now;
    /// ACME: the issuing account or the certificate's key). Returns the revocation time.
    pub async fn revoke(
        &self,
        req: RevokeRequest<'_>,
        authorize: impl FnOnce(&CertRecord) -> Result<(), AppError>,
    ) -> Result<i64, AppError> {
        if let Some(t) = req.invalidity_date
            && (t < 0 || t > now_unix())
        {
            return Err(AppError::InvalidArgument(format!(
                "invalidity date {t} is in the future or negative; it is when the key was (suspected) compromised"
            )));
        }
        let serial = req.serial;
        let _guard = self.revoke_lock.lock().await;
        let Some(rec) = self.store.cert(serial)? else {
            // A follower's replica may not hold it yet: only the writer can say it was never
            // issued, so a follower refuses as for any write (UNAVAILABLE, naming the writer).
            if let ca_storage::Role::Follower { writer } = self.store.role() {
                return Err(AppError::Store(ca_storage::StoreError::NotWriter {
                    writer,
                    why: format!(
                        "certificate {serial} is not in this follower's replica; revoke it at the writer"
                    ),
                }));
            }
            return Err(AppError::NotFound(format!(
                "no certificate with serial {serial} was issued by this CA"
            )));
        };
        authorize(&rec)?;
        let now = now_unix();
        let entry = CertEntry {
            seq: rec.issued_seq,
            not_after: rec.issued.not_after,
            issuer: rec.issued.issuer_generation,
        };
        let event = decide_revoke(
            serial,
            Some(&entry),
            rec.revoked.as_ref(),
            req.reason,
            req.invalidity_date,
            now,
            req.requester,
        )?
        .ok_or_else(|| AppError::NotFound(format!("no certificate with serial {serial}")))?;
        let appended = self.store.append(vec![event]).await?;
        let seq = appended.first().map(|a| a.seq).unwrap_or_else(|| self.store.next_seq());
        // Before the acknowledgement: the next OCSP answer and CRL fetch must say revoked.
        self.revocation.revoked(serial, rec.issued.issuer_generation, seq);
        self.metrics.revoked.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%serial, reason = req.reason.name(), requester = req.requester, "certificate revoked");
        Ok(now)
    }
}
