//! CRL building (RFC 5280 v2 full and delta CRLs).
//!
//! The TBSCertList is DER-encoded here by hand and signed through the [`Signer`] trait
//! (`IssuingCa::signer()`), rather than with `rcgen::CertificateRevocationListParams`:
//! rcgen 0.14 cannot write the Delta CRL Indicator (2.5.29.27) or Freshest CRL
//! (2.5.29.46) extensions, derives the AKI from the key instead of copying the issuing
//! CA's own subjectKeyIdentifier (which breaks imported CAs whose SKI was made another
//! way), and wants every entry as an `OffsetDateTime`-based param struct. The encoder
//! below writes each entry straight into one buffer, so a 100,000-entry CRL is a few
//! megabytes of memcpy plus one signature over it.
//!
//! What the builder writes:
//! - `version` v2, `signature` matching the CA key ([`KeyAlgorithm`]), `issuer` copied
//!   byte for byte from the CA certificate's subject, `thisUpdate`/`nextUpdate` (UTCTime
//!   through 2049, GeneralizedTime after, as RFC 5280 5.1.2.4 requires);
//! - per entry: serial, revocationDate, `reasonCode` (omitted for `unspecified`, RFC 5280
//!   5.3.1) and `invalidityDate` (GeneralizedTime) when given;
//! - CRL extensions: authorityKeyIdentifier (the CA certificate's SKI), cRLNumber, and
//!   either Freshest CRL (full CRL with a delta URL) or a critical Delta CRL Indicator
//!   naming the base CRL number (delta CRL).
//!
//! Choosing what to list (only unexpired revoked certificates; for a delta, what changed
//! since the base) is the caller's job: see [`crate::projection::Inventory::unexpired_revoked`].

use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::ca::IssuingCa;
use crate::event::RevocationReason;
use crate::keys::KeyAlgorithm;
use crate::projection::RevokedEntry;
use crate::signer::Signer;
use crate::{Error, Serial, UnixSeconds};

/// One revoked certificate as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    pub serial: Serial,
    /// When the CA processed the revocation (the entry's revocationDate).
    pub revoked_at: UnixSeconds,
    /// `Unspecified` writes no reasonCode extension (RFC 5280 5.3.1).
    pub reason: RevocationReason,
    /// When the key was known or suspected to be compromised, if given.
    pub invalidity_date: Option<UnixSeconds>,
}

impl RevokedCert {
    /// From the revoked-set projection.
    pub fn from_projection(serial: &Serial, e: &RevokedEntry) -> Self {
        RevokedCert {
            serial: serial.clone(),
            revoked_at: e.revoked_at,
            reason: e.reason,
            invalidity_date: e.invalidity_date,
        }
    }
}

/// What one CRL says.
#[derive(Debug, Clone, Copy)]
pub struct CrlInput<'a> {
    /// cRLNumber. Full and delta CRLs share one increasing sequence (RFC 5280 5.2.4).
    pub number: u64,
    pub this_update: UnixSeconds,
    /// Must be after `this_update`.
    pub next_update: UnixSeconds,
    /// The entries, in any order (listing them sorted by serial makes diffs readable).
    pub entries: &'a [RevokedCert],
    /// `Some(base)` makes this a delta CRL: the critical Delta CRL Indicator names the
    /// number of the complete CRL it updates (`base < number`).
    pub delta_base: Option<u64>,
    /// For a full CRL: the delta CRL's URL, written as the Freshest CRL extension. Not
    /// allowed on a delta CRL (RFC 5280 5.2.6).
    pub freshest_crl_url: Option<&'a str>,
}

const OID_AKI: &[u8] = &[0x55, 0x1d, 0x23];
const OID_CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
const OID_DELTA_CRL_INDICATOR: &[u8] = &[0x55, 0x1d, 0x1b];
const OID_FRESHEST_CRL: &[u8] = &[0x55, 0x1d, 0x2e];
const OID_REASON_CODE: &[u8] = &[0x55, 0x1d, 0x15];
const OID_INVALIDITY_DATE: &[u8] = &[0x55, 0x1d, 0x18];

