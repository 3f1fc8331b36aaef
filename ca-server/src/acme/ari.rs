//! ACME Renewal Information (RFC 9773): the suggested renewal window per certificate,
//! unauthenticated, and the `replaces` checks newOrder applies.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::Serial;
use ca_core::acme::ari;
use ca_core::acme::event::Identifier;
use ca_core::acme::index::AcmeKey;
use ca_core::acme::model::Account;
use ca_core::acme::problem::Problem;
use ca_core::acme::{b64u, b64u_decode};
use serde_json::json;

use crate::acme::Acme;
use crate::acme::cert::requester;
use crate::acme::plumbing::{AcmeError, AcmeResult, json_response, rfc3339, with_retry_after};
use crate::app::now_unix;

/// Clients poll again after this long (RFC 9773 4.3; clients clamp to 1 min .. 1 day).
const RETRY_AFTER_SECS: u64 = 6 * 3600;

/// An issuing CA's subject key identifier: the AKI keyIdentifier of every leaf it signs.
fn issuer_key_id(ca: &ca_core::ca::IssuingCa) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, ca) = X509Certificate::from_der(&ca.cert_der).ok()?;
    ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// certID = b64u(AKI keyIdentifier) "." b64u(serial DER integer value bytes).
pub fn cert_id_for(acme: &Acme, serial: &Serial) -> Option<String> {
    // The certificate's own issuer (it may predate a rotation).
    let generation = acme.app.store.cert(serial).ok().flatten().map_or(0, |r| r.issued.issuer_generation);
    let kid = issuer_key_id(&acme.app.issuer_of(generation))?;
    let s = serial.as_bytes();
    let value = if s.first().is_some_and(|b| b & 0x80 != 0) { [&[0u8][..], s].concat() } else { s.to_vec() };
    Some(format!("{}.{}", b64u(kid), b64u(value)))
}

/// Parse a certID of this CA into the serial (with or without a leading zero byte: acme.sh pads).
fn parse_cert_id(acme: &Acme, id: &str) -> AcmeResult<Serial> {
    let (k, s) = id
        .split_once('.')
        .ok_or_else(|| AcmeError::new(Problem::Malformed, "certID must be keyIdentifier.serial"))?;
    let kid = b64u_decode(k)?;
    if !acme.app.authority.issuers().iter().any(|ca| issuer_key_id(ca).as_ref() == Some(&kid)) {
        return Err(AcmeError::not_found("certID names another issuer"));
    }
    let mut serial = b64u_decode(s)?;
    while serial.len() > 1 && serial[0] == 0 {
        serial.remove(0);
    }
    Serial::from_bytes(&serial)
        .map_err(|_| AcmeError::new(Problem::Malformed, "certID serial is not a valid serial"))
}

pub async fn renewal_info(
    State(acme): State<Arc<Acme>>,
    Path(cert_id): Path<String>,
) -> AcmeResult<Response> {
    let serial = parse_cert_id(&acme, &cert_id)?;
    let rec = acme
        .app
        .store
        .cert(&serial)?
        .ok_or_else(|| AcmeError::not_found(format!("no certificate {cert_id}")))?;
    let ari = ari::fold_cert_ari(&acme.events_of(&AcmeKey::Cert(serial.clone()))?);
    let (start, end) = ari::suggested_window(
        rec.issued.not_before,
        rec.issued.not_after,
        rec.revoked.is_some(),
        ari.window,
        now_unix(),
    );
    let body = json!({"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end.max(start + 2))}});
    Ok(with_retry_after(json_response(StatusCode::OK, &body), RETRY_AFTER_SECS))
}

/// `replaces` in newOrder: a certificate of this account, sharing an identifier with the
/// order. (Whether it was already replaced is checked under the account's lock.)
pub fn check_replaces(
    acme: &Acme,
    acct: &Account,
    cert_id: &str,
    idents: &[Identifier],
) -> AcmeResult<Serial> {
    let serial = parse_cert_id(acme, cert_id)
        .map_err(|e| AcmeError::new(Problem::Malformed, format!("replaces: {}", e.detail)))?;
    let rec = acme
        .app
        .store
        .cert(&serial)?
        .filter(|r| r.issued.requester == requester(&acct.id))
        .ok_or_else(|| {
            AcmeError::new(Problem::Malformed, format!("replaces: no certificate {cert_id} of this account"))
        })?;
    let names: Vec<String> = idents.iter().map(|i| i.value()).collect();
    if !rec.issued.names.iter().any(|n| names.contains(n)) {
        return Err(AcmeError::new(
            Problem::Malformed,
            "replaces: the order shares no identifier with that certificate",
        ));
    }
    Ok(serial)
}
