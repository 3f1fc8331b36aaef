//! Counters an operator graphs, rendered in the Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Signing jobs that panicked (the thread survives; the request gets INTERNAL).
    pub signing_panics: AtomicU64,
    pub crl_published: AtomicU64,
    pub ocsp_responses: AtomicU64,
    pub ocsp_cache_hits: AtomicU64,
    /// Cached OCSP answers dropped to keep the cache within `ocsp_cache_entries`.
    pub ocsp_cache_evictions: AtomicU64,
    /// HTTP and ACME connections closed at once because the listener was full.
    pub http_connections_refused: Arc<AtomicU64>,
    pub ocsp_errors: AtomicU64,
    pub ocsp_presigned: AtomicU64,
    pub sign_latency: Histogram,
    /// SignCsr calls refused by the per-identity issuance limit (`grpc_limits.rs`).
    pub grpc_rate_limited: AtomicU64,
    /// Identities that limit tracks now.
    pub grpc_limiter_keys: AtomicUsize,
    /// gRPC calls refused by `[[authz.rules]]`, by method.
    pub authz_denied: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Count one authorization denial of `method`.
    pub fn authz_denied(&self, method: &'static str) {
        *self.authz_denied.lock().unwrap_or_else(|e| e.into_inner()).entry(method).or_default() += 1;
    }

    pub fn render(&self, store: &EventStore, uptime: Duration) -> String {
        let mut o = String::with_capacity(4096);
        let mut metric = |kind: &str, name: &str, help: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sm = store.metrics();
        let counters: [(&str, &str, u64); 22] = [
            ("ca_certificates_issued_total", "Certificates issued and durably logged.", get(&self.issued)),
            (
                "ca_sign_rejected_total",
                "Sign requests rejected for bad input or policy.",
                get(&self.sign_rejected),
            ),
            (
                "ca_sign_busy_total",
                "Sign requests refused because the signing queue was full.",
                get(&self.sign_busy),
            ),
            ("ca_sign_failed_total", "Sign requests failed for internal reasons.", get(&self.sign_failed)),
            (
                "ca_signing_panics_total",
                "Signing jobs that panicked (a bug: the request got INTERNAL, the thread went on).",
                get(&self.signing_panics),
            ),
            ("ca_revocations_total", "Revocations durably logged.", get(&self.revoked)),
            ("ca_crl_publications_total", "Full+delta CRL publications.", get(&self.crl_published)),
            ("ca_ocsp_responses_total", "OCSP responses sent (all statuses).", get(&self.ocsp_responses)),
            (
                "ca_ocsp_cache_hits_total",
                "OCSP responses served from the pre-signed cache.",
                get(&self.ocsp_cache_hits),
            ),
            (
                "ca_ocsp_cache_evictions_total",
                "Cached OCSP answers dropped to stay within ocsp_cache_entries.",
                get(&self.ocsp_cache_evictions),
            ),
            (
                "ca_http_connections_refused_total",
                "HTTP/ACME connections closed at once: the listener had [http] max_connections open.",
                self.http_connections_refused.load(Ordering::Relaxed),
            ),
            ("ca_ocsp_errors_total", "OCSP requests answered with an error status.", get(&self.ocsp_errors)),
            (
                "ca_ocsp_presigned_total",
                "OCSP answers signed ahead of any request.",
                get(&self.ocsp_presigned),
            ),
            (
                "ca_hsm_sign_total",
                "Signatures asked of the PKCS#11 token (0 with a software key).",
                get(&crate::pkcs11::SIGN_CALLS),
            ),
            ("ca_hsm_sign_errors_total", "PKCS#11 signatures that failed.", get(&crate::pkcs11::SIGN_ERRORS)),
            (
                "ca_hsm_session_reopens_total",
                "PKCS#11 sessions reopened after the token reported them lost.",
                get(&crate::pkcs11::SESSION_REOPENS),
            ),
            ("ca_log_appends_total", "Append calls to the event log.", sm.appends_total),
            ("ca_log_batches_total", "Group-commit batches (one journal write each).", sm.batches_total),
            ("ca_log_records_total", "Records written to the event log by this process.", sm.records_total),
            (
                "ca_log_checkpoints_total",
                "sled flushes that emptied the commit journal.",
                sm.checkpoints_total,
            ),
            (
                "ca_log_failed_batches_total",
                "Group commits whose write failed (the store then refuses writes until a restart).",
                sm.failed_batches_total,
            ),
            (
                "ca_log_low_space_refusals_total",
                "Group commits refused because free space was below [storage] min_free_mb.",
                sm.low_space_refusals_total,
            ),
        ];
        for (name, help, v) in counters {
            metric("counter", name, help, &v);
        }
        metric(
            "counter",
            "ca_log_checkpoint_seconds_total",
            "Time spent in checkpoints (sled flush, then the journal emptied); appends wait meanwhile.",
            &(sm.checkpoint_micros_total as f64 / 1e6),
        );
        metric(
            "gauge",
            "ca_log_checkpoint_max_seconds",
            "The longest checkpoint since the server started.",
            &(sm.checkpoint_micros_max as f64 / 1e6),
        );
        metric(
            "counter",
            "ca_log_flush_seconds_total",
            "Time spent making group commits durable (commit journal writes and syncs).",
            &sm.flush_seconds_total(),
        );
        metric(
            "gauge",
            "ca_log_writes_refused",
            "1 while the event log refuses writes (a storage failure, or free space below the reserve).",
            &u8::from(store.write_failure().is_some()),
        );
        metric("gauge", "ca_log_next_seq", "Sequence number the next record will get.", &store.next_seq());
        metric(
            "gauge",
            "ca_log_journal_recovered_at_open",
            "Acknowledged records written back from the commit journal at start (unclean shutdown).",
            &sm.journal_recovered_at_open,
        );
        metric(
            "gauge",
            "ca_signing_queue_depth",
            "Sign jobs waiting for a signing thread.",
            &self.signing_queue.load(Ordering::Relaxed),
        );
        metric("gauge", "ca_uptime_seconds", "Seconds since start.", &uptime.as_secs());
        let _ = writeln!(
            o,
            "# HELP ca_authz_denied_total gRPC calls refused by the authorization rules.\n# TYPE ca_authz_denied_total counter"
        );
        for (method, n) in self.authz_denied.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "ca_authz_denied_total{{method=\"{method}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP ca_grpc_rate_limited_total gRPC calls refused by the per-identity issuance limit.\n\
             # TYPE ca_grpc_rate_limited_total counter\nca_grpc_rate_limited_total{{method=\"SignCsr\"}} {}",
            get(&self.grpc_rate_limited)
        );
        let _ = writeln!(
            o,
            "# HELP ca_grpc_ratelimit_tracked_keys Caller identities the issuance limit holds in memory.\n\
             # TYPE ca_grpc_ratelimit_tracked_keys gauge\nca_grpc_ratelimit_tracked_keys {}",
            self.grpc_limiter_keys.load(Ordering::Relaxed)
        );
        if let Some(pg) = store.shared_metrics() {
            render_shared(&mut o, &pg);
        }
        self.sign_latency.render(
            &mut o,
            "ca_sign_duration_seconds",
            "SignCsr latency from receipt to durable reply.",
        );
        o
    }
}

