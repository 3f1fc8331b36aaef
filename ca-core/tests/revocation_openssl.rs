//! CRL and OCSP builders checked with a tool we did not write: the `openssl` CLI (3.x).
//! Each test skips (with a note on stderr) only when `openssl` is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ca_core::ca::{self, IssuingCa, der_to_pem};
use ca_core::crl::{CrlInput, RevokedCert, build_crl, crl_to_pem};
use ca_core::event::{CertificateIssued, RevocationReason};
use ca_core::issue::{Authority, IssueRequest, PublicUrls};
use ca_core::keys::KeyAlgorithm;
use ca_core::ocsp::{
    self, CertStatus, HashAlgorithm, OcspError, OcspResponder, OcspResponseStatus, SingleAnswer,
    build_response, error_response, parse_request,
};
use ca_core::policy::{Policy, PolicyConfig};
use ca_core::profile::Profiles;
use ca_core::signer::SoftwareSigner;
use ca_core::{Serial, UnixSeconds};
use proptest::prelude::*;
use tempfile::TempDir;

/// These tests verify our CRLs and OCSP answers with a tool we did not write; without it they
/// fail rather than pass unchecked (scripts/test.sh installs openssl when it is missing).
fn require_openssl() {
    let ok = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "the openssl CLI is needed (apt-get install openssl, or run scripts/test.sh)");
}

