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
//! value (`prev_hash || hash || recorded_at || event`).
//!
//! Each checkpoint starts the emptied journal with a marker frame (magic `CAJK`, body
//! `next_seq u64 BE || head hash`): what sled held durably then. An open that finds sled's
//! log shorter than the marker knows sled's file lost acknowledged records (truncated or
//! damaged) instead of silently serving a shorter log.
//!
//! A torn or corrupt *last* frame was never acknowledged (the acknowledgement follows the
//! write) and is ignored. A corrupt frame with intact frames after it is damage to
//! acknowledged records: the open is refused (see [`JournalDamage`]).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ca_core::chain::Hash;

const MAGIC: &[u8; 4] = b"CAJ1";
const CHECKPOINT_MAGIC: &[u8; 4] = b"CAJK";
const FRAME_HEADER: usize = 12;
const CHECKPOINT_BODY: usize = 8 + 32;

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
    /// Bytes in the file.
    len: u64,
    /// Bytes of the leading checkpoint marker (0 in a journal written before markers).
    base: u64,
    sync: bool,
    frame: Vec<u8>,
}

/// One record read back from the journal.
pub(crate) struct JournalRecord {
    pub seq: u64,
    pub value: Vec<u8>,
}

/// What sled held durably at the last checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub next_seq: u64,
    pub head: Hash,
}

/// Everything an open reads from the journal.
pub(crate) struct Contents {
    pub records: Vec<JournalRecord>,
    pub checkpoint: Option<Checkpoint>,
}

/// A corrupt frame followed by intact ones: acknowledged records are damaged, so the
/// store does not open (reading past it would serve a log with a hole, stopping at it
/// would drop acknowledged records without a word).
#[derive(Debug, thiserror::Error)]
#[error(
    "the commit journal {path} is damaged: the frame at byte {offset} is corrupt but intact frames \
     follow it (at byte {next_intact}), so acknowledged records would be lost. Keep a copy of the \
     data dir, then restore it from a backup; if losing the records after the damage is acceptable, \
     move the journal aside and start again (`audit verify` then shows what the log holds)"
)]
pub struct JournalDamage {
    pub path: PathBuf,
    pub offset: usize,
    pub next_intact: usize,
}

/// Why the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Damaged(#[from] JournalDamage),
}

impl Journal {
    /// Open (creating) the journal and read every intact frame. `sync` makes each append
    /// and each truncation `fdatasync` the file before returning.
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<(Journal, Contents), JournalError> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let parsed = parse(&bytes);
        check_damage(&path, &bytes, &parsed)?;
        if parsed.valid < bytes.len() {
            tracing::warn!(
                valid = parsed.valid,
                total = bytes.len(),
                "commit journal ends with a torn frame: a batch that was never acknowledged (a crash mid-write); ignoring it, nothing to do"
            );
        }
        let len = parsed.valid as u64;
        let base = if parsed.checkpoint.is_some() { (FRAME_HEADER + CHECKPOINT_BODY) as u64 } else { 0 };
        let contents = Contents { records: parsed.records, checkpoint: parsed.checkpoint };
        Ok((Journal { file, len, base, sync, frame: Vec::new() }, contents))
    }

    /// Read the intact contents of the journal in `dir` without opening it for writing.
    pub(crate) fn read(dir: &Path) -> Result<Contents, JournalError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let parsed = parse(&bytes);
        check_damage(&path, &bytes, &parsed)?;
        Ok(Contents { records: parsed.records, checkpoint: parsed.checkpoint })
    }

    /// Bytes of record frames (the checkpoint marker not counted): 0 when nothing was
    /// journaled since the last checkpoint.
    pub(crate) fn len(&self) -> u64 {
        self.len - self.base
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
        seal(f)?;
        self.file.write_all_at(f, self.len)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.len += f.len() as u64;
        Ok(())
    }

    /// Empty the journal, leaving only the marker of `checkpoint`; only after sled holds
    /// (durably) everything the journal recorded, up to `checkpoint`.
    pub(crate) fn reset(&mut self, checkpoint: Checkpoint) -> std::io::Result<()> {
        self.file.set_len(0)?;
        let f = &mut self.frame;
        f.clear();
        f.extend_from_slice(CHECKPOINT_MAGIC);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&checkpoint.next_seq.to_be_bytes());
        f.extend_from_slice(&checkpoint.head);
        seal(f)?;
        self.file.write_all_at(f, 0)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.len = f.len() as u64;
        self.base = self.len;
        Ok(())
    }
}

/// Fill in a frame's length and CRC.
fn seal(f: &mut [u8]) -> std::io::Result<()> {
    let body_len = u32::try_from(f.len() - FRAME_HEADER).map_err(std::io::Error::other)?;
    let crc = crc32fast::hash(&f[FRAME_HEADER..]);
    f[4..8].copy_from_slice(&body_len.to_be_bytes());
    f[8..12].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

pub(crate) struct Parsed {
    pub records: Vec<JournalRecord>,
    pub checkpoint: Option<Checkpoint>,
    /// Length of the intact prefix.
    pub valid: usize,
}

enum Frame<'a> {
    Records(&'a [u8]),
    Checkpoint(Checkpoint),
}

/// The frame at the start of `bytes`, if it is whole and its CRC matches, with its length.
fn frame_at(bytes: &[u8]) -> Option<(Frame<'_>, usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let body = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(body_len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let frame = match &header[..4] {
        m if m == MAGIC => Frame::Records(body),
        m if m == CHECKPOINT_MAGIC && body.len() == CHECKPOINT_BODY => {
            let (seq, head) = body.split_at(8);
            Frame::Checkpoint(Checkpoint {
                next_seq: u64::from_be_bytes(seq.try_into().ok()?),
                head: head.try_into().ok()?,
            })
        }
        _ => return None,
    };
    Some((frame, FRAME_HEADER + body_len))
}

