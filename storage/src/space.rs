//! The free-space reserve: writes stop before the data dir's file system is full.
//!
//! sled 0.34 writes its log buffers in the background and pages entries out of its cache
//! once written; when such a write meets `ENOSPC`, entries whose only copy was in the lost
//! buffer become unreadable for the rest of the process (seen: `GetCertificate` failing for
//! about a tenth of the acknowledged serials of a run on a 12 MB tmpfs). Refusing writes
//! while `reserve` bytes are still free keeps sled away from that edge: it always has room
//! to write back what it holds, and reads keep working.

use std::path::PathBuf;

/// Watches the file system holding the store; owned by the writer thread.
pub(crate) struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
    /// Below the reserve at the last check: writes are refused until free space is back
    /// above `reserve + reserve / 4` (the margin stops a checkpoint's freed journal from
    /// flapping the state at every batch).
    low: bool,
}

/// What the last check saw, when it changed the state.
pub(crate) enum Change {
    None,
    /// Free space fell below the reserve: refuse writes (after one checkpoint, which
    /// makes sled durable and empties the journal while there is still room).
    WentLow {
        free: u64,
    },
    /// Free space is back: accept writes again.
    Recovered {
        free: u64,
    },
}

impl SpaceGuard {
    /// `reserve == 0` turns the guard off.
    pub(crate) fn new(dir: PathBuf, reserve: u64) -> SpaceGuard {
        SpaceGuard { dir, reserve, low: false }
    }

    pub(crate) fn reserve(&self) -> u64 {
        self.reserve
    }

    pub(crate) fn is_low(&self) -> bool {
        self.low
    }

    /// Bytes an unprivileged writer may still use on the store's file system.
    pub(crate) fn free(&self) -> std::io::Result<u64> {
        let s = rustix::fs::statvfs(&self.dir)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Measure and update the state. A failed measurement changes nothing: the write path
    /// itself reports real I/O errors.
    pub(crate) fn check(&mut self) -> Change {
        if self.reserve == 0 {
            return Change::None;
        }
        let Ok(free) = self.free() else { return Change::None };
        let resume_at = self.reserve.saturating_add(self.reserve / 4);
        match self.low {
            false if free < self.reserve => {
                self.low = true;
                Change::WentLow { free }
            }
            true if free >= resume_at => {
                self.low = false;
                Change::Recovered { free }
            }
            _ => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_zero_turns_the_guard_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut off = SpaceGuard::new(dir.path().to_path_buf(), 0);
        assert!(matches!(off.check(), Change::None));
        assert!(!off.is_low());

        let free = off.free().unwrap();
        assert!(free > 0);
        let mut huge = SpaceGuard::new(dir.path().to_path_buf(), u64::MAX / 2);
        assert!(matches!(huge.check(), Change::WentLow { .. }));
        assert!(huge.is_low());
        // Still low: no second transition.
        assert!(matches!(huge.check(), Change::None));

        let mut small = SpaceGuard::new(dir.path().to_path_buf(), 1);
        assert!(matches!(small.check(), Change::None));
        assert!(!small.is_low());
    }
}
