//! ACME objects folded from their events (`evolve`), and the checks that decide which
//! event a request may record (`decide`). Pure: the caller supplies the events of the
//! object (from the store's index, in log order), the time and fresh ids.

use crate::acme::event::{Identifier, NewAuthorization};
use crate::acme::problem::Problem;
use crate::event::Event;
use crate::{Error, Serial, UnixSeconds};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Valid,
    Deactivated,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Valid => "valid",
            AccountStatus::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub jwk_json: Vec<u8>,
    pub thumbprint: String,
    pub contact: Vec<String>,
    pub status: AccountStatus,
    pub eab_kid: Option<String>,
    pub terms_of_service_agreed: bool,
    pub created_at: UnixSeconds,
}

/// An account from its events (`AcmeKey::Account`); `None` before its registration.
pub fn fold_account<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Account> {
    let mut acct: Option<Account> = None;
    for e in events {
        match (e, acct.as_mut()) {
            (Event::AccountRegistered(r), _) => {
                acct = Some(Account {
                    id: r.account_id.clone(),
                    jwk_json: r.jwk_json.clone(),
                    thumbprint: r.thumbprint.clone(),
                    contact: r.contact.clone(),
                    status: AccountStatus::Valid,
                    eab_kid: r.eab_kid.clone(),
                    terms_of_service_agreed: r.terms_of_service_agreed,
                    created_at: r.created_at,
                })
            }
            (Event::AccountUpdated(u), Some(a)) => a.contact = u.contact.clone(),
            (Event::AccountKeyChanged(k), Some(a)) => {
                a.jwk_json = k.jwk_json.clone();
                a.thumbprint = k.new_thumbprint.clone();
            }
            (Event::AccountDeactivated(_), Some(a)) => a.status = AccountStatus::Deactivated,
            _ => {}
        }
    }
    acct
}

/// The account a key thumbprint is bound to now, from the events indexed under it
/// (`AcmeKey::AccountKey`): bound by a registration or a key change to it, unbound by a
/// key change away from it.
pub fn account_for_thumbprint<'a>(
    thumbprint: &str,
    events: impl IntoIterator<Item = &'a Event>,
) -> Option<String> {
    let mut bound = None;
    for e in events {
        match e {
            Event::AccountRegistered(r) if r.thumbprint == thumbprint => bound = Some(r.account_id.clone()),
            Event::AccountKeyChanged(k) if k.new_thumbprint == thumbprint => {
                bound = Some(k.account_id.clone())
            }
            Event::AccountKeyChanged(k) if k.old_thumbprint == thumbprint => bound = None,
            _ => {}
        }
    }
    bound
}

/// The challenge types this CA offers, in the order it lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeType {
    Http01,
    Dns01,
    TlsAlpn01,
}

impl ChallengeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::Dns01 => "dns-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub fn parse(s: &str) -> Option<ChallengeType> {
        [ChallengeType::Http01, ChallengeType::Dns01, ChallengeType::TlsAlpn01]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// Where an authorization's validation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzState {
    Pending,
    /// A client asked for this challenge; the validation runs (or must be resumed).
    Processing {
        challenge: String,
    },
    Valid {
        challenge: String,
        address: Option<String>,
        at: UnixSeconds,
    },
    Invalid {
        challenge: String,
        problem: Problem,
        detail: String,
        at: UnixSeconds,
    },
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authz {
    pub id: String,
    pub account: String,
    /// The base identifier (a wildcard's authorization names the base domain).
    pub identifier: Identifier,
    pub wildcard: bool,
    pub expires: UnixSeconds,
    pub token: String,
    pub state: AuthzState,
}

/// The status an ACME client sees for an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzStatus {
    Pending,
    Valid,
    Invalid,
    Deactivated,
    Expired,
}

impl AuthzStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzStatus::Pending => "pending",
            AuthzStatus::Valid => "valid",
            AuthzStatus::Invalid => "invalid",
            AuthzStatus::Deactivated => "deactivated",
            AuthzStatus::Expired => "expired",
        }
    }
}

impl Authz {
    pub fn status(&self, now: UnixSeconds) -> AuthzStatus {
        match &self.state {
            AuthzState::Invalid { .. } => AuthzStatus::Invalid,
            AuthzState::Deactivated => AuthzStatus::Deactivated,
            _ if now >= self.expires => AuthzStatus::Expired,
            AuthzState::Valid { .. } => AuthzStatus::Valid,
            AuthzState::Pending | AuthzState::Processing { .. } => AuthzStatus::Pending,
        }
    }

