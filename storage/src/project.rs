//! The persisted projections: the same fold as `ca_core::projection::Inventory::apply`,
//! written into sled trees. Every operation is an overwrite keyed by the record, so
//! re-applying a suffix of the log in order (after a crash between the log write and the
//! `meta` update) converges to the same state.

use std::time::Instant;

use ca_core::projection::{CertEntry, RevokedEntry};
use ca_proto::convert::{IndexEvent, decode_event_index};
use sled::{Batch, IVec};

use crate::StoreError;
use crate::codec;

/// Counters kept in `meta` rather than derived per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProjState {
    /// Seq of the last `CaInitialized` record (the CA itself lives in the log).
    pub ca_seq: Option<u64>,
    /// Highest full (non-delta) CRL number published.
    pub last_crl: u64,
    /// Last record folded into the projections.
    pub through: Option<u64>,
}

impl ProjState {
    pub(crate) fn load(meta: &sled::Tree) -> Result<Self, StoreError> {
        let u64_at = |key: &[u8]| -> Result<Option<u64>, StoreError> {
            match meta.get(key)? {
                None => Ok(None),
                Some(v) => codec::be_u64(&v).map(Some).ok_or_else(|| StoreError::Corrupt {
                    seq: 0,
                    detail: format!(
                        "meta key {:?} holds {} bytes, expected 8",
                        String::from_utf8_lossy(key),
                        v.len()
                    ),
                }),
            }
        };
        Ok(ProjState {
            ca_seq: u64_at(codec::META_CA_SEQ)?,
            last_crl: u64_at(codec::META_LAST_CRL)?.unwrap_or(0),
            through: u64_at(codec::META_PROJECTED_THROUGH)?,
        })
    }

    /// Write these counters to `meta` (alone, without any index tree).
    pub(crate) fn store(&self, meta: &sled::Tree) -> Result<(), StoreError> {
        meta.apply_batch(self.meta_batch())?;
        Ok(())
    }

    fn meta_batch(&self) -> Batch {
        let mut b = Batch::default();
        match self.through {
            Some(t) => b.insert(codec::META_PROJECTED_THROUGH, &t.to_be_bytes()[..]),
            None => b.remove(codec::META_PROJECTED_THROUGH),
        }
        match self.ca_seq {
            Some(s) => b.insert(codec::META_CA_SEQ, &s.to_be_bytes()[..]),
            None => b.remove(codec::META_CA_SEQ),
        }
        b.insert(codec::META_LAST_CRL, &self.last_crl.to_be_bytes()[..]);
        b
    }
}

/// The sled trees of one store.
#[derive(Clone)]
pub(crate) struct Trees {
    pub db: sled::Db,
    pub log: sled::Tree,
    pub certs: sled::Tree,
    pub revoked: sled::Tree,
    pub expiry: sled::Tree,
    /// The ACME index: `AcmeKey::entry(seq)` -> empty (see `ca_core::acme::index`).
    pub acme: sled::Tree,
    /// Issuer generations: rotation record seqs and per-issuer CRL numbers (`codec`).
    pub issuers: sled::Tree,
    pub meta: sled::Tree,
}

impl Trees {
    pub(crate) fn open(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Trees {
            log: db.open_tree("log")?,
            certs: db.open_tree("certs")?,
            revoked: db.open_tree("revoked")?,
            expiry: db.open_tree("expiry")?,
            acme: db.open_tree("acme")?,
            issuers: db.open_tree("issuers")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }
}

/// Projection updates for a run of records, written key by key.
///
/// Not as `sled::Batch`es: in sled 0.34 every `apply_batch` seals the current I/O buffer
/// twice (`PageCache::pin_log`), and each seal hands a write to sled's I/O pool, whose
/// `notify_all` wakes every idle pool thread: about 30 context switches per group commit
/// under load. Atomicity is not needed here: the writer issues the index writes before
/// `meta`'s `projected_through`, sled recovers a prefix of its writes, and every index
/// write is an idempotent overwrite that a replay from `projected_through + 1` repeats.
#[derive(Default)]
pub(crate) struct ProjBatch {
    certs: Vec<(IVec, IVec)>,
    revoked: Vec<(IVec, IVec)>,
    expiry: Vec<(IVec, IVec)>,
    acme: Vec<(IVec, IVec)>,
    /// `issuers` writes; CRL numbers are kept as the maximum at commit.
    issuers: Vec<([u8; 5], u64)>,
}

impl ProjBatch {
    /// Fold one record in; mirrors `Inventory::apply_index` case by case.
    pub(crate) fn apply(&mut self, st: &mut ProjState, seq: u64, event: &IndexEvent) {
        match event {
            IndexEvent::CaInitialized => st.ca_seq = Some(seq),
            IndexEvent::Audit => {}
            IndexEvent::CertificateIssued { serial, not_after, issuer } => {
                let entry = CertEntry { seq, not_after: *not_after, issuer: *issuer };
                self.certs.push((serial.as_bytes().into(), codec::cert_value(&entry).as_ref().into()));
                self.expiry.push((codec::expiry_key(*not_after, serial).into(), IVec::default()));
            }
            IndexEvent::CertificateRevoked { serial, reason, revoked_at, invalidity_date } => {
                let entry = RevokedEntry {
                    seq,
                    reason: *reason,
                    revoked_at: *revoked_at,
                    invalidity_date: *invalidity_date,
                };
                self.revoked.push((serial.as_bytes().into(), codec::revoked_value(&entry)[..].into()));
            }
            // Delta CRLs do not advance the full CRL number.
            IndexEvent::CrlPublished { number, delta_base: None, issuer: 0 } => {
                st.last_crl = st.last_crl.max(*number)
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer } => {
                self.issuers.push((codec::issuer_crl_key(*issuer), *number))
            }
            IndexEvent::CrlPublished { delta_base: Some(_), .. } => {}
            IndexEvent::IssuingCaRotated { generation } => {
                self.issuers.push((codec::issuer_seq_key(*generation), seq))
            }
            IndexEvent::Acme(keys) => {
                self.acme.extend(keys.iter().map(|k| (k.entry(seq).into(), IVec::default())));
            }
        }
        st.through = Some(seq);
    }