fn now() -> UnixSeconds {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A CA on disk: `root.pem`, `int.pem`, `chain.pem` (intermediate + root) in a tempdir.
struct Pki {
    dir: TempDir,
    ca: Arc<IssuingCa>,
    auth: Authority,
}

impl Pki {
    fn new(alg: KeyAlgorithm) -> Pki {
        let m = ca::generate(alg, "Revocation Test", time::OffsetDateTime::now_utc()).unwrap();
        let signer = Arc::new(
            SoftwareSigner::from_pkcs8(m.intermediate_key.as_ref().expect("software key").der()).unwrap(),
        );
        let ca = Arc::new(IssuingCa::new(m.intermediate_der, m.root_der, signer).unwrap());
        let auth = Authority::new(
            ca.clone(),
            Policy::new(PolicyConfig::default()).unwrap(),
            Profiles::default(),
            &PublicUrls::from_base("http://127.0.0.1:8080").unwrap(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir, ca, auth };
        pki.write("root.pem", der_to_pem(&pki.ca.root_der).as_bytes());
        pki.write("int.pem", der_to_pem(&pki.ca.cert_der).as_bytes());
        pki.write("chain.pem", pki.ca.chain_pem.as_bytes());
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Issue a leaf for `name` and write it to `<file>`.
    fn leaf(&self, name: &str, file: &str) -> CertificateIssued {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr =
            rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().serialize_request(&key).unwrap();
        let issued = self
            .auth
            .issue(IssueRequest {
                csr: csr.der(),
                profile: "",
                validity_secs: 0,
                requester: "test",
                now: now(),
            })
            .unwrap();
        self.write(file, der_to_pem(&issued.certificate_der).as_bytes());
        issued
    }

    /// `openssl ocsp` reading back req.der/resp.der: verifies the response against the
    /// chain and prints it (`extra` adds e.g. `-cert leaf.pem`).
    fn check_response(&self, extra: &[&str]) -> (bool, String) {
        let mut args = vec![
            "ocsp",
            "-reqin",
            "req.der",
            "-respin",
            "resp.der",
            "-issuer",
            "int.pem",
            "-CAfile",
            "chain.pem",
            "-resp_text",
        ];
        args.extend_from_slice(extra);
        self.openssl(&args)
    }

    /// `openssl ocsp` reading back resp.der alone (no request, so no nonce check): verifies
    /// it against the chain and prints a status line per `-cert` in `extra`.
    fn summarize_response(&self, extra: &[&str]) -> (bool, String) {
        let mut args =
            vec!["ocsp", "-respin", "resp.der", "-issuer", "int.pem", "-CAfile", "chain.pem", "-no_nonce"];
        args.extend_from_slice(extra);
        self.openssl(&args)
    }

    /// Run openssl in the tempdir; returns (success, stdout + stderr).
    fn openssl(&self, args: &[&str]) -> (bool, String) {
        openssl_in(self.dir.path(), args)
    }
}

fn openssl_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn revoked(serial: &Serial, reason: RevocationReason, invalidity_date: Option<UnixSeconds>) -> RevokedCert {
    RevokedCert { serial: serial.clone(), revoked_at: now() - 30, reason, invalidity_date }
}

/// openssl prints serials as uppercase hex without separators in `crl -text`.
fn upper(s: &Serial) -> String {
    s.to_hex().to_uppercase()
}

// ---------------------------------------------------------------------------------------
// CRL
// ---------------------------------------------------------------------------------------

#[test]
fn full_crl_verifies_lists_reasons_and_rejects_the_revoked_leaf() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let good = pki.leaf("good.example.internal", "good.pem");
    let bad = pki.leaf("bad.example.internal", "bad.pem");
    let plain = pki.leaf("plain.example.internal", "plain.pem");
    let t = now();
    let entries = vec![
        revoked(&bad.serial, RevocationReason::KeyCompromise, Some(t - 86_400)),
        revoked(&plain.serial, RevocationReason::Unspecified, None),
    ];
    let crl = build_crl(
        &pki.ca,
        &CrlInput {
            number: 7,
            this_update: t - 60,
            next_update: t + 86_400,
            entries: &entries,
            delta_base: None,
            freshest_crl_url: Some("http://127.0.0.1:8080/crl/delta"),
        },
    )
    .unwrap();
    pki.write("crl.der", &crl);
    pki.write("crl.pem", crl_to_pem(&crl).as_bytes());

    let (ok, out) =
        pki.openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "chain.pem", "-noout"]);
    assert!(ok && out.contains("verify OK"), "{out}");

    let (ok, text) = pki.openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("Version 2 (0x1)"), "{text}");
    assert!(text.contains("Signature Algorithm: ecdsa-with-SHA256"), "{text}");
    assert!(text.contains("X509v3 CRL Number:") && text.contains("\n                7\n"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier:"), "{text}");
    assert!(text.contains("X509v3 Freshest CRL:"), "{text}");
    assert!(text.contains("URI:http://127.0.0.1:8080/crl/delta"), "{text}");
    assert!(!text.contains("Delta CRL Indicator"), "{text}");
    assert!(text.contains(&upper(&bad.serial)) && text.contains(&upper(&plain.serial)), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("Invalidity Date:"), "{text}");
    assert_eq!(text.matches("X509v3 CRL Reason Code").count(), 1, "unspecified writes no reason: {text}");
    assert!(!text.contains(&upper(&good.serial)), "{text}");

    // The AKI is the issuing CA's SKI: openssl matches them when it picks the CRL.
    let (_, int_text) = pki.openssl(&["x509", "-in", "int.pem", "-noout", "-text"]);
    let ski = int_text
        .split("X509v3 Subject Key Identifier:")
        .nth(1)
        .and_then(|s| s.lines().nth(1))
        .unwrap()
        .trim()
        .to_string();
    assert!(text.contains(&ski), "AKI {ski} not in {text}");

    let verify = |leaf: &str| {
        pki.openssl(&["verify", "-crl_check", "-CAfile", "chain.pem", "-CRLfile", "crl.pem", leaf])
    };
    let (ok, out) = verify("bad.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify("plain.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify("good.pem");
    assert!(ok && out.contains("good.pem: OK"), "{out}");
}

#[test]
fn empty_crl_omits_the_list_and_verifies() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    pki.leaf("good.example.internal", "good.pem");
    let t = now();
    let crl = build_crl(
        &pki.ca,
        &CrlInput {
            number: 1,
            this_update: t,
            next_update: t + 600,
            entries: &[],
            delta_base: None,
            freshest_crl_url: None,
        },
    )
    .unwrap();
    pki.write("crl.der", &crl);
    pki.write("crl.pem", crl_to_pem(&crl).as_bytes());
    let (ok, out) =
        pki.openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "chain.pem", "-noout", "-text"]);
    assert!(ok && out.contains("verify OK") && out.contains("No Revoked Certificates."), "{out}");
    let (ok, out) =
        pki.openssl(&["verify", "-crl_check", "-CAfile", "chain.pem", "-CRLfile", "crl.pem", "good.pem"]);
    assert!(ok, "{out}");
}

