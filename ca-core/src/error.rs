//! The one error type of ca-core. Each variant says what was wrong and, where it
//! applies, what is allowed; the server maps variants to gRPC codes / HTTP statuses once.

/// Errors from the CA domain.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The CSR bytes are not a PKCS#10 request in PEM or DER.
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify with its own public key.
    #[error("CSR signature does not verify: {0}")]
    BadCsrSignature(String),
    /// The key type is not one this CA accepts.
    #[error("unsupported key: {found}; allowed: {allowed}")]
    UnsupportedKey { found: String, allowed: String },
    /// The key is of an accepted type but too weak.
    #[error("weak key: {found}; minimum: {minimum}")]
    WeakKey { found: String, minimum: String },
    /// A requested name is outside what the policy allows.
    #[error("name not allowed by policy: {name}; allowed: {allowed}")]
    NameNotAllowed { name: String, allowed: String },
    /// The request names nothing to certify, or too many names.
    #[error("bad names: {0}")]
    BadNames(String),
    /// The requested profile does not exist.
    #[error("unknown profile {name:?}; known profiles: {known}")]
    UnknownProfile { name: String, known: String },
    /// The requested validity exceeds the profile's or the policy's maximum.
    #[error("validity {requested_secs}s exceeds the maximum of {max_secs}s")]
    ValidityTooLong { requested_secs: u64, max_secs: u64 },
    /// A serial number string could not be parsed.
    #[error("bad serial {0:?}: expected lowercase hex of 1..=20 bytes")]
    BadSerial(String),
    /// A revocation reason code outside RFC 5280's CRLReason.
    #[error("bad revocation reason {0}: allowed 0-6, 8-10")]
    BadReason(u32),
    /// The certificate is already revoked.
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    /// Key material could not be read or generated.
    #[error("key error: {0}")]
    Key(String),
    /// An encrypted private key did not decrypt with the passphrase given.
    #[error("wrong passphrase (or a damaged encrypted key)")]
    WrongPassphrase,
    /// Building or signing a certificate failed.
    #[error("certificate building failed: {0}")]
    Build(String),
    /// A stored event could not be decoded or is inconsistent.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Invalid configuration (policy, profiles, URLs).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An ACME request refused: the problem type and what was wrong.
    #[error("{detail}")]
    Acme { problem: crate::acme::problem::Problem, detail: String },
}

impl Error {
    /// An ACME refusal of kind `problem`.
    pub fn acme(problem: crate::acme::problem::Problem, detail: impl Into<String>) -> Self {
        Error::Acme { problem, detail: detail.into() }
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Build(e.to_string())
    }
}
