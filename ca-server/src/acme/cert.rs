//! Certificate download (RFC 8555 7.4.2) and revokeCert (7.6), through the shared
//! revocation path.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_core::acme::b64u_decode;
use ca_core::acme::problem::Problem;
use ca_core::ca::der_to_pem;
use ca_core::event::RevocationReason;
use serde_json::Value;
use x509_parser::prelude::FromDer;

use crate::acme::Acme;
use crate::acme::order::serial_param;
use crate::acme::plumbing::{AcmeError, AcmeResult, KeyRule};
use crate::error::AppError;
use crate::revoke::RevokeRequest;

/// The requester recorded for an account's issuance and revocations.
pub fn requester(account: &str) -> String {
    format!("acme:{account}")
}

/// Leaf then issuing CA, `application/pem-certificate-chain`. No `rel="up"`: acmez would
/// append the issuer a second time.
pub async fn certificate(
    State(acme): State<Arc<Acme>>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate(&format!("cert/{serial}"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?;
    let s = serial_param(&serial)?;
    let rec = acme
        .app
        .store
        .cert(&s)?
        .filter(|r| r.issued.requester == requester(&acct.id))
        .ok_or_else(|| AcmeError::not_found(format!("no certificate {serial} for this account")))?;
    // The chain of the certificate's own issuer, which a rotation may have replaced since.
    let ca = acme.app.issuer_of(rec.issued.issuer_generation);
    let mut pem = der_to_pem(&rec.issued.certificate_der);
    pem.push_str(&der_to_pem(&ca.cert_der));
    let mut resp = (StatusCode::OK, pem).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pem-certificate-chain"));
    Ok(resp)
}

/// RFC 8555 7.6: signed by the issuing account (kid) or by the certificate's own key
/// (jwk). Reason codes as RFC 5280 defines them, except those that make no sense here.
pub async fn revoke_cert(
    State(acme): State<Arc<Acme>>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult<Response> {
    let signed = acme.authenticate("revoke-cert", &headers, &body, KeyRule::Either)?;
    let p = signed.payload()?;
    let der = p
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| AcmeError::new(Problem::Malformed, "revokeCert needs certificate (base64url DER)"))
        .and_then(|s| b64u_decode(s).map_err(AcmeError::from))?;
    let reason = match p.get("reason") {
        None => RevocationReason::Unspecified,
        Some(r) => {
            let code = r.as_u64().and_then(|c| u32::try_from(c).ok()).ok_or_else(|| {
                AcmeError::new(Problem::BadRevocationReason, "reason must be an RFC 5280 CRLReason code")
            })?;
            match RevocationReason::from_code(code) {
                Ok(
                    r @ (RevocationReason::Unspecified
                    | RevocationReason::KeyCompromise
                    | RevocationReason::AffiliationChanged
                    | RevocationReason::Superseded
                    | RevocationReason::CessationOfOperation),
                ) => r,
                _ => {
                    return Err(AcmeError::new(
                        Problem::BadRevocationReason,
                        format!("reason {code} is not accepted; allowed: 0, 1, 3, 4, 5"),
                    ));
                }
            }
        }
    };
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|_| AcmeError::new(Problem::Malformed, "certificate is not DER X.509"))?;
    let serial = ca_core::Serial::from_bytes(cert.raw_serial())
        .map_err(|_| AcmeError::not_found("certificate serial is not one this CA issues"))?;
    let by_key = signed.account.is_none();
    let requester = match &signed.account {
        Some(a) => requester(&a.id),
        None => format!("acme:key:{}", signed.key.thumbprint()),
    };
    let spki = cert.public_key().raw.to_vec();
    let account = signed.account.as_ref().map(|a| a.id.clone());
    let key = signed.key.clone();
    acme.app
        .revoke(
            RevokeRequest { serial: &serial, reason, invalidity_date: None, requester: &requester },
            |rec| {
                // The stored certificate must be the one presented.
                if rec.issued.certificate_der != der {
                    return Err(AppError::NotFound("no such certificate was issued by this CA".into()));
                }
                let allowed = match &account {
                    Some(id) => rec.issued.requester == crate::acme::cert::requester(id),
                    None => key.matches_spki(&spki),
                };
                if allowed {
                    Ok(())
                } else if by_key {
                    Err(ca_core::Error::acme(
                        Problem::Unauthorized,
                        "the JWS key is not this certificate's key",
                    )
                    .into())
                } else {
                    Err(ca_core::Error::acme(
                        Problem::Unauthorized,
                        "this account did not request this certificate",
                    )
                    .into())
                }
            },
        )
        .await
        .map_err(|e| match e {
            AppError::NotFound(m) => AcmeError::not_found(m),
            other => other.into(),
        })?;
    Ok(StatusCode::OK.into_response())
}