#[test]
fn delta_crl_verifies_names_its_base_and_openssl_applies_it() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let old = pki.leaf("old.example.internal", "old.pem");
    let new = pki.leaf("new.example.internal", "new.pem");
    pki.leaf("good.example.internal", "good.pem");
    let t = now();
    let full_entries = vec![revoked(&old.serial, RevocationReason::Superseded, None)];
    let full = build_crl(
        &pki.ca,
        &CrlInput {
            number: 10,
            this_update: t - 60,
            next_update: t + 86_400,
            entries: &full_entries,
            delta_base: None,
            freshest_crl_url: Some("http://127.0.0.1:8080/crl/delta"),
        },
    )
    .unwrap();
    let delta_entries = vec![revoked(&new.serial, RevocationReason::CessationOfOperation, None)];
    let delta = build_crl(
        &pki.ca,
        &CrlInput {
            number: 11,
            this_update: t - 30,
            next_update: t + 3_600,
            entries: &delta_entries,
            delta_base: Some(10),
            freshest_crl_url: None,
        },
    )
    .unwrap();
    pki.write("full.pem", crl_to_pem(&full).as_bytes());
    pki.write("delta.der", &delta);
    pki.write("delta.pem", crl_to_pem(&delta).as_bytes());

    let (ok, out) = pki.openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        "delta.der",
        "-CAfile",
        "chain.pem",
        "-noout",
        "-text",
    ]);
    assert!(ok && out.contains("verify OK"), "{out}");
    assert!(out.contains("X509v3 Delta CRL Indicator: critical"), "{out}");
    assert!(out.contains("Cessation Of Operation"), "{out}");
    assert!(!out.contains("Freshest CRL"), "{out}");
    let base = out.split("X509v3 Delta CRL Indicator: critical").nth(1).unwrap();
    assert_eq!(base.lines().nth(1).map(str::trim), Some("10"), "{out}");

    let verify = |leaf: &str| {
        pki.openssl(&[
            "verify",
            "-crl_check",
            "-extended_crl",
            "-use_deltas",
            "-CAfile",
            "chain.pem",
            "-CRLfile",
            "full.pem",
            "-CRLfile",
            "delta.pem",
            leaf,
        ])
    };
    let (ok, out) = verify("new.pem");
    assert!(!ok && out.contains("certificate revoked"), "revoked only in the delta: {out}");
    let (ok, out) = verify("old.pem");
    assert!(!ok && out.contains("certificate revoked"), "revoked in the base: {out}");
    let (ok, out) = verify("good.pem");
    assert!(ok, "{out}");
}

#[test]
fn crl_signed_with_p384_ed25519_and_rsa_verifies() {
    require_openssl();
    for (alg, sig_name) in [
        (KeyAlgorithm::EcdsaP384, "ecdsa-with-SHA384"),
        (KeyAlgorithm::Ed25519, "ED25519"),
        (KeyAlgorithm::Rsa2048, "sha256WithRSAEncryption"),
    ] {
        let pki = Pki::new(alg);
        let t = now();
        let serials: Vec<Serial> = (1u8..=3).map(|i| Serial::from_bytes(&[0x42, i]).unwrap()).collect();
        let entries: Vec<_> =
            serials.iter().map(|s| revoked(s, RevocationReason::AffiliationChanged, None)).collect();
        let crl = build_crl(
            &pki.ca,
            &CrlInput {
                number: 3,
                this_update: t,
                next_update: t + 600,
                entries: &entries,
                delta_base: None,
                freshest_crl_url: None,
            },
        )
        .unwrap();
        pki.write("crl.der", &crl);
        let (ok, out) = pki.openssl(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "chain.pem",
            "-noout",
            "-text",
        ]);
        assert!(ok && out.contains("verify OK"), "{alg}: {out}");
        assert!(out.contains(&format!("Signature Algorithm: {sig_name}")), "{alg}: {out}");
        assert_eq!(out.matches("Affiliation Changed").count(), 3, "{alg}: {out}");
    }
}

#[test]
fn crl_input_is_validated() {
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let t = now();
    let base = CrlInput {
        number: 5,
        this_update: t,
        next_update: t + 60,
        entries: &[],
        delta_base: None,
        freshest_crl_url: None,
    };
    assert!(
        build_crl(&pki.ca, &CrlInput { next_update: t, ..base }).is_err(),
        "nextUpdate must follow thisUpdate"
    );
    assert!(build_crl(&pki.ca, &CrlInput { delta_base: Some(5), ..base }).is_err(), "base must be older");
    assert!(
        build_crl(&pki.ca, &CrlInput { delta_base: Some(4), freshest_crl_url: Some("http://x/d"), ..base })
            .is_err(),
        "no Freshest CRL in a delta"
    );
    assert!(build_crl(&pki.ca, &CrlInput { freshest_crl_url: Some("http://ü/"), ..base }).is_err());
    assert!(build_crl(&pki.ca, &CrlInput { delta_base: Some(4), ..base }).is_ok());
}

