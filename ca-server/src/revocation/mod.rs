//! The revocation read side: CRLs (full + delta) and OCSP answers, both projections of the
//! event log kept fresh from the revoked set. One [`Revocation`] per issuer generation
//! (`crl.rs` publishes, `ocsp.rs` answers), held by the [`Registry`] (`registry.rs`), which
//! routes OCSP requests by CertID and follows the log.
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

mod crl;
mod ocsp;
mod registry;
mod signer;

pub use ocsp::OcspRequest;
pub use registry::Registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use ca_core::Serial;
use ca_core::ca::IssuingCa;
use ca_core::ocsp::{CertId, CertStatus, HashAlgorithm, OcspResponder};
use ca_storage::EventStore;
use serde::{Deserialize, Serialize};

use crate::app::now_unix;
use crate::error::AppError;
use crate::metrics::Metrics;

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
    /// Upper bound on cached OCSP answers (per issuer; a full cache evicts one entry per
    /// insert; 0 turns caching off).
    pub ocsp_cache_entries: usize,
    /// PostgreSQL backend: an instance that does not write answers OCSP `tryLater` (and
    /// `/readyz` 503) while its replica may be further behind the database than this.
    pub follower_max_lag_ms: u64,
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
            follower_max_lag_ms: 1_000,
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

/// Lock poisoning is recovered in one way everywhere here: take the value. Every guarded
/// value is replaced or updated in one step, so a panic elsewhere cannot leave it
/// half-written; skipping a poisoned lock instead would, for one, skip the OCSP cache
/// invalidation of a revocation.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often an instance that does not write looks for the writer's newer CRLs (besides
/// when it sees one logged) and notices that it took over.
const FOLLOWER_LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

struct CachedAnswer {
    der: Bytes,
    refresh_at: i64,
}

pub struct Revocation {
    store: EventStore,
    ca: Arc<IssuingCa>,
    cfg: RevocationConfig,
    freshest_url: String,
    /// Signs with the issuing key: the writer's (or the embedded store's) unless
    /// `ocsp_delegated_signer` is set.
    issuing_responder: Arc<OcspResponder>,
    /// The delegated signer held, if any (until one is, a copy of `issuing_responder`,
    /// which answers nothing: see [`Revocation::cannot_answer`]).
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
        let responder = Arc::new(OcspResponder::for_ca(&ca)?);
        let prefix = ca_core::issue::issuer_path_prefix(ca.generation);
        let r = Arc::new(Revocation {
            store,
            freshest_url: format!("{}{prefix}/crl/delta", public_url.trim_end_matches('/')),
            ca,
            cfg,
            issuing_responder: responder.clone(),
            responder: RwLock::new(responder),
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

    /// The issuer this serves.
    pub fn ca(&self) -> &Arc<IssuingCa> {
        &self.ca
    }

    /// Publish the first CRLs, set up the OCSP signer, and start the task that republishes
    /// CRLs on revocations and before nextUpdate (the registry follows the log). An
    /// instance that does not write (PostgreSQL backend) serves the writer's CRLs instead,
    /// and publishes its own from the moment it takes over.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), AppError> {
        let writes = self.writes();
        if writes {
            if self.cfg.ocsp_delegated_signer {
                self.rotate_ocsp_signer().await?;
            }
            // A CA that cannot sign CRLs (e.g. an imported CA without cRLSign) still issues
            // and answers OCSP; `/crl` then answers 500 and the log says why.
            if let Err(e) = self.publish().await {
                tracing::error!(error = %e, "initial CRL publication failed");
            }
        } else if let Err(e) = self.adopt_shared().await {
            tracing::warn!(error = %e, issuer = self.ca.generation, "reading the writer's CRLs failed");
        }
        let me = self.clone();
        tokio::spawn(async move { me.run(shutdown, writes).await });
        Ok(())
    }

    /// Whether this instance signs and logs CRLs: the embedded store's server, or the
    /// writer of a shared one.
    fn writes(&self) -> bool {
        self.store.writes()
    }

    async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>, mut wrote: bool) {
        loop {
            // An expired issuer's certificates have all expired too: nothing left to list.
            if now_unix() >= self.ca.not_after {
                tracing::info!(
                    issuer = self.ca.generation,
                    "issuing CA expired; its CRLs are no longer renewed"
                );
                return;
            }
            // Not writing: look for the writer's newer CRLs, and for a takeover, this often.
            let next_due =
                if wrote { self.next_due_in() } else { self.next_due_in().min(FOLLOWER_LOOK_EVERY) };
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = self.wake.notified() => {
                    // Coalesce: let a burst of revocations land, then publish once.
                    tokio::time::sleep(std::time::Duration::from_millis(self.cfg.crl_coalesce_millis)).await;
                }
                _ = tokio::time::sleep(next_due) => {}
            }
            if !self.writes() {
                wrote = false;
                if let Err(e) = self.adopt_shared().await {
                    tracing::warn!(error = %e, issuer = self.ca.generation, "reading the writer's CRLs failed");
                }
                continue;
            }
            // Just took over: the CRLs served so far are the old writer's, which may predate
            // its last revocations, and a delegated signer it holds is one the old writer
            // issued it (without `ocsp_delegated_signer`, `responder()` has switched to
            // the issuing key already).
            let took_over = !std::mem::replace(&mut wrote, true);
            if self.cfg.ocsp_delegated_signer
                && (took_over || self.signer_needs_rotation())
                && let Err(e) = self.rotate_ocsp_signer().await
            {
                tracing::error!(error = %e, "rotating the OCSP signer failed");
            }
            if (took_over || self.crl_stale() || self.crl_due())
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
        if let Some(f) = read(&self.full).clone() {
            due = due.min(f.this_update + (f.next_update - f.this_update) / 2);
        }
        if let Some(d) = read(&self.delta).clone() {
            due = due.min(d.this_update + (d.next_update - d.this_update) / 2);
        }
        if let Some(t) = self.responder().delegated_halfway() {
            due = due.min(t);
        }
        let secs = (due - now).clamp(1, 3600) as u64;
        std::time::Duration::from_secs(secs)
    }

