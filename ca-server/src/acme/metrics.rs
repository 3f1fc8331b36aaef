//! ACME metrics an operator graphs: requests and latency per resource and status class,
//! validations by type and outcome, orders by state change, nonce rejections, refusals by
//! `[acme.limits]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::acme::limits::AcmeLimit;

/// (resource, HTTP status) -> (requests, total seconds).
type RequestCounts = BTreeMap<(&'static str, u16), (u64, f64)>;

#[derive(Default)]
pub struct AcmeMetrics {
    requests: Mutex<RequestCounts>,
    /// (challenge type, outcome) -> count
    validations: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub orders_created: AtomicU64,
    pub orders_finalized: AtomicU64,
    pub accounts_created: AtomicU64,
    pub bad_nonces: AtomicU64,
    /// Refusals by `[acme.limits]`, by [`AcmeLimit::index`].
    pub rate_limited: [AtomicU64; 5],
    /// Keys each limit tracks now (pending authorizations for the pending cap).
    pub limiter_keys: [AtomicUsize; 5],
}

impl AcmeMetrics {
    pub fn observe(&self, resource: &'static str, status: u16, took: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = m.entry((resource, status)).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    pub fn validation(&self, challenge: &str, outcome: &'static str) {
        let mut m = self.validations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry((challenge.to_string(), outcome)).or_default() += 1;
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "# HELP ca_acme_requests_total ACME requests by resource and HTTP status.");
        let _ = writeln!(o, "# TYPE ca_acme_requests_total counter");
        let reqs = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for ((r, s), (n, _)) in &reqs {
            let _ = writeln!(o, "ca_acme_requests_total{{resource=\"{r}\",status=\"{s}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP ca_acme_request_seconds_total Time spent answering ACME requests.");
        let _ = writeln!(o, "# TYPE ca_acme_request_seconds_total counter");
        for ((r, s), (_, t)) in &reqs {
            let _ = writeln!(o, "ca_acme_request_seconds_total{{resource=\"{r}\",status=\"{s}\"}} {t:.6}");
        }
        let _ = writeln!(o, "# HELP ca_acme_validations_total Challenge validations by type and outcome.");
        let _ = writeln!(o, "# TYPE ca_acme_validations_total counter");
        let vals = self.validations.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for ((c, out), n) in &vals {
            let _ = writeln!(o, "ca_acme_validations_total{{type=\"{c}\",outcome=\"{out}\"}} {n}");
        }
        for (name, help, v) in [
            ("ca_acme_accounts_created_total", "ACME accounts registered.", &self.accounts_created),
            ("ca_acme_orders_created_total", "ACME orders created.", &self.orders_created),
            (
                "ca_acme_orders_finalized_total",
                "ACME orders finalized (certificate issued).",
                &self.orders_finalized,
            ),
            ("ca_acme_bad_nonces_total", "Requests refused with badNonce.", &self.bad_nonces),
        ] {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP ca_acme_rate_limited_total ACME requests refused by [acme.limits].");
        let _ = writeln!(o, "# TYPE ca_acme_rate_limited_total counter");
        for l in AcmeLimit::ALL {
            let n = self.rate_limited[l.index()].load(Ordering::Relaxed);
            let _ = writeln!(o, "ca_acme_rate_limited_total{{limit=\"{}\"}} {n}", l.name());
        }
        let _ = writeln!(o, "# HELP ca_acme_ratelimit_tracked_keys Keys each ACME limit holds in memory.");
        let _ = writeln!(o, "# TYPE ca_acme_ratelimit_tracked_keys gauge");
        for l in AcmeLimit::ALL {
            let n = self.limiter_keys[l.index()].load(Ordering::Relaxed);
            let _ = writeln!(o, "ca_acme_ratelimit_tracked_keys{{limit=\"{}\"}} {n}", l.name());
        }
    }
}