    /// RFC 8555 7.1.4 / 8: wildcards only by dns-01; IP identifiers not by dns-01 (RFC 8738).
    pub fn challenge_types(&self) -> Vec<ChallengeType> {
        match (&self.identifier, self.wildcard) {
            (Identifier::Dns(_), true) => vec![ChallengeType::Dns01],
            (Identifier::Dns(_), false) => {
                vec![ChallengeType::Http01, ChallengeType::Dns01, ChallengeType::TlsAlpn01]
            }
            (Identifier::Ip(_), _) => vec![ChallengeType::Http01, ChallengeType::TlsAlpn01],
        }
    }

    /// `Some(type)` while a validation is due to run.
    pub fn processing(&self) -> Option<&str> {
        match &self.state {
            AuthzState::Processing { challenge } => Some(challenge),
            _ => None,
        }
    }

    /// Decide a client's request to validate `challenge`: the event to record, or `None`
    /// when nothing changes (already processing or decided: RFC 8555 7.5.1 answers with
    /// the challenge as it stands).
    pub fn decide_start(&self, challenge: &str, now: UnixSeconds) -> Result<Option<Event>, Error> {
        let Some(kind) = ChallengeType::parse(challenge).filter(|c| self.challenge_types().contains(c))
        else {
            return Err(Error::acme(
                Problem::Malformed,
                format!("challenge {challenge:?} is not offered for {}", self.identifier),
            ));
        };
        if self.status(now) != AuthzStatus::Pending || self.processing().is_some() {
            return Ok(None);
        }
        Ok(Some(Event::ChallengeStarted(crate::event::ChallengeStarted {
            authz_id: self.id.clone(),
            challenge_type: kind.as_str().to_string(),
        })))
    }

    /// Decide deactivation by its account (RFC 8555 7.5.2): allowed from pending or valid.
    pub fn decide_deactivate(&self, now: UnixSeconds) -> Result<Option<Event>, Error> {
        match self.status(now) {
            AuthzStatus::Pending | AuthzStatus::Valid => {
                Ok(Some(Event::AuthorizationDeactivated(crate::event::AuthorizationDeactivated {
                    authz_id: self.id.clone(),
                })))
            }
            AuthzStatus::Deactivated => Ok(None),
            s => Err(Error::acme(
                Problem::Malformed,
                format!("authorization {} is {} and cannot be deactivated", self.id, s.as_str()),
            )),
        }
    }
}

/// An authorization from its events (`AcmeKey::Authz`): the order that created it, then
/// its validation history. A result is final: later validation events are ignored.
pub fn fold_authz<'a>(id: &str, events: impl IntoIterator<Item = &'a Event>) -> Option<Authz> {
    let mut authz: Option<Authz> = None;
    for e in events {
        match (e, authz.as_mut()) {
            (Event::OrderCreated(o), None) => {
                if let Some(a) = o.new_authorizations.iter().find(|a| a.authz_id == id) {
                    authz = Some(new_authz(&o.account_id, a));
                }
            }
            (Event::ChallengeStarted(c), Some(a)) if a.state == AuthzState::Pending => {
                a.state = AuthzState::Processing { challenge: c.challenge_type.clone() };
            }
            (Event::AuthorizationValidated(v), Some(a)) if is_open(&a.state) => {
                a.expires = v.expires;
                a.state = AuthzState::Valid {
                    challenge: v.challenge_type.clone(),
                    address: v.address.clone(),
                    at: v.validated_at,
                };
            }
            (Event::AuthorizationInvalidated(v), Some(a)) if is_open(&a.state) => {
                a.state = AuthzState::Invalid {
                    challenge: v.challenge_type.clone(),
                    problem: Problem::from_urn(&v.error_type).unwrap_or(Problem::Unauthorized),
                    detail: v.detail.clone(),
                    at: v.at,
                };
            }
            (Event::AuthorizationDeactivated(_), Some(a)) => a.state = AuthzState::Deactivated,
            _ => {}
        }
    }
    authz
}

fn is_open(s: &AuthzState) -> bool {
    matches!(s, AuthzState::Pending | AuthzState::Processing { .. })
}

