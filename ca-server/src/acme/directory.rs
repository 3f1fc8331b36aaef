//! The directory (RFC 8555 7.1.1) and newNonce (7.2).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::acme::Acme;
use crate::acme::plumbing::json_response;

pub async fn directory(State(acme): State<Arc<Acme>>) -> Response {
    let mut meta = Map::new();
    if let Some(t) = &acme.cfg.terms_of_service {
        meta.insert("termsOfService".into(), json!(t));
    }
    if let Some(w) = &acme.cfg.website {
        meta.insert("website".into(), json!(w));
    }
    if !acme.cfg.caa_identities.is_empty() {
        meta.insert("caaIdentities".into(), json!(acme.cfg.caa_identities));
    }
    meta.insert("externalAccountRequired".into(), json!(acme.cfg.eab_required));
    let profiles: Map<String, Value> = acme
        .profiles
        .iter()
        .map(|p| (p.clone(), json!(acme.app.authority.profiles().describe(p).unwrap_or_default())))
        .collect();
    meta.insert("profiles".into(), Value::Object(profiles));
    json_response(
        StatusCode::OK,
        &json!({
            "newNonce": acme.url("new-nonce"),
            "newAccount": acme.url("new-account"),
            "newOrder": acme.url("new-order"),
            "revokeCert": acme.url("revoke-cert"),
            "keyChange": acme.url("key-change"),
            "renewalInfo": acme.url("renewal-info"),
            "meta": meta,
        }),
    )
}

/// GET answers 204 (uacme, the step CLI), HEAD 200 (instant-acme); the nonce itself is
/// added by the shared decoration, as on every response.
pub async fn new_nonce_get() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub async fn new_nonce_head() -> Response {
    StatusCode::OK.into_response()
}
