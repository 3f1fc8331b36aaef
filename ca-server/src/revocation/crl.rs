//! CRL publication for one issuer: a full CRL and its delta from the issuer's part of the
//! revoked set, logged as `CrlPublished` before they are served.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ca_core::crl::{self, CrlInput, RevokedCert};
use ca_core::event::{CrlPublished, Event};

use super::{Base, PublishedCrl, Revocation, lock, read, write};
use crate::app::now_unix;
use crate::error::AppError;

impl Revocation {
    /// Build and log a full CRL and its delta from the current revoked set.
    pub async fn publish(&self) -> Result<(), AppError> {
        let _one = self.publish_lock.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        let now = now_unix();
        let head = self.store.next_seq();
        // Only this issuer's certificates; its CRL numbers are its own.
        let revoked = self.store.revoked_of(self.ca.generation)?;
        let last = self.store.last_crl_number_of(self.ca.generation)?;
        let full_number = if last == 0 { 1 } else { last + 2 };
        let delta_number = full_number + 1;

        let entries: Vec<RevokedCert> = revoked
            .iter()
            .filter(|(_, _, not_after)| *not_after >= now)
            .map(|(s, e, _)| RevokedCert::from_projection(s, e))
            .collect();
        let (base_number, base_next_seq) = {
            let mut b = lock(&self.base);
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
        let (full_sha, delta_sha) = (ca_core::chain::sha256(&full_der), ca_core::chain::sha256(&delta_der));
        let logged = self
            .store
            .append(vec![
                Event::CrlPublished(CrlPublished {
                    number: full_number,
                    this_update: now,
                    next_update: full_next,
                    delta_base: None,
                    issuer_generation: self.ca.generation,
                    der_sha256: Some(full_sha),
                }),
                Event::CrlPublished(CrlPublished {
                    number: delta_number,
                    this_update: now,
                    next_update: delta_next,
                    delta_base: Some(base_number),
                    issuer_generation: self.ca.generation,
                    der_sha256: Some(delta_sha),
                }),
            ])
            .await?;
        // The instances that do not write serve these bytes (PostgreSQL); one that misses
        // them keeps serving the previous CRL until the next publication.
        for ((delta, der), at) in [(false, &full_der), (true, &delta_der)].into_iter().zip(&logged) {
            if let Err(e) = self.store.share_crl(self.ca.generation, delta, at.seq, der.clone()).await {
                tracing::warn!(error = %e, issuer = self.ca.generation, delta, "sharing the CRL with the other instances failed");
            }
        }
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
        *write(&self.full) = Some(mk(full_der, full_number, full_next));
        *write(&self.delta) = Some(mk(delta_der, delta_number, delta_next));
        self.metrics.crl_published.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            issuer = self.ca.generation,
            number = full_number,
            entries = n_entries,
            delta_base = base_number,
            build_ms = started.elapsed().as_secs_f64() * 1e3,
            "CRL published"
        );
        Ok(())
    }

    /// On an instance that does not write: serve the newest CRLs the writer shared (checked
    /// against their `CrlPublished` records by the store) when they are newer than the ones
    /// served here.
    pub(super) async fn adopt_shared(&self) -> Result<(), AppError> {
        for (delta, slot) in [(false, &self.full), (true, &self.delta)] {
            let Some((c, der)) = self.store.shared_crl(self.ca.generation, delta).await? else { continue };
            if read(slot).as_ref().is_some_and(|have| have.number >= c.number) {
                continue;
            }
            tracing::debug!(
                issuer = self.ca.generation,
                number = c.number,
                delta,
                "serving the writer's CRL"
            );
            *write(slot) = Some(Arc::new(PublishedCrl {
                pem: crl::crl_to_pem(&der),
                der,
                number: c.number,
                this_update: c.this_update,
                next_update: c.next_update,
                // Not known here: a takeover publishes anew (`run`).
                covers_generation: 0,
            }));
        }
        Ok(())
    }
}
