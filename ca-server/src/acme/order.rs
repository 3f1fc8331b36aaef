//! Orders (RFC 8555 7.4): newOrder with dns/ip identifiers, wildcards, notBefore/notAfter,
//! `profile` (draft-ietf-acme-profiles) and ARI `replaces` (RFC 9773); authorization
//! reuse; the order resource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use ca_core::acme::event::{Identifier, NewAuthorization, OrderCreated};
use ca_core::acme::index::{AcmeKey, identifier_key};
use ca_core::acme::model::{Account, AuthzStatus, Order, OrderStatus};
use ca_core::acme::problem::Problem;
use ca_core::policy::{Policy, SanName, normalize_dns};
use ca_core::{Event, Serial};
use serde_json::{Value, json};

use crate::acme::plumbing::{
    AcmeError, AcmeResult, KeyRule, json_response, parse_time, rfc3339, with_location,
};
use crate::acme::{Acme, ari};
use crate::app::now_unix;

impl Acme {
    pub fn order_json(self: &Arc<Self>, o: &Order, now: i64) -> Result<Value, AcmeError> {
        let authzs = self.order_authzs(o)?;
        let status = if self.finalizing(&o.id) && o.certificate.is_none() {
            OrderStatus::Processing
        } else {
            o.status(&authzs, now)
        };
        let mut v = json!({
            "status": status.as_str(),
            "expires": rfc3339(o.expires),
            "identifiers": o.identifiers.iter().map(|i| json!({"type": i.kind(), "value": i.value()})).collect::<Vec<_>>(),
            "authorizations": o.authz_ids.iter().map(|id| self.url(&format!("authz/{id}"))).collect::<Vec<_>>(),
            "finalize": self.url(&format!("order/{}/finalize", o.id)),
            "profile": o.profile,
        });
        if let Some(t) = o.not_before {
            v["notBefore"] = json!(rfc3339(t));
        }
        if let Some(t) = o.not_after {
            v["notAfter"] = json!(rfc3339(t));
        }
        if let Some(s) = &o.replaces {
            v["replaces"] = json!(ari::cert_id_for(self, s).unwrap_or_default());
        }
        if let Some(s) = &o.certificate {
            v["certificate"] = json!(self.url(&format!("cert/{}", s.to_hex())));
        }
        if let Some((p, detail)) = o.error(&authzs, now) {
            v["error"] = json!({"type": p.urn(), "detail": detail, "status": 403});
        }
        // A validation lost to a restart resumes when its order is looked at.
        for a in &authzs {
            self.resume_validation(a);
        }
        Ok(v)
    }

    /// The policy an account's names must satisfy: the server's, narrowed by its EAB key's.
    fn account_policy(&self, acct: &Account) -> AcmeResult<Option<(Policy, Vec<String>)>> {
        let Some(kid) = &acct.eab_kid else { return Ok(None) };
        let Some(key) = self.eab_key(kid)? else { return Ok(None) };
        let server = self.app.authority.policy();
        let p = server
            .narrowed(&key.allowed_dns, &key.allowed_ips)
            .map_err(|e| AcmeError::new(Problem::ServerInternal, e.to_string()))?
            .unwrap_or_else(|| server.clone());
        Ok(Some((p, key.profiles)))
    }
}

