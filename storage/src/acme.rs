//! Reads of the ACME projection: the index tree maps each ACME object to the seqs of its
//! records; an object is read by folding those records (`ca_core::acme::model`).

use ca_core::Event;
use ca_core::acme::index::AcmeKey;

use crate::store::{EventStore, decode_record};
use crate::{StoreError, codec};

impl EventStore {
    /// The durable events of one ACME object, in log order.
    pub fn acme_events(&self, key: &AcmeKey) -> Result<Vec<(u64, Event)>, StoreError> {
        self.acme_events_under(&key.encode())
    }

    /// The durable events of every ACME object whose key starts with `prefix`, in key
    /// order (objects), then log order (records of one object).
    pub fn acme_events_under(&self, prefix: &[u8]) -> Result<Vec<(u64, Event)>, StoreError> {
        let next = self.next_seq();
        let sh = self.shared();
        let mut out = Vec::new();
        for item in sh.trees.acme.scan_prefix(prefix) {
            let (k, _) = item?;
            let seq = entry_seq(&k)?;
            // Index entries are written before the batch is durable; readers see only
            // what is.
            if seq >= next {
                continue;
            }
            let v = sh.read_raw(seq)?.ok_or_else(|| StoreError::Corrupt {
                seq,
                detail: "the ACME index points at a missing record".into(),
            })?;
            out.push((seq, decode_record(seq, &v)?.event));
        }
        Ok(out)
    }

    /// Seqs of one object's records after `after` (exclusive), at most `limit`: paging
    /// through an account's orders without reading them all.
    pub fn acme_seqs(&self, key: &AcmeKey, after: Option<u64>, limit: usize) -> Result<Vec<u64>, StoreError> {
        let next = self.next_seq();
        let prefix = key.encode();
        let start = match after {
            Some(s) => key.entry(s.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.shared().trees.acme.range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) || out.len() == limit {
                break;
            }
            let seq = entry_seq(&k)?;
            if seq < next {
                out.push(seq);
            }
        }
        Ok(out)
    }

    /// Seqs of one object's records, newest first, at most `limit`: the recent end of a
    /// long history (an account's live orders) without reading the rest.
    pub fn acme_seqs_newest(&self, key: &AcmeKey, limit: usize) -> Result<Vec<u64>, StoreError> {
        let next = self.next_seq();
        let mut out = Vec::new();
        for item in self.shared().trees.acme.scan_prefix(key.encode()).rev() {
            if out.len() == limit {
                break;
            }
            let (k, _) = item?;
            let seq = entry_seq(&k)?;
            if seq < next {
                out.push(seq);
            }
        }
        Ok(out)
    }
}

fn entry_seq(k: &[u8]) -> Result<u64, StoreError> {
    k.len()
        .checked_sub(8)
        .and_then(|at| codec::be_u64(&k[at..]))
        .ok_or_else(|| StoreError::Corrupt { seq: 0, detail: format!("ACME index key of {} bytes", k.len()) })
}
