//! The commit journal read at open (`storage/src/journal.rs`), then what recovery does with
//! each record: split the log value, check its hash, decode its event. Each input is
//! decoded twice: as it is, and with every frame's CRC recomputed, so the fuzzer's
//! mutations also reach the record decoder behind the checksum.

use ca_core::chain::record_hash;
use ca_proto::convert::{decode_event, decode_event_index};
use ca_storage::fuzzing::{decode_journal, decode_log_value};

const MAGIC: &[u8; 4] = b"CAJ1";
const FRAME_HEADER: usize = 12;

pub fn run(data: &[u8]) {
    decode(data);
    let fixed = with_fixed_crcs(data);
    if fixed != data {
        decode(&fixed);
    }
}

fn decode(bytes: &[u8]) {
    // A refusal (a corrupt frame with intact frames after it) is an answer, not a finding.
    let Ok((records, valid)) = decode_journal(bytes) else { return };
    assert!(valid <= bytes.len());
    // The intact prefix alone reads back the same records, and all of it is intact.
    let (again, valid_again) = decode_journal(&bytes[..valid]).expect("an intact prefix is never refused");
    assert_eq!(valid_again, valid);
    assert_eq!(again, records);
    for (seq, value) in &records {
        let Ok((prev, hash, _at, event)) = decode_log_value(*seq, value) else { continue };
        let _chains = record_hash(&prev, *seq, event) == hash;
        let _ = decode_event_index(event);
        let _ = decode_event(event);
    }
}

/// The input with each frame's CRC set to its body's, walking frames as the reader does
/// (stops at the first header that is not a frame or a body that runs past the end).
fn with_fixed_crcs(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0usize;
    while let Some(header) = out.get(at..at + FRAME_HEADER) {
        if &header[..4] != MAGIC {
            break;
        }
        let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let Some(body) = out.get(at + FRAME_HEADER..at + FRAME_HEADER + body_len) else { break };
        let crc = crc32fast::hash(body);
        out[at + 8..at + FRAME_HEADER].copy_from_slice(&crc.to_be_bytes());
        at += FRAME_HEADER + body_len;
    }
    out
}