    fn crl_due(&self) -> bool {
        let now = now_unix();
        let half = |c: &PublishedCrl| now >= c.this_update + (c.next_update - c.this_update) / 2;
        let full = read(&self.full).clone();
        let delta = read(&self.delta).clone();
        full.is_none_or(|f| half(&f)) || delta.is_none_or(|d| half(&d))
    }

    /// The published full CRL's nextUpdate, if one was published (for `/readyz`).
    pub fn full_crl_next_update(&self) -> Option<i64> {
        read(&self.full).as_ref().map(|c| c.next_update)
    }

    fn crl_stale(&self) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        read(&self.full).clone().is_none_or(|f| f.covers_generation < g)
    }

    /// Who signs OCSP answers now: the issuing key when this instance writes and no
    /// delegated signer is configured (so a takeover switches at once), else the delegated
    /// signer held.
    fn responder(&self) -> Arc<OcspResponder> {
        if !self.cfg.ocsp_delegated_signer && self.writes() {
            return self.issuing_responder.clone();
        }
        read(&self.responder).clone()
    }

    /// A revocation recorded at log `seq` is durable: invalidate the serial's cached answers
    /// and mark the CRLs stale. Called by `Revoke` before it acknowledges and again by the
    /// log follower; the generation is the highest revocation seq + 1, so the second call
    /// changes nothing and does not cause a second CRL publication.
    pub fn revoked(&self, serial: &Serial, seq: u64) {
        let before = self.generation.fetch_max(seq + 1, Ordering::AcqRel);
        let mut c = write(&self.cache);
        for h in HashAlgorithm::ALL {
            c.remove(&(h, serial.clone()));
        }
        drop(c);
        if before < seq + 1 {
            self.wake.notify_one();
        }
    }

    /// A CRL of this issuer was logged: one that does not write looks for its bytes.
    pub fn crl_logged(&self) {
        if !self.writes() {
            self.wake.notify_one();
        }
    }

    /// The replica's lag behind the database, when it is over `follower_max_lag_ms` and
    /// this instance does not write: its answers could miss a revocation the writer
    /// acknowledged, so it gives none (`tryLater`, and `/readyz` says why).
    fn replica_too_stale(&self) -> Option<std::time::Duration> {
        let lag = self.store.replica_staleness()?;
        (lag.as_millis() > u128::from(self.cfg.follower_max_lag_ms) && !self.writes()).then_some(lag)
    }

    /// The current full CRL, republished first if a revocation was acknowledged since.
    pub async fn full_crl(&self) -> Result<Arc<PublishedCrl>, AppError> {
        self.current(&self.full).await
    }

    pub async fn delta_crl(&self) -> Result<Arc<PublishedCrl>, AppError> {
        self.current(&self.delta).await
    }

    async fn current(&self, slot: &RwLock<Option<Arc<PublishedCrl>>>) -> Result<Arc<PublishedCrl>, AppError> {
        let get = || read(slot).clone();
        if !self.writes() {
            // The writer's, as shared; this instance cannot publish a fresher one.
            let valid = || get().filter(|c| c.next_update > now_unix());
            if let Some(c) = valid() {
                return Ok(c);
            }
            self.adopt_shared().await?;
            return valid().ok_or_else(|| {
                AppError::Store(ca_storage::StoreError::Unavailable(
                    "this instance does not sign CRLs and has no valid CRL from the writer yet".into(),
                ))
            });
        }
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
        let covered = read(&self.full).clone().map(|f| (f.covers_generation, f.next_update));
        match covered {
            Some((c, next)) if c >= g && next > now_unix() => Ok(()),
            _ => self.publish().await,
        }
    }

    fn status_of(&self, id: &CertId) -> Result<CertStatus, AppError> {
        let Some(serial) = &id.serial else { return Ok(CertStatus::Unknown) };
        Ok(match self.store.cert(serial)? {
            // Another issuer's certificate (same serial space, other CA): not ours to vouch for.
            Some(rec) if rec.issued.issuer_generation != self.ca.generation => CertStatus::Unknown,
            None => CertStatus::Unknown,
            Some(rec) => match rec.revoked {
                Some(r) => CertStatus::Revoked { time: r.revoked_at, reason: r.reason },
                None => CertStatus::Good,
            },
        })
    }
}
