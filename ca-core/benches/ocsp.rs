//! OCSP request parsing and response signing (the uncached path of the responder).
//! `cargo bench -p ca-core --bench ocsp`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use std::sync::Arc;

use ca_core::Serial;
use ca_core::ca::{self, IssuingCa};
use ca_core::event::RevocationReason;
use ca_core::keys::KeyAlgorithm;
use ca_core::ocsp::{CertStatus, HashAlgorithm, OcspResponder, SingleAnswer, build_response, parse_request};
use ca_core::signer::SoftwareSigner;
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: i64 = 1_800_000_000;

/// A one-CertID request with a 16-byte RFC 8954 nonce, as `openssl ocsp` sends it.
fn request(cert_id_der: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, c: &[u8]) -> Vec<u8> {
        assert!(c.len() < 128);
        [&[tag, c.len() as u8][..], c].concat()
    }
    let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]);
    let nonce = tlv(0x04, &tlv(0x04, &[7; 16]));
    let ext = tlv(0xa2, &tlv(0x30, &tlv(0x30, &[oid, nonce].concat())));
    let list = tlv(0x30, &tlv(0x30, cert_id_der));
    tlv(0x30, &tlv(0x30, &[list, ext].concat()))
}

fn benches(c: &mut Criterion) {
    let m = ca::generate(KeyAlgorithm::EcdsaP256, "Bench", time::OffsetDateTime::now_utc()).unwrap();
    let signer = Arc::new(
        SoftwareSigner::from_pkcs8(m.intermediate_key.as_ref().expect("software key").der()).unwrap(),
    );
    let ca = IssuingCa::new(m.intermediate_der, m.root_der, signer).unwrap();
    let responder = OcspResponder::for_ca(&ca).unwrap();
    let serial = Serial::random(&ring::rand::SystemRandom::new()).unwrap();
    let id = responder.cert_id(HashAlgorithm::Sha1, &serial);
    let req = request(id.der());
    assert_eq!(parse_request(&req).unwrap().cert_ids[0], id);

    c.bench_function("ocsp_parse_request", |b| b.iter(|| parse_request(&req).unwrap()));
    c.bench_function("ocsp_parse_match_build_sign_p256", |b| {
        b.iter(|| {
            let r = parse_request(&req).unwrap();
            assert!(responder.matches_issuer(&r.cert_ids[0]));
            let status = CertStatus::Revoked { time: NOW - 60, reason: RevocationReason::KeyCompromise };
            let a =
                SingleAnswer { cert_id: &r.cert_ids[0], status, this_update: NOW, next_update: NOW + 3_600 };
            build_response(&responder, &[a], NOW, r.nonce.as_deref()).unwrap()
        })
    });
}

criterion_group!(g, benches);
criterion_main!(g);
