//! Plain HTTP: CA certificates, CRLs, OCSP, health and metrics. Issuer generation 0 keeps
//! the top-level paths (`/crl`, `/ocsp`, `/ca.der`); generation n >= 1 serves the same under
//! `/issuers/{n}/`. `/ocsp` answers for every issuer the request's CertIDs name.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;

use crate::app::{App, now_unix};
use crate::error::AppError;
use crate::revocation::PublishedCrl;

/// OCSP requests are tiny; anything bigger is refused with 413 before it is parsed.
const MAX_OCSP_BODY: usize = ca_core::ocsp::MAX_REQUEST_LEN;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(crate::readiness::readyz))
        .route("/readyz/writer", get(crate::readiness::readyz_writer))
        .route("/root.pem", get(root_pem))
        .route("/chain.pem", get(chain_pem))
        .route("/ca.der", get(ca_der))
        .route("/metrics", get(metrics))
        .route("/crl", crl_get(CrlRoute { delta: false, pem: false }))
        .route("/crl.pem", crl_get(CrlRoute { delta: false, pem: true }))
        .route("/crl/delta", crl_get(CrlRoute { delta: true, pem: false }))
        .route("/crl/delta.pem", crl_get(CrlRoute { delta: true, pem: true }))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/issuers/{n}/ca.der", get(issuer_ca_der))
        .route("/issuers/{n}/chain.pem", get(issuer_chain_pem))
        .route("/issuers/{n}/crl", issuer_crl_get(CrlRoute { delta: false, pem: false }))
        .route("/issuers/{n}/crl.pem", issuer_crl_get(CrlRoute { delta: false, pem: true }))
        .route("/issuers/{n}/crl/delta", issuer_crl_get(CrlRoute { delta: true, pem: false }))
        .route("/issuers/{n}/crl/delta.pem", issuer_crl_get(CrlRoute { delta: true, pem: true }))
        .route("/issuers/{n}/ocsp", post(issuer_ocsp_post))
        .route("/issuers/{n}/ocsp/{*request}", get(issuer_ocsp_get))
        .layer(DefaultBodyLimit::max(MAX_OCSP_BODY))
        .with_state(app)
}

const PEM: &str = "application/x-pem-file";

/// Liveness: the process answers HTTP. Whether it can issue is `/readyz` (`readiness.rs`).
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn root_pem(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PEM)], ca_core::ca::der_to_pem(&app.authority.ca().root_der))
}

async fn chain_pem(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PEM)], app.authority.ca().chain_pem.clone())
}

/// Generation 0's issuing CA in DER: the AIA caIssuers URL of its leaves points here (it
/// stays generation 0 after a rotation: those leaves name it).
async fn ca_der(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/pkix-cert")], app.issuer_of(0).cert_der.clone())
}

fn known_issuer(app: &App, n: u32) -> Result<Arc<ca_core::ca::IssuingCa>, AppError> {
    app.authority.issuer(n).ok_or_else(|| AppError::NotFound(format!("no issuer generation {n}")))
}

async fn issuer_ca_der(State(app): State<Arc<App>>, Path(n): Path<u32>) -> Result<Response, AppError> {
    let ca = known_issuer(&app, n)?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-cert")], ca.cert_der.clone()).into_response())
}

async fn issuer_chain_pem(State(app): State<Arc<App>>, Path(n): Path<u32>) -> Result<Response, AppError> {
    let ca = known_issuer(&app, n)?;
    Ok(([(header::CONTENT_TYPE, PEM)], ca.chain_pem.clone()).into_response())
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = app.metrics.render(&app.store, app.started.elapsed());
        app.acme_metrics.render(&mut text);
        crate::issuer_life::render(&app, &mut text);
        text
    })
}

/// Which CRL a route serves, and in which form.
#[derive(Clone, Copy)]
struct CrlRoute {
    delta: bool,
    pem: bool,
}

async fn crl(app: Arc<App>, generation: u32, h: HeaderMap, route: CrlRoute) -> Result<Response, AppError> {
    let r = app.revocation.issuer(generation)?;
    let crl = if route.delta { r.delta_crl().await? } else { r.full_crl().await? };
    Ok(crl_response(&crl, &h, route.pem))
}

fn crl_get(route: CrlRoute) -> axum::routing::MethodRouter<Arc<App>> {
    get(move |State(app): State<Arc<App>>, h: HeaderMap| crl(app, 0, h, route))
}

fn issuer_crl_get(route: CrlRoute) -> axum::routing::MethodRouter<Arc<App>> {
    get(move |State(app): State<Arc<App>>, Path(n): Path<u32>, h: HeaderMap| crl(app, n, h, route))
}

/// CRLs are cacheable until nextUpdate; the ETag is the CRL number (plus the form).
fn crl_response(crl: &PublishedCrl, h: &HeaderMap, pem: bool) -> Response {
    let etag = format!("\"crl-{}{}\"", crl.number, if pem { "-pem" } else { "" });
    let max_age = (crl.next_update - now_unix()).clamp(0, 300);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, hv(&etag));
    headers.insert(header::CACHE_CONTROL, hv(&format!("public, max-age={max_age}, no-transform")));
    if h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&etag)) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if pem {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PEM));
        (headers, crl.pem.clone()).into_response()
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pkix-crl"));
        (headers, crl.der.clone()).into_response()
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn ocsp_post(State(app): State<Arc<App>>, body: Bytes) -> Response {
    ocsp_answer(&app, &body, false, None).await
}

async fn issuer_ocsp_post(State(app): State<Arc<App>>, Path(n): Path<u32>, body: Bytes) -> Response {
    ocsp_answer(&app, &body, false, Some(n)).await
}

async fn ocsp_get(State(app): State<Arc<App>>, Path(request): Path<String>) -> Response {
    ocsp_get_for(&app, &request, None).await
}

async fn issuer_ocsp_get(State(app): State<Arc<App>>, Path((n, request)): Path<(u32, String)>) -> Response {
    ocsp_get_for(&app, &request, Some(n)).await
}

/// RFC 6960 appendix A.1: GET with the DER request base64-encoded (and URL-encoded) in the
/// path. Standard and URL-safe alphabets are both accepted.
async fn ocsp_get_for(app: &App, request: &str, only: Option<u32>) -> Response {
    let cleaned: String = request.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&cleaned))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cleaned))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&cleaned));
    match decoded {
        Ok(der) => ocsp_answer(app, &der, true, only).await,
        Err(_) => {
            app.metrics.ocsp_errors.fetch_add(1, Ordering::Relaxed);
            ocsp_bytes(
                Bytes::from(ca_core::ocsp::error_response(
                    ca_core::ocsp::OcspResponseStatus::MalformedRequest,
                )),
                false,
            )
        }
    }
}

async fn ocsp_answer(app: &App, der: &[u8], get: bool, only: Option<u32>) -> Response {
    app.metrics.ocsp_responses.fetch_add(1, Ordering::Relaxed);
    let resp = app.revocation.ocsp(der, &app.pool, only).await;
    ocsp_bytes(resp, get)
}

fn ocsp_bytes(der: Bytes, cacheable: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/ocsp-response"));
    if cacheable {
        // RFC 5019 5: GET responses may be cached by intermediaries for a short while.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300, no-transform"));
    }
    (headers, der).into_response()
}
