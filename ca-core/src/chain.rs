//! The hash chain over the event log: `hash = SHA-256(prev_hash || seq_be || event_bytes)`,
//! record 0 chaining from 32 zero bytes. Anyone holding the log can recompute it, so a
//! rewritten or reordered record is detected by the first mismatch.

use ring::digest::{Context, SHA256};

/// A record hash.
pub type Hash = [u8; 32];

/// The `prev_hash` of record 0.
pub const GENESIS: Hash = [0u8; 32];

/// The hash of record `seq` holding `event` after a record whose hash is `prev`.
pub fn record_hash(prev: &Hash, seq: u64, event: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(event);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Plain SHA-256 (fingerprints in tools and logs).
pub fn sha256(b: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, b).as_ref());
    out
}

/// Why a chain walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Records must be numbered 0, 1, 2, ... without gaps.
    Gap { expected: u64, found: u64 },
    /// The stored `prev_hash` differs from the previous record's hash.
    PrevMismatch { seq: u64 },
    /// The stored hash differs from the recomputed one (the record was altered).
    HashMismatch { seq: u64 },
}

impl ChainBreak {
    pub fn seq(&self) -> u64 {
        match self {
            ChainBreak::Gap { expected, .. } => *expected,
            ChainBreak::PrevMismatch { seq } | ChainBreak::HashMismatch { seq } => *seq,
        }
    }
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Gap { expected, found } => {
                write!(f, "record {expected} missing (next record is {found})")
            }
            ChainBreak::PrevMismatch { seq } => {
                write!(f, "record {seq}: prev_hash does not match record {}", seq.wrapping_sub(1))
            }
            ChainBreak::HashMismatch { seq } => {
                write!(f, "record {seq}: stored hash does not match its contents")
            }
        }
    }
}

/// Incremental verifier: feed records in order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    head: Hash,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { next_seq: 0, head: GENESIS }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, seq: u64, prev_hash: &Hash, hash: &Hash, event: &[u8]) -> Result<(), ChainBreak> {
        if seq != self.next_seq {
            return Err(ChainBreak::Gap { expected: self.next_seq, found: seq });
        }
        if prev_hash != &self.head {
            return Err(ChainBreak::PrevMismatch { seq });
        }
        if &record_hash(prev_hash, seq, event) != hash {
            return Err(ChainBreak::HashMismatch { seq });
        }
        self.head = *hash;
        self.next_seq += 1;
        Ok(())
    }

    /// Hash of the last verified record (GENESIS when none).
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Number of verified records.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_altered_record() {
        let events: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let mut prev = GENESIS;
        let mut recs = vec![];
        for (i, e) in events.iter().enumerate() {
            let h = record_hash(&prev, i as u64, e);
            recs.push((i as u64, prev, h, e.clone()));
            prev = h;
        }
        let mut v = ChainVerifier::default();
        for (s, p, h, e) in &recs {
            v.check(*s, p, h, e).unwrap();
        }
        assert_eq!(v.len(), 5);
        recs[3].3[0] ^= 1;
        let mut v = ChainVerifier::default();
        let err = recs.iter().try_for_each(|(s, p, h, e)| v.check(*s, p, h, e)).unwrap_err();
        assert_eq!(err, ChainBreak::HashMismatch { seq: 3 });
    }
}
