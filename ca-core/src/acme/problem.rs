//! ACME problem types (RFC 8555 6.7, RFC 9773, draft-ietf-acme-profiles). ca-core names
//! the kind; the server maps each to its HTTP status and problem document in one place.

/// The `urn:ietf:params:acme:error:` types this CA answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    AccountDoesNotExist,
    AlreadyReplaced,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    InvalidProfile,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
}

impl Problem {
    /// The last part of the type URN.
    pub fn name(self) -> &'static str {
        match self {
            Problem::AccountDoesNotExist => "accountDoesNotExist",
            Problem::AlreadyReplaced => "alreadyReplaced",
            Problem::AlreadyRevoked => "alreadyRevoked",
            Problem::BadCsr => "badCSR",
            Problem::BadNonce => "badNonce",
            Problem::BadPublicKey => "badPublicKey",
            Problem::BadRevocationReason => "badRevocationReason",
            Problem::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Problem::Connection => "connection",
            Problem::Dns => "dns",
            Problem::ExternalAccountRequired => "externalAccountRequired",
            Problem::IncorrectResponse => "incorrectResponse",
            Problem::InvalidContact => "invalidContact",
            Problem::InvalidProfile => "invalidProfile",
            Problem::Malformed => "malformed",
            Problem::OrderNotReady => "orderNotReady",
            Problem::RateLimited => "rateLimited",
            Problem::RejectedIdentifier => "rejectedIdentifier",
            Problem::ServerInternal => "serverInternal",
            Problem::Tls => "tls",
            Problem::Unauthorized => "unauthorized",
            Problem::UnsupportedContact => "unsupportedContact",
            Problem::UnsupportedIdentifier => "unsupportedIdentifier",
        }
    }

    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    /// The inverse of [`Problem::urn`] (a stored challenge error names its type).
    pub fn from_urn(urn: &str) -> Option<Problem> {
        let name = urn.strip_prefix("urn:ietf:params:acme:error:")?;
        ALL.iter().copied().find(|p| p.name() == name)
    }
}

const ALL: [Problem; 23] = [
    Problem::AccountDoesNotExist,
    Problem::AlreadyReplaced,
    Problem::AlreadyRevoked,
    Problem::BadCsr,
    Problem::BadNonce,
    Problem::BadPublicKey,
    Problem::BadRevocationReason,
    Problem::BadSignatureAlgorithm,
    Problem::Connection,
    Problem::Dns,
    Problem::ExternalAccountRequired,
    Problem::IncorrectResponse,
    Problem::InvalidContact,
    Problem::InvalidProfile,
    Problem::Malformed,
    Problem::OrderNotReady,
    Problem::RateLimited,
    Problem::RejectedIdentifier,
    Problem::ServerInternal,
    Problem::Tls,
    Problem::Unauthorized,
    Problem::UnsupportedContact,
    Problem::UnsupportedIdentifier,
];

impl From<crate::acme::jws::JwsError> for crate::Error {
    fn from(e: crate::acme::jws::JwsError) -> Self {
        use crate::acme::jws::JwsError;
        let problem = match &e {
            JwsError::Malformed(_) | JwsError::BadSignature => Problem::Malformed,
            JwsError::BadSignatureAlgorithm { .. } => Problem::BadSignatureAlgorithm,
            JwsError::BadPublicKey(_) => Problem::BadPublicKey,
        };
        crate::Error::acme(problem, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_round_trip() {
        for p in ALL {
            assert_eq!(Problem::from_urn(&p.urn()), Some(p));
        }
        assert_eq!(Problem::from_urn("urn:ietf:params:acme:error:nope"), None);
    }
}
