//! Domain events: the facts the log records. Their wire form is `ca.v1.Event` (protobuf);
//! the conversion lives in `ca-proto`'s `convert` module and nowhere else.

pub use crate::acme::event::*;
use crate::keys::KeyAlgorithm;
use crate::{Serial, UnixSeconds};

/// One fact in the log. Deliberately exhaustive: adding a kind must break every match
/// (conversion, projections, rendering) until it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    CaInitialized(CaInitialized),
    CertificateIssued(CertificateIssued),
    CertificateRevoked(CertificateRevoked),
    CrlPublished(CrlPublished),
    AccountRegistered(AccountRegistered),
    AccountUpdated(AccountUpdated),
    AccountKeyChanged(AccountKeyChanged),
    AccountDeactivated(AccountDeactivated),
    OrderCreated(OrderCreated),
    ChallengeStarted(ChallengeStarted),
    AuthorizationValidated(AuthorizationValidated),
    AuthorizationInvalidated(AuthorizationInvalidated),
    AuthorizationDeactivated(AuthorizationDeactivated),
    OrderFinalized(OrderFinalized),
    EabKeyCreated(EabKeyCreated),
    EabKeyRevoked(EabKeyRevoked),
    RenewalWindowSet(RenewalWindowSet),
    IssuingCaRotated(IssuingCaRotated),
    AccessDenials(AccessDenials),
}

impl Event {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CaInitialized(_) => "ca_initialized",
            Event::CertificateIssued(_) => "certificate_issued",
            Event::CertificateRevoked(_) => "certificate_revoked",
            Event::CrlPublished(_) => "crl_published",
            Event::AccountRegistered(_) => "account_registered",
            Event::AccountUpdated(_) => "account_updated",
            Event::AccountKeyChanged(_) => "account_key_changed",
            Event::AccountDeactivated(_) => "account_deactivated",
            Event::OrderCreated(_) => "order_created",
            Event::ChallengeStarted(_) => "challenge_started",
            Event::AuthorizationValidated(_) => "authorization_validated",
            Event::AuthorizationInvalidated(_) => "authorization_invalidated",
            Event::AuthorizationDeactivated(_) => "authorization_deactivated",
            Event::OrderFinalized(_) => "order_finalized",
            Event::EabKeyCreated(_) => "eab_key_created",
            Event::EabKeyRevoked(_) => "eab_key_revoked",
            Event::RenewalWindowSet(_) => "renewal_window_set",
            Event::IssuingCaRotated(_) => "issuing_ca_rotated",
            Event::AccessDenials(_) => "access_denials",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInitialized {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub key_algorithm: KeyAlgorithm,
    pub imported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIssued {
    pub serial: Serial,
    pub certificate_der: Vec<u8>,
    pub profile: String,
    pub requester: String,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
    pub names: Vec<String>,
    /// Which issuing CA signed it: 0 is `CaInitialized`'s, n an `IssuingCaRotated`'s.
    pub issuer_generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRevoked {
    pub serial: Serial,
    pub reason: RevocationReason,
    pub revoked_at: UnixSeconds,
    pub requester: String,
    pub invalidity_date: Option<UnixSeconds>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlPublished {
    pub number: u64,
    pub this_update: UnixSeconds,
    pub next_update: UnixSeconds,
    /// `Some(base)` for a delta CRL.
    pub delta_base: Option<u64>,
    /// The issuing CA that signed it; numbers are per issuer.
    pub issuer_generation: u32,
    /// SHA-256 of the CRL's DER: names exactly the bytes that were served, so instances
    /// that serve the writer's CRLs can check them against the log. `None` in records
    /// written before it was kept.
    pub der_sha256: Option<crate::chain::Hash>,
}

/// A new issuing CA (generation >= 1), signed by the root, that issues from now on. The
/// key stays out of the log: `key_ref` says where the server keeps it (a file name under
/// `keys/` for software keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuingCaRotated {
    pub generation: u32,
    pub certificate_der: Vec<u8>,
    pub key_ref: String,
}

/// The authorization denials of one window, counted: the audit trail of refused calls in a
/// form a caller cannot use to grow the log without bound (at most one record per window,
/// at most [`AccessDenials::MAX_ENTRIES`] entries; the rest only counted in `others`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDenials {
    pub window_start: UnixSeconds,
    pub window_end: UnixSeconds,
    pub entries: Vec<DenialCount>,
    /// Denials beyond the entries kept.
    pub others: u64,
}

impl AccessDenials {
    pub const MAX_ENTRIES: usize = 32;
    /// Longest identity or rule label kept (longer ones are cut at a char boundary).
    pub const MAX_TEXT: usize = 256;
}

/// How often `identity` was refused `method` under `rule` in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialCount {
    pub identity: String,
    pub rule: String,
    pub method: String,
    pub count: u64,
}

/// RFC 5280 CRLReason (5.3.1). Code 7 is unused by the RFC and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RevocationReason {
    #[default]
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    RemoveFromCrl,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    pub fn code(self) -> u32 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    pub fn from_code(code: u32) -> Result<Self, crate::Error> {
        Self::ALL.into_iter().find(|r| r.code() == code).ok_or(crate::Error::BadReason(code))
    }

    /// The RFC 5280 name in camelCase (`keyCompromise`), as openssl and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// Parse a name (case-insensitive, `-`/`_` ignored) or a numeric code.
    pub fn parse(s: &str) -> Result<Self, crate::Error> {
        if let Ok(code) = s.parse::<u32>() {
            return Self::from_code(code);
        }
        let norm =
            |x: &str| x.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
        let want = norm(s);
        Self::ALL.into_iter().find(|r| norm(r.name()) == want).ok_or_else(|| {
            crate::Error::Config(format!(
                "unknown revocation reason {s:?}; known: {}",
                Self::ALL.map(|r| r.name()).join(", ")
            ))
        })
    }
}
