//! The one issuance path, shared by gRPC `SignCsr` and ACME finalize: sign on the signing
//! pool, append `CertificateIssued` (plus any events that must land with it, in the same
//! group commit) and answer only once that append is durable. Nothing is issued while the
//! log records a newer issuer than this instance can sign for (`App::newer_issuer_missing`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ca_core::event::{CertificateIssued, Event};
use ca_core::issue::Authority;

use crate::app::App;
use crate::error::AppError;

impl App {
    /// Run `sign` on a signing thread; then `then` (still on that thread) gives the events
    /// to record with the certificate and the answer to return. The answer is released by
    /// the log writer once the batch is durable; a full signing queue is `Busy` at once.
    ///
    /// On the hot path the tokio task queues one job and waits once: the signing thread
    /// signs and builds the answer, the writer answers.
    pub async fn issue_with<R: Send + 'static>(
        self: &Arc<Self>,
        sign: impl FnOnce(&Authority) -> Result<CertificateIssued, AppError> + Send + 'static,
        then: impl FnOnce(&CertificateIssued) -> (Vec<Event>, R) + Send + 'static,
    ) -> Result<R, AppError> {
        if let Some(why) = self.newer_issuer_missing() {
            self.metrics.sign_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(AppError::Unavailable(why));
        }
        let app = Arc::clone(self);
        let started = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<R, AppError>>();
        let job = move || {
            // A panic while signing answers INTERNAL (and is counted) instead of dropping
            // the reply, which the caller would read as a shutdown.
            let signed = crate::signing::guarded(&app.metrics, || {
                let issued = sign(&app.authority)?;
                let (extra, answer) = then(&issued);
                Ok((issued, extra, answer))
            });
            let (issued, extra, answer) = match signed.and_then(|r| r) {
                Ok(x) => x,
                Err(e) => {
                    let counter = match e {
                        AppError::Internal(_) => &app.metrics.sign_failed,
                        _ => &app.metrics.sign_rejected,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let mut events = Vec::with_capacity(1 + extra.len());
            events.push(Event::CertificateIssued(issued));
            events.extend(extra);
            // The callback runs on the log writer; it holds the metrics, not the App, so
            // the writer never drops the last handle to its own store.
            let metrics = Arc::clone(&app.metrics);
            app.store.append_then(events, move |r| {
                let out = match r {
                    Ok(_) => {
                        metrics.issued.fetch_add(1, Ordering::Relaxed);
                        metrics.sign_latency.observe(started.elapsed());
                        Ok(answer)
                    }
                    Err(e) => {
                        metrics.sign_failed.fetch_add(1, Ordering::Relaxed);
                        Err(e.into())
                    }
                };
                // A gone receiver is a caller that stopped waiting; the record stands.
                let _ = reply.send(out);
            });
        };
        if let Err(e) = self.pool.submit(job) {
            if matches!(e, AppError::Busy(_)) {
                self.metrics.sign_busy.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        answer.await.map_err(|_| AppError::ShuttingDown)?
    }
}
