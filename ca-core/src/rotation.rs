//! Issuing-CA rollover, the pure part: the next issuing CA's certificate (signed by a root
//! key we hold), its CSR (for a root kept offline), and the checks an operator-signed
//! certificate must pass before it may issue.

use std::sync::Arc;

use rcgen::{BasicConstraints, IsCa, Issuer, KeyUsagePurpose};
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::signer::{Signer, SignerRef};

/// Lifetime of a rotated issuing CA, cut at the root's notAfter.
pub const ISSUER_LIFETIME_SECS: i64 = 5 * 365 * 86_400;

/// The subject CN of generation `g`: generation 0 keeps `ca::generate`'s name, later ones
/// are numbered from G2 so two generations never share a subject.
pub fn issuer_cn(name: &str, generation: u32) -> String {
    if generation == 0 {
        format!("{name} Intermediate CA")
    } else {
        format!("{name} Intermediate CA G{}", u64::from(generation) + 1)
    }
}

/// Build and sign the certificate of issuing CA `generation` for `subject_key` with the
/// root (`root_der` + `root_key`): pathLen 0, keyCertSign + cRLSign + digitalSignature, SKI
/// and AKI as `ca::generate` makes them, 5 years but never past the root's notAfter.
pub fn sign_issuer(
    root_der: &[u8],
    root_key: Arc<dyn Signer>,
    subject_key: Arc<dyn Signer>,
    name: &str,
    generation: u32,
    now: OffsetDateTime,
) -> Result<Vec<u8>, Error> {
    let (_, root) =
        X509Certificate::from_der(root_der).map_err(|e| Error::Config(format!("root certificate: {e}")))?;
    if root.public_key().subject_public_key.data.as_ref() != root_key.public_key_raw() {
        return Err(Error::Config("the root key does not match the root certificate".into()));
    }
    let root_not_after = root.validity().not_after.timestamp();
    let lifetime = ISSUER_LIFETIME_SECS.min(root_not_after - now.unix_timestamp());
    if lifetime <= 0 {
        return Err(Error::Config("the root certificate has expired; a new root is needed".into()));
    }
    let rng = SystemRandom::new();
    let mut p = crate::ca::ca_params(&issuer_cn(name, generation), name, now, lifetime, &rng)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages.push(KeyUsagePurpose::DigitalSignature);
    p.use_authority_key_identifier_extension = true;
    let root_issuer = Issuer::from_ca_cert_der(&root_der.into(), SignerRef(root_key))?;
    Ok(p.signed_by(&SignerRef(subject_key), &root_issuer)?.der().to_vec())
}

/// A PKCS#10 request (PEM) for issuing CA `generation`, signed by its key, for a root
/// that signs elsewhere (`openssl x509 -req` / `openssl ca` add the CA extensions).
pub fn issuer_csr(subject_key: Arc<dyn Signer>, name: &str, generation: u32) -> Result<String, Error> {
    let rng = SystemRandom::new();
    let mut p = crate::ca::ca_params(&issuer_cn(name, generation), name, OffsetDateTime::now_utc(), 1, &rng)?;
    // The root picks the serial; the request asks for what the issuing CA needs (an
    // `openssl ca` with copy_extensions may take them, `x509 -req -extfile` sets its own).
    p.serial_number = None;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages.push(KeyUsagePurpose::DigitalSignature);
    let csr = p.serialize_request(&SignerRef(subject_key))?;
    csr.pem().map_err(Error::from)
}

