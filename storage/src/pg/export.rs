//! Reading the shared database's log offline (`ca-server events --storage-url`), in order,
//! checking the chain as it goes, without joining the instances (no lease, no replica).

use ca_core::chain::ChainVerifier;
use ca_proto::convert::decode_event;

use super::{block_on, conn, follow, runtime};
use crate::{StoreError, StoredRecord};

const CHUNK: i64 = 5_000;

/// Hand each record from `from` on to `each` until it returns `false` or the log ends. The
/// chain is checked from record 0, so records before `from` are read (not handed over).
pub fn read_postgres(
    url: &str,
    from: u64,
    each: &mut (dyn FnMut(StoredRecord) -> bool + Send),
) -> Result<(), StoreError> {
    let cfg = conn::config(url)?;
    let rt = runtime()?;
    block_on(&rt, async {
        let client = conn::connect(&cfg).await?;
        let mut v = ChainVerifier::default();
        loop {
            let chunk = follow::fetch(&client, v.len(), CHUNK).await?;
            if chunk.is_empty() {
                return Ok(());
            }
            for (seq, prev_hash, hash, recorded_at_micros, event_bytes) in chunk {
                v.check(seq, &prev_hash, &hash, &event_bytes)
                    .map_err(|b| StoreError::Corrupt { seq: b.seq(), detail: b.to_string() })?;
                if seq < from {
                    continue;
                }
                let event = decode_event(&event_bytes).map_err(|e| StoreError::Corrupt {
                    seq,
                    detail: format!("event does not decode: {e}"),
                })?;
                let rec = StoredRecord { seq, prev_hash, hash, recorded_at_micros, event_bytes, event };
                if !each(rec) {
                    return Ok(());
                }
            }
        }
    })
}
