//! The revocation read side: CRLs (full + delta) and OCSP answers, both projections of the
//! event log kept fresh from the revoked set.
//!
//! - **CRLs** are rebuilt from the persisted revoked set when revocations land (a burst is
//!   coalesced into one publication), before nextUpdate, and on demand when a fetch finds
//!   the published CRL older than the last acknowledged revocation (read-your-writes).
//!   Each publication logs a `CrlPublished` event for the full CRL and one for its delta.
//!   Numbers share one sequence: full CRLs get even steps, the delta published with a full
//!   CRL takes the next number; the delta's base is the full CRL designated as base, which
//!   rotates every `delta_base_period_secs` (and at start).
//! - **OCSP** answers are signed once per (hash algorithm, serial) and cached until half
//!   their validity has passed. A revocation invalidates the cached answers for its serial
//!   before `Revoke` is acknowledged, so the next answer says `revoked`. A generation
//!   (one past the latest revocation's log seq) stops a lookup that raced with a
//!   revocation from caching a stale `good`. A
//!   follower of the log pre-signs the `revoked` answers of every revocation it sees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use ca_core::Serial;
use ca_core::ca::IssuingCa;
use ca_core::crl::{self, CrlInput, RevokedCert};
use ca_core::event::{CertificateIssued, CrlPublished, Event};
use ca_core::keys::KeyAlgorithm;
use ca_core::ocsp::{
    self, CertId, CertStatus, HashAlgorithm, OcspResponder, OcspResponseStatus, SingleAnswer,
};
use ca_core::signer::SoftwareSigner;
use ca_storage::EventStore;
use serde::{Deserialize, Serialize};

use crate::app::now_unix;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::signing::SigningPool;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// nextUpdate - thisUpdate of full CRLs; a new one is published at half of it.
    pub crl_validity_secs: u64,
    /// nextUpdate - thisUpdate of delta CRLs.
    pub delta_validity_secs: u64,
    /// How long a full CRL stays the base of the deltas.
    pub delta_base_period_secs: u64,
    /// Coalescing window: revocations within it produce one CRL publication.
    pub crl_coalesce_millis: u64,
    /// nextUpdate - thisUpdate of OCSP answers; cached answers are re-signed at half of it.
    pub ocsp_validity_secs: u64,
    /// Sign OCSP answers with a delegated OCSP-signing certificate instead of the CA key.
    pub ocsp_delegated_signer: bool,
    /// Lifetime of the delegated signer's certificate; it is replaced at half of it.
    pub ocsp_signer_validity_secs: u64,
    /// Upper bound on cached OCSP answers.
    pub ocsp_cache_entries: usize,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            crl_validity_secs: 86_400,
            delta_validity_secs: 3_600,
            delta_base_period_secs: 86_400,
            crl_coalesce_millis: 200,
            ocsp_validity_secs: 4 * 3_600,
            ocsp_delegated_signer: false,
            ocsp_signer_validity_secs: 7 * 86_400,
            ocsp_cache_entries: 200_000,
        }
    }
}

/// A published CRL as served over HTTP.
pub struct PublishedCrl {
    pub der: Vec<u8>,
    pub pem: String,
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    /// Every revocation recorded below this log seq is listed.
    pub covers_generation: u64,
}

struct Base {
    number: u64,
    /// Revocations recorded at or after this log seq are not in the base.
    next_seq: u64,
    published_at: i64,
}

struct CachedAnswer {
    der: Bytes,
    refresh_at: i64,
}

