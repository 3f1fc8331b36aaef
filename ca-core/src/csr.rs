//! CSR intake: parse PEM or DER PKCS#10, check the key type/size, verify the
//! self-signature, and extract the names. "Parse, don't validate": the result is a
//! [`CheckedCsr`] that the builder can use without re-checking.

use std::net::IpAddr;

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::Error;
use crate::policy::{Policy, SanName, SubjectKey, normalize_dns};

/// Largest CSR accepted (a CSR with 100 names and an RSA-8192 key is well below this).
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// A CSR whose signature verified and whose key passed policy.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub key: SubjectKey,
    /// subjectPublicKey BIT STRING contents.
    pub public_key_raw: Vec<u8>,
    /// Names from the subjectAltName request, or the CN when there is none; deduplicated
    /// in request order.
    pub names: Vec<SanName>,
}

impl PublicKeyData for CheckedCsr {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key_raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // Used only to write the SubjectPublicKeyInfo algorithm identifier.
        match self.key {
            SubjectKey::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            SubjectKey::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            SubjectKey::Ed25519 => &rcgen::PKCS_ED25519,
            SubjectKey::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST") or DER to DER.
pub fn csr_der(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    if bytes.len() > MAX_CSR_BYTES {
        return Err(Error::MalformedCsr(format!("{} bytes; at most {MAX_CSR_BYTES} accepted", bytes.len())));
    }
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let p = pem::parse(trimmed).map_err(|e| Error::MalformedCsr(format!("bad PEM: {e}")))?;
        if p.tag() != "CERTIFICATE REQUEST" && p.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(Error::MalformedCsr(format!(
                "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
                p.tag()
            )));
        }
        Ok(std::borrow::Cow::Owned(p.into_contents()))
    } else {
        Ok(std::borrow::Cow::Borrowed(bytes))
    }
}

/// Parse and check a CSR against the key rules of `policy`. Name rules are applied by
/// the caller (they depend on who asks).
pub fn check(bytes: &[u8], policy: &Policy) -> Result<CheckedCsr, Error> {
    checked(bytes, policy, true)
}

/// Like [`check`], for a request whose key alone is used (a delegated OCSP signer's: the
/// subject is fixed): its names are not read, so `names` is empty.
pub fn check_key(bytes: &[u8], policy: &Policy) -> Result<CheckedCsr, Error> {
    checked(bytes, policy, false)
}

fn checked(bytes: &[u8], policy: &Policy, read_names: bool) -> Result<CheckedCsr, Error> {
    let der = csr_der(bytes)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::MalformedCsr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::MalformedCsr(format!("{} trailing bytes after the request", rest.len())));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;

    // Key checks come before the signature check: ring refuses to verify with weak RSA
    // keys, and "RSA 1024 is too weak" is the useful message, not "bad signature".
    let key = subject_key(spki)?;
    policy.check_key(key)?;
    csr.verify_signature().map_err(|e| Error::BadCsrSignature(format!("{e}")))?;
    let names = if read_names { requested_names(&csr)? } else { Vec::new() };
    Ok(CheckedCsr { key, public_key_raw: spki.subject_public_key.data.to_vec(), names })
}

/// The subjectAltName request's names, or the CN when there is none; deduplicated in
/// request order.
fn requested_names(csr: &X509CertificationRequest<'_>) -> Result<Vec<SanName>, Error> {
    let mut names: Vec<SanName> = Vec::new();
    let mut push = |n: SanName| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    let mut saw_san = false;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                saw_san = true;
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(d) => push(SanName::Dns(normalize_dns(d)?)),
                        GeneralName::IPAddress(b) => push(SanName::Ip(ip_from_bytes(b)?)),
                        GeneralName::URI(u) => push(SanName::Uri(check_uri(u)?)),
                        other => {
                            return Err(Error::BadNames(format!(
                                "unsupported subjectAltName entry {other:?}; allowed: DNS, IP, URI"
                            )));
                        }
                    }
                }
            }
        }
    }
    if !saw_san {
        // Legacy CSRs (plain `openssl req -subj /CN=host`) carry the name only in CN.
        for cn in csr.certification_request_info.subject.iter_common_name() {
            let cn = cn.as_str().map_err(|_| Error::MalformedCsr("CN is not a string".into()))?;
            match cn.parse::<IpAddr>() {
                Ok(ip) => push(SanName::Ip(ip)),
                Err(_) => push(SanName::Dns(normalize_dns(cn)?)),
            }
        }
    }
    Ok(names)
}

fn subject_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<SubjectKey, Error> {
    let alg = &spki.algorithm.algorithm;
    let unsupported =
        |found: String| Error::UnsupportedKey { found, allowed: "ECDSA P-256/P-384, Ed25519, RSA".into() };
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| Error::MalformedCsr("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            Ok(SubjectKey::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(SubjectKey::EcdsaP384)
        } else {
            Err(unsupported(format!("EC curve {curve}")))
        }
    } else if *alg == OID_SIG_ED25519 {
        Ok(SubjectKey::Ed25519)
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let m = rsa.modulus;
                let first = m.iter().position(|b| *b != 0).unwrap_or(m.len());
                let m = &m[first..];
                let bits = match m.first() {
                    Some(b) => m.len() * 8 - b.leading_zeros() as usize,
                    None => 0,
                };
                Ok(SubjectKey::Rsa { bits })
            }
            _ => Err(Error::MalformedCsr("unparseable RSA public key".into())),
        }
    } else {
        Err(unsupported(format!("key algorithm {alg}")))
    }
}

fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, Error> {
    match b.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).map_err(|_| Error::BadNames("bad IP".into()))?)),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(b).map_err(|_| Error::BadNames("bad IP".into()))?)),
        n => Err(Error::BadNames(format!("IP address SAN of {n} bytes; expected 4 or 16"))),
    }
}

fn check_uri(u: &str) -> Result<String, Error> {
    let ok = u.len() <= 2048
        && u.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
        })
        && u.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(u.to_string()) } else { Err(Error::BadNames(format!("URI SAN {u:?} is not an absolute URI"))) }
}

/// A fresh ECDSA P-256 key and a CSR for `names` (DNS names, IP addresses or URIs such as
/// `spiffe://ca-server/admin`), for the certificates the CA issues to its own listeners and
/// its admin credential. Returns (PKCS#8 DER, CSR DER).
pub fn self_request(names: &[String]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let key = crate::keys::generate(crate::keys::KeyAlgorithm::EcdsaP256)?;
    let pair = rcgen::KeyPair::try_from(key.der()).map_err(|e| Error::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) if n.contains("://") => n
                .clone()
                .try_into()
                .map(rcgen::SanType::URI)
                .map_err(|_| Error::BadNames(format!("{n:?} is not IA5 (ASCII)"))),
            Err(_) => n
                .clone()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|_| Error::BadNames(format!("{n:?} is not IA5 (ASCII)"))),
        })
        .collect::<Result<_, _>>()?;
    let csr = params.serialize_request(&pair)?;
    Ok((key.der().to_vec(), csr.der().to_vec()))
}
