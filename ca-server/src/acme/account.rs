//! Accounts (RFC 8555 7.3): newAccount with optional or required External Account
//! Binding, account update and deactivation, the orders list, keyChange.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ca_core::Event;
use ca_core::acme::index::AcmeKey;
use ca_core::acme::model::{Account, AccountStatus};
use ca_core::acme::problem::Problem;
use ca_core::acme::{EabBinding, Jwk, Jws};
use ca_core::event::{AccountDeactivated, AccountKeyChanged, AccountRegistered, AccountUpdated};
use serde_json::{Value, json};

use crate::acme::Acme;
use crate::acme::plumbing::{AcmeError, AcmeResult, KeyRule, json_response, with_link, with_location};
use crate::app::now_unix;

/// Orders per page of the orders list.
const ORDERS_PAGE: usize = 100;

impl Acme {
    pub fn account_json(&self, a: &Account) -> Value {
        let mut v = json!({
            "status": a.status.as_str(),
            "contact": a.contact,
            "orders": self.url(&format!("acct/{}/orders", a.id)),
            "termsOfServiceAgreed": a.terms_of_service_agreed,
        });
        if let Some(kid) = &a.eab_kid {
            v["externalAccountBinding"] = json!({ "kid": kid });
        }
        v
    }

    fn account_response(&self, status: StatusCode, a: &Account) -> Response {
        with_location(json_response(status, &self.account_json(a)), &self.url(&format!("acct/{}", a.id)))
    }
}

/// RFC 8555 7.3: contacts are `mailto:` URLs with one address, no hfields.
fn check_contacts(v: &Value) -> AcmeResult<Vec<String>> {
    let Some(v) = v.get("contact") else { return Ok(vec![]) };
    let list =
        v.as_array().ok_or_else(|| AcmeError::new(Problem::Malformed, "contact must be an array of URLs"))?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let s = c
            .as_str()
            .ok_or_else(|| AcmeError::new(Problem::Malformed, "contact entries must be strings"))?;
        let Some(addr) = s.strip_prefix("mailto:") else {
            return Err(AcmeError::new(
                Problem::UnsupportedContact,
                format!("contact {s:?} is not supported; only mailto: URLs are"),
            ));
        };
        if addr.contains(',') || addr.contains('?') || !addr.contains('@') || addr.len() > 254 {
            return Err(AcmeError::new(
                Problem::InvalidContact,
                format!("contact {s:?} is not one email address"),
            ));
        }
        out.push(s.to_string());
    }
    if out.len() > 10 {
        return Err(AcmeError::new(Problem::Malformed, "at most 10 contacts"));
    }
    Ok(out)
}

