//! OCSP answers for one issuer: cached per (hash algorithm, serial) in the cacheable
//! shape, signed on the signing pool otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use ca_core::Serial;
use ca_core::ocsp::{self, CertId, HashAlgorithm, OcspResponder, OcspResponseStatus, SingleAnswer};

use super::{CachedAnswer, Revocation, read, write};
use crate::app::now_unix;
use crate::signing::SigningPool;

pub use ca_core::ocsp::OcspRequest;

impl Revocation {
    /// Whether every CertID of a request names this issuer (by name and key hash).
    pub fn answers_for(&self, parsed: &OcspRequest) -> bool {
        let responder = self.responder();
        !parsed.cert_ids.is_empty() && parsed.cert_ids.iter().all(|id| responder.matches_issuer(id))
    }

    /// Answer a parsed OCSP request whose CertIDs all name this issuer
    /// ([`answers_for`](Self::answers_for)). Always returns an OCSP response.
    pub async fn ocsp(&self, parsed: OcspRequest, pool: &SigningPool) -> Bytes {
        if let Some(why) = self.cannot_answer() {
            self.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(why, "OCSP answered tryLater");
            return Bytes::from(ocsp::error_response(OcspResponseStatus::TryLater));
        }
        let responder = self.responder();
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
            && let Some(hit) = read(&self.cache).get(k).filter(|a| a.refresh_at > now).map(|a| a.der.clone())
        {
            self.metrics.ocsp_cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.answer(responder, parsed.cert_ids, parsed.nonce, cache_key, pool).await
    }

    /// Why this instance must not answer now, if it must not: its replica is too far behind
    /// (it does not write), or it needs a delegated signer and holds none: it does not
    /// write (only the writer signs with the issuing key), or `ocsp_delegated_signer` is
    /// set. The issuing key does not stand in for a missing delegated signer.
    pub fn cannot_answer(&self) -> Option<String> {
        if let Some(lag) = self.replica_too_stale() {
            return Some(format!("the replica is {} ms behind the database", lag.as_millis()));
        }
        ((self.cfg.ocsp_delegated_signer || !self.writes()) && !self.holds_signer())
            .then(|| "no delegated OCSP signer on this instance".to_string())
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
        // An answer is good only while its signer is: a delegated signer's answers say
        // nextUpdate no later than its certificate's notAfter, whatever the lifetimes set.
        let next_update = (now + self.cfg.ocsp_validity_secs as i64)
            .min(responder.delegated_not_after().unwrap_or(i64::MAX));
        let built = pool
            .run(move || {
                let answers: Vec<SingleAnswer<'_>> = cert_ids
                    .iter()
                    .zip(statuses)
                    .map(|(cert_id, status)| SingleAnswer { cert_id, status, this_update: now, next_update })
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
            && self.cfg.ocsp_cache_entries > 0
            // Only if no revocation landed since the status was read.
            && self.generation.load(Ordering::Acquire) == generation
        {
            let mut c = write(&self.cache);
            // Bounded: a full cache makes room by dropping one entry (whichever the map
            // yields first, in effect a random one), so new serials keep being cached
            // instead of being signed live on every request once the cache filled up.
            if !c.contains_key(&k)
                && c.len() >= self.cfg.ocsp_cache_entries
                && let Some(victim) = c.keys().next().cloned()
            {
                c.remove(&victim);
                self.metrics.ocsp_cache_evictions.fetch_add(1, Ordering::Relaxed);
            }
            c.insert(k, CachedAnswer { der: der.clone(), refresh_at: now + (next_update - now) / 2 });
        }
        der
    }

    /// Invalidate `serial`'s cached answers (a revocation at log `seq`) and pre-sign its
    /// `revoked` answers for SHA-1 and SHA-256 CertIDs, so relying parties hit the cache
    /// right after a revocation.
    pub async fn revoked_and_presign(&self, serial: &Serial, seq: u64, pool: &SigningPool) {
        self.revoked(serial, seq);
        if self.cannot_answer().is_some() {
            return;
        }
        let responder = self.responder();
        for h in [HashAlgorithm::Sha1, HashAlgorithm::Sha256] {
            let id = responder.cert_id(h, serial);
            self.answer(responder.clone(), vec![id], None, Some((h, serial.clone())), pool).await;
            self.metrics.ocsp_presigned.fetch_add(1, Ordering::Relaxed);
        }
    }
}
