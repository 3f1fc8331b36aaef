//! CA material: generating a dev root + intermediate, importing an existing CA, and the
//! runtime issuing CA that signs through a [`Signer`].

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::keys::{self, KeyAlgorithm, Pkcs8Key};
use crate::signer::{Signer, SignerRef, SoftwareSigner};
use crate::{Error, Serial};

/// A freshly generated or imported CA, before it is persisted.
#[derive(Debug)]
pub struct CaMaterial {
    pub root_der: Vec<u8>,
    /// `None` for an imported CA whose root key we never see.
    pub root_key: Option<Pkcs8Key>,
    pub intermediate_der: Vec<u8>,
    /// `None` when the issuing key lives outside the process (an HSM): nothing to write.
    pub intermediate_key: Option<Pkcs8Key>,
    pub algorithm: KeyAlgorithm,
    pub imported: bool,
}

const YEAR: i64 = 365 * 86_400;

/// Generate a root (10 years) and an intermediate (5 years, pathLen 0) named after `name`.
pub fn generate(alg: KeyAlgorithm, name: &str, now: OffsetDateTime) -> Result<CaMaterial, Error> {
    let int_key = keys::generate(alg)?;
    let int_signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::from_pkcs8(int_key.der())?);
    let mut material = generate_with_issuing_signer(alg, name, now, int_signer)?;
    material.intermediate_key = Some(int_key);
    Ok(material)
}

/// [`generate`] for an issuing key held elsewhere (an HSM): a software root of `alg`
/// certifies `issuing`'s public key. The material carries no intermediate key.
pub fn generate_with_issuing_signer(
    alg: KeyAlgorithm,
    name: &str,
    now: OffsetDateTime,
    issuing: Arc<dyn Signer>,
) -> Result<CaMaterial, Error> {
    let rng = SystemRandom::new();
    let root_key = keys::generate(alg)?;
    let root_signer = SignerRef(Arc::new(SoftwareSigner::from_pkcs8(root_key.der())?));
    let mut root = ca_params(&format!("{name} Root CA"), name, now, 10 * YEAR, &rng)?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_signer)?;

    let int_signer = SignerRef(issuing.clone());
    let mut int = ca_params(&format!("{name} Intermediate CA"), name, now, 5 * YEAR, &rng)?;
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // digitalSignature lets the intermediate sign OCSP responses directly.
    int.key_usages.push(KeyUsagePurpose::DigitalSignature);
    int.use_authority_key_identifier_extension = true;
    let root_issuer = Issuer::new(root, root_signer);
    let int_cert = int.signed_by(&int_signer, &root_issuer)?;

    Ok(CaMaterial {
        root_der: root_cert.der().to_vec(),
        root_key: Some(root_key),
        intermediate_der: int_cert.der().to_vec(),
        intermediate_key: None,
        algorithm: issuing.key_algorithm(),
        imported: false,
    })
}

pub(crate) fn ca_params(
    cn: &str,
    org: &str,
    now: OffsetDateTime,
    lifetime_secs: i64,
    rng: &SystemRandom,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = now - time::Duration::seconds(60);
    p.not_after = now + time::Duration::seconds(lifetime_secs);
    p.serial_number = Some(SerialNumber::from_slice(Serial::random(rng)?.as_bytes()));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// Import an existing issuing CA: its certificate and PKCS#8 key (PEM), and optionally the
/// chain above it (PEM, issuer first, ending with the root). A self-signed certificate
/// without a chain is its own root.
pub fn import(cert_pem: &str, key_pem: &str, chain_pem: Option<&str>) -> Result<CaMaterial, Error> {
    let certs = pem_certs(cert_pem)?;
    let cert_der = certs
        .into_iter()
        .next()
        .ok_or_else(|| Error::Config("no CERTIFICATE in the CA certificate file".into()))?;
    let (_, alg) = keys::load(key_pem.as_bytes())?;
    let key = Pkcs8Key::from_der(pem::parse(key_pem).map_err(|e| Error::Key(e.to_string()))?.into_contents());
    let signer = SoftwareSigner::from_pkcs8(key.der())?;
    let (_, x) =
        X509Certificate::from_der(&cert_der).map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
    if x.public_key().subject_public_key.data.as_ref() != signer.public_key_raw() {
        return Err(Error::Config("the CA key does not match the CA certificate".into()));
    }
    if !x.is_ca() {
        return Err(Error::Config("the certificate is not a CA (basicConstraints cA is not set)".into()));
    }
    let root_der = match chain_pem {
        Some(c) => {
            pem_certs(c)?.pop().ok_or_else(|| Error::Config("the chain file holds no certificate".into()))?
        }
        None if x.subject() == x.issuer() => cert_der.clone(),
        None => {
            return Err(Error::Config(
                "the CA certificate is not self-signed: give its chain up to the root".into(),
            ));
        }
    };
    Ok(CaMaterial {
        root_der,
        root_key: None,
        intermediate_der: cert_der,
        intermediate_key: Some(key),
        algorithm: alg,
        imported: true,
    })
}

/// DER certificates from a PEM bundle, in order.
pub fn pem_certs(s: &str) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(s).map_err(|e| Error::Config(format!("bad PEM: {e}")))?;
    Ok(blocks.into_iter().filter(|p| p.tag() == "CERTIFICATE").map(|p| p.into_contents()).collect())
}

pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The CA that signs leaves (and CRLs, OCSP responses) at runtime.
pub struct IssuingCa {
    pub(crate) issuer: Issuer<'static, SignerRef>,
    pub(crate) signer: SignerRef,
    pub cert_der: Vec<u8>,
    pub root_der: Vec<u8>,
    /// Issuing CA then root, PEM; appended to every leaf we hand out.
    pub chain_pem: String,
    /// 0 for the CA of `CaInitialized`, n for the one `IssuingCaRotated` added as n.
    pub generation: u32,
    pub not_before: i64,
    pub not_after: i64,
    /// The subject as text (`O=..., CN=...`), for listings.
    pub subject: String,
}

impl IssuingCa {
    pub fn new(cert_der: Vec<u8>, root_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, Error> {
        let (_, x) = X509Certificate::from_der(&cert_der)
            .map_err(|e| Error::Config(format!("issuing CA certificate: {e}")))?;
        if x.public_key().subject_public_key.data.as_ref() != signer.public_key_raw() {
            return Err(Error::Config("the issuing CA key does not match its certificate".into()));
        }
        let signer = SignerRef(signer);
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), signer.clone())?;
        let mut chain_pem = der_to_pem(&cert_der);
        if root_der != cert_der {
            chain_pem.push_str(&der_to_pem(&root_der));
        }
        let (not_before, not_after) =
            (x.validity().not_before.timestamp(), x.validity().not_after.timestamp());
        let subject = x.subject().to_string();
        Ok(IssuingCa {
            issuer,
            signer,
            cert_der,
            root_der,
            chain_pem,
            generation: 0,
            not_before,
            not_after,
            subject,
        })
    }

    /// The same CA as issuer generation `g`.
    pub fn with_generation(mut self, g: u32) -> Self {
        self.generation = g;
        self
    }

    /// Fraction of the certificate's lifetime left at `now` (0.0 once expired).
    pub fn remaining_life_ratio(&self, now: i64) -> f64 {
        let total = (self.not_after - self.not_before).max(1) as f64;
        ((self.not_after - now) as f64 / total).clamp(0.0, 1.0)
    }

    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer.0
    }

    /// Issuing CA first, up to and including the root (the API's `chain_der`).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        if self.root_der == self.cert_der {
            vec![self.cert_der.clone()]
        } else {
            vec![self.cert_der.clone(), self.root_der.clone()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_chain_links_and_import_round_trips() {
        let ca = generate(KeyAlgorithm::EcdsaP256, "Test", OffsetDateTime::now_utc()).unwrap();
        let (_, root) = X509Certificate::from_der(&ca.root_der).unwrap();
        let (_, int) = X509Certificate::from_der(&ca.intermediate_der).unwrap();
        assert!(root.is_ca() && int.is_ca());
        assert_eq!(int.issuer(), root.subject());
        int.verify_signature(Some(root.public_key())).unwrap();
        root.verify_signature(None).unwrap();

        let cert_pem = der_to_pem(&ca.intermediate_der);
        let chain = der_to_pem(&ca.root_der);
        let imported =
            import(&cert_pem, &ca.intermediate_key.as_ref().unwrap().to_pem(), Some(&chain)).unwrap();
        assert_eq!(imported.root_der, ca.root_der);
        assert!(imported.imported);

        let other = generate(KeyAlgorithm::EcdsaP256, "Other", OffsetDateTime::now_utc()).unwrap();
        assert!(import(&cert_pem, &other.intermediate_key.as_ref().unwrap().to_pem(), Some(&chain)).is_err());
    }

    #[test]
    fn an_external_issuing_key_is_certified_by_the_root_and_not_carried() {
        let key = keys::generate(KeyAlgorithm::EcdsaP384).unwrap();
        let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::from_pkcs8(key.der()).unwrap());
        let ca = generate_with_issuing_signer(
            KeyAlgorithm::EcdsaP384,
            "Hsm",
            OffsetDateTime::now_utc(),
            signer.clone(),
        )
        .unwrap();
        assert!(ca.intermediate_key.is_none() && ca.root_key.is_some());
        assert_eq!(ca.algorithm, KeyAlgorithm::EcdsaP384);
        let (_, root) = X509Certificate::from_der(&ca.root_der).unwrap();
        let (_, int) = X509Certificate::from_der(&ca.intermediate_der).unwrap();
        assert_eq!(int.public_key().subject_public_key.data.as_ref(), signer.public_key_raw());
        int.verify_signature(Some(root.public_key())).unwrap();
        IssuingCa::new(ca.intermediate_der.clone(), ca.root_der.clone(), signer).unwrap();
    }
}