/// A large CRL is well-formed: x509-parser (not our code) reads every entry back.
#[test]
fn large_crl_round_trips_through_x509_parser() {
    use x509_parser::prelude::{FromDer, ParsedExtension};
    use x509_parser::revocation_list::CertificateRevocationList;

    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let rng = ring::rand::SystemRandom::new();
    let t = now();
    let entries: Vec<RevokedCert> = (0..5_000)
        .map(|i| RevokedCert {
            serial: Serial::random(&rng).unwrap(),
            revoked_at: t - i,
            reason: RevocationReason::ALL[(i % 10) as usize],
            invalidity_date: (i % 3 == 0).then_some(t - 100_000),
        })
        .collect();
    let der = build_crl(
        &pki.ca,
        &CrlInput {
            number: 1 << 40,
            this_update: t,
            next_update: t + 600,
            entries: &entries,
            delta_base: None,
            freshest_crl_url: None,
        },
    )
    .unwrap();
    let (rest, crl) = CertificateRevocationList::from_der(&der).unwrap();
    assert!(rest.is_empty());
    assert_eq!(crl.crl_number().map(|n| n.to_u64_digits()), Some(vec![1 << 40]));
    let listed: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(listed.len(), entries.len());
    for (got, want) in listed.iter().zip(&entries) {
        assert_eq!(got.raw_serial(), want.serial.as_bytes());
        assert_eq!(got.revocation_date.timestamp(), want.revoked_at);
        let reason = got.reason_code().map(|(_, r)| r.0 as u32);
        let want_reason = (want.reason != RevocationReason::Unspecified).then(|| want.reason.code());
        assert_eq!(reason, want_reason);
        let inv = got.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::InvalidityDate(d) => Some(d.timestamp()),
            _ => None,
        });
        assert_eq!(inv, want.invalidity_date);
    }
}

// ---------------------------------------------------------------------------------------
// OCSP
// ---------------------------------------------------------------------------------------

/// `openssl ocsp` request for `leaf` (a file name) with the given digest flag and nonce choice.
fn ocsp_request(pki: &Pki, leaf_args: &[&str], digest: Option<&str>, nonce: bool, out: &str) -> Vec<u8> {
    // openssl wants the digest flag before -cert/-serial.
    let mut args = vec!["ocsp", "-issuer", "int.pem", "-reqout", out];
    if let Some(d) = digest {
        args.push(d);
    }
    args.extend_from_slice(leaf_args);
    if !nonce {
        args.push("-no_nonce");
    }
    let (ok, text) = pki.openssl(&args);
    assert!(ok, "{text}");
    std::fs::read(pki.path(out)).unwrap()
}

fn answer(id: &ocsp::CertId, status: CertStatus) -> SingleAnswer<'_> {
    let t = now();
    SingleAnswer { cert_id: id, status, this_update: t - 10, next_update: t + 3_600 }
}

#[test]
fn ocsp_good_revoked_unknown_with_sha1_and_sha256_cert_ids_and_nonces() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    let good = pki.leaf("good.example.internal", "good.pem");
    let bad = pki.leaf("bad.example.internal", "bad.pem");
    let revoked_at = now() - 100;
    let unknown_serial = "0x1234ABCD";

    for (digest, hash) in [(None, HashAlgorithm::Sha1), (Some("-sha256"), HashAlgorithm::Sha256)] {
        let cases: [(&[&str], &str, CertStatus, &str); 3] = [
            (&["-cert", "good.pem"], "good.pem", CertStatus::Good, "good.pem: good"),
            (
                &["-cert", "bad.pem"],
                "bad.pem",
                CertStatus::Revoked { time: revoked_at, reason: RevocationReason::KeyCompromise },
                "bad.pem: revoked",
            ),
            (&["-serial", unknown_serial], "", CertStatus::Unknown, "0x1234ABCD: unknown"),
        ];
        for (leaf_args, leaf_file, status, expect) in cases {
            // With a nonce: the response echoes it and openssl checks it against the request.
            let req = ocsp_request(&pki, leaf_args, digest, true, "req.der");
            let parsed = parse_request(&req).unwrap();
            assert_eq!(parsed.cert_ids.len(), 1);
            let id = &parsed.cert_ids[0];
            assert_eq!(id.hash, hash);
            assert!(responder.matches_issuer(id), "{hash:?}");
            let nonce = parsed.nonce.as_deref().expect("openssl sends a nonce by default");
            if leaf_file == "good.pem" {
                assert_eq!(id.serial.as_ref(), Some(&good.serial));
                assert_eq!(id, &responder.cert_id(hash, &good.serial), "canonical CertID equals openssl's");
            } else if leaf_file == "bad.pem" {
                assert_eq!(id.serial.as_ref(), Some(&bad.serial));
            } else {
                assert_eq!(id.serial, Some(Serial::from_hex("1234abcd").unwrap()));
            }
            let resp = build_response(&responder, &[answer(id, status)], now(), Some(nonce)).unwrap();
            pki.write("resp.der", &resp);
            let (ok, out) = pki.check_response(&[]);
            assert!(ok && out.contains("Response verify OK"), "{hash:?} {expect}: {out}");
            assert!(!out.contains("WARNING") && !out.contains("Nonce Verify error"), "{out}");
            assert!(out.contains("OCSP Nonce:"), "{out}");
            assert!(out.contains("Responder Id: "), "{out}");
            assert!(
                out.contains(if hash == HashAlgorithm::Sha1 {
                    "Hash Algorithm: sha1"
                } else {
                    "Hash Algorithm: sha256"
                }),
                "{out}"
            );

            // Without the request (no nonce check), openssl's per-certificate summary.
            let mut args = Vec::new();
            if let Some(d) = digest {
                args.push(d);
            }
            args.extend_from_slice(leaf_args);
            let (ok, out) = pki.summarize_response(&args);
            assert!(ok && out.contains("Response verify OK"), "{out}");
            assert!(out.contains(expect), "{expect}: {out}");
            if matches!(status, CertStatus::Revoked { .. }) {
                assert!(out.contains("Reason: keyCompromise"), "{out}");
                assert!(out.contains("Revocation Time:"), "{out}");
            }
            assert!(!out.contains("WARNING: Status times invalid"), "{out}");
        }
    }

    // Without a nonce in the request, none in the response.
    let req = ocsp_request(&pki, &["-cert", "good.pem"], None, false, "req.der");
    let parsed = parse_request(&req).unwrap();
    assert!(parsed.nonce.is_none());
    let resp =
        build_response(&responder, &[answer(&parsed.cert_ids[0], CertStatus::Good)], now(), None).unwrap();
    pki.write("resp.der", &resp);
    let (ok, out) = pki.check_response(&[]);
    assert!(ok && out.contains("Response verify OK") && !out.contains("OCSP Nonce"), "{out}");
}

