//! Abuse limits as token buckets (GCRA), shared by the ACME frontend and gRPC. Pure: no
//! clock of its own (callers pass monotonic milliseconds, [`MonoClock`] in the server), no
//! tokio, no I/O.
//!
//! A limit of `count` per `window` lets a burst of `count` through, then one more every
//! `window / count`, as Let's Encrypt's limits do (they are GCRA too). A key costs one
//! timestamp, its "theoretical arrival time" (TAT), whatever its limit. A key whose bucket
//! has refilled is the same as an absent one, so it is dropped first when the table is full;
//! when every key is active, the eighth closest to refilled is dropped (they lose the
//! least), so memory stays within `max_keys` however many IPs or accounts an attacker
//! rotates through. An evicted key starts again with a full bucket: eviction fails open.
//!
//! Counts live in memory: a restart refills every bucket.

use std::collections::HashMap;
use std::time::Instant;

/// `count` per `window_ms`; `count == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u64,
    pub window_ms: u64,
}

impl Limit {
    pub fn per_hour(count: u64) -> Limit {
        Limit { count, window_ms: 3_600_000 }
    }

    pub fn per_minute(count: u64) -> Limit {
        Limit { count, window_ms: 60_000 }
    }

    pub fn is_unlimited(&self) -> bool {
        self.count == 0
    }

    /// Milliseconds between two refills (at least 1).
    fn interval(&self) -> u64 {
        (self.window_ms / self.count.max(1)).max(1)
    }

    /// How far ahead of now the TAT may run: exactly `count` at once from a full bucket.
    fn burst(&self) -> u64 {
        self.interval().saturating_mul(self.count)
    }
}

/// Over the limit: how long until one more would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub retry_after_ms: u64,
}

impl Denied {
    /// Whole seconds, rounded up, at least 1 (what `Retry-After` carries).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// Buckets by key (an IP, an account, an identity), at most `max_keys` of them.
#[derive(Debug)]
pub struct Limiter {
    tat: HashMap<String, u64>,
    max_keys: usize,
    evicted: u64,
}

impl Limiter {
    pub fn new(max_keys: usize) -> Limiter {
        Limiter { tat: HashMap::new(), max_keys: max_keys.max(1), evicted: 0 }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    /// Active keys dropped to stay within `max_keys` since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The TAT one more request would leave, and whether it is within the limit.
    fn next(&self, key: &str, limit: Limit, now: u64) -> (u64, Result<(), Denied>) {
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let next = tat.saturating_add(limit.interval());
        let allowed_until = now.saturating_add(limit.burst());
        if next <= allowed_until {
            (next, Ok(()))
        } else {
            (next, Err(Denied { retry_after_ms: next - allowed_until }))
        }
    }

    /// Would one more pass? Nothing is taken.
    pub fn check(&self, key: &str, limit: Limit, now: u64) -> Result<(), Denied> {
        if limit.is_unlimited() {
            return Ok(());
        }
        self.next(key, limit, now).1
    }

    /// Take one from `key`'s bucket, or say how long until one is there.
    pub fn take(&mut self, key: &str, limit: Limit, now: u64) -> Result<(), Denied> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let (next, verdict) = self.next(key, limit, now);
        verdict?;
        self.set(key, next, now);
        Ok(())
    }

    /// Take one even from an empty bucket (something that already happened, such as a
    /// failed validation); the bucket never goes below empty.
    pub fn record(&mut self, key: &str, limit: Limit, now: u64) {
        if limit.is_unlimited() {
            return;
        }
        let (next, _) = self.next(key, limit, now);
        self.set(key, next.min(now.saturating_add(limit.burst())), now);
    }

    fn set(&mut self, key: &str, tat: u64, now: u64) {
        if let Some(t) = self.tat.get_mut(key) {
            *t = tat;
            return;
        }
        if self.tat.len() >= self.max_keys {
            self.make_room(now);
        }
        self.tat.insert(key.to_string(), tat);
    }

