//! CSR intake must turn any input into a clear error, never a panic: random bytes,
//! truncations and single-byte changes of a real request, PEM framing damage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use ca_core::csr;
use ca_core::policy::{Policy, PolicyConfig};
use proptest::prelude::*;

fn valid_csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["svc.example.internal".to_string(), "10.0.0.1".to_string()])
            .unwrap();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn policy() -> Policy {
    Policy::new(PolicyConfig::default()).unwrap()
}

#[test]
fn the_valid_csr_passes_and_every_truncation_and_byte_flip_is_handled() {
    let der = valid_csr();
    let p = policy();
    let ok = csr::check(&der, &p).unwrap();
    assert_eq!(ok.names.len(), 2);
    for cut in 0..der.len() {
        assert!(csr::check(&der[..cut], &p).is_err(), "truncated at {cut} must not pass");
    }
    // The signed part (certificationRequestInfo: subject, key, requested names) must not
    // survive any change. The unsigned envelope around it is another matter: x509-parser
    // is lenient about some of its tags (e.g. a context tag instead of SEQUENCE), which
    // changes nothing that is certified, so flips there may parse; they must not panic.
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    let info = parsed.certification_request_info.raw;
    let start = info.as_ptr() as usize - der.as_ptr() as usize;
    let signed = start..start + info.len();
    let mut accepted_in_signed_part = vec![];
    for i in 0..der.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = der.clone();
            m[i] ^= bit;
            if let Ok(c) = csr::check(&m, &p) {
                assert_eq!(c.public_key_raw, ok.public_key_raw, "offset {i}: the certified key changed");
                assert_eq!(c.names, ok.names, "offset {i}: the certified names changed");
                if signed.contains(&i) {
                    accepted_in_signed_part.push(i);
                }
            }
        }
    }
    assert!(
        accepted_in_signed_part.is_empty(),
        "changes to the signed part verified at {accepted_in_signed_part:?}"
    );
}

#[test]
fn check_key_reads_the_key_and_signature_but_not_the_names() {
    // rcgen's default subject CN ("rcgen self signed cert") is no DNS name: `check` refuses
    // it as the request's name, `check_key` does not read names.
    let (_, der) = csr::self_request(&[]).unwrap();
    let p = policy();
    assert!(matches!(csr::check(&der, &p), Err(ca_core::Error::BadNames(_))));
    let c = csr::check_key(&der, &p).unwrap();
    assert!(c.names.is_empty() && !c.public_key_raw.is_empty());
    // A damaged signature is still refused.
    let mut bad = der.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(csr::check_key(&bad, &p).is_err());
}

#[test]
fn pem_damage_is_a_clear_error() {
    let der = valid_csr();
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let p = policy();
    assert!(csr::check(pem.as_bytes(), &p).is_ok());
    let wrong_tag = pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
    let e = csr::check(wrong_tag.as_bytes(), &p).unwrap_err();
    assert!(e.to_string().contains("expected \"CERTIFICATE REQUEST\""), "{e}");
    let cut = &pem[..pem.len() / 2];
    assert!(csr::check(cut.as_bytes(), &p).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = csr::check(&bytes, &policy());
    }

    #[test]
    fn random_bodies_behind_a_sequence_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut b = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
        b.extend_from_slice(&body);
        let _ = csr::check(&b, &policy());
    }
}