#[test]
fn a_wrong_nonce_is_caught_by_openssl() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    pki.leaf("good.example.internal", "good.pem");
    let req = parse_request(&ocsp_request(&pki, &["-cert", "good.pem"], None, true, "req.der")).unwrap();
    let wrong = [0x04, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let resp = build_response(&responder, &[answer(&req.cert_ids[0], CertStatus::Good)], now(), Some(&wrong))
        .unwrap();
    pki.write("resp.der", &resp);
    let (ok, out) = pki.check_response(&[]);
    assert!(!ok && out.contains("Nonce Verify error"), "{out}");
}

#[test]
fn delegated_ocsp_signer_is_well_formed_and_its_responses_verify() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    pki.leaf("good.example.internal", "good.pem");
    let bad = pki.leaf("bad.example.internal", "bad.pem");
    let t = now();
    let (cert, key) = ocsp::issue_ocsp_signer(&pki.ca, KeyAlgorithm::EcdsaP256, t, 3 * 86_400).unwrap();
    pki.write("ocsp-signer.pem", der_to_pem(&cert).as_bytes());
    let (ok, text) = pki.openssl(&["x509", "-in", "ocsp-signer.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("OCSP Signing"), "{text}");
    assert!(text.contains("OCSP No Check"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("Revocation Test Intermediate CA OCSP Responder"), "{text}");
    let (ok, out) =
        pki.openssl(&["verify", "-CAfile", "chain.pem", "-purpose", "ocsphelper", "ocsp-signer.pem"]);
    assert!(ok, "{out}");

    let signer = Arc::new(SoftwareSigner::from_pkcs8(key.der()).unwrap());
    let responder = OcspResponder::delegated(&pki.ca, cert.clone(), signer).unwrap();
    assert_eq!(responder.delegated_cert_der(), Some(cert.as_slice()));
    assert_eq!(responder.delegated_not_after(), Some(t + 3 * 86_400));
    // Replaced half-way through its lifetime, counted from issuance (notBefore is backdated).
    assert_eq!(responder.delegated_halfway(), Some(t + 3 * 86_400 / 2));

    for (file, status, expect) in [
        ("good.pem", CertStatus::Good, "good.pem: good"),
        (
            "bad.pem",
            CertStatus::Revoked { time: t - 5, reason: RevocationReason::Superseded },
            "bad.pem: revoked",
        ),
    ] {
        let req =
            parse_request(&ocsp_request(&pki, &["-cert", file], Some("-sha256"), true, "req.der")).unwrap();
        let id = &req.cert_ids[0];
        if file == "bad.pem" {
            assert_eq!(id.serial.as_ref(), Some(&bad.serial));
        }
        let resp = build_response(&responder, &[answer(id, status)], now(), req.nonce.as_deref()).unwrap();
        pki.write("resp.der", &resp);
        let (ok, out) = pki.openssl(&[
            "ocsp",
            "-reqin",
            "req.der",
            "-respin",
            "resp.der",
            "-CAfile",
            "chain.pem",
            "-resp_text",
        ]);
        assert!(ok && out.contains("Response verify OK"), "{out}");
        assert!(out.contains("OCSP Responder"), "the signer certificate rides along: {out}");
        let (ok, out) = pki.summarize_response(&["-sha256", "-cert", file]);
        assert!(ok && out.contains("Response verify OK") && out.contains(expect), "{out}");
        if file == "bad.pem" {
            assert!(out.contains("Reason: superseded"), "{out}");
        }
    }
}

#[test]
fn delegated_responder_rejects_unsuitable_certificates() {
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let t = now();
    // A server leaf: no OCSPSigning EKU.
    let leaf = pki.leaf("svc.example.internal", "leaf.pem");
    let key = ca_core::keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let signer = Arc::new(SoftwareSigner::from_pkcs8(key.der()).unwrap());
    assert!(OcspResponder::delegated(&pki.ca, leaf.certificate_der, signer.clone()).is_err());
    // A proper signer certificate, but with someone else's key.
    let (cert, _) = ocsp::issue_ocsp_signer(&pki.ca, KeyAlgorithm::EcdsaP256, t, 3_600).unwrap();
    assert!(OcspResponder::delegated(&pki.ca, cert.clone(), signer).is_err());
    // Issued by another CA.
    let other = Pki::new(KeyAlgorithm::EcdsaP256);
    let (cert, key) = ocsp::issue_ocsp_signer(&other.ca, KeyAlgorithm::EcdsaP256, t, 3_600).unwrap();
    let signer = Arc::new(SoftwareSigner::from_pkcs8(key.der()).unwrap());
    assert!(OcspResponder::delegated(&pki.ca, cert.clone(), signer.clone()).is_err());
    assert!(OcspResponder::delegated(&other.ca, cert, signer).is_ok());
}

#[test]
fn a_csr_key_certified_as_ocsp_signer_makes_a_delegated_responder() {
    // What another instance sends the writer: a fresh key, a CSR whose names are not read.
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let (key, csr_der) = ca_core::csr::self_request(&[]).unwrap();
    let policy = ca_core::policy::Policy::new(ca_core::policy::PolicyConfig::default()).unwrap();
    let csr = ca_core::csr::check_key(&csr_der, &policy).unwrap();
    let cert = ocsp::ocsp_signer_cert(&pki.ca, &csr, now(), 3_600).unwrap();
    let signer = Arc::new(SoftwareSigner::from_pkcs8(&key).unwrap());
    let responder = OcspResponder::delegated(&pki.ca, cert, signer).unwrap();
    assert_eq!(responder.delegated_not_after(), Some(now() + 3_600));
    // Someone else's key for that certificate is refused.
    let (other, _) = ca_core::csr::self_request(&[]).unwrap();
    let cert = ocsp::ocsp_signer_cert(&pki.ca, &csr, now(), 3_600).unwrap();
    assert!(
        OcspResponder::delegated(&pki.ca, cert, Arc::new(SoftwareSigner::from_pkcs8(&other).unwrap()))
            .is_err()
    );
}

#[test]
fn ocsp_with_ed25519_ca_verifies() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::Ed25519);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    pki.leaf("good.example.internal", "good.pem");
    let req = parse_request(&ocsp_request(&pki, &["-cert", "good.pem"], None, true, "req.der")).unwrap();
    let resp = build_response(
        &responder,
        &[answer(&req.cert_ids[0], CertStatus::Good)],
        now(),
        req.nonce.as_deref(),
    )
    .unwrap();
    pki.write("resp.der", &resp);
    let (ok, out) = pki.check_response(&[]);
    assert!(ok && out.contains("Response verify OK") && out.contains("Cert Status: good"), "{out}");
    assert!(out.contains("ED25519"), "{out}");
}