/// Build and sign a CRL for the issuing CA. Returns the DER `CertificateList`.
pub fn build_crl(ca: &IssuingCa, input: &CrlInput<'_>) -> Result<Vec<u8>, Error> {
    if input.next_update <= input.this_update {
        return Err(Error::Build(format!(
            "CRL nextUpdate ({}) must be after thisUpdate ({})",
            input.next_update, input.this_update
        )));
    }
    if let Some(base) = input.delta_base {
        if base >= input.number {
            return Err(Error::Build(format!(
                "delta CRL {} must have a higher number than its base CRL {base}",
                input.number
            )));
        }
        if input.freshest_crl_url.is_some() {
            return Err(Error::Build(
                "a delta CRL must not carry the Freshest CRL extension (RFC 5280 5.2.6)".into(),
            ));
        }
    }
    if let Some(url) = input.freshest_crl_url
        && (url.is_empty() || !url.is_ascii())
    {
        return Err(Error::Build(format!("Freshest CRL URL {url:?} must be non-empty ASCII")));
    }

    let info = CaInfo::parse(&ca.cert_der, ca.signer().as_ref())?;
    let alg_id = der::signature_algorithm(ca.signer().key_algorithm());

    // Rough size: ~60 bytes per entry plus the header; avoids regrowing a multi-MB buffer.
    let mut tbs = Vec::with_capacity(256 + info.subject.len() + input.entries.len() * 64);
    der::nest(&mut tbs, der::SEQUENCE, |w| {
        der::tlv(w, der::INTEGER, &[1]); // v2
        w.extend_from_slice(alg_id);
        w.extend_from_slice(&info.subject);
        der::time(w, input.this_update)?;
        der::time(w, input.next_update)?;
        if !input.entries.is_empty() {
            der::nest(w, der::SEQUENCE, |w| {
                for e in input.entries {
                    write_entry(w, e)?;
                }
                Ok(())
            })?;
        }
        der::nest(w, der::context_constructed(0), |w| {
            der::nest(w, der::SEQUENCE, |w| {
                // authorityKeyIdentifier { keyIdentifier [0] }
                der::extension(w, OID_AKI, false, |w| {
                    der::nest(w, der::SEQUENCE, |w| {
                        der::tlv(w, der::context_primitive(0), &info.key_id);
                        Ok(())
                    })
                })?;
                der::extension(w, OID_CRL_NUMBER, false, |w| {
                    der::uint64(w, input.number);
                    Ok(())
                })?;
                if let Some(base) = input.delta_base {
                    der::extension(w, OID_DELTA_CRL_INDICATOR, true, |w| {
                        der::uint64(w, base);
                        Ok(())
                    })?;
                }
                if let Some(url) = input.freshest_crl_url {
                    // CRLDistributionPoints ::= SEQUENCE OF DistributionPoint
                    der::extension(w, OID_FRESHEST_CRL, false, |w| {
                        der::nest(w, der::SEQUENCE, |w| {
                            der::nest(w, der::SEQUENCE, |w| {
                                // distributionPoint [0] { fullName [0] GeneralNames }
                                der::nest(w, der::context_constructed(0), |w| {
                                    der::nest(w, der::context_constructed(0), |w| {
                                        der::tlv(w, der::context_primitive(6), url.as_bytes());
                                        Ok(())
                                    })
                                })
                            })
                        })
                    })?;
                }
                Ok(())
            })
        })
    })?;

    let signature = ca.signer().sign(&tbs)?;
    let mut out = Vec::with_capacity(tbs.len() + alg_id.len() + signature.len() + 16);
    der::nest(&mut out, der::SEQUENCE, |w| {
        w.extend_from_slice(&tbs);
        w.extend_from_slice(alg_id);
        der::bit_string(w, &signature);
        Ok(())
    })?;
    Ok(out)
}

/// PEM (`X509 CRL`) form of a DER CRL, as served at `/crl.pem`.
pub fn crl_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()))
}

