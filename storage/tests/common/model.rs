//! The store's model: random appends and reopens, compared after every step against an
//! in-memory model (the list of event bytes, their hash chain, and `Inventory`'s pure
//! fold). Shared by the embedded (tests/model.rs) and PostgreSQL (tests/pg_store.rs) runs.

use ca_core::chain::{GENESIS, Hash, record_hash};
use ca_core::event::{CertificateIssued, CertificateRevoked, CrlPublished, RevocationReason};
use ca_core::projection::Inventory;
use ca_core::{Event, Serial};
use ca_proto::convert::{decode_event, encode_event};
use ca_storage::{Appended, EventStore};
use proptest::prelude::*;

#[derive(Debug, Clone)]
pub enum EvSpec {
    Issue {
        serial: Vec<u8>,
        not_after: i64,
    },
    /// Revokes the `pick`-th serial issued so far (an issuance when there is none yet).
    Revoke {
        pick: usize,
        reason: usize,
        at: i64,
        invalidity: Option<i64>,
    },
    Crl {
        number: u64,
        delta: bool,
    },
    Ca(u8),
}

#[derive(Debug, Clone)]
pub enum Op {
    Append(Vec<EvSpec>),
    Reopen,
    /// Reopen from nothing but the system of record (a shared store's replica removed);
    /// the embedded store treats it as `Reopen`.
    Resync,
}

fn serial_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A small pool, so re-issuing an existing serial happens too.
        (1u8..12).prop_map(|b| vec![b]),
        (1u8..=255, proptest::collection::vec(any::<u8>(), 0..19)).prop_map(|(f, mut rest)| {
            rest.insert(0, f);
            rest
        }),
    ]
}

fn ev_spec() -> impl Strategy<Value = EvSpec> {
    prop_oneof![
        4 => (serial_bytes(), any::<i64>()).prop_map(|(serial, not_after)| EvSpec::Issue { serial, not_after }),
        3 => (any::<usize>(), 0usize..10, any::<i64>(), proptest::option::of(any::<i64>()))
            .prop_map(|(pick, reason, at, invalidity)| EvSpec::Revoke { pick, reason, at, invalidity }),
        2 => (0u64..50, any::<bool>()).prop_map(|(number, delta)| EvSpec::Crl { number, delta }),
        1 => any::<u8>().prop_map(EvSpec::Ca),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(ev_spec(), 1..=5).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        1 => Just(Op::Resync),
    ]
}

#[derive(Default)]
pub struct Model {
    bytes: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
    inv: Inventory,
    issued: Vec<Serial>,
}

impl Model {
    pub fn event(&mut self, spec: &EvSpec) -> Event {
        match spec {
            EvSpec::Revoke { pick, reason, at, invalidity } if !self.issued.is_empty() => {
                Event::CertificateRevoked(CertificateRevoked {
                    serial: self.issued[pick % self.issued.len()].clone(),
                    reason: RevocationReason::ALL[*reason],
                    revoked_at: *at,
                    requester: "model".into(),
                    invalidity_date: *invalidity,
                })
            }
            EvSpec::Issue { serial, not_after } => self.issue(serial, *not_after),
            EvSpec::Revoke { at, .. } => self.issue(&[1], *at),
            EvSpec::Crl { number, delta } => Event::CrlPublished(CrlPublished {
                number: *number,
                this_update: 1,
                next_update: 2,
                delta_base: delta.then_some(number.saturating_sub(1).max(1)),
                // Spread over three issuers: each keeps its own CRL number.
                issuer_generation: (*number % 3) as u32,
                der_sha256: None,
            }),
            EvSpec::Ca(tag) => super::ca(*tag),
        }
    }

    fn issue(&mut self, serial: &[u8], not_after: i64) -> Event {
        let serial = Serial::from_bytes(serial).unwrap();
        let issuer_generation = u32::from(serial.as_bytes()[0] % 3);
        self.issued.push(serial.clone());
        Event::CertificateIssued(CertificateIssued {
            serial,
            certificate_der: vec![0x30; 40],
            profile: "server".into(),
            requester: "model".into(),
            not_before: 0,
            not_after,
            names: vec!["a.internal".into()],
            issuer_generation,
        })
    }

    /// Record an appended event the way the store must: chained bytes, folded decoded form.
    pub fn push(&mut self, e: &Event) -> Appended {
        let seq = self.bytes.len() as u64;
        let bytes = encode_event(e);
        let prev = self.hashes.last().copied().unwrap_or(GENESIS);
        let hash = record_hash(&prev, seq, &bytes);
        self.inv.apply(seq, &decode_event(&bytes).unwrap()).unwrap();
        self.bytes.push(bytes);
        self.hashes.push(hash);
        Appended { seq, hash }
    }

    pub fn check(&self, store: &EventStore) -> Result<(), TestCaseError> {
        let recs = super::all_records(store);
        prop_assert_eq!(recs.len(), self.bytes.len());
        for (i, r) in recs.iter().enumerate() {
            prop_assert_eq!(r.seq, i as u64);
            prop_assert_eq!(&r.event_bytes, &self.bytes[i]);
            prop_assert_eq!(r.hash, self.hashes[i]);
            prop_assert_eq!(r.prev_hash, if i == 0 { GENESIS } else { self.hashes[i - 1] });
            prop_assert_eq!(&r.event, &decode_event(&self.bytes[i]).unwrap());
        }
        prop_assert_eq!(store.inventory().unwrap(), self.inv.clone());
        let report = store.verify_chain().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report.records, self.bytes.len() as u64);
        prop_assert_eq!(report.head, self.hashes.last().copied().unwrap_or(GENESIS));
        let head = self.hashes.last().map(|h| Appended { seq: self.bytes.len() as u64 - 1, hash: *h });
        prop_assert_eq!(store.head(), head);
        prop_assert_eq!(store.next_seq(), self.bytes.len() as u64);
        prop_assert_eq!(store.last_crl_number().unwrap(), self.inv.last_crl_number);
        prop_assert_eq!(store.ca().unwrap(), self.inv.ca.clone());
        Ok(())
    }
}
