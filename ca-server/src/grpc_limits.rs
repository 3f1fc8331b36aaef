//! The per-identity SignCsr limit of gRPC (`[grpc] max_issuance_per_minute`, per rule
//! `max_issuance_per_minute`): a token bucket (`ratelimit.rs`) per caller identity, or per
//! requester (`grpc:<peer ip>`) when the caller has none. Checked before the request reaches
//! the signing pool; over it: `RESOURCE_EXHAUSTED` naming the identity and the limit, with
//! `retry-after` metadata. Counted in memory: a restart refills every bucket.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::authz::Grant;
use crate::config::GrpcConfig;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::ratelimit::{Limit, Limiter, MonoClock};

pub struct IssuanceLimiter {
    default_per_minute: u64,
    admin_per_minute: u64,
    clock: MonoClock,
    buckets: Mutex<Limiter>,
    metrics: Arc<Metrics>,
}

impl IssuanceLimiter {
    pub fn new(cfg: &GrpcConfig, metrics: Arc<Metrics>) -> IssuanceLimiter {
        IssuanceLimiter {
            default_per_minute: cfg.max_issuance_per_minute,
            admin_per_minute: cfg.admin_max_issuance_per_minute,
            clock: MonoClock::default(),
            buckets: Mutex::new(Limiter::new(cfg.max_tracked_identities)),
            metrics,
        }
    }

    /// The caller's limit and the setting it comes from.
    fn limit_of(&self, g: &Grant) -> (u64, String) {
        match g.max_issuance_per_minute() {
            Some(n) => (n, format!("{} max_issuance_per_minute", g.label())),
            None if g.is_admin() => (self.admin_per_minute, "[grpc] admin_max_issuance_per_minute".into()),
            None => (self.default_per_minute, "[grpc] max_issuance_per_minute".into()),
        }
    }

    /// Take one SignCsr from the caller's bucket.
    pub fn take(&self, g: &Grant) -> Result<(), AppError> {
        let (per_minute, source) = self.limit_of(g);
        if per_minute == 0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = b.take(g.who(), Limit::per_minute(per_minute), self.clock.now_ms());
        self.metrics.grpc_limiter_keys.store(b.len(), Ordering::Relaxed);
        drop(b);
        r.map_err(|d| {
            self.metrics.grpc_rate_limited.fetch_add(1, Ordering::Relaxed);
            AppError::RateLimited {
                what: format!(
                    "{} is over its issuance limit: {per_minute} SignCsr per minute ({source})",
                    g.who()
                ),
                retry_after: d.retry_after_secs(),
            }
        })
    }
}
