//! Every issuer's revocation side, by generation: routes OCSP requests to the issuer their
//! CertIDs name, routes revocations to the certificate's own issuer, and follows the log
//! (as a read replica would) so revocations from any path reach the right issuer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use ca_core::Serial;
use ca_core::ca::IssuingCa;
use ca_core::event::Event;
use ca_core::ocsp::{self, OcspResponseStatus};
use ca_storage::EventStore;

use super::{Revocation, RevocationConfig, lock, read, write};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::signing::SigningPool;

pub struct Registry {
    store: EventStore,
    cfg: RevocationConfig,
    public_url: String,
    metrics: Arc<Metrics>,
    by_generation: RwLock<BTreeMap<u32, Arc<Revocation>>>,
    /// Set by [`start`](Self::start): issuers added later start at once.
    shutdown: std::sync::Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
}

impl Registry {
    pub fn new(
        store: EventStore,
        issuers: &[Arc<IssuingCa>],
        cfg: RevocationConfig,
        public_url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, AppError> {
        let r = Registry {
            store,
            cfg,
            public_url: public_url.to_string(),
            metrics,
            by_generation: RwLock::new(BTreeMap::new()),
            shutdown: std::sync::Mutex::new(None),
        };
        for ca in issuers {
            r.insert(r.make(ca.clone())?);
        }
        Ok(Arc::new(r))
    }

    fn make(&self, ca: Arc<IssuingCa>) -> Result<Arc<Revocation>, AppError> {
        Revocation::new(self.store.clone(), ca, self.cfg.clone(), &self.public_url, self.metrics.clone())
    }

    fn insert(&self, r: Arc<Revocation>) {
        let mut m = write(&self.by_generation);
        m.insert(r.ca().generation, r);
    }

    fn all(&self) -> Vec<Arc<Revocation>> {
        let m = read(&self.by_generation);
        m.values().cloned().collect()
    }

    /// The issuers for which this instance (one that does not write) needs a delegated
    /// OCSP signer from the writer.
    pub fn wanting_signers(&self) -> Vec<Arc<Revocation>> {
        self.all().into_iter().filter(|r| r.wants_signer_from_writer()).collect()
    }

    /// Issuer `generation`'s revocation side.
    pub fn get(&self, generation: u32) -> Option<Arc<Revocation>> {
        let m = read(&self.by_generation);
        m.get(&generation).cloned()
    }

    /// Like [`get`](Self::get), as a 404 for HTTP routes.
    pub fn issuer(&self, generation: u32) -> Result<Arc<Revocation>, AppError> {
        self.get(generation).ok_or_else(|| AppError::NotFound(format!("no issuer generation {generation}")))
    }

    /// Start every issuer's CRL task and the log follower.
    pub async fn start(
        self: &Arc<Self>,
        pool: SigningPool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), AppError> {
        *lock(&self.shutdown) = Some(shutdown.clone());
        for r in self.all() {
            r.start(shutdown.clone()).await?;
        }
        tokio::spawn(self.clone().follow_log(pool, shutdown));
        Ok(())
    }

    /// A new issuer (after a rotation): publish its first CRLs and keep them fresh.
    pub async fn add(&self, ca: Arc<IssuingCa>) -> Result<(), AppError> {
        let r = self.make(ca)?;
        self.insert(r.clone());
        let shutdown = lock(&self.shutdown).clone();
        if let Some(rx) = shutdown {
            r.start(rx).await?;
        }
        Ok(())
    }

    /// A revocation of a certificate signed by issuer `generation`, durable at log `seq`.
    pub fn revoked(&self, serial: &Serial, generation: u32, seq: u64) {
        if let Some(r) = self.get(generation) {
            r.revoked(serial, seq);
        }
    }

    /// Answer a DER OCSP request: for the issuer `only` names (its own `/issuers/{n}/ocsp`
    /// URL), or for whichever known issuer every CertID names (`/ocsp`, so clients given
    /// one responder URL keep working across rotations). Always an OCSP response.
    pub async fn ocsp(&self, req: &[u8], pool: &SigningPool, only: Option<u32>) -> Bytes {
        let parsed = match ocsp::parse_request(req) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "bad OCSP request");
                return Bytes::from(ocsp::error_response(e.status()));
            }
        };
        let candidates = match only {
            Some(g) => self.get(g).into_iter().collect(),
            None => self.all(),
        };
        match candidates.into_iter().find(|r| r.answers_for(&parsed)) {
            Some(r) => r.ocsp(parsed, pool).await,
            None => {
                self.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
                Bytes::from(ocsp::error_response(OcspResponseStatus::Unauthorized))
            }
        }
    }

    /// Follow the log: every `CertificateRevoked` (whatever path recorded it) goes to its
    /// certificate's issuer, which invalidates and pre-signs its answers.
    async fn follow_log(
        self: Arc<Self>,
        pool: SigningPool,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures::StreamExt;
        let mut records = Box::pin(self.store.watch(self.store.next_seq()));
        loop {
            let next = tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                r = records.next() => r,
            };
            let rec = match next {
                Some(Ok(rec)) => rec,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "revocation follower stopped");
                    return;
                }
                None => return,
            };
            if let Event::CrlPublished(c) = &rec.event
                && let Some(rv) = self.get(c.issuer_generation)
            {
                rv.crl_logged();
            }
            if let Event::CertificateRevoked(r) = &rec.event {
                let generation = match self.store.cert(&r.serial) {
                    Ok(Some(c)) => c.issued.issuer_generation,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, serial = %r.serial, "revocation follower: lookup failed");
                        continue;
                    }
                };
                if let Some(rv) = self.get(generation) {
                    rv.revoked_and_presign(&r.serial, rec.seq, &pool).await;
                }
            }
        }
    }
}
