//! Hot pieces of the signing core: CSR check, certificate build + sign, hash chain.
//! `cargo bench -p ca-core --bench issuance`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use std::sync::Arc;

use ca_core::ca::{self, IssuingCa};
use ca_core::issue::{Authority, IssueRequest, PublicUrls};
use ca_core::keys::KeyAlgorithm;
use ca_core::policy::{Policy, PolicyConfig};
use ca_core::profile::Profiles;
use ca_core::signer::SoftwareSigner;
use criterion::{Criterion, criterion_group, criterion_main};

fn setup() -> (Authority, Vec<u8>) {
    let m = ca::generate(KeyAlgorithm::EcdsaP256, "Bench", time::OffsetDateTime::now_utc()).unwrap();
    let signer = Arc::new(
        SoftwareSigner::from_pkcs8(m.intermediate_key.as_ref().expect("software key").der()).unwrap(),
    );
    let ica = Arc::new(IssuingCa::new(m.intermediate_der, m.root_der, signer).unwrap());
    let auth = Authority::new(
        ica,
        Policy::new(PolicyConfig::default()).unwrap(),
        Profiles::default(),
        &PublicUrls::from_base("http://127.0.0.1:8080").unwrap(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["svc.example.internal".to_string()]).unwrap();
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    (auth, csr)
}

fn benches(c: &mut Criterion) {
    let (auth, csr) = setup();
    let policy = Policy::new(PolicyConfig::default()).unwrap();
    c.bench_function("csr_check_p256", |b| b.iter(|| ca_core::csr::check(&csr, &policy).unwrap()));
    c.bench_function("issue_p256_end_to_end", |b| {
        b.iter(|| {
            auth.issue(IssueRequest {
                csr: &csr,
                profile: "",
                validity_secs: 0,
                requester: "bench",
                now: 1_800_000_000,
            })
            .unwrap()
        })
    });
    let ev = vec![7u8; 600];
    c.bench_function("chain_hash_600b", |b| b.iter(|| ca_core::chain::record_hash(&[0; 32], 42, &ev)));
}

criterion_group!(g, benches);
criterion_main!(g);