#[test]
fn multi_cert_id_request_gets_one_answer_each() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    pki.leaf("a.example.internal", "a.pem");
    pki.leaf("b.example.internal", "b.pem");
    let req =
        parse_request(&ocsp_request(&pki, &["-cert", "a.pem", "-cert", "b.pem"], None, true, "req.der"))
            .unwrap();
    assert_eq!(req.cert_ids.len(), 2);
    let answers = [
        answer(&req.cert_ids[0], CertStatus::Good),
        answer(
            &req.cert_ids[1],
            CertStatus::Revoked { time: now() - 9, reason: RevocationReason::Unspecified },
        ),
    ];
    let resp = build_response(&responder, &answers, now(), req.nonce.as_deref()).unwrap();
    pki.write("resp.der", &resp);
    let (ok, out) = pki.summarize_response(&["-cert", "a.pem", "-cert", "b.pem"]);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    assert!(out.contains("a.pem: good") && out.contains("b.pem: revoked"), "{out}");
    assert!(!out.contains("Reason:"), "unspecified writes no reason: {out}");
}

#[test]
fn other_issuers_cert_ids_do_not_match() {
    require_openssl();
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let other = Pki::new(KeyAlgorithm::EcdsaP256);
    other.leaf("x.example.internal", "x.pem");
    let req = ocsp_request(&other, &["-cert", "x.pem"], Some("-sha256"), false, "req.der");
    let parsed = parse_request(&req).unwrap();
    assert!(OcspResponder::for_ca(&other.ca).unwrap().matches_issuer(&parsed.cert_ids[0]));
    assert!(!OcspResponder::for_ca(&pki.ca).unwrap().matches_issuer(&parsed.cert_ids[0]));
}