/// The PostgreSQL backend's figures: who writes, takeovers, commit cost, replica lag.
fn render_shared(o: &mut String, pg: &ca_storage::SharedMetrics) {
    let rows: [(&str, &str, &str, String); 6] = [
        (
            "gauge",
            "ca_storage_lease_epoch",
            "The writer-lease epoch this instance holds; 0 while another instance writes.",
            pg.epoch.to_string(),
        ),
        (
            "counter",
            "ca_storage_takeovers_total",
            "Times this instance took the writer lease.",
            pg.takeovers_total.to_string(),
        ),
        (
            "counter",
            "ca_storage_commits_total",
            "Group commits sent to PostgreSQL.",
            pg.commits_total.to_string(),
        ),
        (
            "counter",
            "ca_storage_commit_seconds_total",
            "Time spent in PostgreSQL group commits (with the synchronous standby's flush).",
            (pg.commit_micros_total as f64 / 1e6).to_string(),
        ),
        (
            "counter",
            "ca_storage_commit_failures_total",
            "PostgreSQL group commits that failed or were fenced.",
            pg.commit_failures_total.to_string(),
        ),
        (
            "gauge",
            "ca_storage_replica_lag_seconds",
            "How far this instance's replica may be behind the database (since it last read to the end).",
            (pg.replica_lag_micros as f64 / 1e6).to_string(),
        ),
    ];
    for (kind, name, help, v) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}