fn parse_identifiers(payload: &Value, max: usize) -> AcmeResult<Vec<Identifier>> {
    let list = payload
        .get("identifiers")
        .and_then(Value::as_array)
        .ok_or_else(|| AcmeError::new(Problem::Malformed, "newOrder needs an identifiers array"))?;
    if list.is_empty() || list.len() > max {
        return Err(AcmeError::new(
            Problem::Malformed,
            format!("an order needs 1 to {max} identifiers, not {}", list.len()),
        ));
    }
    let mut out: Vec<Identifier> = Vec::with_capacity(list.len());
    for i in list {
        let kind = i.get("type").and_then(Value::as_str).unwrap_or("");
        let value = i.get("value").and_then(Value::as_str).unwrap_or("");
        let id = match kind {
            "dns" => Identifier::Dns(
                normalize_dns(value)
                    .map_err(|e| AcmeError::new(Problem::RejectedIdentifier, e.to_string()))?,
            ),
            "ip" => Identifier::parse("ip", value)
                .map_err(|e| AcmeError::new(Problem::Malformed, e.to_string()))?,
            other => {
                return Err(AcmeError::new(
                    Problem::UnsupportedIdentifier,
                    format!("identifier type {other:?} is not supported; supported: dns, ip"),
                ));
            }
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn san_of(i: &Identifier) -> SanName {
    match i {
        Identifier::Dns(d) => SanName::Dns(d.clone()),
        Identifier::Ip(ip) => SanName::Ip(*ip),
    }
}

/// newOrder, within `[acme.limits]`: orders per account and per IP, failed validations per
/// identifier (for the authorizations it creates) and the pending-authorization cap.
pub async fn new_order(
    State(acme): State<Arc<Acme>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    let signed = acme.authenticate("new-order", &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?.clone();
    let payload = signed.payload()?;
    let now = now_unix();
    let identifiers = parse_identifiers(&payload, acme.cfg.max_identifiers)?;

    // Policy: the server's, and the EAB key's when the account was bound with one.
    let narrowed = acme.account_policy(&acct)?;
    let mut refused = vec![];
    for id in &identifiers {
        let server = acme.app.authority.policy().check_names(&[san_of(id)]);
        let key = narrowed.as_ref().map_or(Ok(()), |(p, _)| p.check_names(&[san_of(id)]));
        if let Err(e) = server.and(key) {
            refused.push(json!({
                "type": Problem::RejectedIdentifier.urn(),
                "detail": e.to_string(),
                "status": 400,
                "identifier": {"type": id.kind(), "value": id.value()},
            }));
        }
    }
    if !refused.is_empty() {
        let mut e = AcmeError::new(
            Problem::RejectedIdentifier,
            format!(
                "{} of {} identifiers are not allowed by this CA's policy",
                refused.len(),
                identifiers.len()
            ),
        );
        e.subproblems = refused;
        return Err(e);
    }

    let profile = match payload.get("profile").and_then(Value::as_str) {
        None | Some("") => acme.default_profile.clone(),
        Some(p) => p.to_string(),
    };
    let key_profiles = narrowed.as_ref().map(|(_, p)| p.clone()).unwrap_or_default();
    if !acme.profiles.contains(&profile) || (!key_profiles.is_empty() && !key_profiles.contains(&profile)) {
        return Err(AcmeError::new(
            Problem::InvalidProfile,
            format!("profile {profile:?} is not offered; offered: {}", acme.profiles.join(", ")),
        ));
    }
    let (not_before, not_after) = validity_window(&acme, &payload, &profile, now)?;

    let replaces = match payload.get("replaces").and_then(Value::as_str) {
        None => None,
        Some(id) => Some(ari::check_replaces(&acme, &acct, id, &identifiers)?),
    };

    acme.limits.new_order(&acct.id, peer.ip())?;
    let _guard = acme.lock(&acct.id).await;
    if let Some(serial) = &replaces
        && let Some(by) =
            ca_core::acme::ari::fold_cert_ari(&acme.events_of(&AcmeKey::Cert(serial.clone()))?).replaced_by
    {
        return Err(AcmeError::new(
            Problem::AlreadyReplaced,
            format!(
                "certificate {serial} was already replaced by order {}",
                acme.url(&format!("order/{by}"))
            ),
        ));
    }
    let expires = now + acme.cfg.order_lifetime_secs as i64;
    let mut authz_ids = vec![];
    let mut new_authorizations = vec![];
    for id in &identifiers {
        let (base, wildcard) = id.base();
        if let Some(reused) = acme.reusable_authz(&acct.id, &base, wildcard, now)? {
            authz_ids.push(reused);
            continue;
        }
        acme.limits.check_failed_validations(&acct.id, &identifier_key(&base, wildcard))?;
        let authz_id = acme.new_id();
        authz_ids.push(authz_id.clone());
        new_authorizations.push(NewAuthorization {
            authz_id,
            identifier: base,
            wildcard,
            expires,
            token: acme.new_id(),
        });
    }
    acme.check_pending(&acct.id, new_authorizations.len(), now)?;
    let created = OrderCreated {
        order_id: acme.new_id(),
        account_id: acct.id.clone(),
        identifiers,
        authz_ids,
        new_authorizations,
        expires,
        not_before,
        not_after,
        profile,
        replaces,
        created_at: now,
    };
    let id = created.order_id.clone();
    tracing::Span::current().record("order", id.as_str());
    let new_authorizations = created.new_authorizations.clone();
    acme.record(vec![Event::OrderCreated(created)]).await?;
    acme.note_pending(&acct.id, &new_authorizations);
    acme.metrics.orders_created.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(account = %acct.id, order = %id, "ACME order created");
    let order = acme.order(&id)?.ok_or_else(|| AcmeError::new(Problem::ServerInternal, "order vanished"))?;
    let body = acme.order_json(&order, now)?;
    Ok(with_location(json_response(StatusCode::CREATED, &body), &acme.url(&format!("order/{id}"))))
}

/// notBefore/notAfter (RFC 8555 7.4): honoured within the profile's maximum lifetime,
/// refused beyond it or in the past.
fn validity_window(
    acme: &Acme,
    payload: &Value,
    profile: &str,
    now: i64,
) -> AcmeResult<(Option<i64>, Option<i64>)> {
    // A bound that is not a string is refused, not ignored: the client asked for a window.
    let field = |name: &str| -> AcmeResult<Option<i64>> {
        match payload.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_time(name, s),
            Some(_) => {
                Err(AcmeError::new(Problem::Malformed, format!("{name} must be an RFC 3339 time string")))
            }
        }
    };
    let (nb, na) = (field("notBefore")?, field("notAfter")?);
    let (_, p) = acme.app.authority.profiles().get(profile)?;
    let max = p.max_validity_secs.min(acme.app.authority.policy().max_validity_secs()) as i64;
    let start = nb.unwrap_or(now);
    if let Some(nb) = nb
        && (nb < now - 86_400 || nb > now + max)
    {
        return Err(AcmeError::new(
            Problem::Malformed,
            format!("notBefore {} is too far in the past or future", rfc3339(nb)),
        ));
    }
    if let Some(na) = na {
        if na <= start.max(now) {
            return Err(AcmeError::new(Problem::Malformed, "notAfter must be later than notBefore and now"));
        }
        if na - start > max {
            return Err(AcmeError::new(
                Problem::Malformed,
                format!("notAfter {} exceeds profile {profile:?}'s maximum lifetime of {max} s", rfc3339(na)),
            ));
        }
    }
    Ok((nb, na))
}

impl Acme {
    /// A valid authorization of this account for this identifier, still valid for a day.
    fn reusable_authz(
        &self,
        account: &str,
        base: &Identifier,
        wildcard: bool,
        now: i64,
    ) -> AcmeResult<Option<String>> {
        if !self.cfg.reuse_authorizations {
            return Ok(None);
        }
        let key = AcmeKey::AccountIdentifier(account.to_string(), identifier_key(base, wildcard));
        // Newest first: the latest authorization is the one most likely still valid.
        for e in self.events_of(&key)?.into_iter().rev() {
            let Event::OrderCreated(o) = e else { continue };
            for na in o.new_authorizations.iter().filter(|a| &a.identifier == base && a.wildcard == wildcard)
            {
                if let Some(a) = self.authz(&na.authz_id)?
                    && a.status(now + 86_400) == AuthzStatus::Valid
                {
                    return Ok(Some(a.id));
                }
            }
        }
        Ok(None)
    }

    /// How long a validated authorization lives: from validation, for `authz_lifetime_secs`.
    pub fn authz_valid_until(&self, validated_at: i64) -> i64 {
        validated_at + self.cfg.authz_lifetime_secs as i64
    }
}

/// POST-as-GET of an order, by its account.
pub async fn order(
    State(acme): State<Arc<Acme>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AcmeResult {
    tracing::Span::current().record("order", id.as_str());
    let signed = acme.authenticate(&format!("order/{id}"), &headers, &body, KeyRule::Kid)?;
    let acct = signed.account()?;
    let order = acme
        .order(&id)?
        .filter(|o| o.account == acct.id)
        .ok_or_else(|| AcmeError::not_found(format!("no order {id} for this account")))?;
    let body = acme.order_json(&order, now_unix())?;
    Ok(json_response(StatusCode::OK, &body))
}

/// A serial from a certificate URL path segment.
pub fn serial_param(s: &str) -> AcmeResult<Serial> {
    Serial::from_hex(s).map_err(|_| AcmeError::not_found(format!("no certificate {s:?}")))
}