#[test]
fn error_responses_parse_in_openssl() {
    require_openssl();
    let dir = tempfile::tempdir().unwrap();
    for (status, text) in [
        (OcspResponseStatus::MalformedRequest, "malformedrequest (1)"),
        (OcspResponseStatus::InternalError, "internalerror (2)"),
        (OcspResponseStatus::TryLater, "trylater (3)"),
        (OcspResponseStatus::SigRequired, "sigrequired (5)"),
        (OcspResponseStatus::Unauthorized, "unauthorized (6)"),
    ] {
        std::fs::write(dir.path().join("err.der"), error_response(status)).unwrap();
        let (_, out) = openssl_in(dir.path(), &["ocsp", "-respin", "err.der", "-resp_text", "-noverify"]);
        assert!(out.contains(&format!("Responder Error: {text}")), "{out}");
    }
}

#[test]
fn responses_decode_with_x509_ocsp() {
    use ocsp_der::Decode;
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    let serial = Serial::from_hex("0102").unwrap();
    let id = responder.cert_id(HashAlgorithm::Sha256, &serial);
    let t = 1_800_000_000;
    let status = CertStatus::Revoked { time: t - 5, reason: RevocationReason::KeyCompromise };
    let resp = build_response(
        &responder,
        &[SingleAnswer { cert_id: &id, status, this_update: t, next_update: t + 60 }],
        t,
        Some(&[4, 2, 9, 9]),
    )
    .unwrap();
    let r = x509_ocsp::OcspResponse::from_der(&resp).unwrap();
    assert_eq!(r.response_status, x509_ocsp::OcspResponseStatus::Successful);
    let bytes = r.response_bytes.unwrap();
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    let data = &basic.tbs_response_data;
    assert_eq!(data.responses.len(), 1);
    assert_eq!(data.responses[0].cert_id.serial_number.as_bytes(), &[1, 2]);
    assert!(matches!(data.responses[0].cert_status, x509_ocsp::CertStatus::Revoked(_)));
    assert_eq!(basic.nonce().unwrap().0.as_bytes(), &[9, 9]);
    assert!(
        matches!(&data.responder_id, x509_ocsp::ResponderId::ByKey(k) if k.as_bytes() == responder.key_hash())
    );
    assert!(basic.certs.is_none());
}

// ---------------------------------------------------------------------------------------
// Hostile requests
// ---------------------------------------------------------------------------------------

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

/// An OCSPRequest with these CertIDs (DER) and an optional nonce extnValue.
fn request_der(cert_ids: &[&[u8]], nonce: Option<&[u8]>) -> Vec<u8> {
    let list: Vec<u8> = cert_ids.iter().flat_map(|id| tlv(0x30, id)).collect();
    let mut tbs = tlv(0x30, &list);
    if let Some(n) = nonce {
        let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]);
        let ext = tlv(0x30, &[oid, tlv(0x04, n)].concat());
        tbs.extend(tlv(0xa2, &tlv(0x30, &ext)));
    }
    tlv(0x30, &tlv(0x30, &tbs))
}

fn sample_request() -> (OcspResponder, Vec<u8>) {
    let pki = Pki::new(KeyAlgorithm::EcdsaP256);
    let responder = OcspResponder::for_ca(&pki.ca).unwrap();
    let id = responder.cert_id(HashAlgorithm::Sha1, &Serial::from_hex("7f0102030405").unwrap());
    let req = request_der(&[id.der()], Some(&[0x04, 0x04, 1, 2, 3, 4]));
    (responder, req)
}

