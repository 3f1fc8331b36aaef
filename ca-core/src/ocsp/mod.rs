//! OCSP (RFC 6960 / RFC 5019) request parsing and response building.
//!
//! # Crate choice
//!
//! Requests are decoded with `x509-ocsp` 0.2 (RustCrypto, on `der` 0.7 / `x509-cert` 0.2);
//! responses are DER-encoded here with the same small writer as the CRL and signed through
//! the [`Signer`] trait. The evidence:
//! - `ocsp` 0.4 (the design card's crate) knows a fixed table of 13 OIDs: it rejects
//!   ecdsa-with-SHA256 and SHA-256 CertIDs and panics (an unimplemented branch) when a response
//!   carries certificates, so it cannot serve a P-256 CA or a delegated responder.
//! - `x509-ocsp` 0.2 models the whole RFC 6960 ASN.1 module on RustCrypto's strict DER
//!   decoder (`der`), which returns errors rather than panicking (`tests/revocation_openssl.rs`
//!   throws random, truncated and mutated bytes at it); it parses the requests `openssl ocsp`
//!   writes, with and without nonces, SHA-1 and SHA-256 CertIDs, an explicit default version,
//!   and absent hash parameters. That is the part worth a dependency: the parser faces
//!   untrusted bytes.
//! - For the response, the typed route would need `x509-cert` 0.2 types (`Extension`,
//!   `Certificate`, `Name`) in our code, and those do not mix with an `x509-cert` 0.3 line
//!   elsewhere. The response is ten fixed fields, and writing it by hand lets us echo each
//!   request's CertID byte for byte (hash algorithm parameters included, which openssl
//!   compares). Every response is checked by `openssl ocsp -respin ... -resp_text` in
//!   the tests and re-decoded with `x509-ocsp`.
//! - `der`/`x509-ocsp` types stay out of this module's public API, so the decoder can be
//!   swapped (e.g. for the 0.3 line) without touching the server.
//!
//! # Caching (what the server should do)
//!
//! A response must echo the request's CertID, whose hash algorithm (SHA-1 or SHA-256, each
//! with its own issuer hashes) the client picks. So a pre-signed response is cached per
//! CertID: key the cache by [`CertId::der`], which pins the hash algorithm, the issuer and
//! the serial's encoding, and pre-sign for both [`HashAlgorithm::Sha1`] and
//! [`HashAlgorithm::Sha256`] with [`OcspResponder::cert_id`] (the canonical encoding, which
//! `openssl` sends, checked in the tests, as does Go's `x/crypto/ocsp`). A request whose
//! CertID bytes differ (say, a client that omits the NULL hash parameters) simply misses the
//! cache and gets a response built on the fly. Requests that carry a nonce cannot be served
//! from cache and are built on the fly (parse + build + one P-256 signature: ~25 µs,
//! `cargo bench -p ca-core --bench ocsp`); multi-CertID requests likewise. A CertID for
//! which [`OcspResponder::matches_issuer`] is false should get
//! `error_response(OcspResponseStatus::Unauthorized)` (RFC 5019 2.2.3); one of ours with a
//! serial we never issued (or `serial: None`) gets [`CertStatus::Unknown`].

use std::sync::Arc;

use ring::digest;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::IssuingCa;
use crate::crl::der;
use crate::event::RevocationReason;
use crate::signer::Signer;
use crate::{Error, Serial, UnixSeconds};

mod request;
mod signer_cert;

pub use request::{OcspError, OcspRequest, parse_request};
pub use signer_cert::{SubjectKey, issue_ocsp_signer, ocsp_signer_cert};

/// Requests larger than this are refused before decoding (RFC 5019 requests are ~100 bytes).
pub const MAX_REQUEST_LEN: usize = 16 * 1024;
/// At most this many CertIDs per request (RFC 5019 clients send one).
pub const MAX_CERT_IDS: usize = 8;
/// Longest nonce extension value accepted (RFC 8954 nonces are 1..=32 octets).
pub const MAX_NONCE_LEN: usize = 128;

