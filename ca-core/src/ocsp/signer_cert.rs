//! Delegated OCSP-signing certificates (RFC 6960 4.2.2.2): issued by the issuing CA for a
//! key held here or elsewhere.

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::OCSP_SIGNER_BACKDATE_SECS;
use crate::ca::IssuingCa;
use crate::keys::{self, KeyAlgorithm, Pkcs8Key};
use crate::signer::{Signer, SoftwareSigner};
use crate::{Error, Serial, UnixSeconds};

const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

/// Lets rcgen take any [`Signer`]'s public key as a certificate's subject key.
pub struct SubjectKey<'a>(pub &'a dyn Signer);

impl PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.key_algorithm().signature_algorithm()
    }
}

/// Issue a delegated OCSP-signing certificate for the public key `key` (a signer here,
/// possibly in an HSM, or a checked CSR from another instance):
/// CN "`<issuing CA CN>` OCSP Responder", keyUsage digitalSignature, EKU id-kp-OCSPSigning,
/// id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1: relying parties do not check its status, so
/// keep `validity_secs` short, e.g. a few days, and rotate), AKI; signed by the issuing CA.
/// Returns the certificate DER.
pub fn ocsp_signer_cert(
    ca: &IssuingCa,
    key: &impl PublicKeyData,
    now: UnixSeconds,
    validity_secs: u64,
) -> Result<Vec<u8>, Error> {
    let (_, ca_x) = X509Certificate::from_der(&ca.cert_der)
        .map_err(|e| Error::Build(format!("issuing CA certificate: {e}")))?;
    let ca_cn = ca_x.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("CA");
    let ts =
        |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| Error::Build(format!("time: {e}")));
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{ca_cn} OCSP Responder"));
    p.distinguished_name = dn;
    p.not_before = ts(now - OCSP_SIGNER_BACKDATE_SECS)?;
    p.not_after = ts(now.saturating_add(i64::try_from(validity_secs).unwrap_or(i64::MAX)))?;
    let serial = Serial::random(&ring::rand::SystemRandom::new())?;
    p.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    p.use_authority_key_identifier_extension = true;
    p.custom_extensions = vec![CustomExtension::from_oid_content(OID_OCSP_NOCHECK, vec![0x05, 0x00])];
    let cert = p.signed_by(key, &ca.issuer)?;
    Ok(cert.der().to_vec())
}

/// Generate a fresh software key of `alg` and issue a delegated OCSP-signing certificate
/// for it (see [`ocsp_signer_cert`]). Returns the certificate DER and the PKCS#8 key;
/// [`OcspResponder::delegated`](super::OcspResponder::delegated) turns them into a responder.
pub fn issue_ocsp_signer(
    ca: &IssuingCa,
    alg: KeyAlgorithm,
    now: UnixSeconds,
    validity_secs: u64,
) -> Result<(Vec<u8>, Pkcs8Key), Error> {
    let key = keys::generate(alg)?;
    let signer = SoftwareSigner::from_pkcs8(key.der())?;
    let cert = ocsp_signer_cert(ca, &SubjectKey(&signer), now, validity_secs)?;
    Ok((cert, key))
}
