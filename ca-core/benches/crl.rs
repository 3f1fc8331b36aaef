//! CRL building and signing for a large revoked set (the target: 100,000 entries
//! in well under 2 s). `cargo bench -p ca-core --bench crl`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use std::sync::Arc;

use ca_core::Serial;
use ca_core::ca::{self, IssuingCa};
use ca_core::crl::{CrlInput, RevokedCert, build_crl};
use ca_core::event::RevocationReason;
use ca_core::keys::KeyAlgorithm;
use ca_core::signer::SoftwareSigner;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const NOW: i64 = 1_800_000_000;

fn issuing_ca(alg: KeyAlgorithm) -> IssuingCa {
    let m = ca::generate(alg, "Bench", time::OffsetDateTime::now_utc()).unwrap();
    let signer = Arc::new(
        SoftwareSigner::from_pkcs8(m.intermediate_key.as_ref().expect("software key").der()).unwrap(),
    );
    IssuingCa::new(m.intermediate_der, m.root_der, signer).unwrap()
}

/// `n` revoked certificates shaped like the real ones: 16-byte random serials, a reason
/// on most, an invalidity date on a third.
fn entries(n: usize) -> Vec<RevokedCert> {
    let rng = ring::rand::SystemRandom::new();
    let mut v: Vec<RevokedCert> = (0..n)
        .map(|i| RevokedCert {
            serial: Serial::random(&rng).unwrap(),
            revoked_at: NOW - i as i64,
            reason: RevocationReason::ALL[i % 6],
            invalidity_date: (i % 3 == 0).then_some(NOW - 86_400),
        })
        .collect();
    v.sort_by(|a, b| a.serial.cmp(&b.serial));
    v
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("crl");
    g.sample_size(10);
    for (alg, n) in [
        (KeyAlgorithm::EcdsaP256, 100_000),
        (KeyAlgorithm::EcdsaP256, 1_000),
        (KeyAlgorithm::Ed25519, 100_000),
    ] {
        let ca = issuing_ca(alg);
        let list = entries(n);
        let input = CrlInput {
            number: 42,
            this_update: NOW,
            next_update: NOW + 86_400,
            entries: &list,
            delta_base: None,
            freshest_crl_url: Some("http://127.0.0.1:8080/crl/delta"),
        };
        let size = build_crl(&ca, &input).unwrap().len();
        eprintln!("crl {alg} {n} entries: {size} bytes");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("build_and_sign_{n}_{alg}"), |b| b.iter(|| build_crl(&ca, &input).unwrap()));
    }
    g.finish();
}

criterion_group!(g, benches);
criterion_main!(g);
