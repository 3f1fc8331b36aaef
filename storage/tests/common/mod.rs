//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

pub mod model;
pub mod pg;

use ca_core::event::{CaInitialized, CertificateIssued, CertificateRevoked, CrlPublished, RevocationReason};
use ca_core::keys::KeyAlgorithm;
use ca_core::projection::Inventory;
use ca_core::{Event, Serial};
use ca_storage::{EventStore, StoredRecord};

pub fn serial(n: u64) -> Serial {
    let mut b = [0u8; 9];
    b[0] = 0x01;
    b[1..].copy_from_slice(&n.to_be_bytes());
    Serial::from_bytes(&b).unwrap()
}

pub fn issued(s: &Serial, not_after: i64) -> Event {
    Event::CertificateIssued(CertificateIssued {
        serial: s.clone(),
        certificate_der: vec![0x30, 0x82, 0x01, 0x00, 7, 7, 7],
        profile: "server".into(),
        requester: "test".into(),
        not_before: not_after - 3600,
        not_after,
        names: vec![format!("{}.internal", s.to_hex())],
        issuer_generation: 0,
    })
}

pub fn revoked(s: &Serial, reason: RevocationReason, at: i64, invalidity: Option<i64>) -> Event {
    Event::CertificateRevoked(CertificateRevoked {
        serial: s.clone(),
        reason,
        revoked_at: at,
        requester: "test".into(),
        invalidity_date: invalidity,
    })
}

pub fn crl(number: u64, delta_base: Option<u64>) -> Event {
    Event::CrlPublished(CrlPublished {
        number,
        this_update: 1,
        next_update: 2,
        delta_base,
        issuer_generation: 0,
        der_sha256: None,
    })
}

pub fn ca(tag: u8) -> Event {
    Event::CaInitialized(CaInitialized {
        root_der: vec![0x30, tag, 1],
        intermediate_der: vec![0x30, tag, 2],
        key_algorithm: KeyAlgorithm::EcdsaP256,
        imported: false,
    })
}

/// Every durable record, panicking on any read error (tests only).
pub fn all_records(store: &EventStore) -> Vec<StoredRecord> {
    store.range(0).collect::<Result<Vec<_>, _>>().unwrap()
}

/// The pure fold of the store's log: what the persisted projections must equal.
pub fn fold(store: &EventStore) -> Inventory {
    let mut inv = Inventory::default();
    for r in all_records(store) {
        inv.apply(r.seq, &r.event).unwrap();
    }
    inv
}

/// A mixed history of `n` events: a CA, issuances, revocations of issued serials, CRLs
/// (full and delta) and ACME events.
pub fn mixed_events(n: usize) -> Vec<Event> {
    let mut out = vec![ca(1)];
    let mut issued_so_far = 0u64;
    let mut i = 0u64;
    while out.len() < n {
        i += 1;
        let e = match i % 7 {
            0 if issued_so_far > 0 => {
                let s = serial((i * 31) % issued_so_far);
                let reason = RevocationReason::ALL[(i % 10) as usize];
                revoked(&s, reason, 1_000 + i as i64, i.is_multiple_of(3).then_some(500 + i as i64))
            }
            3 => crl(i, i.is_multiple_of(2).then_some(i - 1)),
            5 => Event::AccountRegistered(ca_core::event::AccountRegistered {
                account_id: format!("acct-{i}"),
                jwk_json: b"{}".to_vec(),
                thumbprint: format!("tp-{i}"),
                contact: vec![],
                terms_of_service_agreed: true,
                eab_kid: None,
                created_at: i as i64,
            }),
            _ => {
                issued_so_far += 1;
                issued(&serial(issued_so_far - 1), 1_000_000 + ((i as i64 * 7919) % 5_000) - 2_500)
            }
        };
        out.push(e);
    }
    out
}
