//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the decoders that read
//! bytes from disk, which must refuse anything malformed without panicking.

use ca_core::chain::Hash;

use crate::StoreError;

/// (seq, log value) records and the intact prefix's length.
pub type DecodedJournal = (Vec<(u64, Vec<u8>)>, usize);

/// The commit journal's frame decoder: (seq, log value) of every record in the intact
/// frames from the start, and the length of that prefix (what `open` keeps); `Err` when the
/// damage check refuses the bytes (a corrupt frame with intact frames after it).
pub fn decode_journal(bytes: &[u8]) -> Result<DecodedJournal, String> {
    let parsed = crate::journal::parse(bytes);
    crate::journal::check_damage(std::path::Path::new("ca-journal"), bytes, &parsed)
        .map_err(|e| e.to_string())?;
    Ok((parsed.records.into_iter().map(|r| (r.seq, r.value)).collect(), parsed.valid))
}

/// A `log` value (as the journal and the log tree hold it) split into prev_hash, hash,
/// recorded_at_micros and the event bytes.
pub fn decode_log_value(seq: u64, value: &[u8]) -> Result<(Hash, Hash, i64, &[u8]), StoreError> {
    let v = crate::codec::parse_log_value(seq, value)?;
    Ok((v.prev_hash, v.hash, v.recorded_at_micros, v.event))
}