/// The hash algorithm of a CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 4] =
        [HashAlgorithm::Sha1, HashAlgorithm::Sha256, HashAlgorithm::Sha384, HashAlgorithm::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "SHA-1",
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Sha384 => "SHA-384",
            HashAlgorithm::Sha512 => "SHA-512",
        }
    }

    /// The OID's content octets.
    fn oid(self) -> &'static [u8] {
        match self {
            HashAlgorithm::Sha1 => &[0x2b, 0x0e, 0x03, 0x02, 0x1a],
            HashAlgorithm::Sha256 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
            HashAlgorithm::Sha384 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
            HashAlgorithm::Sha512 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.oid() == oid)
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlgorithm::Sha256 => &digest::SHA256,
            HashAlgorithm::Sha384 => &digest::SHA384,
            HashAlgorithm::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A CertID as a request carried it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertId {
    pub hash: HashAlgorithm,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    /// `None` when the request names a negative serial (never one of ours: answer unknown).
    pub serial: Option<Serial>,
    /// The CertID's DER exactly as received; echoed in the response.
    der: Vec<u8>,
}

impl CertId {
    /// The exact DER of this CertID: what the response echoes, and the right cache key
    /// for a pre-signed response.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// The unsuccessful OCSPResponseStatus values (successful responses come from
/// [`build_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OcspResponseStatus {
    MalformedRequest,
    InternalError,
    TryLater,
    SigRequired,
    Unauthorized,
}

impl OcspResponseStatus {
    pub fn code(self) -> u8 {
        match self {
            OcspResponseStatus::MalformedRequest => 1,
            OcspResponseStatus::InternalError => 2,
            OcspResponseStatus::TryLater => 3,
            OcspResponseStatus::SigRequired => 5,
            OcspResponseStatus::Unauthorized => 6,
        }
    }
}

/// An OCSPResponse carrying only an error status (no responseBytes, unsigned).
pub fn error_response(status: OcspResponseStatus) -> Vec<u8> {
    vec![der::SEQUENCE, 3, der::ENUMERATED, 1, status.code()]
}

const OID_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// How far a delegated OCSP signer's notBefore is backdated.
const OCSP_SIGNER_BACKDATE_SECS: i64 = 60;

/// Who signs OCSP responses for an issuing CA: the CA itself or a delegated
/// OCSP-signing certificate it issued. Holds the issuer's name/key hashes under every
/// [`HashAlgorithm`], so matching a CertID is a byte compare.
pub struct OcspResponder {
    signer: Arc<dyn Signer>,
    /// SHA-1 of the responder's subjectPublicKey (ResponderID byKey).
    key_hash: Vec<u8>,
    delegated: Option<Delegated>,
    /// (issuerNameHash, issuerKeyHash) per [`HashAlgorithm::index`].
    issuer_hashes: [(Vec<u8>, Vec<u8>); 4],
}

struct Delegated {
    cert_der: Vec<u8>,
    not_before: UnixSeconds,
    not_after: UnixSeconds,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("key_hash", &hex::encode(&self.key_hash))
            .field("delegated", &self.delegated.is_some())
            .finish()
    }
}

impl OcspResponder {
    /// The issuing CA signs its own responses.
    pub fn for_ca(ca: &IssuingCa) -> Result<Self, Error> {
        Self::build(ca, ca.signer().clone(), None)
    }

