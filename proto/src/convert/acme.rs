//! ACME events <-> `ca.v1` messages. Optional values are absent on the wire as the field's
//! zero value (empty string, empty bytes, 0), as elsewhere in the log.

use ca_core::Error;
use ca_core::event as dom;

use super::serial;
use crate::v1;

fn opt_time(t: i64) -> Option<i64> {
    (t != 0).then_some(t)
}

fn opt_string(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn ident_to(i: &dom::Identifier) -> v1::AcmeIdentifier {
    v1::AcmeIdentifier { r#type: i.kind().to_string(), value: i.value() }
}

fn ident_from(i: Option<v1::AcmeIdentifier>) -> Result<dom::Identifier, Error> {
    let i = i.ok_or_else(|| Error::InvalidEvent("authorization without an identifier".into()))?;
    dom::Identifier::parse(&i.r#type, &i.value).map_err(|e| Error::InvalidEvent(e.to_string()))
}

impl From<&dom::AccountRegistered> for v1::AccountRegistered {
    fn from(a: &dom::AccountRegistered) -> Self {
        v1::AccountRegistered {
            account_id: a.account_id.clone(),
            jwk_json: a.jwk_json.clone(),
            thumbprint: a.thumbprint.clone(),
            contact: a.contact.clone(),
            terms_of_service_agreed: a.terms_of_service_agreed,
            eab_kid: a.eab_kid.clone().unwrap_or_default(),
            created_at_unix: a.created_at,
        }
    }
}

impl TryFrom<v1::AccountRegistered> for dom::AccountRegistered {
    type Error = Error;
    fn try_from(a: v1::AccountRegistered) -> Result<Self, Error> {
        Ok(dom::AccountRegistered {
            account_id: a.account_id,
            jwk_json: a.jwk_json,
            thumbprint: a.thumbprint,
            contact: a.contact,
            terms_of_service_agreed: a.terms_of_service_agreed,
            eab_kid: opt_string(a.eab_kid),
            created_at: a.created_at_unix,
        })
    }
}

impl From<&dom::AccountUpdated> for v1::AccountUpdated {
    fn from(a: &dom::AccountUpdated) -> Self {
        v1::AccountUpdated { account_id: a.account_id.clone(), contact: a.contact.clone() }
    }
}

impl TryFrom<v1::AccountUpdated> for dom::AccountUpdated {
    type Error = Error;
    fn try_from(a: v1::AccountUpdated) -> Result<Self, Error> {
        Ok(dom::AccountUpdated { account_id: a.account_id, contact: a.contact })
    }
}

impl From<&dom::AccountKeyChanged> for v1::AccountKeyChanged {
    fn from(a: &dom::AccountKeyChanged) -> Self {
        v1::AccountKeyChanged {
            account_id: a.account_id.clone(),
            jwk_json: a.jwk_json.clone(),
            old_thumbprint: a.old_thumbprint.clone(),
            new_thumbprint: a.new_thumbprint.clone(),
        }
    }
}

impl TryFrom<v1::AccountKeyChanged> for dom::AccountKeyChanged {
    type Error = Error;
    fn try_from(a: v1::AccountKeyChanged) -> Result<Self, Error> {
        Ok(dom::AccountKeyChanged {
            account_id: a.account_id,
            jwk_json: a.jwk_json,
            old_thumbprint: a.old_thumbprint,
            new_thumbprint: a.new_thumbprint,
        })
    }
}

impl From<&dom::AccountDeactivated> for v1::AccountDeactivated {
    fn from(a: &dom::AccountDeactivated) -> Self {
        v1::AccountDeactivated { account_id: a.account_id.clone() }
    }
}

impl TryFrom<v1::AccountDeactivated> for dom::AccountDeactivated {
    type Error = Error;
    fn try_from(a: v1::AccountDeactivated) -> Result<Self, Error> {
        Ok(dom::AccountDeactivated { account_id: a.account_id })
    }
}

impl From<&dom::OrderCreated> for v1::OrderCreated {
    fn from(o: &dom::OrderCreated) -> Self {
        v1::OrderCreated {
            order_id: o.order_id.clone(),
            account_id: o.account_id.clone(),
            identifiers: o.identifiers.iter().map(ident_to).collect(),
            authz_ids: o.authz_ids.clone(),
            new_authorizations: o
                .new_authorizations
                .iter()
                .map(|a| v1::NewAuthorization {
                    authz_id: a.authz_id.clone(),
                    identifier: Some(ident_to(&a.identifier)),
                    wildcard: a.wildcard,
                    expires_unix: a.expires,
                    token: a.token.clone(),
                })
                .collect(),
            expires_unix: o.expires,
            not_before_unix: o.not_before.unwrap_or(0),
            not_after_unix: o.not_after.unwrap_or(0),
            profile: o.profile.clone(),
            replaces_serial: o.replaces.as_ref().map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            created_at_unix: o.created_at,
        }
    }
}

impl TryFrom<v1::OrderCreated> for dom::OrderCreated {
    type Error = Error;
    fn try_from(o: v1::OrderCreated) -> Result<Self, Error> {
        Ok(dom::OrderCreated {
            order_id: o.order_id,
            account_id: o.account_id,
            identifiers: o.identifiers.into_iter().map(|i| ident_from(Some(i))).collect::<Result<_, _>>()?,
            authz_ids: o.authz_ids,
            new_authorizations: o
                .new_authorizations
                .into_iter()
                .map(|a| {
                    Ok(dom::NewAuthorization {
                        authz_id: a.authz_id,
                        identifier: ident_from(a.identifier)?,
                        wildcard: a.wildcard,
                        expires: a.expires_unix,
                        token: a.token,
                    })
                })
                .collect::<Result<_, Error>>()?,
            expires: o.expires_unix,
            not_before: opt_time(o.not_before_unix),
            not_after: opt_time(o.not_after_unix),
            profile: o.profile,
            replaces: if o.replaces_serial.is_empty() { None } else { Some(serial(&o.replaces_serial)?) },
            created_at: o.created_at_unix,
        })
    }
}

impl From<&dom::ChallengeStarted> for v1::ChallengeStarted {
    fn from(c: &dom::ChallengeStarted) -> Self {
        v1::ChallengeStarted { authz_id: c.authz_id.clone(), challenge_type: c.challenge_type.clone() }
    }
}

impl TryFrom<v1::ChallengeStarted> for dom::ChallengeStarted {
    type Error = Error;
    fn try_from(c: v1::ChallengeStarted) -> Result<Self, Error> {
        Ok(dom::ChallengeStarted { authz_id: c.authz_id, challenge_type: c.challenge_type })
    }
}

impl From<&dom::AuthorizationValidated> for v1::AuthorizationValidated {
    fn from(a: &dom::AuthorizationValidated) -> Self {
        v1::AuthorizationValidated {
            authz_id: a.authz_id.clone(),
            challenge_type: a.challenge_type.clone(),
            address: a.address.clone().unwrap_or_default(),
            validated_at_unix: a.validated_at,
            expires_unix: a.expires,
        }
    }
}

impl TryFrom<v1::AuthorizationValidated> for dom::AuthorizationValidated {
    type Error = Error;
    fn try_from(a: v1::AuthorizationValidated) -> Result<Self, Error> {
        Ok(dom::AuthorizationValidated {
            authz_id: a.authz_id,
            challenge_type: a.challenge_type,
            address: opt_string(a.address),
            validated_at: a.validated_at_unix,
            expires: a.expires_unix,
        })
    }
}

impl From<&dom::AuthorizationInvalidated> for v1::AuthorizationInvalidated {
    fn from(a: &dom::AuthorizationInvalidated) -> Self {
        v1::AuthorizationInvalidated {
            authz_id: a.authz_id.clone(),
            challenge_type: a.challenge_type.clone(),
            error_type: a.error_type.clone(),
            detail: a.detail.clone(),
            at_unix: a.at,
        }
    }
}

impl TryFrom<v1::AuthorizationInvalidated> for dom::AuthorizationInvalidated {
    type Error = Error;
    fn try_from(a: v1::AuthorizationInvalidated) -> Result<Self, Error> {
        Ok(dom::AuthorizationInvalidated {
            authz_id: a.authz_id,
            challenge_type: a.challenge_type,
            error_type: a.error_type,
            detail: a.detail,
            at: a.at_unix,
        })
    }
}

impl From<&dom::AuthorizationDeactivated> for v1::AuthorizationDeactivated {
    fn from(a: &dom::AuthorizationDeactivated) -> Self {
        v1::AuthorizationDeactivated { authz_id: a.authz_id.clone() }
    }
}

impl TryFrom<v1::AuthorizationDeactivated> for dom::AuthorizationDeactivated {
    type Error = Error;
    fn try_from(a: v1::AuthorizationDeactivated) -> Result<Self, Error> {
        Ok(dom::AuthorizationDeactivated { authz_id: a.authz_id })
    }
}

impl From<&dom::OrderFinalized> for v1::OrderFinalized {
    fn from(o: &dom::OrderFinalized) -> Self {
        v1::OrderFinalized { order_id: o.order_id.clone(), serial: o.serial.as_bytes().to_vec() }
    }
}

impl TryFrom<v1::OrderFinalized> for dom::OrderFinalized {
    type Error = Error;
    fn try_from(o: v1::OrderFinalized) -> Result<Self, Error> {
        Ok(dom::OrderFinalized { order_id: o.order_id, serial: serial(&o.serial)? })
    }
}

impl From<&dom::EabKeyCreated> for v1::EabKeyCreated {
    fn from(e: &dom::EabKeyCreated) -> Self {
        v1::EabKeyCreated {
            kid: e.kid.clone(),
            name: e.name.clone(),
            allowed_dns: e.allowed_dns.clone(),
            allowed_ips: e.allowed_ips.clone(),
            profiles: e.profiles.clone(),
            created_at_unix: e.created_at,
        }
    }
}

impl TryFrom<v1::EabKeyCreated> for dom::EabKeyCreated {
    type Error = Error;
    fn try_from(e: v1::EabKeyCreated) -> Result<Self, Error> {
        Ok(dom::EabKeyCreated {
            kid: e.kid,
            name: e.name,
            allowed_dns: e.allowed_dns,
            allowed_ips: e.allowed_ips,
            profiles: e.profiles,
            created_at: e.created_at_unix,
        })
    }
}

impl From<&dom::EabKeyRevoked> for v1::EabKeyRevoked {
    fn from(e: &dom::EabKeyRevoked) -> Self {
        v1::EabKeyRevoked { kid: e.kid.clone() }
    }
}

impl TryFrom<v1::EabKeyRevoked> for dom::EabKeyRevoked {
    type Error = Error;
    fn try_from(e: v1::EabKeyRevoked) -> Result<Self, Error> {
        Ok(dom::EabKeyRevoked { kid: e.kid })
    }
}

impl From<&dom::RenewalWindowSet> for v1::RenewalWindowSet {
    fn from(r: &dom::RenewalWindowSet) -> Self {
        v1::RenewalWindowSet {
            serial: r.serial.as_bytes().to_vec(),
            start_unix: r.start,
            end_unix: r.end,
            requester: r.requester.clone(),
        }
    }
}

impl TryFrom<v1::RenewalWindowSet> for dom::RenewalWindowSet {
    type Error = Error;
    fn try_from(r: v1::RenewalWindowSet) -> Result<Self, Error> {
        Ok(dom::RenewalWindowSet {
            serial: serial(&r.serial)?,
            start: r.start_unix,
            end: r.end_unix,
            requester: r.requester,
        })
    }
}
