//! Parsing OCSP requests: bounded, strict DER (`x509-ocsp`), never panicking.

use ocsp_der::{Decode, Encode};

use super::{
    CertId, HashAlgorithm, MAX_CERT_IDS, MAX_NONCE_LEN, MAX_REQUEST_LEN, OID_NONCE, OcspResponseStatus,
};
use crate::Serial;

/// A parsed OCSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspRequest {
    /// 1..=[`MAX_CERT_IDS`] CertIDs, in request order.
    pub cert_ids: Vec<CertId>,
    /// The nonce extension's extnValue octets (for RFC 8954 clients an OCTET STRING
    /// holding the nonce), to be passed verbatim to [`build_response`](super::build_response).
    pub nonce: Option<Vec<u8>>,
}

/// Why a request was refused; [`OcspError::status`] is the OCSP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    #[error("OCSP request of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed OCSP request: {0}")]
    Malformed(String),
    #[error("OCSP request names no certificate")]
    NoCertIds,
    #[error("OCSP request names {count} certificates; at most {max} are allowed")]
    TooManyCertIds { count: usize, max: usize },
    #[error("OCSP nonce of {len} bytes exceeds the limit of {max} bytes")]
    NonceTooLong { len: usize, max: usize },
    #[error("unsupported critical OCSP request extension {0}")]
    UnsupportedCriticalExtension(String),
    #[error("unsupported CertID hash algorithm {0}; supported: SHA-1, SHA-256, SHA-384, SHA-512")]
    UnsupportedHash(String),
}

impl OcspError {
    /// The OCSP response status for this error: `unauthorized` when we cannot tell whether
    /// the CertID is ours (unknown hash algorithm, RFC 5019 2.2.3), `malformedRequest`
    /// otherwise.
    pub fn status(&self) -> OcspResponseStatus {
        match self {
            OcspError::UnsupportedHash(_) => OcspResponseStatus::Unauthorized,
            _ => OcspResponseStatus::MalformedRequest,
        }
    }
}

/// Parse a DER OCSPRequest. Bounded ([`MAX_REQUEST_LEN`], [`MAX_CERT_IDS`],
/// [`MAX_NONCE_LEN`]) and never panics. A request signature, if any, is ignored.
pub fn parse_request(bytes: &[u8]) -> Result<OcspRequest, OcspError> {
    if bytes.len() > MAX_REQUEST_LEN {
        return Err(OcspError::TooLarge { len: bytes.len(), max: MAX_REQUEST_LEN });
    }
    let req = x509_ocsp::OcspRequest::from_der(bytes).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let tbs = &req.tbs_request;
    let count = tbs.request_list.len();
    if count == 0 {
        return Err(OcspError::NoCertIds);
    }
    if count > MAX_CERT_IDS {
        return Err(OcspError::TooManyCertIds { count, max: MAX_CERT_IDS });
    }
    let mut nonce = None;
    for ext in tbs.request_extensions.iter().flatten() {
        if ext.extn_id.as_bytes() == OID_NONCE {
            let v = ext.extn_value.as_bytes();
            if v.len() > MAX_NONCE_LEN {
                return Err(OcspError::NonceTooLong { len: v.len(), max: MAX_NONCE_LEN });
            }
            if nonce.is_some() {
                return Err(OcspError::Malformed("the nonce extension appears twice".into()));
            }
            nonce = Some(v.to_vec());
        } else if ext.critical {
            return Err(OcspError::UnsupportedCriticalExtension(ext.extn_id.to_string()));
        }
    }
    let mut cert_ids = Vec::with_capacity(count);
    for r in &tbs.request_list {
        // Per-certificate extensions (e.g. service locator) are not critical to answering;
        // a critical one we do not know makes the request unanswerable.
        if let Some(ext) = r.single_request_extensions.iter().flatten().find(|e| e.critical) {
            return Err(OcspError::UnsupportedCriticalExtension(ext.extn_id.to_string()));
        }
        let id = &r.req_cert;
        let hash = HashAlgorithm::from_oid(id.hash_algorithm.oid.as_bytes())
            .ok_or_else(|| OcspError::UnsupportedHash(id.hash_algorithm.oid.to_string()))?;
        let serial_bytes = id.serial_number.as_bytes();
        let serial = match serial_bytes.first() {
            Some(b) if b & 0x80 == 0 => Some(
                Serial::from_bytes(serial_bytes)
                    .map_err(|e| OcspError::Malformed(format!("CertID serial: {e}")))?,
            ),
            _ => None,
        };
        let der = id.to_der().map_err(|e| OcspError::Malformed(e.to_string()))?;
        cert_ids.push(CertId {
            hash,
            issuer_name_hash: id.issuer_name_hash.as_bytes().to_vec(),
            issuer_key_hash: id.issuer_key_hash.as_bytes().to_vec(),
            serial,
            der,
        });
    }
    Ok(OcspRequest { cert_ids, nonce })
}
