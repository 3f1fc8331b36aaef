//! What this instance knows about the shared store: whether it holds the writer lease
//! (and at which epoch), who does otherwise, and how current its replica is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::conn;
use crate::{Role, StoreError};

pub(crate) struct State {
    /// How other instances name this one (in `ca_lease.holder` and their errors).
    pub instance: String,
    /// Where this instance takes gRPC requests (`ca_lease.grpc_url` while it writes).
    pub grpc_url: String,
    pub ttl: Duration,
    /// The epoch of the lease this instance holds; 0 while it holds none.
    epoch: AtomicU64,
    /// The holder last seen in the lease row (when it is not this instance).
    writer: RwLock<Option<String>>,
    /// That holder's `grpc_url`, when it recorded one.
    writer_url: RwLock<Option<String>>,
    /// The replica held everything the database had at `base + synced_at_micros` (an
    /// atomic: OCSP answers on a follower read it on every request).
    base: Instant,
    synced_at_micros: AtomicU64,
    /// Group commits sent to the database, and their total time (for metrics).
    pub commits: AtomicU64,
    pub commit_micros: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Lease acquisitions by this instance.
    pub takeovers: AtomicU64,
}

impl State {
    pub(crate) fn new(instance: String, grpc_url: String, ttl: Duration) -> Self {
        State {
            instance,
            grpc_url,
            ttl,
            epoch: AtomicU64::new(0),
            writer: RwLock::new(None),
            writer_url: RwLock::new(None),
            base: Instant::now(),
            synced_at_micros: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn became_writer(&self, epoch: u64) {
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.epoch.store(epoch, Ordering::Release);
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Stop writing as `epoch` (a later epoch's takeover is not undone by a stale call).
    pub(crate) fn lost(&self, epoch: u64, holder: Option<String>) {
        if self.epoch.compare_exchange(epoch, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::warn!(
                epoch,
                holder = holder.as_deref().unwrap_or("none"),
                "this instance is no longer the writer"
            );
        }
        self.seen_writer(holder);
    }

    pub(crate) fn seen_writer(&self, holder: Option<String>) {
        let holder = holder.filter(|h| !h.is_empty() && *h != self.instance);
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) = holder;
    }

    pub(crate) fn seen_url(&self, url: String) {
        let url = (!url.is_empty() && url != self.grpc_url).then_some(url);
        *self.writer_url.write().unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// The writer's gRPC URL while another instance holds the lease.
    pub(crate) fn writer_url(&self) -> Option<String> {
        if self.epoch() != 0 || self.writer.read().unwrap_or_else(PoisonError::into_inner).is_none() {
            return None;
        }
        self.writer_url.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn role(&self) -> Role {
        match self.epoch() {
            0 => {
                Role::Follower { writer: self.writer.read().unwrap_or_else(PoisonError::into_inner).clone() }
            }
            epoch => Role::Writer { epoch },
        }
    }

    pub(crate) fn not_writer(&self, why: &str) -> StoreError {
        let writer = self.writer.read().unwrap_or_else(PoisonError::into_inner).clone();
        let why = match &writer {
            Some(_) => why.to_string(),
            None => format!(
                "{why}; no instance holds the lease now, a takeover follows within {} ms",
                self.ttl.as_millis()
            ),
        };
        StoreError::NotWriter { writer, why }
    }

    /// The replica holds everything the database held at `as_of`.
    pub(crate) fn synced(&self, as_of: Instant) {
        let micros =
            u64::try_from(as_of.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX);
        self.synced_at_micros.fetch_max(micros, Ordering::AcqRel);
    }

    pub(crate) fn staleness(&self) -> Duration {
        let at = self.base + Duration::from_micros(self.synced_at_micros.load(Ordering::Acquire));
        at.elapsed()
    }

    pub(crate) fn observe_commit(&self, took: Duration, ok: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if !ok {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The lease row's `(epoch, holder)`, on a fresh connection (`None` if unreachable).
    pub(crate) async fn lease_holder(&self, cfg: &conn::Target) -> Option<(u64, String)> {
        let client = conn::connect(cfg).await.ok()?;
        let row = client.query_one("SELECT epoch, holder FROM ca_lease WHERE id = 1", &[]).await.ok()?;
        Some((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get(1)))
    }
}