fn new_authz(account: &str, a: &NewAuthorization) -> Authz {
    Authz {
        id: a.authz_id.clone(),
        account: account.to_string(),
        identifier: a.identifier.clone(),
        wildcard: a.wildcard,
        expires: a.expires,
        token: a.token.clone(),
        state: AuthzState::Pending,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub account: String,
    pub identifiers: Vec<Identifier>,
    pub authz_ids: Vec<String>,
    pub expires: UnixSeconds,
    pub not_before: Option<UnixSeconds>,
    pub not_after: Option<UnixSeconds>,
    pub profile: String,
    pub replaces: Option<Serial>,
    pub created_at: UnixSeconds,
    pub certificate: Option<Serial>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
    }
}

impl Order {
    /// RFC 8555 7.1.6, from the order's authorizations (in `authz_ids` order).
    pub fn status(&self, authzs: &[Authz], now: UnixSeconds) -> OrderStatus {
        if self.certificate.is_some() {
            return OrderStatus::Valid;
        }
        if now >= self.expires {
            return OrderStatus::Invalid;
        }
        let statuses: Vec<AuthzStatus> = authzs.iter().map(|a| a.status(now)).collect();
        if statuses.len() != self.authz_ids.len()
            || statuses
                .iter()
                .any(|s| matches!(s, AuthzStatus::Invalid | AuthzStatus::Deactivated | AuthzStatus::Expired))
        {
            return OrderStatus::Invalid;
        }
        if statuses.iter().all(|s| *s == AuthzStatus::Valid) {
            OrderStatus::Ready
        } else {
            OrderStatus::Pending
        }
    }

    /// The problem an invalid order reports: its first invalid authorization's.
    pub fn error(&self, authzs: &[Authz], now: UnixSeconds) -> Option<(Problem, String)> {
        if self.status(authzs, now) != OrderStatus::Invalid {
            return None;
        }
        for a in authzs {
            match (&a.state, a.status(now)) {
                (AuthzState::Invalid { problem, detail, .. }, _) => {
                    return Some((*problem, format!("{}: {detail}", a.identifier)));
                }
                (_, AuthzStatus::Deactivated) => {
                    return Some((
                        Problem::Unauthorized,
                        format!("authorization for {} was deactivated", a.identifier),
                    ));
                }
                (_, AuthzStatus::Expired) => {
                    return Some((
                        Problem::Unauthorized,
                        format!("authorization for {} expired", a.identifier),
                    ));
                }
                _ => {}
            }
        }
        Some((Problem::Malformed, "the order expired before it was finalized".into()))
    }
}

