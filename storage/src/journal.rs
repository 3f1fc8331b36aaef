//! The commit journal: what makes a batch durable between sled checkpoints.
//!
//! Calling `sled::Db::flush` per batch was the most expensive part of an append: sled
//! hands each flush to its I/O thread pool, whose `notify_all` wakes every idle pool thread
//! (about 40 context switches per flush measured under load). Instead the writer applies a
//! batch to the sled trees (in memory), appends the batch's log values to this file with
//! one `write`, optionally `fdatasync`s it, and only then acknowledges. sled is flushed at
//! checkpoints (every [`CHECKPOINT_BYTES`] of journal or [`CHECKPOINT_INTERVAL`]), after
//! which the journal is emptied.
//!
//! On open, records the journal holds beyond sled's log are verified against the chain and
//! written back into the log (see `store.rs`), so an acknowledged record survives a crash
//! that lost sled's unflushed state.
//!
//! Layout: a sequence of frames, one per batch, each
//! `magic "CAJ1" || body_len u32 BE || crc32(body) u32 BE || body`, where the body is
//! records `seq u64 BE || value_len u32 BE || value` and `value` is exactly the `log` tree
//! value (`prev_hash || hash || recorded_at || event`). A torn or corrupt frame ends the
//! readable journal: it was never acknowledged (the acknowledgement follows the write).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const MAGIC: &[u8; 4] = b"CAJ1";
const FRAME_HEADER: usize = 12;

/// Empty the journal (after a sled flush) once it holds this many bytes...
pub(crate) const CHECKPOINT_BYTES: u64 = 16 << 20;
/// ...or this long after the last checkpoint, whichever comes first. Bounds the work of
/// an open after a crash (at most a few seconds of appends to write back into sled).
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// File name of the journal inside the store's directory (sled ignores names it does not
/// own).
pub(crate) const FILE_NAME: &str = "ca-journal";

pub(crate) struct Journal {
    file: File,
    len: u64,
    sync: bool,
    frame: Vec<u8>,
}

/// One record read back from the journal.
pub(crate) struct JournalRecord {
    pub seq: u64,
    pub value: Vec<u8>,
}

impl Journal {
    /// Open (creating) the journal and read every intact frame. `sync` makes each append
    /// and each truncation `fdatasync` the file before returning.
    pub(crate) fn open(dir: &Path, sync: bool) -> std::io::Result<(Journal, Vec<JournalRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE_NAME))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid) = parse(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                valid,
                total = bytes.len(),
                "commit journal ends with a torn or corrupt frame (an unacknowledged batch); ignoring it"
            );
        }
        let len = valid as u64;
        Ok((Journal { file, len, sync, frame: Vec::new() }, records))
    }

    /// Read the intact records of the journal in `dir` without opening it for writing.
    pub(crate) fn read(dir: &Path) -> std::io::Result<Vec<JournalRecord>> {
        match std::fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => Ok(parse(&bytes).0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Append one frame holding `records` (seq, log value); durable for a process crash
    /// when this returns, and for power loss too when the journal syncs.
    pub(crate) fn append<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> std::io::Result<()> {
        let f = &mut self.frame;
        f.clear();
        f.extend_from_slice(MAGIC);
        f.extend_from_slice(&[0; 8]);
        for (seq, value) in records {
            f.extend_from_slice(&seq.to_be_bytes());
            f.extend_from_slice(&u32::try_from(value.len()).map_err(std::io::Error::other)?.to_be_bytes());
            f.extend_from_slice(value);
        }
        let body_len = u32::try_from(f.len() - FRAME_HEADER).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(&f[FRAME_HEADER..]);
        f[4..8].copy_from_slice(&body_len.to_be_bytes());
        f[8..12].copy_from_slice(&crc.to_be_bytes());
        self.file.write_all_at(f, self.len)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.len += f.len() as u64;
        Ok(())
    }

    /// Empty the journal; only after sled holds (durably) everything it recorded.
    pub(crate) fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.len = 0;
        Ok(())
    }
}

/// The records of every intact frame from the start, and the length of that prefix.
pub(crate) fn parse(bytes: &[u8]) -> (Vec<JournalRecord>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + FRAME_HEADER) {
        if &header[..4] != MAGIC {
            break;
        }
        let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let crc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let Some(body) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + body_len) else { break };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(frame_records) = parse_body(body) else { break };
        records.extend(frame_records);
        at += FRAME_HEADER + body_len;
    }
    (records, at)
}

fn parse_body(mut body: &[u8]) -> Option<Vec<JournalRecord>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        let value = body.get(12..12 + len)?.to_vec();
        body = &body[12 + len..];
        out.push(JournalRecord { seq, value });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(j: &[JournalRecord]) -> Vec<(u64, Vec<u8>)> {
        j.iter().map(|r| (r.seq, r.value.clone())).collect()
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, got) = Journal::open(dir.path(), false).unwrap();
        assert!(got.is_empty());
        j.append([(0u64, &b"zero"[..]), (1, &b"one"[..])].into_iter()).unwrap();
        j.append([(2u64, &b"two"[..])].into_iter()).unwrap();
        let full = j.len();
        drop(j);
        let expect = vec![(0, b"zero".to_vec()), (1, b"one".to_vec()), (2, b"two".to_vec())];
        assert_eq!(recs(&Journal::read(dir.path()).unwrap()), expect);

        // Every truncation inside the second frame leaves exactly the first frame.
        let path = dir.path().join(FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        let first = FRAME_HEADER + (12 + 4) + (12 + 3);
        for cut in first..full as usize {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let (_, got) = Journal::open(dir.path(), false).unwrap();
            assert_eq!(recs(&got), expect[..2].to_vec(), "cut at {cut}");
        }
        // A flipped byte in the second frame's body drops that frame only.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(recs(&Journal::read(dir.path()).unwrap()), expect[..2].to_vec());
    }

    #[test]
    fn reset_empties_and_appends_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), true).unwrap();
        j.append([(5u64, &b"five"[..])].into_iter()).unwrap();
        j.reset().unwrap();
        assert_eq!(j.len(), 0);
        j.append([(6u64, &b"six"[..])].into_iter()).unwrap();
        drop(j);
        assert_eq!(recs(&Journal::read(dir.path()).unwrap()), vec![(6, b"six".to_vec())]);
        assert!(Journal::read(&dir.path().join("absent")).unwrap().is_empty());
    }
}