    /// Index trees first, `meta` last, `projected_through` last of all: it never claims
    /// more than the trees hold. `before` is the state the batch started from (only the
    /// counters that changed are written).
    pub(crate) fn commit(self, trees: &Trees, before: &ProjState, st: &ProjState) -> Result<(), StoreError> {
        for (tree, writes) in [
            (&trees.certs, self.certs),
            (&trees.revoked, self.revoked),
            (&trees.expiry, self.expiry),
            (&trees.acme, self.acme),
        ] {
            for (k, v) in writes {
                tree.insert(k, v)?;
            }
        }
        for (k, v) in self.issuers {
            // A CRL number only grows; a rotation record's seq is simply its own.
            let keep = match (k[0], trees.issuers.get(k)?) {
                (b'c', Some(old)) => codec::be_u64(&old).unwrap_or(0).max(v),
                _ => v,
            };
            trees.issuers.insert(k, &keep.to_be_bytes()[..])?;
        }
        if st.ca_seq != before.ca_seq || st.last_crl != before.last_crl || st.through.is_none() {
            st.store(&trees.meta)?;
        } else if let Some(t) = st.through {
            trees.meta.insert(codec::META_PROJECTED_THROUGH, &t.to_be_bytes()[..])?;
        }
        Ok(())
    }
}

/// Records folded per sled batch during replay (bounds memory on a big log).
const REPLAY_CHUNK: u64 = 10_000;
/// Progress is logged every this many records.
const PROGRESS_EVERY: u64 = 100_000;

/// Fold the log records `from..end` into the projections (and `st`). Returns how many were
/// folded. `what` names the operation in progress logs.
pub(crate) fn fold_log(
    trees: &Trees,
    st: &mut ProjState,
    from: u64,
    end: u64,
    what: &'static str,
) -> Result<u64, StoreError> {
    let started = Instant::now();
    let mut batch = ProjBatch::default();
    let mut pending = 0u64;
    let mut before = *st;
    let n = for_each_indexed(&trees.log, from, end, |seq, event| {
        batch.apply(st, seq, &event);
        pending += 1;
        if pending == REPLAY_CHUNK {
            std::mem::take(&mut batch).commit(trees, &before, st)?;
            before = *st;
            pending = 0;
        }
        let done = seq + 1 - from;
        if done.is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(
                what,
                done,
                total = end - from,
                rate_per_sec = rate(done, started),
                "projection replay progress"
            );
        }
        Ok(())
    })?;
    if pending > 0 {
        batch.commit(trees, &before, st)?;
    }
    Ok(n)
}

/// Walk the log records `from..end` in order, decoding each for projection (the lean
/// decode: no certificate DER copied), and fail on any missing record, including at the
/// end. Shared by catch-up replay and rebuild. Returns how many records were visited.
pub(crate) fn for_each_indexed(
    log: &sled::Tree,
    from: u64,
    end: u64,
    mut f: impl FnMut(u64, IndexEvent) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut expected = from;
    if from < end {
        for item in log.range(codec::log_key(from)..codec::log_key(end)) {
            let (k, v) = item?;
            let seq = codec::parse_log_key(&k, expected)?;
            if seq != expected {
                return Err(StoreError::Corrupt {
                    seq: expected,
                    detail: format!("record missing from the log (the next one is {seq})"),
                });
            }
            let rec = codec::parse_log_value(seq, &v)?;
            let event = decode_event_index(rec.event)
                .map_err(|e| StoreError::Decode { seq, detail: e.to_string() })?;
            f(seq, event)?;
            expected += 1;
        }
    }
    if expected != end {
        return Err(StoreError::Corrupt {
            seq: expected,
            detail: format!("record missing from the log (expected records up to {})", end.saturating_sub(1)),
        });
    }
    Ok(expected - from)
}

pub(crate) fn rate(n: u64, since: Instant) -> u64 {
    let secs = since.elapsed().as_secs_f64();
    if secs > 0.0 { (n as f64 / secs) as u64 } else { n }
}
