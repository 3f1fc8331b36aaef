//! finalize (RFC 8555 7.4): the CSR must name exactly the order's identifiers; issuance
//! goes through the shared issuance path, with `OrderFinalized` in the same group commit
//! as `CertificateIssued`, and answers `valid` once both are durable. One finalize per
//! order at a time: a concurrent one sees `processing`, then `valid`, and never issues a
//! second certificate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use ca_core::Event;
use ca_core::acme::b64u_decode;
use ca_core::acme::event::Identifier;
use ca_core::acme::model::OrderStatus;
use ca_core::acme::problem::Problem;
use ca_core::event::OrderFinalized;
use ca_core::issue::BACKDATE_SECS;
use ca_core::policy::SanName;
use serde_json::Value;

use crate::acme::Acme;
use crate::acme::plumbing::{AcmeError, AcmeResult, KeyRule, json_response, with_location};
use crate::app::now_unix;

/// Removes an order from the in-progress set however the finalize ends (it may outlive
/// the request: a finalize that met a full signing queue goes on in the background).
struct Finalizing(Arc<Acme>, String);

impl Drop for Finalizing {
    fn drop(&mut self) {
        self.0.finalizing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.1);
    }
}

/// How long a finalize that met a full signing queue keeps retrying in the background.
const BUSY_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What one issuance attempt for an order needs.
#[derive(Clone)]
struct Issue {
    csr: ca_core::csr::CheckedCsr,
    profile: String,
    not_before: i64,
    not_after: i64,
    requester: String,
    order_id: String,
}

impl Issue {
    /// Sign through the shared issuance path, recording `OrderFinalized` in the same
    /// group commit as the certificate.
    async fn run(self, acme: &Arc<Acme>) -> Result<ca_core::Serial, crate::error::AppError> {
        let Issue { csr, profile, not_before, not_after, requester, order_id } = self;
        acme.app
            .issue_with(
                move |authority| {
                    Ok(authority.sign_checked_window(&csr, &profile, not_before, not_after, &requester)?)
                },
                move |issued| {
                    let fin =
                        Event::OrderFinalized(OrderFinalized { order_id, serial: issued.serial.clone() });
                    (vec![fin], issued.serial.clone())
                },
            )
            .await
    }
}

pub async fn finalize(
    State(acme): State<Arc<Acme>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    tracing::Span::current().record("order", id.as_str());
    let signed = acme.authenticate(&format!("order/{id}/finalize"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    let payload = signed.payload()?;
    let csr_b64 = payload
        .get("csr")
        .and_then(Value::as_str)
        .ok_or_else(|| AcmeError::new(Problem::Malformed, "finalize needs a csr (base64url DER)"))?;
    let csr_der = b64u_decode(csr_b64).map_err(|e| AcmeError::new(Problem::BadCsr, format!("csr: {e}")))?;
    let order_url = acme.url(&format!("order/{id}"));
    let load = || {
        acme.order(&id)?
            .filter(|o| o.account == acct.id)
            .ok_or_else(|| AcmeError::not_found(format!("no order {id} for this account")))
    };

    let inserted =
        acme.finalizing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone());
    if !inserted {
        // Another finalize of this order is issuing: show it as processing.
        let order = load()?;
        let body = acme.order_json(&order, now_unix())?;
        return Ok(crate::acme::plumbing::with_retry_after(
            with_location(json_response(StatusCode::OK, &body), &order_url),
            1,
        ));
    }
    let done = Finalizing(acme.clone(), id.clone());
    let _guard = acme.lock(&id).await;
    let order = load()?;
    let now = now_unix();
    let authzs = acme.order_authzs(&order)?;
    match order.status(&authzs, now) {
        OrderStatus::Ready => {}
        OrderStatus::Valid => {
            let body = acme.order_json(&order, now)?;
            return Ok(with_location(json_response(StatusCode::OK, &body), &order_url));
        }
        s => {
            return Err(AcmeError::new(
                Problem::OrderNotReady,
                format!("order is {}, not ready: complete its authorizations first", s.as_str()),
            ));
        }
    }

    // The CSR: well-formed, self-signed, an allowed key, and exactly the order's names.
    let csr = ca_core::csr::check(&csr_der, acme.app.authority.policy())
        .map_err(|e| AcmeError::new(Problem::BadCsr, e.to_string()))?;
    let wanted: BTreeSet<SanName> = order
        .identifiers
        .iter()
        .map(|i| match i {
            Identifier::Dns(d) => SanName::Dns(d.clone()),
            Identifier::Ip(ip) => SanName::Ip(*ip),
        })
        .collect();
    let got: BTreeSet<SanName> = csr
        .names
        .iter()
        .map(|n| match n {
            SanName::Dns(d) => SanName::Dns(d.to_ascii_lowercase()),
            other => other.clone(),
        })
        .collect();
    if wanted != got {
        let show = |s: &BTreeSet<SanName>| s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        return Err(AcmeError::new(
            Problem::BadCsr,
            format!(
                "the CSR names [{}] but the order is for [{}]; they must match exactly",
                show(&got),
                show(&wanted)
            ),
        ));
    }

    let (_, profile) = acme.app.authority.profiles().get(&order.profile)?;
    let not_before = order.not_before.unwrap_or(now - BACKDATE_SECS);
    let not_after = order.not_after.unwrap_or_else(|| {
        not_before.max(now) + i64::try_from(profile.default_validity_secs).unwrap_or(i64::MAX / 2)
    });
    let issue = Issue {
        csr,
        profile: order.profile.clone(),
        not_before,
        not_after,
        requester: crate::acme::cert::requester(&acct.id),
        order_id: order.id.clone(),
    };
    let serial = match issue.clone().run(&acme).await {
        Ok(s) => s,
        Err(crate::error::AppError::Busy(_)) => {
            // Never `ready` once finalize was accepted: `processing` while a background
            // attempt waits for room in the signing queue (RFC 8555 7.4, Retry-After).
            let acme2 = acme.clone();
            tokio::spawn(async move {
                let _done = done;
                let until = std::time::Instant::now() + BUSY_RETRY_FOR;
                while std::time::Instant::now() < until {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    match issue.clone().run(&acme2).await {
                        Err(crate::error::AppError::Busy(_)) => continue,
                        Ok(serial) => {
                            acme2.metrics.orders_finalized.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(order = %issue.order_id, %serial, "ACME order finalized after a busy signing queue");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(order = %issue.order_id, error = %e, "background finalize failed");
                            return;
                        }
                    }
                }
                tracing::warn!(order = %issue.order_id, "background finalize gave up: the signing queue stayed full");
            });
            let body = acme.order_json(&order, now)?;
            return Ok(crate::acme::plumbing::with_retry_after(
                with_location(json_response(StatusCode::OK, &body), &order_url),
                1,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    drop(done);
    acme.metrics.orders_finalized.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(account = %acct.id, order = %id, %serial, "ACME order finalized");
    let order = load()?;
    let body = acme.order_json(&order, now_unix())?;
    Ok(with_location(json_response(StatusCode::OK, &body), &order_url))
}