#[test]
fn hand_built_requests_parse_and_bad_ones_are_refused() {
    let (responder, req) = sample_request();
    let parsed = parse_request(&req).unwrap();
    assert_eq!(parsed.nonce.as_deref(), Some(&[0x04, 0x04, 1, 2, 3, 4][..]));
    assert!(responder.matches_issuer(&parsed.cert_ids[0]));

    let id = responder.cert_id(HashAlgorithm::Sha256, &Serial::from_hex("01").unwrap());
    let nine: Vec<&[u8]> = std::iter::repeat_n(id.der(), 9).collect();
    assert!(matches!(
        parse_request(&request_der(&nine, None)),
        Err(OcspError::TooManyCertIds { count: 9, .. })
    ));
    assert!(parse_request(&request_der(&nine[..8], None)).is_ok());
    assert!(matches!(parse_request(&request_der(&[], None)), Err(OcspError::NoCertIds)));
    assert!(matches!(
        parse_request(&request_der(&[id.der()], Some(&[0u8; 200]))),
        Err(OcspError::NonceTooLong { .. })
    ));

    // Unknown hash OID (1.3.14.3.2.27 instead of SHA-1's .26): unauthorized, not malformed.
    let mut odd = parse_request(&req).unwrap().cert_ids[0].der().to_vec();
    let pos = odd.windows(5).position(|w| w == [0x2b, 0x0e, 0x03, 0x02, 0x1a]).unwrap();
    odd[pos + 4] = 0x1b;
    let err = parse_request(&request_der(&[&odd], None)).unwrap_err();
    assert!(matches!(err, OcspError::UnsupportedHash(_)), "{err}");
    assert_eq!(err.status(), OcspResponseStatus::Unauthorized);

    // A negative serial parses but names none of our certificates.
    let mut neg = id.der().to_vec();
    assert_eq!(neg[neg.len() - 3..], [0x02, 0x01, 0x01]);
    *neg.last_mut().unwrap() = 0x80;
    let parsed = parse_request(&request_der(&[&neg], None)).unwrap();
    assert_eq!(parsed.cert_ids[0].serial, None);

    let big = vec![0x30; ocsp::MAX_REQUEST_LEN + 1];
    let err = parse_request(&big).unwrap_err();
    assert!(matches!(err, OcspError::TooLarge { .. }));
    assert_eq!(err.status(), OcspResponseStatus::MalformedRequest);
    for junk in [&b""[..], b"\x30", b"\x30\x00", b"GET / HTTP/1.1\r\n", b"\x30\x84\xff\xff\xff\xff"] {
        assert!(parse_request(junk).is_err(), "{junk:?}");
    }
    // An explicitly encoded default version (v1), as some older clients write it.
    let list = tlv(0x30, &tlv(0x30, id.der()));
    let explicit_v1 = tlv(0x30, &tlv(0x30, &[&[0xa0, 0x03, 0x02, 0x01, 0x00][..], &list].concat()));
    assert_eq!(parse_request(&explicit_v1).unwrap().cert_ids[0], id);

    // Hash parameters absent instead of NULL: accepted, matched, and echoed as received.
    let no_null = [&[0x30, 0x54, 0x30, 0x0b][..], &id.der()[4..15], &id.der()[17..]].concat();
    assert_eq!(no_null[4..15], [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]);
    let parsed = parse_request(&request_der(&[&no_null], None)).unwrap();
    let got = &parsed.cert_ids[0];
    assert_eq!(got.der(), no_null.as_slice());
    assert_ne!(got.der(), id.der());
    assert!(responder.matches_issuer(got));
    let t = 1_800_000_000;
    let a = SingleAnswer { cert_id: got, status: CertStatus::Good, this_update: t, next_update: t + 60 };
    let resp = build_response(&responder, &[a], t, None).unwrap();
    assert!(resp.windows(no_null.len()).any(|w| w == no_null.as_slice()), "CertID echoed byte for byte");

    // Trailing bytes after the request.
    assert!(parse_request(&[req.as_slice(), &[0]].concat()).is_err());
}

#[test]
fn every_truncation_and_single_byte_change_of_a_request_is_handled() {
    let (_, req) = sample_request();
    for n in 0..req.len() {
        assert!(parse_request(&req[..n]).is_err(), "prefix of {n} bytes");
    }
    for i in 0..req.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0x81, 0xff, req[i] ^ 0x20] {
            let mut m = req.clone();
            m[i] = v;
            let _ = parse_request(&m);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_sequence_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_request(&tlv(0x30, &body));
        let _ = parse_request(&tlv(0x30, &tlv(0x30, &body)));
    }
}
