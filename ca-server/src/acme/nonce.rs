//! Anti-replay nonces (RFC 8555 6.5): random, single use, bounded in memory (the oldest
//! are forgotten first; a client holding one gets `badNonce` and retries with the fresh
//! nonce that error carries). Never logged, never in the event log.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use ca_core::acme::b64u;
use ring::rand::{SecureRandom, SystemRandom};

/// Nonces outstanding at most; ~40 bytes each.
pub const CAPACITY: usize = 100_000;

pub struct NonceStore {
    rng: SystemRandom,
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    live: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
}

impl Default for NonceStore {
    fn default() -> Self {
        NonceStore::with_capacity(CAPACITY)
    }
}

impl NonceStore {
    pub fn with_capacity(capacity: usize) -> Self {
        NonceStore {
            rng: SystemRandom::new(),
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// A fresh nonce, unpadded base64url.
    pub fn issue(&self) -> String {
        let mut n = [0u8; 16];
        if self.rng.fill(&mut n).is_err() {
            // The OS RNG failing is not recoverable; an unredeemable nonce only costs a retry.
            return String::new();
        }
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while g.order.len() >= self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.live.remove(&old);
            }
        }
        g.live.insert(n);
        g.order.push_back(n);
        b64u(n)
    }

    /// Use up `nonce`: true once for each nonce issued and not yet forgotten.
    pub fn redeem(&self, nonce: &str) -> bool {
        let Ok(bytes) = ca_core::acme::b64u_decode(nonce) else { return false };
        let Ok(n) = <[u8; 16]>::try_from(bytes.as_slice()) else { return false };
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The queue entry stays until it ages out; `live` decides.
        g.live.remove(&n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_bounded() {
        let s = NonceStore::with_capacity(3);
        let a = s.issue();
        assert!(!a.contains('='), "unpadded");
        assert!(s.redeem(&a));
        assert!(!s.redeem(&a), "replayed");
        assert!(!s.redeem("not-a-nonce"));
        let n: Vec<String> = (0..4).map(|_| s.issue()).collect();
        assert!(!s.redeem(&n[0]), "the oldest is forgotten past capacity");
        assert!(s.redeem(&n[3]));
    }
}
