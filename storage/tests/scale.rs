//! Reopen time with a big inventory (the server must answer within seconds of a restart
//! with 1,000,000 certificates). Ignored by default: it writes ~N x 700 bytes. Run with
//! `SCALE_CERTS=1000000 cargo test --release -p ca-storage --test scale -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::time::Instant;

use ca_core::Event;
use ca_core::event::CertificateIssued;
use ca_storage::EventStore;

#[test]
#[ignore = "slow: writes a large log"]
fn reopening_a_large_store_replays_nothing_and_is_fast() {
    let n: u64 = std::env::var("SCALE_CERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<Event> = (i..(i + 4096).min(n))
            .map(|k| {
                Event::CertificateIssued(CertificateIssued {
                    serial: common::serial(k),
                    certificate_der: vec![0x30; 560],
                    profile: "server".into(),
                    requester: "grpc:127.0.0.1:1".into(),
                    not_before: 0,
                    not_after: 1_700_000_000 + k as i64,
                    names: vec![format!("svc-{k}.internal")],
                    issuer_generation: 0,
                })
            })
            .collect();
        i += batch.len() as u64;
        store.append_blocking(batch).unwrap();
    }
    eprintln!("appended {n} certificates in {:?}", t.elapsed());
    drop(store);

    let t = Instant::now();
    let store = EventStore::open(dir.path()).unwrap();
    let opened = t.elapsed();
    let first_lookup = store.cert(&common::serial(n / 2)).unwrap();
    eprintln!("reopened in {opened:?}; first lookup after {:?}", t.elapsed());
    assert!(first_lookup.is_some());
    assert_eq!(store.metrics().replayed_at_open, 0);
    assert_eq!(store.next_seq(), n);
    assert!(opened.as_secs() < 5, "reopen took {opened:?}");
}