    /// A delegated responder: `cert_der` must be issued by `ca`, carry the id-kp-OCSPSigning
    /// EKU and hold `signer`'s public key. The certificate goes into every response's `certs`.
    pub fn delegated(ca: &IssuingCa, cert_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, Error> {
        let bad = |m: String| Error::Config(format!("delegated OCSP signer: {m}"));
        let (_, ca_x) =
            X509Certificate::from_der(&ca.cert_der).map_err(|e| bad(format!("issuing CA: {e}")))?;
        let (_, x) = X509Certificate::from_der(&cert_der).map_err(|e| bad(e.to_string()))?;
        if x.issuer().as_raw() != ca_x.subject().as_raw() {
            return Err(bad("not issued by this issuing CA (issuer name differs)".into()));
        }
        x.verify_signature(Some(ca_x.public_key()))
            .map_err(|e| bad(format!("signature does not verify with the issuing CA key: {e}")))?;
        let ocsp_eku = matches!(x.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing);
        if !ocsp_eku {
            return Err(bad("the certificate lacks the id-kp-OCSPSigning extended key usage".into()));
        }
        if x.public_key().subject_public_key.data.as_ref() != signer.public_key_raw() {
            return Err(bad("the key does not match the certificate".into()));
        }
        let (not_before, not_after) =
            (x.validity().not_before.timestamp(), x.validity().not_after.timestamp());
        Self::build(ca, signer, Some(Delegated { cert_der, not_before, not_after }))
    }

    fn build(ca: &IssuingCa, signer: Arc<dyn Signer>, delegated: Option<Delegated>) -> Result<Self, Error> {
        let (_, x) = X509Certificate::from_der(&ca.cert_der)
            .map_err(|e| Error::Config(format!("issuing CA certificate: {e}")))?;
        let name = x.subject().as_raw();
        let key = x.public_key().subject_public_key.data.as_ref();
        let issuer_hashes = HashAlgorithm::ALL.map(|h| (h.digest(name), h.digest(key)));
        let key_hash = HashAlgorithm::Sha1.digest(signer.public_key_raw());
        Ok(OcspResponder { signer, key_hash, delegated, issuer_hashes })
    }

    /// Whether the CertID names our issuing CA (issuerNameHash and issuerKeyHash both match
    /// under the CertID's hash algorithm). A CertID that does not should get `unauthorized`.
    pub fn matches_issuer(&self, id: &CertId) -> bool {
        let (name, key) = &self.issuer_hashes[id.hash.index()];
        *name == id.issuer_name_hash && *key == id.issuer_key_hash
    }

    /// The canonical CertID for one of our serials (hash parameters NULL, as openssl and Go
    /// encode it): for pre-signing responses before any request.
    pub fn cert_id(&self, hash: HashAlgorithm, serial: &Serial) -> CertId {
        let (name, key) = &self.issuer_hashes[hash.index()];
        let mut w = Vec::with_capacity(128);
        // Cannot fail: the closures only append bytes.
        let _ = der::nest(&mut w, der::SEQUENCE, |w| {
            der::nest(w, der::SEQUENCE, |w| {
                der::tlv(w, der::OID, hash.oid());
                der::tlv(w, 0x05, &[]);
                Ok(())
            })?;
            der::tlv(w, der::OCTET_STRING, name);
            der::tlv(w, der::OCTET_STRING, key);
            der::uint_bytes(w, serial.as_bytes());
            Ok(())
        });
        CertId {
            hash,
            issuer_name_hash: name.clone(),
            issuer_key_hash: key.clone(),
            serial: Some(serial.clone()),
            der: w,
        }
    }

    /// The delegated signing certificate, if responses are not signed by the CA itself.
    pub fn delegated_cert_der(&self) -> Option<&[u8]> {
        self.delegated.as_ref().map(|d| d.cert_der.as_slice())
    }

    /// When the delegated signing certificate expires (rotate well before).
    pub fn delegated_not_after(&self) -> Option<UnixSeconds> {
        self.delegated.as_ref().map(|d| d.not_after)
    }

    /// Half-way through the delegated signing certificate's lifetime, from when it was
    /// issued (notBefore is backdated) to notAfter: when to replace it, whoever chose the
    /// lifetime.
    pub fn delegated_halfway(&self) -> Option<UnixSeconds> {
        self.delegated.as_ref().map(|d| {
            let issued = (d.not_before + OCSP_SIGNER_BACKDATE_SECS).min(d.not_after);
            issued + (d.not_after - issued) / 2
        })
    }

    /// SHA-1 of the responder's public key: the ResponderID (byKey) of every response.
    pub fn key_hash(&self) -> &[u8] {
        &self.key_hash
    }
}

/// A certificate's status as an OCSP response states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    /// `Unspecified` writes no revocationReason (as in the CRL, RFC 5280 5.3.1).
    Revoked {
        time: UnixSeconds,
        reason: RevocationReason,
    },
    Unknown,
}

/// One SingleResponse.
#[derive(Debug, Clone, Copy)]
pub struct SingleAnswer<'a> {
    /// Echoed exactly (hash algorithm included), as the client matches on it.
    pub cert_id: &'a CertId,
    pub status: CertStatus,
    pub this_update: UnixSeconds,
    /// RFC 5019 responses always carry nextUpdate; must be after `this_update`.
    pub next_update: UnixSeconds,
}

