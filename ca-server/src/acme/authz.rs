//! Authorizations and challenges (RFC 8555 7.5): the authorization resource, its
//! deactivation, and the challenge resource whose POST starts a validation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use ca_core::acme::index::identifier_key;
use ca_core::acme::model::{Authz, AuthzState, AuthzStatus, ChallengeType};
use ca_core::acme::problem::Problem;
use serde_json::{Value, json};

use crate::acme::Acme;
use crate::acme::plumbing::{
    AcmeError, AcmeResult, KeyRule, json_response, rfc3339, with_link, with_retry_after,
};
use crate::app::now_unix;

impl Acme {
    fn challenge_json(&self, a: &Authz, kind: ChallengeType) -> Value {
        let name = kind.as_str();
        let status = match &a.state {
            AuthzState::Pending | AuthzState::Deactivated => "pending",
            AuthzState::Processing { challenge } if challenge == name => "processing",
            AuthzState::Valid { challenge, .. } if challenge == name => "valid",
            AuthzState::Invalid { challenge, .. } if challenge == name => "invalid",
            _ => "pending",
        };
        // type, url, status and token first: acme.sh reads them with a regex.
        let mut v = json!({
            "type": name,
            "url": self.url(&format!("chall/{}/{name}", a.id)),
            "status": status,
            "token": a.token,
        });
        match &a.state {
            AuthzState::Valid { challenge, at, .. } if challenge == name => {
                v["validated"] = json!(rfc3339(*at))
            }
            AuthzState::Invalid { challenge, problem, detail, .. } if challenge == name => {
                v["error"] = json!({"type": problem.urn(), "detail": detail, "status": 403});
            }
            _ => {}
        }
        v
    }

    pub fn authz_json(&self, a: &Authz, now: i64) -> Value {
        let kinds = match &a.state {
            // A decided authorization shows the challenge that decided it.
            AuthzState::Valid { challenge, .. } | AuthzState::Invalid { challenge, .. } => {
                ChallengeType::parse(challenge).map(|c| vec![c]).unwrap_or_default()
            }
            _ => a.challenge_types(),
        };
        let mut v = json!({
            "identifier": {"type": a.identifier.kind(), "value": a.identifier.value()},
            "status": a.status(now).as_str(),
            "expires": rfc3339(a.expires),
            "challenges": kinds.into_iter().map(|k| self.challenge_json(a, k)).collect::<Vec<_>>(),
        });
        if a.wildcard {
            v["wildcard"] = json!(true);
        }
        v
    }

    fn owned_authz(&self, id: &str, account: &str) -> AcmeResult<Authz> {
        self.authz(id)?
            .filter(|a| a.account == account)
            .ok_or_else(|| AcmeError::not_found(format!("no authorization {id} for this account")))
    }
}

/// POST-as-GET, or `{"status":"deactivated"}` (RFC 8555 7.5.2).
pub async fn authz(
    State(acme): State<Arc<Acme>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate(&format!("authz/{id}"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    let now = now_unix();
    let mut a = acme.owned_authz(&id, &acct.id)?;
    if !signed.jws.is_post_as_get() {
        let p = signed.payload()?;
        match p.get("status").and_then(Value::as_str) {
            Some("deactivated") => {
                let _guard = acme.lock(&id).await;
                a = acme.owned_authz(&id, &acct.id)?;
                if let Some(e) = a.decide_deactivate(now)? {
                    acme.record(vec![e]).await?;
                    tracing::info!(account = %acct.id, authz = %id, "ACME authorization deactivated");
                    a = acme.owned_authz(&id, &acct.id)?;
                }
            }
            None => {}
            Some(s) => {
                return Err(AcmeError::new(
                    Problem::Malformed,
                    format!("authorization status may only be set to deactivated, not {s:?}"),
                ));
            }
        }
    } else {
        acme.resume_validation(&a);
    }
    let resp = json_response(StatusCode::OK, &acme.authz_json(&a, now));
    Ok(if a.processing().is_some() { with_retry_after(resp, 1) } else { resp })
}

/// POST `{}` asks for validation (200 with `Link: rel="up"`, as certbot and lego need);
/// POST-as-GET reads the challenge.
pub async fn challenge(
    State(acme): State<Arc<Acme>>,
    Path((id, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate(&format!("chall/{id}/{kind}"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    let now = now_unix();
    let ctype = ChallengeType::parse(&kind)
        .ok_or_else(|| AcmeError::not_found(format!("no challenge type {kind:?}")))?;
    let mut a = acme.owned_authz(&id, &acct.id)?;
    if !a.challenge_types().contains(&ctype) {
        return Err(AcmeError::not_found(format!("challenge {kind} is not offered for {}", a.identifier)));
    }
    if !signed.jws.is_post_as_get() {
        let _guard = acme.lock(&id).await;
        a = acme.owned_authz(&id, &acct.id)?;
        // Starting a validation counts as an attempt: refused once this identifier's
        // failed validations are used up.
        if a.status(now) == AuthzStatus::Pending && a.processing().is_none() {
            acme.limits.check_failed_validations(&acct.id, &identifier_key(&a.identifier, a.wildcard))?;
        }
        if let Some(e) = a.decide_start(&kind, now)? {
            acme.record(vec![e]).await?;
            tracing::debug!(account = %acct.id, authz = %id, challenge = %kind, "ACME validation requested");
            a = acme.owned_authz(&id, &acct.id)?;
        }
    }
    acme.resume_validation(&a);
    let mut resp = json_response(StatusCode::OK, &acme.challenge_json(&a, ctype));
    if a.processing().is_some() {
        // Validation takes milliseconds here; without a hint lego waits 5 s per poll.
        resp = with_retry_after(resp, 1);
    }
    Ok(with_link(resp, &acme.url(&format!("authz/{id}")), "up"))
}