/// An order from its events (`AcmeKey::Order`).
pub fn fold_order<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Order> {
    let mut order: Option<Order> = None;
    for e in events {
        match (e, order.as_mut()) {
            (Event::OrderCreated(o), None) => {
                order = Some(Order {
                    id: o.order_id.clone(),
                    account: o.account_id.clone(),
                    identifiers: o.identifiers.clone(),
                    authz_ids: o.authz_ids.clone(),
                    expires: o.expires,
                    not_before: o.not_before,
                    not_after: o.not_after,
                    profile: o.profile.clone(),
                    replaces: o.replaces.clone(),
                    created_at: o.created_at,
                    certificate: None,
                })
            }
            (Event::OrderFinalized(f), Some(o)) if o.certificate.is_none() => {
                o.certificate = Some(f.serial.clone())
            }
            _ => {}
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        AuthorizationDeactivated, AuthorizationInvalidated, AuthorizationValidated, ChallengeStarted,
        OrderCreated, OrderFinalized,
    };

    fn created() -> Event {
        Event::OrderCreated(OrderCreated {
            order_id: "o1".into(),
            account_id: "acc".into(),
            identifiers: vec![Identifier::Dns("a.test".into()), Identifier::Dns("*.b.test".into())],
            authz_ids: vec!["z1".into(), "z2".into()],
            new_authorizations: vec![
                NewAuthorization {
                    authz_id: "z1".into(),
                    identifier: Identifier::Dns("a.test".into()),
                    wildcard: false,
                    expires: 1000,
                    token: "t1".into(),
                },
                NewAuthorization {
                    authz_id: "z2".into(),
                    identifier: Identifier::Dns("b.test".into()),
                    wildcard: true,
                    expires: 1000,
                    token: "t2".into(),
                },
            ],
            expires: 500,
            not_before: None,
            not_after: None,
            profile: "server".into(),
            replaces: None,
            created_at: 10,
        })
    }

    fn validated(id: &str) -> Event {
        Event::AuthorizationValidated(AuthorizationValidated {
            authz_id: id.into(),
            challenge_type: "http-01".into(),
            address: None,
            validated_at: 20,
            expires: 1000,
        })
    }

    #[test]
    fn order_becomes_ready_then_valid() {
        let c = created();
        let z1 = fold_authz("z1", [&c, &validated("z1")]).unwrap();
        let z2 = fold_authz("z2", [&c]).unwrap();
        assert_eq!(z2.challenge_types(), vec![ChallengeType::Dns01], "wildcard: dns-01 only");
        let order = fold_order([&c]).unwrap();
        assert_eq!(order.status(&[z1.clone(), z2.clone()], 30), OrderStatus::Pending);
        let z2v = fold_authz("z2", [&c, &validated("z2")]).unwrap();
        assert_eq!(order.status(&[z1.clone(), z2v.clone()], 30), OrderStatus::Ready);
        assert_eq!(order.status(&[z1.clone(), z2v.clone()], 600), OrderStatus::Invalid, "expired order");
        let fin = Event::OrderFinalized(OrderFinalized {
            order_id: "o1".into(),
            serial: Serial::from_bytes(&[7]).unwrap(),
        });
        let done = fold_order([&c, &fin]).unwrap();
        assert_eq!(done.status(&[z1, z2v], 600), OrderStatus::Valid);
    }

    #[test]
    fn challenge_start_is_idempotent_and_results_are_final() {
        let c = created();
        let z = fold_authz("z1", [&c]).unwrap();
        assert!(z.decide_start("dns-01", 30).unwrap().is_some());
        assert!(z.decide_start("bogus-01", 30).is_err());
        let started = Event::ChallengeStarted(ChallengeStarted {
            authz_id: "z1".into(),
            challenge_type: "http-01".into(),
        });
        let z = fold_authz("z1", [&c, &started]).unwrap();
        assert_eq!(z.processing(), Some("http-01"));
        assert!(z.decide_start("http-01", 30).unwrap().is_none());
        let bad = Event::AuthorizationInvalidated(AuthorizationInvalidated {
            authz_id: "z1".into(),
            challenge_type: "http-01".into(),
            error_type: Problem::IncorrectResponse.urn(),
            detail: "wrong".into(),
            at: 40,
        });
        let z = fold_authz("z1", [&c, &started, &bad, &validated("z1")]).unwrap();
        assert_eq!(z.status(50), AuthzStatus::Invalid, "a later validation does not undo a failure");
        let order = fold_order([&c]).unwrap();
        let z2 = fold_authz("z2", [&c]).unwrap();
        assert_eq!(order.error(&[z, z2], 50).unwrap().0, Problem::IncorrectResponse);
    }

    #[test]
    fn deactivation_invalidates_the_order() {
        let c = created();
        let d = Event::AuthorizationDeactivated(AuthorizationDeactivated { authz_id: "z1".into() });
        let z1 = fold_authz("z1", [&c, &validated("z1"), &d]).unwrap();
        assert_eq!(z1.status(30), AuthzStatus::Deactivated);
        let z2 = fold_authz("z2", [&c]).unwrap();
        assert_eq!(fold_order([&c]).unwrap().status(&[z1, z2], 30), OrderStatus::Invalid);
    }

    #[test]
    fn thumbprint_binding_follows_key_changes() {
        use crate::event::{AccountKeyChanged, AccountRegistered};
        let reg = Event::AccountRegistered(AccountRegistered {
            account_id: "a".into(),
            jwk_json: b"{}".to_vec(),
            thumbprint: "old".into(),
            contact: vec![],
            terms_of_service_agreed: true,
            eab_kid: None,
            created_at: 1,
        });
        let kc = Event::AccountKeyChanged(AccountKeyChanged {
            account_id: "a".into(),
            jwk_json: b"{\"k\":1}".to_vec(),
            old_thumbprint: "old".into(),
            new_thumbprint: "new".into(),
        });
        assert_eq!(account_for_thumbprint("old", [&reg]), Some("a".into()));
        assert_eq!(account_for_thumbprint("old", [&reg, &kc]), None);
        assert_eq!(account_for_thumbprint("new", [&kc]), Some("a".into()));
        assert_eq!(fold_account([&reg, &kc]).unwrap().thumbprint, "new");
    }
}