fn write_entry(w: &mut Vec<u8>, e: &RevokedCert) -> Result<(), Error> {
    der::nest(w, der::SEQUENCE, |w| {
        der::uint_bytes(w, e.serial.as_bytes());
        der::time(w, e.revoked_at)?;
        let reason = (e.reason != RevocationReason::Unspecified).then_some(e.reason);
        if reason.is_some() || e.invalidity_date.is_some() {
            der::nest(w, der::SEQUENCE, |w| {
                if let Some(r) = reason {
                    der::extension(w, OID_REASON_CODE, false, |w| {
                        // Codes are 0..=10: one content octet.
                        der::tlv(w, der::ENUMERATED, &[r.code() as u8]);
                        Ok(())
                    })?;
                }
                if let Some(t) = e.invalidity_date {
                    der::extension(w, OID_INVALIDITY_DATE, false, |w| der::generalized_time(w, t))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

/// What the builders need from the issuing CA certificate.
pub(crate) struct CaInfo {
    /// DER of the subject Name (the CRL's issuer).
    pub subject: Vec<u8>,
    /// subjectKeyIdentifier, or SHA-1 of the public key when the certificate has none
    /// (RFC 5280 4.2.1.2 method 1).
    pub key_id: Vec<u8>,
}

impl CaInfo {
    pub(crate) fn parse(cert_der: &[u8], signer: &dyn Signer) -> Result<Self, Error> {
        let (_, x) = X509Certificate::from_der(cert_der)
            .map_err(|e| Error::Build(format!("issuing CA certificate: {e}")))?;
        if let Ok(Some(ku)) = x.key_usage()
            && !ku.value.crl_sign()
        {
            return Err(Error::Build(
                "the issuing CA certificate's keyUsage lacks cRLSign; it cannot sign CRLs".into(),
            ));
        }
        let key_id = x
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| {
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, signer.public_key_raw())
                    .as_ref()
                    .to_vec()
            });
        Ok(CaInfo { subject: x.subject().as_raw().to_vec(), key_id })
    }
}

/// A minimal DER writer: enough for TBSCertList and extension values, and fast because
/// it writes into one growing buffer (a nested value's length is patched in afterwards).
pub(crate) mod der {
    use super::KeyAlgorithm;
    use crate::{Error, UnixSeconds};

    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const BOOLEAN: u8 = 0x01;
    pub const ENUMERATED: u8 = 0x0a;
    pub const SEQUENCE: u8 = 0x30;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;

    pub const fn context_constructed(n: u8) -> u8 {
        0xa0 | n
    }
    pub const fn context_primitive(n: u8) -> u8 {
        0x80 | n
    }

    /// AlgorithmIdentifier of the signature a key of this kind makes.
    pub fn signature_algorithm(alg: KeyAlgorithm) -> &'static [u8] {
        match alg {
            // ecdsa-with-SHA256 1.2.840.10045.4.3.2, parameters absent (RFC 5758)
            KeyAlgorithm::EcdsaP256 => {
                &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
            }
            // ecdsa-with-SHA384 1.2.840.10045.4.3.3
            KeyAlgorithm::EcdsaP384 => {
                &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]
            }
            // id-Ed25519 1.3.101.112 (RFC 8410)
            KeyAlgorithm::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
            // sha256WithRSAEncryption 1.2.840.113549.1.1.11, NULL parameters
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00]
            }
        }
    }

    fn write_len(w: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            w.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            w.push(0x80 | (bytes.len() - skip) as u8);
            w.extend_from_slice(&bytes[skip..]);
        }
    }

    pub fn tlv(w: &mut Vec<u8>, tag: u8, content: &[u8]) {
        w.push(tag);
        write_len(w, content.len());
        w.extend_from_slice(content);
    }

    /// Write `tag`, then whatever `f` writes as its content, with the right length.
    pub fn nest(
        w: &mut Vec<u8>,
        tag: u8,
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        w.push(tag);
        let at = w.len();
        w.push(0);
        f(w)?;
        let n = w.len() - at - 1;
        if n < 0x80 {
            w[at] = n as u8;
        } else {
            let mut hdr = Vec::with_capacity(9);
            write_len(&mut hdr, n);
            w[at] = hdr[0];
            // Long form: open a gap after the first length octet (moves the content once).
            w.splice(at + 1..at + 1, hdr[1..].iter().copied());
        }
        Ok(())
    }

    /// `Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }`.
    pub fn extension(
        w: &mut Vec<u8>,
        oid: &[u8],
        critical: bool,
        value: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        nest(w, SEQUENCE, |w| {
            tlv(w, OID, oid);
            if critical {
                tlv(w, BOOLEAN, &[0xff]);
            }
            nest(w, OCTET_STRING, value)
        })
    }

    /// INTEGER from an unsigned big-endian magnitude (a 0x00 octet is added when the top
    /// bit is set, leading zeros are dropped).
    pub fn uint_bytes(w: &mut Vec<u8>, magnitude: &[u8]) {
        let skip = magnitude.iter().take_while(|b| **b == 0).count();
        let m = &magnitude[skip..];
        match m.first() {
            None => tlv(w, INTEGER, &[0]),
            Some(b) if b & 0x80 != 0 => {
                w.push(INTEGER);
                write_len(w, m.len() + 1);
                w.push(0);
                w.extend_from_slice(m);
            }
            Some(_) => tlv(w, INTEGER, m),
        }
    }

    pub fn uint64(w: &mut Vec<u8>, v: u64) {
        uint_bytes(w, &v.to_be_bytes());
    }

    pub fn bit_string(w: &mut Vec<u8>, bytes: &[u8]) {
        w.push(BIT_STRING);
        write_len(w, bytes.len() + 1);
        w.push(0); // no unused bits
        w.extend_from_slice(bytes);
    }

    /// RFC 5280 Time: UTCTime for 1950..=2049, GeneralizedTime otherwise.
    pub fn time(w: &mut Vec<u8>, t: UnixSeconds) -> Result<(), Error> {
        let (y, rest) = civil(t)?;
        if !(1950..2050).contains(&y) {
            return generalized_time(w, t);
        }
        w.push(UTC_TIME);
        w.push(13);
        push2(w, (y % 100) as u32);
        for v in rest {
            push2(w, v);
        }
        w.push(b'Z');
        Ok(())
    }

    /// GeneralizedTime `YYYYMMDDHHMMSSZ`.
    pub fn generalized_time(w: &mut Vec<u8>, t: UnixSeconds) -> Result<(), Error> {
        let (y, rest) = civil(t)?;
        w.push(GENERALIZED_TIME);
        w.push(15);
        push2(w, (y / 100) as u32);
        push2(w, (y % 100) as u32);
        for v in rest {
            push2(w, v);
        }
        w.push(b'Z');
        Ok(())
    }

    fn push2(w: &mut Vec<u8>, v: u32) {
        w.push(b'0' + (v / 10 % 10) as u8);
        w.push(b'0' + (v % 10) as u8);
    }

    /// (year, [month, day, hour, minute, second]) in UTC; years 0..=9999 only.
    fn civil(t: UnixSeconds) -> Result<(i32, [u32; 5]), Error> {
        let dt = time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| Error::Build(format!("time {t} out of range: {e}")))?;
        let y = dt.year();
        if !(0..=9999).contains(&y) {
            return Err(Error::Build(format!("time {t} is outside years 0000-9999")));
        }
        Ok((
            y,
            [
                u8::from(dt.month()) as u32,
                dt.day() as u32,
                dt.hour() as u32,
                dt.minute() as u32,
                dt.second() as u32,
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::der;

    fn enc(f: impl FnOnce(&mut Vec<u8>) -> Result<(), crate::Error>) -> Vec<u8> {
        let mut w = Vec::new();
        f(&mut w).unwrap();
        w
    }

    #[test]
    fn time_switches_to_generalized_time_in_2050() {
        let t = |s: i64| enc(|w| der::time(w, s));
        // 2049-12-31T23:59:59Z and one second later
        assert_eq!(t(2_524_607_999), [&[0x17, 13][..], b"491231235959Z"].concat());
        assert_eq!(t(2_524_608_000), [&[0x18, 15][..], b"20500101000000Z"].concat());
        // 1950-01-01T00:00:00Z and one second earlier
        assert_eq!(t(-631_152_000), [&[0x17, 13][..], b"500101000000Z"].concat());
        assert_eq!(t(-631_152_001), [&[0x18, 15][..], b"19491231235959Z"].concat());
        let g = enc(|w| der::generalized_time(w, 1_700_000_000));
        assert_eq!(g, [&[0x18, 15][..], b"20231114221320Z"].concat());
        assert!(der::time(&mut Vec::new(), i64::MAX).is_err());
    }

    #[test]
    fn lengths_use_the_short_and_long_forms() {
        for (n, header) in [
            (0usize, vec![0x30, 0x00]),
            (127, vec![0x30, 0x7f]),
            (128, vec![0x30, 0x81, 0x80]),
            (255, vec![0x30, 0x81, 0xff]),
            (256, vec![0x30, 0x82, 0x01, 0x00]),
            (70_000, vec![0x30, 0x83, 0x01, 0x11, 0x70]),
        ] {
            let w = enc(|w| {
                der::nest(w, der::SEQUENCE, |w| {
                    w.resize(w.len() + n, 0xab);
                    Ok(())
                })
            });
            assert_eq!(w[..header.len()], header[..], "{n}");
            assert_eq!(w.len(), header.len() + n);
            assert!(w[header.len()..].iter().all(|b| *b == 0xab));
            let mut t = Vec::new();
            der::tlv(&mut t, der::SEQUENCE, &vec![0xab; n]);
            assert_eq!(t, w);
        }
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let u = |m: &[u8]| {
            let mut w = Vec::new();
            der::uint_bytes(&mut w, m);
            w
        };
        assert_eq!(u(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(u(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(u(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(u(&[0x7f, 0xff]), [0x02, 0x02, 0x7f, 0xff]);
        assert_eq!(u(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        let v = |x: u64| {
            let mut w = Vec::new();
            der::uint64(&mut w, x);
            w
        };
        assert_eq!(v(0), [0x02, 0x01, 0x00]);
        assert_eq!(v(7), [0x02, 0x01, 0x07]);
        assert_eq!(v(128), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(v(u64::MAX), [&[0x02, 0x09, 0x00][..], &[0xff; 8]].concat());
    }
}