/// Build and sign a successful OCSPResponse (BasicOCSPResponse, ResponderID byKey).
/// `nonce` is [`OcspRequest::nonce`], echoed verbatim as the response's nonce extension.
pub fn build_response(
    responder: &OcspResponder,
    entries: &[SingleAnswer<'_>],
    produced_at: UnixSeconds,
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    if entries.is_empty() {
        return Err(Error::Build("an OCSP response needs at least one answer".into()));
    }
    if let Some(e) = entries.iter().find(|e| e.next_update <= e.this_update) {
        return Err(Error::Build(format!(
            "OCSP nextUpdate ({}) must be after thisUpdate ({})",
            e.next_update, e.this_update
        )));
    }
    let mut tbs = Vec::with_capacity(160 * entries.len() + 64);
    der::nest(&mut tbs, der::SEQUENCE, |w| {
        // version v1 is the DEFAULT: omitted. responderID byKey [2] EXPLICIT KeyHash
        der::nest(w, der::context_constructed(2), |w| {
            der::tlv(w, der::OCTET_STRING, &responder.key_hash);
            Ok(())
        })?;
        der::generalized_time(w, produced_at)?;
        der::nest(w, der::SEQUENCE, |w| {
            for e in entries {
                write_single(w, e)?;
            }
            Ok(())
        })?;
        if let Some(n) = nonce {
            der::nest(w, der::context_constructed(1), |w| {
                der::nest(w, der::SEQUENCE, |w| {
                    der::nest(w, der::SEQUENCE, |w| {
                        der::tlv(w, der::OID, OID_NONCE);
                        der::tlv(w, der::OCTET_STRING, n);
                        Ok(())
                    })
                })
            })?;
        }
        Ok(())
    })?;

    let alg_id = der::signature_algorithm(responder.signer.key_algorithm());
    let signature = responder.signer.sign(&tbs)?;
    let cert = responder.delegated.as_ref().map(|d| d.cert_der.as_slice());
    let mut basic = Vec::with_capacity(tbs.len() + signature.len() + cert.map_or(0, <[u8]>::len) + 32);
    der::nest(&mut basic, der::SEQUENCE, |w| {
        w.extend_from_slice(&tbs);
        w.extend_from_slice(alg_id);
        der::bit_string(w, &signature);
        if let Some(cert) = cert {
            der::nest(w, der::context_constructed(0), |w| {
                der::nest(w, der::SEQUENCE, |w| {
                    w.extend_from_slice(cert);
                    Ok(())
                })
            })?;
        }
        Ok(())
    })?;

    let mut out = Vec::with_capacity(basic.len() + 32);
    der::nest(&mut out, der::SEQUENCE, |w| {
        der::tlv(w, der::ENUMERATED, &[0]); // successful
        der::nest(w, der::context_constructed(0), |w| {
            der::nest(w, der::SEQUENCE, |w| {
                der::tlv(w, der::OID, OID_OCSP_BASIC);
                der::tlv(w, der::OCTET_STRING, &basic);
                Ok(())
            })
        })
    })?;
    Ok(out)
}

fn write_single(w: &mut Vec<u8>, e: &SingleAnswer<'_>) -> Result<(), Error> {
    der::nest(w, der::SEQUENCE, |w| {
        w.extend_from_slice(&e.cert_id.der);
        match e.status {
            // good [0] IMPLICIT NULL
            CertStatus::Good => der::tlv(w, der::context_primitive(0), &[]),
            // revoked [1] IMPLICIT RevokedInfo
            CertStatus::Revoked { time, reason } => {
                der::nest(w, der::context_constructed(1), |w| {
                    der::generalized_time(w, time)?;
                    if reason != RevocationReason::Unspecified {
                        // revocationReason [0] EXPLICIT CRLReason
                        der::nest(w, der::context_constructed(0), |w| {
                            der::tlv(w, der::ENUMERATED, &[reason.code() as u8]);
                            Ok(())
                        })?;
                    }
                    Ok(())
                })?
            }
            // unknown [2] IMPLICIT NULL
            CertStatus::Unknown => der::tlv(w, der::context_primitive(2), &[]),
        }
        der::generalized_time(w, e.this_update)?;
        der::nest(w, der::context_constructed(0), |w| der::generalized_time(w, e.next_update))
    })
}