pub struct Revocation {
    store: EventStore,
    ca: Arc<IssuingCa>,
    cfg: RevocationConfig,
    freshest_url: String,
    responder: RwLock<Arc<OcspResponder>>,
    full: RwLock<Option<Arc<PublishedCrl>>>,
    delta: RwLock<Option<Arc<PublishedCrl>>>,
    base: std::sync::Mutex<Option<Base>>,
    publish_lock: tokio::sync::Mutex<()>,
    /// One past the log seq of the latest durable revocation; CRLs and cached answers record
    /// the value they were built under.
    generation: AtomicU64,
    cache: RwLock<HashMap<(HashAlgorithm, Serial), CachedAnswer>>,
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Revocation {
    pub fn new(
        store: EventStore,
        ca: Arc<IssuingCa>,
        cfg: RevocationConfig,
        public_url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, AppError> {
        let responder = OcspResponder::for_ca(&ca)?;
        let r = Arc::new(Revocation {
            store,
            ca,
            freshest_url: format!("{}/crl/delta", public_url.trim_end_matches('/')),
            cfg,
            responder: RwLock::new(Arc::new(responder)),
            full: RwLock::new(None),
            delta: RwLock::new(None),
            base: std::sync::Mutex::new(None),
            publish_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            cache: RwLock::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            metrics,
        });
        Ok(r)
    }

    /// Publish the first CRLs, set up the OCSP signer, and start the background tasks: one
    /// republishes CRLs on revocations and before nextUpdate, one follows the log.
    pub async fn start(
        self: &Arc<Self>,
        pool: SigningPool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), AppError> {
        if self.cfg.ocsp_delegated_signer {
            self.rotate_ocsp_signer().await?;
        }
        // A CA that cannot sign CRLs (e.g. an imported CA without cRLSign) still issues and
        // answers OCSP; `/crl` then answers 500 and the log says why.
        if let Err(e) = self.publish().await {
            tracing::error!(error = %e, "initial CRL publication failed");
        }
        tokio::spawn(self.clone().follow_log(pool, shutdown.clone()));
        let me = self.clone();
        tokio::spawn(async move { me.run(shutdown).await });
        Ok(())
    }

    async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next_due = self.next_due_in();
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = self.wake.notified() => {
                    // Coalesce: let a burst of revocations land, then publish once.
                    tokio::time::sleep(std::time::Duration::from_millis(self.cfg.crl_coalesce_millis)).await;
                }
                _ = tokio::time::sleep(next_due) => {}
            }
            if self.cfg.ocsp_delegated_signer
                && self.signer_needs_rotation()
                && let Err(e) = self.rotate_ocsp_signer().await
            {
                tracing::error!(error = %e, "rotating the OCSP signer failed");
            }
            if (self.crl_stale() || self.crl_due())
                && let Err(e) = self.publish().await
            {
                tracing::error!(error = %e, "CRL publication failed; retrying in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }

    fn next_due_in(&self) -> std::time::Duration {
        let now = now_unix();
        let mut due = i64::MAX;
        if let Some(f) = self.full.read().ok().and_then(|g| g.clone()) {
            due = due.min(f.this_update + (f.next_update - f.this_update) / 2);
        }
        if let Some(d) = self.delta.read().ok().and_then(|g| g.clone()) {
            due = due.min(d.this_update + (d.next_update - d.this_update) / 2);
        }
        if let Some(na) = self.responder().delegated_not_after() {
            due = due.min(na - self.cfg.ocsp_signer_validity_secs as i64 / 2);
        }
        let secs = (due - now).clamp(1, 3600) as u64;
        std::time::Duration::from_secs(secs)
    }

    fn crl_due(&self) -> bool {
        let now = now_unix();
        let half = |c: &PublishedCrl| now >= c.this_update + (c.next_update - c.this_update) / 2;
        let full = self.full.read().ok().and_then(|g| g.clone());
        let delta = self.delta.read().ok().and_then(|g| g.clone());
        full.is_none_or(|f| half(&f)) || delta.is_none_or(|d| half(&d))
    }

    fn crl_stale(&self) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        self.full.read().ok().and_then(|f| f.clone()).is_none_or(|f| f.covers_generation < g)
    }

    fn responder(&self) -> Arc<OcspResponder> {
        match self.responder.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn signer_needs_rotation(&self) -> bool {
        self.responder()
            .delegated_not_after()
            .is_some_and(|na| now_unix() >= na - self.cfg.ocsp_signer_validity_secs as i64 / 2)
    }

    /// Issue a fresh delegated OCSP-signing certificate (logged like any issuance) and
    /// switch to it. Cached answers signed by the old one stay valid until they refresh.
    async fn rotate_ocsp_signer(&self) -> Result<(), AppError> {
        let now = now_unix();
        let (der, key) = ocsp::issue_ocsp_signer(
            &self.ca,
            KeyAlgorithm::EcdsaP256,
            now,
            self.cfg.ocsp_signer_validity_secs,
        )?;
        let signer = Arc::new(SoftwareSigner::from_pkcs8(key.der())?);
        let responder = OcspResponder::delegated(&self.ca, der.clone(), signer)?;
        let (serial, not_before, not_after) = cert_facts(&der)?;
        self.store
            .append(vec![Event::CertificateIssued(CertificateIssued {
                serial,
                certificate_der: der,
                profile: "ocsp-signing".into(),
                requester: "ca-server".into(),
                not_before,
                not_after,
                names: vec![],
            })])
            .await?;
        if let Ok(mut g) = self.responder.write() {
            *g = Arc::new(responder);
        }
        tracing::info!(not_after, "delegated OCSP signer issued");
        Ok(())
    }

    /// A revocation recorded at log `seq` is durable: invalidate the serial's cached answers
    /// and mark the CRLs stale. Called by `Revoke` before it acknowledges and again by the
    /// log follower; the generation is the highest revocation seq + 1, so the second call
    /// changes nothing and does not cause a second CRL publication.
    pub fn revoked(&self, serial: &Serial, seq: u64) {
        let before = self.generation.fetch_max(seq + 1, Ordering::AcqRel);
        if let Ok(mut c) = self.cache.write() {
            for h in HashAlgorithm::ALL {
                c.remove(&(h, serial.clone()));
            }
        }
        if before < seq + 1 {
            self.wake.notify_one();
        }
    }

    /// Build and log a full CRL and its delta from the current revoked set.
    pub async fn publish(&self) -> Result<(), AppError> {
        let _one = self.publish_lock.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        let now = now_unix();
        let head = self.store.next_seq();
        let revoked = self.store.revoked()?;
        let last = self.store.last_crl_number()?;
        let full_number = if last == 0 { 1 } else { last + 2 };
        let delta_number = full_number + 1;

        let entries: Vec<RevokedCert> = revoked
            .iter()
            .filter(|(_, _, not_after)| *not_after >= now)
            .map(|(s, e, _)| RevokedCert::from_projection(s, e))
            .collect();
        let (base_number, base_next_seq) = {
            let mut b = self.base.lock().map_err(|_| AppError::Io("base lock poisoned".into()))?;
            let rotate =
                b.as_ref().is_none_or(|b| now - b.published_at >= self.cfg.delta_base_period_secs as i64);
            if rotate {
                *b = Some(Base { number: full_number, next_seq: head, published_at: now });
            }
            b.as_ref().map(|b| (b.number, b.next_seq)).unwrap_or((full_number, head))
        };
        let delta_entries: Vec<RevokedCert> = revoked
            .iter()
            .filter(|(_, e, not_after)| e.seq >= base_next_seq && *not_after >= now)
            .map(|(s, e, _)| RevokedCert::from_projection(s, e))
            .collect();

        let ca = self.ca.clone();
        let fresh = self.freshest_url.clone();
        let (full_next, delta_next) =
            (now + self.cfg.crl_validity_secs as i64, now + self.cfg.delta_validity_secs as i64);
        let started = std::time::Instant::now();
        let n_entries = entries.len();
        let (full_der, delta_der) = tokio::task::spawn_blocking(move || -> Result<_, ca_core::Error> {
            let full = crl::build_crl(
                &ca,
                &CrlInput {
                    number: full_number,
                    this_update: now,
                    next_update: full_next,
                    entries: &entries,
                    delta_base: None,
                    freshest_crl_url: Some(&fresh),
                },
            )?;
            let delta = crl::build_crl(
                &ca,
                &CrlInput {
                    number: delta_number,
                    this_update: now,
                    next_update: delta_next,
                    entries: &delta_entries,
                    delta_base: Some(base_number),
                    freshest_crl_url: None,
                },
            )?;
            Ok((full, delta))
        })
        .await
        .map_err(|e| AppError::Io(e.to_string()))??;

        // Served only once its publication is durable in the log.
        self.store
            .append(vec![
                Event::CrlPublished(CrlPublished {
                    number: full_number,
                    this_update: now,
                    next_update: full_next,
                    delta_base: None,
                }),
                Event::CrlPublished(CrlPublished {
                    number: delta_number,
                    this_update: now,
                    next_update: delta_next,
                    delta_base: Some(base_number),
                }),
            ])
            .await?;
        let mk = |der: Vec<u8>, number, next_update| {
            Arc::new(PublishedCrl {
                pem: crl::crl_to_pem(&der),
                der,
                number,
                this_update: now,
                next_update,
                covers_generation: generation,
            })
        };
        if let Ok(mut g) = self.full.write() {
            *g = Some(mk(full_der, full_number, full_next));
        }
        if let Ok(mut g) = self.delta.write() {
            *g = Some(mk(delta_der, delta_number, delta_next));
        }
        self.metrics.crl_published.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            number = full_number,
            entries = n_entries,
            delta_base = base_number,
            build_ms = started.elapsed().as_secs_f64() * 1e3,
            "CRL published"
        );
        Ok(())
    }

    /// The current full CRL, republished first if a revocation was acknowledged since.
    pub async fn full_crl(&self) -> Result<Arc<PublishedCrl>, AppError> {
        self.current(&self.full).await
    }

    pub async fn delta_crl(&self) -> Result<Arc<PublishedCrl>, AppError> {
        self.current(&self.delta).await
    }

    async fn current(&self, slot: &RwLock<Option<Arc<PublishedCrl>>>) -> Result<Arc<PublishedCrl>, AppError> {
        let get = || slot.read().ok().and_then(|g| g.clone());
        let g = self.generation.load(Ordering::Acquire);
        match get() {
            Some(c) if c.covers_generation >= g && c.next_update > now_unix() => Ok(c),
            _ => {
                self.publish_if_stale(g).await?;
                get().ok_or_else(|| AppError::Io("no CRL published".into()))
            }
        }
    }

    async fn publish_if_stale(&self, g: u64) -> Result<(), AppError> {
        // Another fetch may have published while we waited: only publish if still stale.
        let covered =
            self.full.read().ok().and_then(|f| f.clone()).map(|f| (f.covers_generation, f.next_update));
        match covered {
            Some((c, next)) if c >= g && next > now_unix() => Ok(()),
            _ => self.publish().await,
        }
    }

    /// Answer a DER OCSP request. Always returns an OCSP response (errors included).
    pub async fn ocsp(&self, req: &[u8], pool: &SigningPool) -> Bytes {
        let parsed = match ocsp::parse_request(req) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "bad OCSP request");
                return Bytes::from(ocsp::error_response(e.status()));
            }
        };
        let responder = self.responder();
        if !parsed.cert_ids.iter().all(|id| responder.matches_issuer(id)) {
            self.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
            return Bytes::from(ocsp::error_response(OcspResponseStatus::Unauthorized));
        }
        let now = now_unix();
        // The cacheable shape: one canonical CertID, no nonce.
        let cache_key = match (&parsed.nonce, parsed.cert_ids.as_slice()) {
            (None, [id]) => id
                .serial
                .as_ref()
                .filter(|s| responder.cert_id(id.hash, s).der() == id.der())
                .map(|s| (id.hash, s.clone())),
            _ => None,
        };
        if let Some(k) = &cache_key
            && let Some(hit) = self
                .cache
                .read()
                .ok()
                .and_then(|c| c.get(k).filter(|a| a.refresh_at > now).map(|a| a.der.clone()))
        {
            self.metrics.ocsp_cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.answer(responder, parsed.cert_ids, parsed.nonce, cache_key, pool).await
    }