/// Check a certificate signed elsewhere before it becomes an issuing CA: a CA certificate
/// for exactly `key_raw` (the pending key's subjectPublicKey), issued by the recorded root
/// and verifying under its key, valid at `now`.
pub fn check_signed_issuer(cert_der: &[u8], root_der: &[u8], key_raw: &[u8], now: i64) -> Result<(), Error> {
    let (_, x) =
        X509Certificate::from_der(cert_der).map_err(|e| Error::Config(format!("signed certificate: {e}")))?;
    let (_, root) =
        X509Certificate::from_der(root_der).map_err(|e| Error::Config(format!("root certificate: {e}")))?;
    if !x.is_ca() {
        return Err(Error::Config("the certificate is not a CA (basicConstraints cA is not set)".into()));
    }
    if x.public_key().subject_public_key.data.as_ref() != key_raw {
        return Err(Error::Config(
            "the certificate is not for the pending key: sign the CSR from `ca rotate --csr-out`".into(),
        ));
    }
    if x.issuer() != root.subject() {
        return Err(Error::Config(format!(
            "the certificate's issuer is {}, not the root {}",
            x.issuer(),
            root.subject()
        )));
    }
    x.verify_signature(Some(root.public_key())).map_err(|_| {
        Error::Config("the certificate's signature does not verify under the root's key".into())
    })?;
    let (nb, na) = (x.validity().not_before.timestamp(), x.validity().not_after.timestamp());
    if now < nb || now >= na {
        return Err(Error::Config(format!(
            "the certificate is not valid now (notBefore {nb}, notAfter {na})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{self, IssuingCa};
    use crate::keys::{self, KeyAlgorithm};
    use crate::signer::SoftwareSigner;

    fn signer(k: &crate::keys::Pkcs8Key) -> Arc<dyn Signer> {
        Arc::new(SoftwareSigner::from_pkcs8(k.der()).unwrap())
    }

    #[test]
    fn rotated_issuer_chains_to_the_root_with_a_new_name() {
        let now = OffsetDateTime::now_utc();
        let m = ca::generate(KeyAlgorithm::EcdsaP256, "T", now).unwrap();
        let root_key = signer(m.root_key.as_ref().unwrap());
        let new_key = signer(&keys::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let der = sign_issuer(&m.root_der, root_key.clone(), new_key.clone(), "T", 1, now).unwrap();
        let (_, x) = X509Certificate::from_der(&der).unwrap();
        let (_, root) = X509Certificate::from_der(&m.root_der).unwrap();
        assert!(x.is_ca());
        assert!(x.subject().to_string().contains("T Intermediate CA G2"), "{}", x.subject());
        assert!(x.validity().not_after <= root.validity().not_after);
        check_signed_issuer(&der, &m.root_der, new_key.public_key_raw(), now.unix_timestamp()).unwrap();
        let ica = IssuingCa::new(der.clone(), m.root_der.clone(), new_key).unwrap().with_generation(1);
        assert_eq!(ica.generation, 1);
        assert!(ica.remaining_life_ratio(now.unix_timestamp()) > 0.99);

        // Another key, another root, or a wrong root key are refused.
        let other = signer(&keys::generate(KeyAlgorithm::EcdsaP256).unwrap());
        assert!(
            check_signed_issuer(&der, &m.root_der, other.public_key_raw(), now.unix_timestamp()).is_err()
        );
        let m2 = ca::generate(KeyAlgorithm::EcdsaP256, "T", now).unwrap();
        assert!(check_signed_issuer(&der, &m2.root_der, ica.signer().public_key_raw(), 0).is_err());
        assert!(sign_issuer(&m.root_der, other.clone(), other, "T", 2, now).is_err());
    }

    #[test]
    fn authority_switches_issuer_and_urls_per_generation() {
        use crate::issue::{Authority, IssueRequest, PublicUrls};
        use crate::policy::{Policy, PolicyConfig};
        use crate::profile::Profiles;
        let now = OffsetDateTime::now_utc();
        let m = ca::generate(KeyAlgorithm::EcdsaP256, "T", now).unwrap();
        // Generation 0 made the same way (with `ca::generate`'s name), so the test does not
        // depend on how `CaMaterial` holds its intermediate key.
        let root = signer(m.root_key.as_ref().unwrap());
        let k0 = signer(&keys::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let der0 = sign_issuer(&m.root_der, root.clone(), k0.clone(), "T", 0, now).unwrap();
        let g0 = Arc::new(IssuingCa::new(der0.clone(), m.root_der.clone(), k0).unwrap());
        let a = Authority::new(
            g0,
            Policy::new(PolicyConfig::default()).unwrap(),
            Profiles::default(),
            &PublicUrls::from_base("http://ca.test:8080/").unwrap(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["svc.example.internal".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let req = IssueRequest {
            csr: &csr,
            profile: "",
            validity_secs: 0,
            requester: "t",
            now: now.unix_timestamp(),
        };
        let before = a.issue(req).unwrap();
        assert_eq!(before.issuer_generation, 0);

        let k1 = signer(&keys::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let der = sign_issuer(&m.root_der, root, k1.clone(), "T", 1, now).unwrap();
        a.install(
            Arc::new(IssuingCa::new(der.clone(), m.root_der.clone(), k1).unwrap().with_generation(1)),
            true,
        )
        .unwrap();
        let after = a.issue(req).unwrap();
        assert_eq!((after.issuer_generation, a.ca().generation), (1, 1));
        assert_eq!(a.issuer(0).unwrap().cert_der, der0, "the old issuer stays known");
        assert_eq!(a.issuers().len(), 2);
        let (_, x) = X509Certificate::from_der(&after.certificate_der).unwrap();
        let (_, new_ca) = X509Certificate::from_der(&der).unwrap();
        x.verify_signature(Some(new_ca.public_key())).unwrap();
        let text = |c: &[u8]| String::from_utf8_lossy(c).to_string();
        assert!(text(&after.certificate_der).contains("http://ca.test:8080/issuers/1/crl"));
        assert!(text(&after.certificate_der).contains("http://ca.test:8080/issuers/1/ocsp"));
        assert!(text(&before.certificate_der).contains("http://ca.test:8080/crl"));
        assert!(!text(&before.certificate_der).contains("/issuers/"));
        assert_eq!(
            PublicUrls::for_generation("http://h", 3).unwrap().ca_issuers,
            "http://h/issuers/3/ca.der"
        );
    }

    #[test]
    fn csr_carries_the_generation_name_and_key() {
        let k = signer(&keys::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let pem = issuer_csr(k.clone(), "T", 3).unwrap();
        let der = pem::parse(&pem).unwrap().into_contents();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        assert!(csr.certification_request_info.subject.to_string().contains("G4"));
        assert_eq!(
            csr.certification_request_info.subject_pki.subject_public_key.data.as_ref(),
            k.public_key_raw()
        );
        assert_eq!(issuer_cn("T", 0), "T Intermediate CA");
    }
}
