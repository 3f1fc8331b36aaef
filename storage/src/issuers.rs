//! Reads of the issuer projection (sled tree `issuers`): the rotation records the server
//! loads at start, and each later issuer's CRL numbers.

use ca_core::Event;
use ca_core::event::IssuingCaRotated;

use crate::store::{EventStore, decode_record};
use crate::{StoreError, codec};

impl EventStore {
    /// Every `IssuingCaRotated` record (durable), by generation, oldest first. The server
    /// reads this at start to know every issuer besides the one of [`ca`](Self::ca).
    pub fn issuers(&self) -> Result<Vec<IssuingCaRotated>, StoreError> {
        let next = self.next_seq();
        let sh = self.shared();
        let mut out = Vec::new();
        for item in sh.trees.issuers.iter() {
            let (k, v) = item?;
            let (kind, generation) = codec::parse_issuer_key(&k)?;
            let Some(seq) = codec::be_u64(&v).filter(|s| kind == b'r' && *s < next) else { continue };
            let raw = sh.read_raw(seq)?.ok_or_else(|| StoreError::Corrupt {
                seq,
                detail: format!("issuer index points generation {generation} at a missing record"),
            })?;
            match decode_record(seq, &raw)?.event {
                Event::IssuingCaRotated(r) if r.generation == generation => out.push(r),
                other => {
                    return Err(StoreError::Corrupt {
                        seq,
                        detail: format!("issuer index points at a {} record", other.kind()),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Highest full CRL number issuer `generation` published (0 when none).
    pub fn last_crl_number_of(&self, generation: u32) -> Result<u64, StoreError> {
        if generation == 0 {
            return self.last_crl_number();
        }
        let v = self.shared().trees.issuers.get(codec::issuer_crl_key(generation))?;
        Ok(v.and_then(|v| codec::be_u64(&v)).unwrap_or(0))
    }
}
