//! The signing core: CSR in, signed certificate (and the event that records it) out.
//! Pure CPU work; the server runs it on a blocking pool and appends the event.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rcgen::{
    CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType, IsCa, SanType,
    SerialNumber,
};
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use crate::ca::IssuingCa;
use crate::csr::{self, CheckedCsr};
use crate::event::CertificateIssued;
use crate::policy::{Policy, SanName, SubjectKey};
use crate::profile::Profiles;
use crate::{Error, Serial, UnixSeconds};

/// Where relying parties find CRLs, OCSP and the issuing CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    pub crl: String,
    pub ocsp: String,
    pub ca_issuers: String,
}

impl PublicUrls {
    /// The HTTP paths the server serves under `base` (e.g. `http://ca.internal:8080`) for
    /// issuer generation 0.
    pub fn from_base(base: &str) -> Result<Self, Error> {
        Self::for_generation(base, 0)
    }

    /// The URLs of issuer `generation`: 0 keeps `/crl`, `/ocsp`, `/ca.der` (certificates
    /// already out there point at them), n >= 1 lives under `/issuers/{n}/`.
    pub fn for_generation(base: &str, generation: u32) -> Result<Self, Error> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) || !base.is_ascii() {
            return Err(Error::Config(format!("public URL {base:?} must be an http(s) URL")));
        }
        let prefix = issuer_path_prefix(generation);
        Ok(PublicUrls {
            crl: format!("{base}{prefix}/crl"),
            ocsp: format!("{base}{prefix}/ocsp"),
            ca_issuers: format!("{base}{prefix}/ca.der"),
        })
    }
}

/// The path prefix of issuer `generation`'s HTTP resources: empty for 0, `/issuers/{n}`.
pub fn issuer_path_prefix(generation: u32) -> String {
    if generation == 0 { String::new() } else { format!("/issuers/{generation}") }
}

/// How far not_before is backdated, so clients with slightly slow clocks accept new certs.
pub const BACKDATE_SECS: i64 = 60;

/// One signing request, already decoded from the wire.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    pub csr: &'a [u8],
    pub profile: &'a str,
    pub validity_secs: u64,
    pub requester: &'a str,
    pub now: UnixSeconds,
}

/// One issuing CA with what it writes into every certificate it signs.
pub struct IssuerSlot {
    pub ca: Arc<IssuingCa>,
    crl_url: String,
    aia: CustomExtension,
}

impl IssuerSlot {
    fn new(ca: Arc<IssuingCa>, base: &str) -> Result<Self, Error> {
        let urls = PublicUrls::for_generation(base, ca.generation)?;
        Ok(IssuerSlot { crl_url: urls.crl, aia: aia_extension(&urls.ocsp, &urls.ca_issuers), ca })
    }
}

/// The CA's signing core: the issuing CAs (one current, older ones still known by
/// generation) + policy + profiles + URLs. The current issuer is swapped under a lock
/// held only to clone an `Arc`, so a request in flight finishes with the issuer it took.
pub struct Authority {
    current: RwLock<Arc<IssuerSlot>>,
    all: RwLock<BTreeMap<u32, Arc<IssuerSlot>>>,
    base: String,
    policy: Policy,
    profiles: Profiles,
    rng: SystemRandom,
}

impl Authority {
    /// `urls` must come from [`PublicUrls::from_base`]; later generations derive theirs
    /// from the same base.
    pub fn new(
        ca: Arc<IssuingCa>,
        policy: Policy,
        profiles: Profiles,
        urls: &PublicUrls,
    ) -> Result<Self, Error> {
        profiles.validate()?;
        let base = urls.crl.strip_suffix("/crl").unwrap_or(&urls.crl).to_string();
        let slot = Arc::new(IssuerSlot::new(ca, &base)?);
        Ok(Authority {
            all: RwLock::new(BTreeMap::from([(slot.ca.generation, slot.clone())])),
            current: RwLock::new(slot),
            base,
            policy,
            profiles,
            rng: SystemRandom::new(),
        })
    }

    fn slot(&self) -> Arc<IssuerSlot> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The issuing CA that signs new certificates.
    pub fn ca(&self) -> Arc<IssuingCa> {
        self.slot().ca.clone()
    }

    /// Issuer `generation`, current or older.
    pub fn issuer(&self, generation: u32) -> Option<Arc<IssuingCa>> {
        let all = self.all.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(&generation).map(|s| s.ca.clone())
    }

    /// Every known issuer, oldest generation first.
    pub fn issuers(&self) -> Vec<Arc<IssuingCa>> {
        let all = self.all.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.values().map(|s| s.ca.clone()).collect()
    }

