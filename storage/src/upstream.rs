//! The system of record a replica store commits to before its own trees (PostgreSQL, for
//! the `postgres` backend: `pg/`). The writer thread calls it with each group commit, in
//! order, so the local trees only ever hold a prefix of what the system of record holds.

use std::sync::Arc;

use crate::{StoreError, StoredRecord};

pub(crate) trait Upstream: Send + Sync + 'static {
    /// Commit `records` (consecutive seqs chaining from the writer's head) or refuse them.
    /// `Ok` only once they are committed. Any error but [`StoreError::Failed`] means they
    /// were not, and the local store goes on; `Failed` means the outcome is unknown (and
    /// could not be read back), so the local store stops taking writes.
    fn commit(&self, records: &[Arc<StoredRecord>]) -> Result<(), StoreError>;

    /// Refuse a write before it queues: `Some` while this instance may not write.
    fn refuse(&self) -> Option<StoreError>;
}

/// The same error again, for the next waiter of a refused batch (`StoreError` holds an
/// `io::Error`, so it is not `Clone`).
pub(crate) fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotWriter { writer, why } => {
            StoreError::NotWriter { writer: writer.clone(), why: why.clone() }
        }
        StoreError::Failed(m) => StoreError::Failed(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::LowSpace { free, reserve } => StoreError::LowSpace { free: *free, reserve: *reserve },
        other => StoreError::Backend(other.to_string()),
    }
}
