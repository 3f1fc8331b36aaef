//! Counters an operator graphs, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ca_storage::EventStore;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i].load(Ordering::Relaxed));
        }
        let c = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {c}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {c}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub issued: AtomicU64,
    pub sign_rejected: AtomicU64,
    pub sign_busy: AtomicU64,
    pub sign_failed: AtomicU64,
    pub revoked: AtomicU64,
    pub signing_queue: AtomicUsize,
    pub crl_published: AtomicU64,
    pub ocsp_responses: AtomicU64,
    pub ocsp_cache_hits: AtomicU64,
    pub ocsp_errors: AtomicU64,
    pub sign_latency: Histogram,
}

impl Metrics {
    pub fn render(&self, store: &EventStore, uptime: Duration) -> String {
        let mut o = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "ca_certificates_issued_total",
            "Certificates issued and durably logged.",
            self.issued.load(Ordering::Relaxed),
        );
        counter(
            "ca_sign_rejected_total",
            "Sign requests rejected for bad input or policy.",
            self.sign_rejected.load(Ordering::Relaxed),
        );
        counter(
            "ca_sign_busy_total",
            "Sign requests refused because the signing queue was full.",
            self.sign_busy.load(Ordering::Relaxed),
        );
        counter(
            "ca_sign_failed_total",
            "Sign requests failed for internal reasons.",
            self.sign_failed.load(Ordering::Relaxed),
        );
        counter("ca_revocations_total", "Revocations durably logged.", self.revoked.load(Ordering::Relaxed));
        counter(
            "ca_crl_publications_total",
            "Full+delta CRL publications.",
            self.crl_published.load(Ordering::Relaxed),
        );
        counter(
            "ca_ocsp_responses_total",
            "OCSP responses sent (all statuses).",
            self.ocsp_responses.load(Ordering::Relaxed),
        );
        counter(
            "ca_ocsp_cache_hits_total",
            "OCSP responses served from the pre-signed cache.",
            self.ocsp_cache_hits.load(Ordering::Relaxed),
        );
        counter(
            "ca_ocsp_errors_total",
            "OCSP requests answered with an error status.",
            self.ocsp_errors.load(Ordering::Relaxed),
        );
        let sm = store.metrics();
        counter("ca_log_appends_total", "Append calls to the event log.", sm.appends_total);
        counter("ca_log_batches_total", "Group-commit batches (one flush each).", sm.batches_total);
        counter(
            "ca_log_records_total",
            "Records written to the event log by this process.",
            sm.records_total,
        );
        let _ = writeln!(
            o,
            "# HELP ca_log_flush_seconds_total Time spent in log flushes.\n# TYPE ca_log_flush_seconds_total counter\nca_log_flush_seconds_total {}",
            sm.flush_seconds_total()
        );
        let _ = writeln!(
            o,
            "# HELP ca_log_next_seq Sequence number the next record will get.\n# TYPE ca_log_next_seq gauge\nca_log_next_seq {}",
            store.next_seq()
        );
        let _ = writeln!(
            o,
            "# HELP ca_signing_queue_depth Sign jobs waiting for a signing thread.\n# TYPE ca_signing_queue_depth gauge\nca_signing_queue_depth {}",
            self.signing_queue.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP ca_uptime_seconds Seconds since start.\n# TYPE ca_uptime_seconds gauge\nca_uptime_seconds {}",
            uptime.as_secs()
        );
        self.sign_latency.render(
            &mut o,
            "ca_sign_duration_seconds",
            "SignCsr latency from receipt to durable reply.",
        );
        o
    }
}