    /// Drop refilled keys; if none were, the eighth of the active keys closest to refilled
    /// (a batch, so a flood of new keys costs O(1) per key, amortized).
    fn make_room(&mut self, now: u64) {
        self.tat.retain(|_, t| *t > now);
        if self.tat.len() < self.max_keys {
            return;
        }
        let mut tats: Vec<u64> = self.tat.values().copied().collect();
        let k = (tats.len() / 8).max(1) - 1;
        let (_, cut, _) = tats.select_nth_unstable(k);
        let cut = *cut;
        let before = self.tat.len();
        self.tat.retain(|_, t| *t > cut);
        self.evicted += (before - self.tat.len()) as u64;
    }
}

/// Monotonic milliseconds since the clock was made: what the server passes as `now`.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock(Instant);

impl Default for MonoClock {
    fn default() -> Self {
        MonoClock(Instant::now())
    }
}

impl MonoClock {
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_burst_of_count_then_one_per_interval() {
        let mut l = Limiter::new(16);
        let lim = Limit::per_hour(3);
        for _ in 0..3 {
            l.take("ip", lim, 1_000).unwrap();
        }
        // The 4th waits one interval (20 min) for the first refill.
        let d = l.take("ip", lim, 1_000).unwrap_err();
        assert_eq!(d.retry_after_ms, HOUR / 3);
        assert_eq!(d.retry_after_secs(), 1200);
        // Denials take nothing: the wait only shrinks with time.
        let d = l.take("ip", lim, 1_000 + 600_000).unwrap_err();
        assert_eq!(d.retry_after_ms, HOUR / 3 - 600_000);
        assert_eq!(l.check("ip", lim, 1_000 + HOUR / 3 - 1), Err(Denied { retry_after_ms: 1 }));
        l.take("ip", lim, 1_000 + HOUR / 3).unwrap();
        assert!(l.take("ip", lim, 1_000 + HOUR / 3).is_err());
        // After a whole window the burst is back.
        for _ in 0..3 {
            l.take("ip", lim, 1_000 + 2 * HOUR).unwrap();
        }
        // Other keys have buckets of their own.
        l.take("other", lim, 1_000).unwrap();
    }

    #[test]
    fn at_most_twice_count_in_any_window() {
        // The price of O(1) memory: a burst, then the refill, within one window.
        let mut l = Limiter::new(4);
        let lim = Limit::per_minute(10);
        let passed = (0..60_000u64).step_by(100).filter(|t| l.take("k", lim, *t).is_ok()).count();
        assert!((10..=20).contains(&passed), "{passed}");
    }

    #[test]
    fn record_never_goes_below_empty_and_check_takes_nothing() {
        let mut l = Limiter::new(4);
        let lim = Limit::per_hour(2);
        l.check("a", lim, 0).unwrap();
        l.check("a", lim, 0).unwrap();
        for _ in 0..10 {
            l.record("a", lim, 0);
        }
        assert_eq!(l.check("a", lim, 0), Err(Denied { retry_after_ms: HOUR / 2 }));
        l.check("a", lim, HOUR / 2).unwrap();
    }

    #[test]
    fn unlimited_tracks_nothing() {
        let mut l = Limiter::new(4);
        for i in 0..100 {
            l.take(&format!("k{i}"), Limit::per_minute(0), 0).unwrap();
        }
        assert!(l.is_empty());
    }

    #[test]
    fn keys_stay_bounded_under_rotation() {
        let mut l = Limiter::new(1000);
        let lim = Limit::per_hour(5);
        // A flood of fresh keys, all active (none refills within the test's hour).
        for i in 0..100_000u64 {
            l.take(&format!("ip{i}"), lim, i / 100).unwrap();
            assert!(l.len() <= 1000);
        }
        assert!(l.evicted() >= 99_000, "{}", l.evicted());
        // Refilled keys go first, and are not counted as evictions.
        let mut l = Limiter::new(10);
        for i in 0..10 {
            l.take(&format!("old{i}"), lim, 0).unwrap();
        }
        l.take("new", lim, HOUR).unwrap();
        assert_eq!((l.len(), l.evicted()), (1, 0));
        // A key that is still hot survives a flood that evicts in batches.
        let mut l = Limiter::new(64);
        for t in 0..1000u64 {
            let _ = l.take("hot", lim, t);
            l.take(&format!("cold{t}"), Limit::per_hour(1000), t).unwrap();
        }
        assert!(l.check("hot", lim, 1000).is_err(), "the hot key kept its count");
    }
}