/// The records of every intact frame from the start, the checkpoint marker (only valid as
/// the first frame), and the length of that prefix.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed { records: Vec::new(), checkpoint: None, valid: 0 };
    while let Some((frame, len)) = frame_at(&bytes[out.valid..]) {
        match frame {
            Frame::Checkpoint(c) if out.valid == 0 => out.checkpoint = Some(c),
            Frame::Checkpoint(_) => break,
            Frame::Records(body) => {
                let Some(frame_records) = parse_body(body) else { break };
                out.records.extend(frame_records);
            }
        }
        out.valid += len;
    }
    out
}

/// Refuse a journal whose unreadable part is followed by an intact frame (see
/// [`JournalDamage`]); a torn tail has none. When the bad frame's header is readable and
/// its declared end lies inside the file, the search starts there: bytes inside the frame
/// are event data (a client-chosen CSR may contain anything, even something shaped like a
/// frame), never frames of their own. Otherwise every later offset is tried: a false
/// match refuses the open (fail-safe), it never drops a record.
pub(crate) fn check_damage(path: &Path, bytes: &[u8], parsed: &Parsed) -> Result<(), JournalDamage> {
    let bad = parsed.valid;
    let declared_end = bytes.get(bad..bad + FRAME_HEADER).and_then(|h| {
        (&h[..4] == MAGIC || &h[..4] == CHECKPOINT_MAGIC)
            .then(|| bad + FRAME_HEADER + u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize)
    });
    let from = declared_end.filter(|&end| end <= bytes.len()).unwrap_or(bad + 1);
    let next_intact = (from..bytes.len().saturating_sub(FRAME_HEADER - 1))
        .filter(|&at| matches!(&bytes[at..at + 4], m if m == MAGIC || m == CHECKPOINT_MAGIC))
        .find(|&at| frame_at(&bytes[at..]).is_some());
    match next_intact {
        Some(next_intact) => Err(JournalDamage { path: path.to_path_buf(), offset: bad, next_intact }),
        None => Ok(()),
    }
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

    fn read(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        recs(&Journal::read(dir).unwrap().records)
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, got) = Journal::open(dir.path(), false).unwrap();
        assert!(got.records.is_empty() && got.checkpoint.is_none());
        j.append([(0u64, &b"zero"[..]), (1, &b"one"[..])].into_iter()).unwrap();
        j.append([(2u64, &b"two"[..])].into_iter()).unwrap();
        let full = j.len();
        drop(j);
        let expect = vec![(0, b"zero".to_vec()), (1, b"one".to_vec()), (2, b"two".to_vec())];
        assert_eq!(read(dir.path()), expect);

        // Every truncation inside the second frame leaves exactly the first frame.
        let path = dir.path().join(FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        let first = FRAME_HEADER + (12 + 4) + (12 + 3);
        for cut in first..full as usize {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let (_, got) = Journal::open(dir.path(), false).unwrap();
            assert_eq!(recs(&got.records), expect[..2].to_vec(), "cut at {cut}");
        }
        // A flipped byte in the last frame's body drops that frame only: it was never
        // acknowledged.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read(dir.path()), expect[..2].to_vec());
    }

    #[test]
    fn a_corrupt_frame_with_intact_frames_after_it_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), false).unwrap();
        j.append([(0u64, &b"zero"[..])].into_iter()).unwrap();
        let second = j.len() as usize;
        j.append([(1u64, &b"one"[..])].into_iter()).unwrap();
        j.append([(2u64, &b"two"[..])].into_iter()).unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        // A flipped bit in the second frame's body, its length field, or its magic.
        for at in [second + FRAME_HEADER + 13, second + 6, second] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            for e in [Journal::open(dir.path(), false).err(), Journal::read(dir.path()).err()] {
                let msg = e.map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    msg.contains("damaged") && msg.contains(&format!("byte {second}")),
                    "flip at {at}: {msg}"
                );
                assert!(msg.contains("restore it from a backup"), "{msg}");
            }
        }
    }

    #[test]
    fn frame_shaped_event_bytes_in_a_torn_tail_are_not_mistaken_for_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (mut inner, _) = Journal::open(other.path(), false).unwrap();
        inner.append([(9u64, &b"fake"[..])].into_iter()).unwrap();
        let fake = std::fs::read(other.path().join(FILE_NAME)).unwrap();
        let (mut j, _) = Journal::open(dir.path(), false).unwrap();
        j.append([(0u64, &b"zero"[..])].into_iter()).unwrap();
        let torn_at = j.len() as usize;
        j.append([(1u64, &fake[..])].into_iter()).unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        // Tear the last frame after the embedded frame-shaped bytes.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let (_, got) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(recs(&got.records), vec![(0, b"zero".to_vec())], "torn at {torn_at}");
    }

    #[test]
    fn reset_leaves_the_checkpoint_marker_and_appends_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), true).unwrap();
        j.append([(5u64, &b"five"[..])].into_iter()).unwrap();
        let ck = Checkpoint { next_seq: 6, head: [7; 32] };
        j.reset(ck).unwrap();
        assert_eq!(j.len(), 0, "the marker is not journaled records");
        j.append([(6u64, &b"six"[..])].into_iter()).unwrap();
        drop(j);
        let got = Journal::read(dir.path()).unwrap();
        assert_eq!(recs(&got.records), vec![(6, b"six".to_vec())]);
        assert_eq!(got.checkpoint, Some(ck));
        let (j, got) = Journal::open(dir.path(), true).unwrap();
        assert_eq!(got.checkpoint, Some(ck));
        assert!(j.len() > 0);
        assert!(Journal::read(&dir.path().join("absent")).unwrap().records.is_empty());
    }
}