/// newAccount; an existing key gets its account back without counting against
/// `new_accounts_per_ip_per_hour`, a new one counts once all its checks passed.
pub async fn new_account(
    State(acme): State<Arc<Acme>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate("new-account", &headers, &body, KeyRule::Jwk)?;
    let payload = signed.payload()?;
    let thumbprint = signed.key.thumbprint();
    let _guard = acme.lock(&thumbprint).await;
    // An existing key gets its account before any EAB check (cert-manager resends EAB).
    if let Some(existing) = acme.account_by_thumbprint(&thumbprint)? {
        return Ok(acme.account_response(StatusCode::OK, &existing));
    }
    if payload.get("onlyReturnExisting").and_then(Value::as_bool) == Some(true) {
        return Err(AcmeError::new(Problem::AccountDoesNotExist, "no account exists with this key"));
    }
    let contact = check_contacts(&payload)?;
    if acme.cfg.terms_of_service.is_some()
        && payload.get("termsOfServiceAgreed").and_then(Value::as_bool) != Some(true)
    {
        return Err(AcmeError::new(
            Problem::Malformed,
            "the terms of service must be agreed to (termsOfServiceAgreed)",
        ));
    }
    let eab_kid = match payload.get("externalAccountBinding") {
        Some(b) => Some(acme.check_eab(b, &signed.key)?),
        None if acme.cfg.eab_required => {
            return Err(AcmeError::new(
                Problem::ExternalAccountRequired,
                "this server requires an External Account Binding (ask the CA operator for an EAB key)",
            ));
        }
        None => None,
    };
    let jwk_json = serde_json::to_vec(&signed.key.to_json())
        .map_err(|e| AcmeError::new(Problem::ServerInternal, e.to_string()))?;
    acme.limits.new_account(peer.ip())?;
    let reg = AccountRegistered {
        account_id: acme.new_id(),
        jwk_json,
        thumbprint,
        contact,
        terms_of_service_agreed: payload
            .get("termsOfServiceAgreed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        eab_kid,
        created_at: now_unix(),
    };
    acme.record(vec![Event::AccountRegistered(reg.clone())]).await?;
    acme.metrics.accounts_created.fetch_add(1, Ordering::Relaxed);
    tracing::info!(account = %reg.account_id, eab = ?reg.eab_kid, "ACME account registered");
    let acct = ca_core::acme::model::fold_account([&Event::AccountRegistered(reg)])
        .ok_or_else(|| AcmeError::new(Problem::ServerInternal, "account fold"))?;
    Ok(acme.account_response(StatusCode::CREATED, &acct))
}

impl Acme {
    /// Check an EAB binding against a live key; returns its kid.
    fn check_eab(&self, binding: &Value, account_key: &Jwk) -> AcmeResult<String> {
        let b = EabBinding::parse(binding)?;
        let key = self.eab_key(&b.kid)?.filter(|k| !k.revoked).ok_or_else(|| {
            AcmeError::new(Problem::Unauthorized, format!("EAB key {:?} is unknown or revoked", b.kid))
        })?;
        let secret = self.eab.secret(&key.kid).map_err(|e| {
            tracing::error!(kid = %key.kid, error = %e, "EAB secret unreadable");
            AcmeError::new(Problem::ServerInternal, "EAB key secret unavailable; see server logs")
        })?;
        b.verify(&self.url("new-account"), account_key, &secret).map_err(|e| {
            AcmeError::new(Problem::Unauthorized, format!("External Account Binding does not verify: {e}"))
        })?;
        Ok(key.kid)
    }
}

/// POST to the account URL: POST-as-GET, contact update, or deactivation.
pub async fn account(
    State(acme): State<Arc<Acme>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate(&format!("acct/{id}"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    if acct.id != id {
        return Err(AcmeError::new(Problem::Unauthorized, "the JWS kid names another account"));
    }
    if signed.jws.is_post_as_get() {
        return Ok(acme.account_response(StatusCode::OK, &acct));
    }
    let payload = signed.payload()?;
    let _guard = acme.lock(&acct.thumbprint).await;
    let mut events = vec![];
    if payload.get("contact").is_some() {
        events.push(Event::AccountUpdated(AccountUpdated {
            account_id: id.clone(),
            contact: check_contacts(&payload)?,
        }));
    }
    match payload.get("status").and_then(Value::as_str) {
        None => {}
        Some("deactivated") => {
            events.push(Event::AccountDeactivated(AccountDeactivated { account_id: id.clone() }))
        }
        Some(s) => {
            return Err(AcmeError::new(
                Problem::Malformed,
                format!("account status may only be set to deactivated, not {s:?}"),
            ));
        }
    }
    if !events.is_empty() {
        acme.record(events).await?;
        tracing::info!(account = %id, "ACME account updated");
    }
    let acct =
        acme.account(&id)?.ok_or_else(|| AcmeError::new(Problem::AccountDoesNotExist, "account vanished"))?;
    Ok(acme.account_response(StatusCode::OK, &acct))
}

#[derive(serde::Deserialize)]
pub struct Cursor {
    cursor: Option<u64>,
}

/// The orders list (RFC 8555 7.1.2.1), paged with `rel="next"`.
pub async fn orders(
    State(acme): State<Arc<Acme>>,
    Path(id): Path<String>,
    Query(q): Query<Cursor>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let path = match q.cursor {
        Some(c) => format!("acct/{id}/orders?cursor={c}"),
        None => format!("acct/{id}/orders"),
    };
    let signed = acme.authenticate(&path, &headers, &body, KeyRule::Kid)?;
    if signed.account()?.id != id {
        return Err(AcmeError::new(Problem::Unauthorized, "the JWS kid names another account"));
    }
    let key = AcmeKey::AccountOrders(id.clone());
    let seqs = acme.app.store.acme_seqs(&key, q.cursor, ORDERS_PAGE + 1)?;
    let mut urls = vec![];
    for seq in seqs.iter().take(ORDERS_PAGE) {
        if let Some(rec) = acme.app.store.read(*seq)?
            && let Event::OrderCreated(o) = rec.event
        {
            urls.push(acme.url(&format!("order/{}", o.order_id)));
        }
    }
    let mut resp = json_response(StatusCode::OK, &json!({ "orders": urls }));
    if seqs.len() > ORDERS_PAGE {
        let last = seqs[ORDERS_PAGE - 1];
        resp = with_link(resp, &acme.url(&format!("acct/{id}/orders?cursor={last}")), "next");
    }
    Ok(resp)
}

/// keyChange (RFC 8555 7.3.5): the outer JWS by the old key (kid), the inner by the new
/// key (jwk) over {account, oldKey}; the old key is refused from then on.
pub async fn key_change(State(acme): State<Arc<Acme>>, headers: HeaderMap, body: Bytes) -> AcmeResult {
    let signed = acme.authenticate("key-change", &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    let inner_bytes = signed.jws.payload.clone();
    let inner = Jws::parse(&inner_bytes)?;
    let new_key = inner.protected.jwk.clone().ok_or_else(|| {
        AcmeError::new(Problem::Malformed, "the inner keyChange JWS must carry the new key as jwk")
    })?;
    if inner.protected.nonce.is_some() {
        return Err(AcmeError::new(Problem::Malformed, "the inner keyChange JWS must not have a nonce"));
    }
    if inner.protected.url != signed.jws.protected.url {
        return Err(AcmeError::new(
            Problem::Malformed,
            "the inner keyChange JWS url differs from the outer one",
        ));
    }
    inner.verify(&new_key)?;
    let p = inner.payload_json()?;
    let acct_url = acme.url(&format!("acct/{}", acct.id));
    if p.get("account").and_then(Value::as_str) != Some(acct_url.as_str()) {
        return Err(AcmeError::new(
            Problem::Malformed,
            "keyChange payload account does not match the signing account",
        ));
    }
    let old = p
        .get("oldKey")
        .ok_or_else(|| AcmeError::new(Problem::Malformed, "keyChange payload lacks oldKey"))?;
    if Jwk::from_json(old)? != signed.key {
        return Err(AcmeError::new(Problem::Malformed, "keyChange oldKey is not the account's current key"));
    }
    let new_tp = new_key.thumbprint();
    let _guard = acme.lock(&new_tp).await;
    if let Some(other) = acme.account_by_thumbprint(&new_tp)? {
        let err = AcmeError::new(Problem::Malformed, "the new key is already in use by an account")
            .with_status(StatusCode::CONFLICT);
        return Err(AcmeError {
            detail: format!("{} ({})", err.detail, acme.url(&format!("acct/{}", other.id))),
            ..err
        });
    }
    if acct.status != AccountStatus::Valid {
        return Err(AcmeError::new(Problem::Unauthorized, "account is not valid"));
    }
    let jwk_json = serde_json::to_vec(&new_key.to_json())
        .map_err(|e| AcmeError::new(Problem::ServerInternal, e.to_string()))?;
    acme.record(vec![Event::AccountKeyChanged(AccountKeyChanged {
        account_id: acct.id.clone(),
        jwk_json,
        old_thumbprint: acct.thumbprint.clone(),
        new_thumbprint: new_tp,
    })])
    .await?;
    tracing::info!(account = %acct.id, "ACME account key changed");
    let acct = acme
        .account(&acct.id)?
        .ok_or_else(|| AcmeError::new(Problem::AccountDoesNotExist, "account vanished"))?;
    Ok(acme.account_response(StatusCode::OK, &acct))
}
