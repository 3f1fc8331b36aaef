//! Plain HTTP: CA certificates, health and metrics (CRL, OCSP and ACME come with their
//! own modules).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/root.pem", get(root_pem))
        .route("/chain.pem", get(chain_pem))
        .route("/ca.der", get(ca_der))
        .route("/metrics", get(metrics))
        .with_state(app)
}

const PEM: &str = "application/x-pem-file";

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    // Healthy = the log is open and its writer answers (a cheap read of the head).
    let _ = app.store.head();
    (StatusCode::OK, "ok\n")
}

async fn root_pem(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PEM)], ca_core::ca::der_to_pem(&app.authority.ca().root_der))
}

async fn chain_pem(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PEM)], app.authority.ca().chain_pem.clone())
}

/// The issuing CA in DER: the AIA caIssuers URL of every leaf points here.
async fn ca_der(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/pkix-cert")], app.authority.ca().cert_der.clone())
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&app.store, app.started.elapsed()),
    )
}
