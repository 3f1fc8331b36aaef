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

/// Removes an order from the in-progress set however the finalize ends.
struct Finalizing<'a>(&'a Acme, String);

impl Drop for Finalizing<'_> {
    fn drop(&mut self) {
        self.0.finalizing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.1);
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
    let _done = Finalizing(&acme, id.clone());
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
    let requester = format!("acme:{}", acct.id);
    let profile_name = order.profile.clone();
    let order_id = order.id.clone();
    let serial = acme
        .app
        .issue_with(
            move |authority| {
                Ok(authority.sign_checked_window(&csr, &profile_name, not_before, not_after, &requester)?)
            },
            move |issued| {
                let fin = Event::OrderFinalized(OrderFinalized { order_id, serial: issued.serial.clone() });
                (vec![fin], issued.serial.clone())
            },
        )
        .await?;
    acme.metrics.orders_finalized.fetch_add(1, Ordering::Relaxed);
    tracing::info!(account = %acct.id, order = %id, %serial, "ACME order finalized");
    let order = load()?;
    let body = acme.order_json(&order, now_unix())?;
    Ok(with_location(json_response(StatusCode::OK, &body), &order_url))
}
