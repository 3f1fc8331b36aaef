//! `/readyz`: whether this instance can do its job, as opposed to `/healthz` (the process
//! answers). Ready means the event store accepts writes, the current issuing key signs
//! (through the signing pool, so a PKCS#11 token is exercised too, and a saturated pool
//! shows), the current issuer's full CRL has not passed its nextUpdate, OCSP answers (on
//! the PostgreSQL backend, an instance that does not write needs its replica within
//! `follower_max_lag_ms` of the database and a delegated signer from the writer), and
//! every issuer the log records has its key here. Not ready is a 503 whose body names
//! every reason, one per line, for the operator and the orchestrator.
//!
//! `/readyz/writer` adds one check: this instance writes (the embedded store, or the
//! PostgreSQL writer). Non-writers refuse writes, naming the writer, so a load balancer in
//! front of several instances sends `SignCsr`, `Revoke` and ACME to the instance this
//! answers 200 on (as HAProxy does with Patroni's `/primary`), and reads anywhere.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::app::{App, now_unix};

/// The checks' outcome: `Err(reasons)` when not ready.
pub fn verdict(
    store_failure: Option<String>,
    signs: Result<(), String>,
    crl_next_update: Option<i64>,
    ocsp_refusal: Option<String>,
    issuers_waiting: &[(u32, String)],
    now: i64,
) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    for (generation, key_ref) in issuers_waiting {
        reasons.push(format!(
            "issuer generation {generation} is in the log but its key ({key_ref}) is not on this instance"
        ));
    }
    if let Some(f) = store_failure {
        reasons.push(format!("event store refuses writes: {f}"));
    }
    if let Some(why) = ocsp_refusal {
        reasons.push(format!("OCSP answers tryLater: {why}"));
    }
    if let Err(e) = signs {
        reasons.push(format!("issuing key cannot sign: {e}"));
    }
    match crl_next_update {
        None => reasons.push("no CRL published yet".into()),
        Some(t) if t <= now => reasons.push(format!("the published CRL expired at {t} (now {now})")),
        Some(_) => {}
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}

/// Why this instance does not write, when it does not.
pub fn not_writer(role: &ca_storage::Role) -> Option<String> {
    match role {
        ca_storage::Role::Single | ca_storage::Role::Writer { .. } => None,
        ca_storage::Role::Follower { writer: Some(w) } => {
            Some(format!("this instance does not write; the writer is {w}"))
        }
        ca_storage::Role::Follower { writer: None } => {
            Some("this instance does not write, and no instance holds the writer lease now".into())
        }
    }
}

async fn checks(app: &App) -> Result<(), Vec<String>> {
    let ca = app.authority.ca();
    let signer = ca.signer().clone();
    let signs = match app.pool.run(move || signer.sign(b"ca-server readiness probe")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let current = app.revocation.get(ca.generation);
    let crl = current.as_ref().and_then(|r| r.full_crl_next_update());
    let ocsp = current.as_ref().and_then(|r| r.cannot_answer());
    let waiting = app.issuers_waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    verdict(app.store.write_failure(), signs, crl, ocsp, &waiting, now_unix())
}

fn answer(outcome: Result<(), Vec<String>>, ready: &str) -> (StatusCode, String) {
    match outcome {
        Ok(()) => (StatusCode::OK, format!("{ready}\n")),
        Err(reasons) => {
            tracing::warn!(reasons = %reasons.join("; "), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", reasons.join("\n")))
        }
    }
}

pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    answer(checks(&app).await, "ready")
}

/// `/readyz/writer`: ready, and this instance writes.
pub async fn readyz_writer(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut outcome = checks(&app).await;
    if let Some(why) = not_writer(&app.store.role()) {
        outcome = Err(outcome.err().unwrap_or_default().into_iter().chain([why]).collect());
    }
    answer(outcome, "ready, writer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_writer_is_ready_to_write() {
        assert_eq!(not_writer(&ca_storage::Role::Single), None);
        assert_eq!(not_writer(&ca_storage::Role::Writer { epoch: 3 }), None);
        let named = not_writer(&ca_storage::Role::Follower { writer: Some("h pid 7 (gRPC x)".into()) });
        assert!(named.unwrap().ends_with("the writer is h pid 7 (gRPC x)"));
        let none = not_writer(&ca_storage::Role::Follower { writer: None }).unwrap();
        assert!(none.contains("no instance holds the writer lease"), "{none}");
    }

    #[test]
    fn every_failed_check_is_named() {
        assert_eq!(verdict(None, Ok(()), Some(200), None, &[], 100), Ok(()));
        let w = verdict(None, Ok(()), Some(200), None, &[(2, "issuing-2.key".into())], 100).unwrap_err();
        assert!(w[0].contains("generation 2") && w[0].contains("issuing-2.key"), "{w:?}");
        let lag = Some("the replica is 1500 ms behind the database".to_string());
        let r = verdict(
            Some("No space left on device".into()),
            Err("token removed".into()),
            Some(50),
            lag,
            &[],
            100,
        )
        .unwrap_err();
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].contains("refuses writes") && r[0].contains("No space left"));
        assert!(r[1].contains("1500 ms behind"), "{r:?}");
        assert!(r[2].contains("cannot sign") && r[2].contains("token removed"));
        assert!(r[3].contains("expired at 50"));
        assert_eq!(
            verdict(None, Ok(()), None, None, &[], 100).unwrap_err(),
            vec!["no CRL published yet".to_string()]
        );
    }
}