    /// Look the statuses up, sign one response on the pool, cache it when `cache_key` says
    /// it is the cacheable shape.
    async fn answer(
        &self,
        responder: Arc<OcspResponder>,
        cert_ids: Vec<CertId>,
        nonce: Option<Vec<u8>>,
        cache_key: Option<(HashAlgorithm, Serial)>,
        pool: &SigningPool,
    ) -> Bytes {
        let now = now_unix();
        let generation = self.generation.load(Ordering::Acquire);
        let mut statuses = Vec::with_capacity(cert_ids.len());
        for id in &cert_ids {
            match self.status_of(id) {
                Ok(s) => statuses.push(s),
                Err(e) => {
                    tracing::error!(error = %e, "OCSP status lookup failed");
                    return Bytes::from(ocsp::error_response(OcspResponseStatus::InternalError));
                }
            }
        }
        let validity = self.cfg.ocsp_validity_secs as i64;
        let built = pool
            .run(move || {
                let answers: Vec<SingleAnswer<'_>> = cert_ids
                    .iter()
                    .zip(statuses)
                    .map(|(cert_id, status)| SingleAnswer {
                        cert_id,
                        status,
                        this_update: now,
                        next_update: now + validity,
                    })
                    .collect();
                ocsp::build_response(&responder, &answers, now, nonce.as_deref())
            })
            .await;
        let der = match built {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "signing an OCSP response failed");
                return Bytes::from(ocsp::error_response(OcspResponseStatus::InternalError));
            }
            Err(_) => return Bytes::from(ocsp::error_response(OcspResponseStatus::TryLater)),
        };
        let der = Bytes::from(der);
        if let Some(k) = cache_key
            && let Ok(mut c) = self.cache.write()
            // Only if no revocation landed since the status was read.
            && self.generation.load(Ordering::Acquire) == generation
            && c.len() < self.cfg.ocsp_cache_entries
        {
            c.insert(k, CachedAnswer { der: der.clone(), refresh_at: now + validity / 2 });
        }
        der
    }

    /// Follow the log: every `CertificateRevoked` (whatever path recorded it) invalidates
    /// the serial's cached answers and pre-signs its `revoked` answers for SHA-1 and
    /// SHA-256 CertIDs, so relying parties hit the cache right after a revocation.
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
            if let Event::CertificateRevoked(r) = &rec.event {
                self.revoked(&r.serial, rec.seq);
                let responder = self.responder();
                for h in [HashAlgorithm::Sha1, HashAlgorithm::Sha256] {
                    let id = responder.cert_id(h, &r.serial);
                    self.answer(responder.clone(), vec![id], None, Some((h, r.serial.clone())), &pool).await;
                    self.metrics.ocsp_presigned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn status_of(&self, id: &CertId) -> Result<CertStatus, AppError> {
        let Some(serial) = &id.serial else { return Ok(CertStatus::Unknown) };
        Ok(match self.store.cert(serial)? {
            None => CertStatus::Unknown,
            Some(rec) => match rec.revoked {
                Some(r) => CertStatus::Revoked { time: r.revoked_at, reason: r.reason },
                None => CertStatus::Good,
            },
        })
    }
}

/// Serial and validity of a certificate we just built.
fn cert_facts(der: &[u8]) -> Result<(Serial, i64, i64), AppError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, x) =
        X509Certificate::from_der(der).map_err(|e| AppError::Io(format!("parsing own certificate: {e}")))?;
    let serial = Serial::from_bytes(x.raw_serial())?;
    Ok((serial, x.validity().not_before.timestamp(), x.validity().not_after.timestamp()))
}
