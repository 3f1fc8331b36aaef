//! ACME facts as the log records them (`ca.v1` ACME messages). Object ids are chosen by
//! the server; nonces and EAB secrets never appear here.

use std::fmt;
use std::net::IpAddr;

use crate::{Error, Serial, UnixSeconds};

/// An ACME identifier (RFC 8555 9.7.7, RFC 8738). A wildcard DNS name keeps its `*.` in
/// an order's identifiers; its authorization names the base domain with `wildcard`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identifier {
    Dns(String),
    Ip(IpAddr),
}

impl Identifier {
    /// Parse the wire form (`type`, `value`); DNS names are lowercased.
    pub fn parse(kind: &str, value: &str) -> Result<Identifier, Error> {
        match kind {
            "dns" => {
                if value.is_empty() {
                    return Err(Error::BadNames("empty dns identifier".into()));
                }
                Ok(Identifier::Dns(value.to_ascii_lowercase()))
            }
            "ip" => value
                .parse::<IpAddr>()
                .map(Identifier::Ip)
                .map_err(|_| Error::BadNames(format!("ip identifier {value:?} is not an IP address"))),
            other => Err(Error::BadNames(format!(
                "identifier type {other:?} is not supported; supported: dns, ip"
            ))),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Dns(_) => "dns",
            Identifier::Ip(_) => "ip",
        }
    }

    pub fn value(&self) -> String {
        match self {
            Identifier::Dns(d) => d.clone(),
            Identifier::Ip(ip) => ip.to_string(),
        }
    }

    /// `*.example.internal` -> (`example.internal`, true); anything else unchanged.
    pub fn base(&self) -> (Identifier, bool) {
        match self {
            Identifier::Dns(d) => match d.strip_prefix("*.") {
                Some(b) => (Identifier::Dns(b.to_string()), true),
                None => (self.clone(), false),
            },
            Identifier::Ip(_) => (self.clone(), false),
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRegistered {
    pub account_id: String,
    pub jwk_json: Vec<u8>,
    pub thumbprint: String,
    pub contact: Vec<String>,
    pub terms_of_service_agreed: bool,
    pub eab_kid: Option<String>,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUpdated {
    pub account_id: String,
    pub contact: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKeyChanged {
    pub account_id: String,
    pub jwk_json: Vec<u8>,
    pub old_thumbprint: String,
    pub new_thumbprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDeactivated {
    pub account_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuthorization {
    pub authz_id: String,
    /// The base identifier (no `*.`).
    pub identifier: Identifier,
    pub wildcard: bool,
    pub expires: UnixSeconds,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreated {
    pub order_id: String,
    pub account_id: String,
    pub identifiers: Vec<Identifier>,
    pub authz_ids: Vec<String>,
    pub new_authorizations: Vec<NewAuthorization>,
    pub expires: UnixSeconds,
    pub not_before: Option<UnixSeconds>,
    pub not_after: Option<UnixSeconds>,
    pub profile: String,
    pub replaces: Option<Serial>,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeStarted {
    pub authz_id: String,
    pub challenge_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationValidated {
    pub authz_id: String,
    pub challenge_type: String,
    pub address: Option<String>,
    pub validated_at: UnixSeconds,
    /// Valid (and reusable) until then.
    pub expires: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationInvalidated {
    pub authz_id: String,
    pub challenge_type: String,
    pub error_type: String,
    pub detail: String,
    pub at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDeactivated {
    pub authz_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFinalized {
    pub order_id: String,
    pub serial: Serial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabKeyCreated {
    pub kid: String,
    pub name: String,
    pub allowed_dns: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub profiles: Vec<String>,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabKeyRevoked {
    pub kid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindowSet {
    pub serial: Serial,
    pub start: UnixSeconds,
    pub end: UnixSeconds,
    pub requester: String,
}
