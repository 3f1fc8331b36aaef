//! One group commit's rows: the log records and the projection rows they fold into, as
//! column arrays (each table is written with one `INSERT ... SELECT FROM unnest(...)`).

use std::collections::BTreeMap;
use std::sync::Arc;

use ca_proto::convert::IndexEvent;

use crate::StoredRecord;

/// `ca_certs` columns after the serial: (seq, not_after, issuer).
pub(crate) type CertRow = (i64, i64, i32);
/// `ca_revoked` columns after the serial: (seq, reason, revoked_at, invalidity_date).
pub(crate) type RevokedRow = (i64, i16, i64, Option<i64>);

#[derive(Default)]
pub(crate) struct Rows {
    pub seq: Vec<i64>,
    pub prev_hash: Vec<Vec<u8>>,
    pub hash: Vec<Vec<u8>>,
    pub recorded_at: Vec<i64>,
    pub event: Vec<Vec<u8>>,
    /// serial -> (seq, not_after, issuer); the last record for a serial wins, as in the fold.
    pub certs: BTreeMap<Vec<u8>, CertRow>,
    /// serial -> (seq, reason, revoked_at, invalidity_date).
    pub revoked: BTreeMap<Vec<u8>, RevokedRow>,
    /// generation -> rotation record seq.
    pub rotated: BTreeMap<i32, i64>,
    /// generation -> highest full CRL number in the batch.
    pub crl: BTreeMap<i32, i64>,
    pub acme_key: Vec<Vec<u8>>,
    pub acme_seq: Vec<i64>,
}

/// Seqs and times are u64 / i64 in the store and bigint in the database; a seq beyond
/// i64::MAX cannot occur (it would take centuries of appends).
pub(crate) fn db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Rows {
    pub(crate) fn of(records: &[Arc<StoredRecord>]) -> Rows {
        let mut rows = Rows::default();
        for r in records {
            rows.push(r);
        }
        rows
    }

    fn push(&mut self, r: &StoredRecord) {
        let seq = db_seq(r.seq);
        self.seq.push(seq);
        self.prev_hash.push(r.prev_hash.to_vec());
        self.hash.push(r.hash.to_vec());
        self.recorded_at.push(r.recorded_at_micros);
        self.event.push(r.event_bytes.clone());
        self.fold(seq, &r.event);
    }

    /// The projection rows of one record (without the log columns).
    pub(crate) fn fold(&mut self, seq: i64, event: &ca_core::Event) {
        // The same fold as the sled projections (`project.rs`), case by case.
        match IndexEvent::of(event) {
            IndexEvent::CaInitialized | IndexEvent::Audit => {}
            IndexEvent::CertificateIssued { serial, not_after, issuer } => {
                self.certs.insert(serial.as_bytes().to_vec(), (seq, not_after, issuer as i32));
            }
            IndexEvent::CertificateRevoked { serial, reason, revoked_at, invalidity_date } => {
                self.revoked.insert(
                    serial.as_bytes().to_vec(),
                    (seq, i16::try_from(reason.code()).unwrap_or(i16::MAX), revoked_at, invalidity_date),
                );
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer } => {
                let n = self.crl.entry(issuer as i32).or_default();
                *n = (*n).max(db_seq(number));
            }
            IndexEvent::CrlPublished { delta_base: Some(_), .. } => {}
            IndexEvent::IssuingCaRotated { generation } => {
                self.rotated.insert(generation as i32, seq);
            }
            IndexEvent::Acme(keys) => {
                for k in keys {
                    self.acme_key.push(k.encode());
                    self.acme_seq.push(seq);
                }
            }
        }
    }
}
