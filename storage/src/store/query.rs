//! The projection queries (certificates, the revoked set, the inventory) and the chain audit,
//! all over durable state only.

use std::ops::Bound;

use ca_core::chain::ChainVerifier;
use ca_core::projection::{CertEntry, Inventory, RevokedEntry};
use ca_core::{Event, Serial};
use ca_proto::convert::decode_event;

use super::{CertRecord, ChainFailure, ChainReport, EventStore, StatusFilter, ca_at, decode_record};
use crate::project::ProjState;
use crate::{StoreError, codec};

impl EventStore {
    /// A certificate by serial (durable state only).
    pub fn cert(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        let next = self.next_seq();
        let Some(v) = self.shared().trees.certs.get(serial.as_bytes())? else {
            return Ok(None);
        };
        let entry = codec::parse_cert_value(serial.as_bytes(), &v)?;
        if entry.seq >= next {
            return Ok(None);
        }
        let revoked = self.revoked_entry(serial.as_bytes(), next)?;
        self.cert_record(serial, entry.seq, revoked).map(Some)
    }

    fn revoked_entry(&self, serial: &[u8], next: u64) -> Result<Option<RevokedEntry>, StoreError> {
        match self.shared().trees.revoked.get(serial)? {
            None => Ok(None),
            Some(v) => {
                let e = codec::parse_revoked_value(serial, &v)?;
                Ok((e.seq < next).then_some(e))
            }
        }
    }

    fn cert_record(
        &self,
        serial: &Serial,
        seq: u64,
        revoked: Option<RevokedEntry>,
    ) -> Result<CertRecord, StoreError> {
        let v = self.shared().read_raw(seq)?.ok_or_else(|| StoreError::Corrupt {
            seq,
            detail: format!("certificate index points serial {serial} at a missing record"),
        })?;
        match decode_record(seq, &v)?.event {
            Event::CertificateIssued(issued) if &issued.serial == serial => {
                Ok(CertRecord { issued, issued_seq: seq, revoked })
            }
            other => Err(StoreError::Corrupt {
                seq,
                detail: format!("certificate index points serial {serial} at a {} record", other.kind()),
            }),
        }
    }