    /// Add an issuer; when `make_current`, it signs everything from now on. The caller
    /// serializes rotations and records the rotation before calling this.
    pub fn install(&self, ca: Arc<IssuingCa>, make_current: bool) -> Result<(), Error> {
        let slot = Arc::new(IssuerSlot::new(ca, &self.base)?);
        self.all
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(slot.ca.generation, slot.clone());
        if make_current {
            *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = slot;
        }
        Ok(())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// Check a request and sign it. Nothing is recorded here: the caller appends the
    /// returned event and releases the certificate only once that append is durable.
    pub fn issue(&self, req: IssueRequest<'_>) -> Result<CertificateIssued, Error> {
        let (profile_name, profile) = self.profiles.get(req.profile)?;
        let validity = profile.validity(req.validity_secs, self.policy.max_validity_secs())?;
        let csr = csr::check(req.csr, &self.policy)?;
        self.policy.check_names(&csr.names)?;
        self.sign_checked(&csr, profile_name, validity, req.requester, req.now)
    }

    /// Sign a CSR already checked, for names already authorized (the ACME path authorizes
    /// names through challenges rather than static policy).
    pub fn sign_checked(
        &self,
        csr: &CheckedCsr,
        profile_name: &str,
        validity_secs: u64,
        requester: &str,
        now: UnixSeconds,
    ) -> Result<CertificateIssued, Error> {
        let not_before = now - BACKDATE_SECS;
        let not_after = now.saturating_add(i64::try_from(validity_secs).unwrap_or(i64::MAX));
        self.sign_checked_window(csr, profile_name, not_before, not_after, requester)
    }

    /// [`sign_checked`](Self::sign_checked) for an explicit validity window (ACME orders
    /// with notBefore/notAfter); the caller has checked it against the profile.
    pub fn sign_checked_window(
        &self,
        csr: &CheckedCsr,
        profile_name: &str,
        not_before: UnixSeconds,
        not_after: UnixSeconds,
        requester: &str,
    ) -> Result<CertificateIssued, Error> {
        let (_, profile) = self.profiles.get(profile_name)?;
        let serial = Serial::random(&self.rng)?;
        let ts =
            |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| Error::Build(format!("time: {e}")));

        let mut params = CertificateParams::default();
        params.not_before = ts(not_before)?;
        params.not_after = ts(not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
        params.distinguished_name = subject_for(&csr.names);
        params.subject_alt_names = csr.names.iter().map(san).collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = profile.key_usages(matches!(csr.key, SubjectKey::Rsa { .. }));
        params.extended_key_usages = profile.extended_key_usages();
        params.use_authority_key_identifier_extension = true;
        let slot = self.slot();
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![slot.crl_url.clone()] }];
        params.custom_extensions = vec![slot.aia.clone()];

        let cert = params.signed_by(csr, &slot.ca.issuer)?;
        Ok(CertificateIssued {
            serial,
            certificate_der: cert.der().to_vec(),
            profile: profile_name.to_string(),
            requester: requester.to_string(),
            not_before,
            not_after,
            names: csr.names.iter().map(|n| n.to_string()).collect(),
            issuer_generation: slot.ca.generation,
        })
    }
}

/// CN is the first DNS name (or IP) when there is one; an all-URI certificate gets an
/// empty subject and rcgen then marks the SAN extension critical (RFC 5280 4.2.1.6).
fn subject_for(names: &[SanName]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    let cn = names
        .iter()
        .find(|n| matches!(n, SanName::Dns(d) if d.len() <= 64))
        .or_else(|| names.iter().find(|n| matches!(n, SanName::Ip(_))));
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn.to_string());
    }
    dn
}

fn san(n: &SanName) -> Result<SanType, Error> {
    let ia5 =
        |s: &str| s.to_string().try_into().map_err(|_| Error::BadNames(format!("{s:?} is not IA5 (ASCII)")));
    Ok(match n {
        SanName::Dns(d) => SanType::DnsName(ia5(d)?),
        SanName::Ip(ip) => SanType::IpAddress(*ip),
        SanName::Uri(u) => SanType::URI(ia5(u)?),
    })
}

const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_AD_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];

/// authorityInfoAccess (RFC 5280 4.2.2.1), built once: rcgen has no first-class support.
fn aia_extension(ocsp: &str, ca_issuers: &str) -> CustomExtension {
    let der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (oid, uri) in [(OID_AD_OCSP, ocsp), (OID_AD_CA_ISSUERS, ca_issuers)] {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                    w.next().write_tagged_implicit(yasna::Tag::context(6), |w| w.write_bytes(uri.as_bytes()));
                });
            }
        })
    });
    CustomExtension::from_oid_content(OID_AIA, der)
}