    /// A page of certificates ordered by serial bytes, starting after `after`. The second
    /// value is the last serial returned when the page is full (more may follow): pass it
    /// back as `after` for the next page.
    pub fn list_certs(
        &self,
        after: Option<&Serial>,
        limit: usize,
        filter: StatusFilter,
        now: i64,
    ) -> Result<(Vec<CertRecord>, Option<Serial>), StoreError> {
        let next = self.next_seq();
        let lower = match after {
            Some(s) => Bound::Excluded(s.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, None));
        }
        let trees = &self.shared().trees;
        if filter == StatusFilter::Revoked {
            // The revoked set is usually far smaller than the inventory: walk it instead.
            for item in trees.revoked.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
                let (k, v) = item?;
                let r = codec::parse_revoked_value(&k, &v)?;
                if r.seq >= next {
                    continue;
                }
                let serial = codec::parse_serial(&k)?;
                let Some(cv) = trees.certs.get(&k)? else { continue };
                let c = codec::parse_cert_value(&k, &cv)?;
                if c.seq >= next {
                    continue;
                }
                out.push(self.cert_record(&serial, c.seq, Some(r))?);
                if out.len() == limit {
                    return Ok((out, Some(serial)));
                }
            }
            return Ok((out, None));
        }
        for item in trees.certs.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
            let (k, v) = item?;
            let c = codec::parse_cert_value(&k, &v)?;
            if c.seq >= next {
                continue;
            }
            let revoked = self.revoked_entry(&k, next)?;
            let keep = match filter {
                StatusFilter::Any => true,
                StatusFilter::Valid => revoked.is_none() && c.not_after >= now,
                StatusFilter::Expired => revoked.is_none() && c.not_after < now,
                StatusFilter::Revoked => revoked.is_some(),
            };
            if !keep {
                continue;
            }
            let serial = codec::parse_serial(&k)?;
            out.push(self.cert_record(&serial, c.seq, revoked)?);
            if out.len() == limit {
                return Ok((out, Some(serial)));
            }
        }
        Ok((out, None))
    }

    /// The revoked set with each certificate's `not_after`, ordered by serial, for CRL
    /// building. Entries whose certificate is unknown (which `decide_revoke` never lets
    /// into the log) are skipped, as `Inventory::unexpired_revoked` does.
    pub fn revoked(&self) -> Result<Vec<(Serial, RevokedEntry, i64)>, StoreError> {
        self.revoked_where(|_| true)
    }

    /// [`revoked`](Self::revoked) restricted to certificates issuer `generation` signed:
    /// what that issuer's CRL lists.
    pub fn revoked_of(&self, generation: u32) -> Result<Vec<(Serial, RevokedEntry, i64)>, StoreError> {
        self.revoked_where(|c| c.issuer == generation)
    }

    fn revoked_where(
        &self,
        keep: impl Fn(&CertEntry) -> bool,
    ) -> Result<Vec<(Serial, RevokedEntry, i64)>, StoreError> {
        let next = self.next_seq();
        let trees = &self.shared().trees;
        let mut out = Vec::new();
        for item in trees.revoked.iter() {
            let (k, v) = item?;
            let r = codec::parse_revoked_value(&k, &v)?;
            if r.seq >= next {
                continue;
            }
            let Some(cv) = trees.certs.get(&k)? else { continue };
            let c = codec::parse_cert_value(&k, &cv)?;
            if keep(&c) {
                out.push((codec::parse_serial(&k)?, r, c.not_after));
            }
        }
        Ok(out)
    }

    /// The revocation of `serial`, if it is revoked.
    pub fn is_revoked(&self, serial: &Serial) -> Result<Option<RevokedEntry>, StoreError> {
        self.revoked_entry(serial.as_bytes(), self.next_seq())
    }

    /// Highest full CRL number published (0 when none).
    pub fn last_crl_number(&self) -> Result<u64, StoreError> {
        Ok(self.shared().committed().last_crl)
    }

    /// Walk every durable record recomputing the hash chain; report the first bad record.
    /// A record whose event does not decode counts as bad.
    pub fn verify_chain(&self) -> Result<ChainReport, ChainFailure> {
        let next = self.next_seq();
        let mut v = ChainVerifier::default();
        for item in self.range_raw(0) {
            let (seq, prev, hash, _, event) =
                item.map_err(|e| ChainFailure { seq: failure_seq(&e, v.len()), detail: e.to_string() })?;
            v.check(seq, &prev, &hash, &event)
                .map_err(|b| ChainFailure { seq: b.seq(), detail: b.to_string() })?;
            decode_event(&event)
                .map_err(|e| ChainFailure { seq, detail: format!("event does not decode: {e}") })?;
        }
        if v.len() != next {
            return Err(ChainFailure {
                seq: v.len(),
                detail: format!(
                    "record missing: the log should hold {next} records but ends after {}",
                    v.len()
                ),
            });
        }
        Ok(ChainReport { records: v.len(), head: v.head() })
    }

    /// The persisted projections read back into a `ca_core` [`Inventory`] (for equality
    /// checks against a fold of the log, and tools). Reads the trees as they are.
    pub fn inventory(&self) -> Result<Inventory, StoreError> {
        let sh = self.shared();
        let st = ProjState::load(&sh.trees.meta)?;
        let mut inv = Inventory {
            ca: st.ca_seq.map(|s| ca_at(sh, s)).transpose()?,
            last_crl_number: st.last_crl,
            applied: st.through,
            ..Inventory::default()
        };
        for item in sh.trees.certs.iter() {
            let (k, v) = item?;
            inv.certs.insert(codec::parse_serial(&k)?, codec::parse_cert_value(&k, &v)?);
        }
        for item in sh.trees.revoked.iter() {
            let (k, v) = item?;
            inv.revoked.insert(codec::parse_serial(&k)?, codec::parse_revoked_value(&k, &v)?);
        }
        for item in sh.trees.expiry.iter() {
            let (k, _) = item?;
            inv.expiry.insert(codec::parse_expiry_key(&k)?);
        }
        for item in sh.trees.acme.iter() {
            let (k, _) = item?;
            inv.acme.insert(k.to_vec());
        }
        for item in sh.trees.issuers.iter() {
            let (k, v) = item?;
            let (kind, g) = codec::parse_issuer_key(&k)?;
            let v = codec::be_u64(&v).ok_or_else(|| StoreError::Corrupt {
                seq: 0,
                detail: format!("issuers entry for generation {g} holds {} bytes, expected 8", v.len()),
            })?;
            if kind == b'r' {
                inv.issuers.insert(g, v)
            } else {
                inv.issuer_crl_numbers.insert(g, v)
            };
        }
        Ok(inv)
    }
}

/// The seq a read error is about: its own for record errors, else where the walk stood.
fn failure_seq(e: &StoreError, at: u64) -> u64 {
    match e {
        StoreError::Corrupt { seq, .. } | StoreError::Decode { seq, .. } => *seq,
        _ => at,
    }
}
