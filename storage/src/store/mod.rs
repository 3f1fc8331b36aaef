//! [`EventStore`]: the handle, appends and reads of the log; opening and recovery are in
//! `open`, the projection queries and the chain audit in `query`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;

use ca_core::Event;
use ca_core::chain::Hash;
use ca_core::event::{CaInitialized, CertificateIssued};
use ca_core::projection::RevokedEntry;
use ca_proto::convert::{decode_event, encode_event};
use tokio::sync::{broadcast, oneshot};

use crate::project::{ProjState, Trees};
use crate::upstream::Upstream;
use crate::writer::{AppendReq, Cmd, Prepared, Reply};
use crate::{StoreError, codec};

mod open;
mod query;

/// Capacity of the live broadcast channel feeding `watch`. A watcher further behind than
/// this falls back to reading the log, so the number bounds memory, not correctness.
const LIVE_CAPACITY: usize = 4096;
/// Default sled cache cap. sled 0.34 overshoots its cap about threefold under inserts
/// (on copies of a 1.2M-record store under load: 391-396 MB RSS with 64 MiB, 298-299 MB
/// with 16 MiB; BENCHMARKS.md), and the bigger cache bought no throughput: random `certs`
/// keys miss it either way, and the append-only trees' hot leaves are few.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

/// One record of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
    /// Wall-clock time the writer committed the batch (all records of a batch share it).
    pub recorded_at_micros: i64,
    /// Exactly the bytes that were hashed: a `ca.v1.Event`.
    pub event_bytes: Vec<u8>,
    pub event: Event,
}

/// A record as stored, undecoded: `(seq, prev_hash, hash, recorded_at_micros, event_bytes)`.
/// For audit, which must be able to report a record whose event no longer decodes.
pub type RawRecord = (u64, Hash, Hash, i64, Vec<u8>);

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

/// A certificate as the inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub issued: CertificateIssued,
    pub issued_seq: u64,
    pub revoked: Option<RevokedEntry>,
}

/// Which certificates `list_certs` returns. The three non-`Any` filters partition the
/// inventory: a revoked certificate is `Revoked` whether or not it has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    Any,
    /// Not revoked and `not_after >= now`.
    Valid,
    Revoked,
    /// Not revoked and `not_after < now`.
    Expired,
}

/// A successful chain walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    pub records: u64,
    /// Hash of the last record (`GENESIS` for an empty log).
    pub head: Hash,
}

/// The first record at which the chain walk failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq}: {detail}")]
pub struct ChainFailure {
    pub seq: u64,
    pub detail: String,
}

/// Counters an operator graphs (all since this process opened the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreMetrics {
    /// Append calls committed.
    pub appends_total: u64,
    /// Group-commit batches (one journal write each).
    pub batches_total: u64,
    /// Records written.
    pub records_total: u64,
    /// Records in the most recent batch.
    pub last_batch_size: u64,
    /// Time spent making batches durable (journal writes, with their syncs).
    pub flush_micros_total: u64,
    /// sled flushes that emptied the journal.
    pub checkpoints_total: u64,
    /// Time spent in checkpoints (appends wait meanwhile).
    pub checkpoint_micros_total: u64,
    /// The longest checkpoint so far.
    pub checkpoint_micros_max: u64,
    /// Journal records written back into the log when the store was opened (after a crash).
    pub journal_recovered_at_open: u64,
    /// Batches whose write or flush failed (each one poisons the store).
    pub failed_batches_total: u64,
    /// Commands queued for the writer and not yet picked up.
    pub pending_requests: u64,
    /// Records folded into the projections when the store was opened (0 when they were current).
    pub replayed_at_open: u64,
    /// Batches refused because free space was below the reserve.
    pub low_space_refusals_total: u64,
}

/// A shared store's (PostgreSQL) own figures, beside [`StoreMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedMetrics {
    /// Whether this instance holds the writer lease, and at which epoch (0: it does not).
    pub epoch: u64,
    /// Times this instance took the writer lease.
    pub takeovers_total: u64,
    /// Group commits sent to the database, their total time, and those that failed.
    pub commits_total: u64,
    pub commit_micros_total: u64,
    pub commit_failures_total: u64,
    /// How far the replica may be behind the database (since it last read to its end).
    pub replica_lag_micros: u64,
}

impl StoreMetrics {
    pub fn flush_seconds_total(&self) -> f64 {
        self.flush_micros_total as f64 / 1e6
    }
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// `fdatasync` the commit journal after each batch's write (and sled's data file at
    /// each checkpoint), so an acknowledged batch survives power loss too (at a latency
    /// cost; see the crate docs).
    pub fsync_each_batch: bool,
    /// For `audit verify` and offline readers: skip the head validation and projection
    /// catch-up (which could refuse a tampered log or modify projections) and refuse appends.
    pub read_only: bool,
    /// sled's cache cap in bytes (`None`: [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: Option<u64>,
    /// Refuse appends while the store's file system has less free space than this
    /// (`space.rs`); 0 turns the reserve off.
    pub min_free_bytes: u64,
}

/// Default free-space reserve: room for sled to write back a checkpoint's worth of state
/// (the journal empties at 16 MiB) several times over.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync_each_batch: false,
            read_only: false,
            cache_bytes: None,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

impl StoreOptions {
    pub fn fsync_each_batch(mut self, on: bool) -> Self {
        self.fsync_each_batch = on;
        self
    }

    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    pub fn cache_bytes(mut self, bytes: Option<u64>) -> Self {
        self.cache_bytes = bytes;
        self
    }

    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub appends: AtomicU64,
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub flush_micros: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_micros: AtomicU64,
    pub checkpoint_micros_max: AtomicU64,
    pub journal_recovered: AtomicU64,
    pub failed_batches: AtomicU64,
    pub pending: AtomicU64,
    pub replayed_at_open: AtomicU64,
    pub low_space_refusals: AtomicU64,
}

/// What readers may see: the durable prefix of the log. Updated by the writer after each
/// group commit's journal write, before waiters wake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub next_seq: u64,
    pub head: Option<Appended>,
    pub ca_seq: Option<u64>,
    pub last_crl: u64,
}

/// State shared by handles, the writer and watch streams.
pub(crate) struct Shared {
    pub trees: Trees,
    committed: RwLock<Committed>,
    failed: RwLock<Option<String>>,
    /// Why writes are paused for lack of space (`space.rs`); cleared when space is back.
    low_space: RwLock<Option<String>>,
    pub metrics: Metrics,
}

impl Shared {
    pub(crate) fn committed(&self) -> Committed {
        *self.committed.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn head(&self) -> Option<Appended> {
        self.committed().head
    }

    pub(crate) fn publish_committed(&self, next_seq: u64, head: Option<Appended>, st: &ProjState) {
        *self.committed.write().unwrap_or_else(PoisonError::into_inner) =
            Committed { next_seq, head, ca_seq: st.ca_seq, last_crl: st.last_crl };
    }

    pub(crate) fn set_failed(&self, msg: String) {
        *self.failed.write().unwrap_or_else(PoisonError::into_inner) = Some(msg);
    }

    fn failed(&self) -> Option<String> {
        self.failed.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_low_space(&self, why: Option<String>) {
        *self.low_space.write().unwrap_or_else(PoisonError::into_inner) = why;
    }

    fn low_space(&self) -> Option<String> {
        self.low_space.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Read one record by seq, without the committed bound (callers apply it).
    pub(crate) fn read_raw(&self, seq: u64) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.trees.log.get(codec::log_key(seq))?)
    }

    /// Up to `max` committed records from `from`, in order; for watch's history phase.
    pub(crate) fn read_chunk(&self, from: u64, max: u64) -> Result<Vec<Arc<StoredRecord>>, StoreError> {
        let end = self.committed().next_seq.min(from.saturating_add(max));
        records(&self.trees.log, from, end).map(|r| r.map(Arc::new)).collect()
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only during drop (taken to stop the writer).
    tx: Option<Sender<Cmd>>,
    /// For `watch` to subscribe; the writer holds the other sender, so receivers see
    /// `Closed` once the writer has exited.
    live: broadcast::Sender<Arc<StoredRecord>>,
    writer: Option<JoinHandle<()>>,
    read_only: bool,
    /// The system of record of a replica store (checked before a write queues).
    upstream: Option<Arc<dyn Upstream>>,
    /// The shared-database machinery (lease, follower) of a replica store, set once open.
    pg: OnceLock<crate::pg::Node>,
}

impl Drop for Inner {
    /// Stop the writer (it flushes on the way out) and wait for it, so that a reopen of the
    /// same directory right after the last handle drops finds sled's lock released; then
    /// stop the database tasks of a replica store.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take()
            && h.join().is_err()
        {
            tracing::error!("event store writer thread panicked");
        }
        if let Some(node) = self.pg.take() {
            node.stop();
        }
    }
}

/// Which part this store plays (see [`EventStore::role`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An embedded store (sled): the only writer there is.
    Single,
    /// A shared store's writer, holding the lease at this epoch.
    Writer { epoch: u64 },
    /// A shared store's reader: it follows the database and refuses writes. `writer`
    /// names the lease holder when one is known.
    Follower { writer: Option<String> },
}

/// A handle that does not keep the store open (for its own background tasks).
#[derive(Clone)]
pub(crate) struct WeakStore(Weak<Inner>);

impl WeakStore {
    pub(crate) fn upgrade(&self) -> Option<EventStore> {
        self.0.upgrade().map(|inner| EventStore { inner })
    }
}

/// The event store: a hash-chained, append-only log in sled with its projections.
/// Cheap to clone; all clones share one writer thread, which stops when the last clone drops.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.inner.shared.committed();
        f.debug_struct("EventStore").field("next_seq", &c.next_seq).finish_non_exhaustive()
    }
}

impl EventStore {
    /// Open (or create) the store in `dir`, catch the projections up with the log, and start
    /// the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        Self::open_local(dir, opts, None)
    }

    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    pub(crate) fn pg_node(&self) -> Option<&crate::pg::Node> {
        self.inner.pg.get()
    }

    pub(crate) fn set_pg(&self, node: crate::pg::Node) {
        if let Err(node) = self.inner.pg.set(node) {
            node.stop();
        }
    }

    /// Which part this store plays: the embedded store, or a shared store's writer or
    /// follower (which changes as the writer lease moves).
    pub fn role(&self) -> Role {
        match self.inner.pg.get() {
            None => Role::Single,
            Some(node) => node.role(),
        }
    }

    /// Whether this instance appends: the embedded store, or a shared store's writer. The
    /// cheap form of [`role`](Self::role) (one atomic load), for per-request checks.
    pub fn writes(&self) -> bool {
        self.inner.pg.get().is_none_or(crate::pg::Node::writes)
    }

    /// For a shared store: how long ago this instance last confirmed that its replica holds
    /// everything the database had (`None` for the embedded store).
    pub fn replica_staleness(&self) -> Option<std::time::Duration> {
        self.inner.pg.get().map(crate::pg::Node::staleness)
    }

    /// For a shared store: its lease, commit and replica figures (`None` when embedded).
    pub fn shared_metrics(&self) -> Option<SharedMetrics> {
        self.inner.pg.get().map(crate::pg::Node::metrics)
    }

    /// For a shared store's follower: the writer's gRPC URL, when the writer recorded one
    /// (`None` for the embedded store, for the writer itself, or while no one writes).
    pub fn writer_url(&self) -> Option<String> {
        self.inner.pg.get().and_then(crate::pg::Node::writer_url)
    }

    /// Apply records read from the system of record (a replica store following it).
    pub(crate) async fn replicate(&self, raw: Vec<RawRecord>) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Replicate(raw, Reply::Async(tx))).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    #[cfg(test)]
    pub(crate) fn trees(&self) -> &Trees {
        &self.inner.shared.trees
    }

    /// Queue `cmd` for the writer; a stopped writer hands it back (for a callback reply,
    /// which must still be told).
    fn send(&self, cmd: Cmd) -> Result<(), Cmd> {
        let Some(tx) = self.inner.tx.as_ref() else { return Err(cmd) };
        self.shared().metrics.pending.fetch_add(1, Ordering::Relaxed);
        tx.send(cmd).map_err(|mpsc::SendError(cmd)| {
            self.shared().metrics.pending.fetch_sub(1, Ordering::Relaxed);
            cmd
        })
    }

    fn prepare(&self, events: Vec<Event>) -> Result<Vec<Prepared>, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        if let Some(msg) = self.shared().failed() {
            return Err(StoreError::Failed(msg));
        }
        if let Some(e) = self.inner.upstream.as_ref().and_then(|u| u.refuse()) {
            return Err(e);
        }
        events
            .into_iter()
            .map(|e| {
                let bytes = encode_event(&e);
                // Readers, watchers and a rebuild all see the decoded bytes, so the writer
                // folds that same form (e.g. an invalidity date of 0 reads back as none).
                let event = decode_event(&bytes).map_err(|err| {
                    StoreError::InvalidEvent(format!("{} does not round-trip: {err}", e.kind()))
                })?;
                Ok(Prepared { bytes, event })
            })
            .collect()
    }

    /// Append `events` as consecutive records, atomically in one batch. Resolves only after
    /// the batch is durable in the commit journal (see the crate docs for what that
    /// guarantees). If this future is dropped early the events may still be committed.
    pub async fn append(&self, events: Vec<Event>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events = self.prepare(events)?;
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Append(AppendReq { events, reply: Reply::Async(tx) }))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`append`](Self::append) without waiting, callable from any thread: `done` runs once
    /// the batch is durable (or has failed). It runs on the writer thread, inside the
    /// commit loop, so it must be cheap and must not block (send on a channel, bump a
    /// counter). Errors found before the event reaches the writer (read-only store, closed
    /// or failed store, an event that does not round-trip) are passed to `done` at once, on
    /// the calling thread.
    pub fn append_then(
        &self,
        events: Vec<Event>,
        done: impl FnOnce(Result<Vec<Appended>, StoreError>) + Send + 'static,
    ) {
        if events.is_empty() {
            return done(Ok(Vec::new()));
        }
        let events = match self.prepare(events) {
            Ok(e) => e,
            Err(e) => return done(Err(e)),
        };
        if let Err(Cmd::Append(req)) =
            self.send(Cmd::Append(AppendReq { events, reply: Reply::Callback(Box::new(done)) }))
        {
            req.reply.send(Err(StoreError::Closed));
        }
    }

    /// [`append`](Self::append) for non-async callers; blocks the thread until durable.
    pub fn append_blocking(&self, events: Vec<Event>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events = self.prepare(events)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Append(AppendReq { events, reply: Reply::Blocking(tx) }))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    fn command<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(Reply::Blocking(tx))).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// The last durable record (`None` for an empty log).
    pub fn head(&self) -> Option<Appended> {
        self.shared().head()
    }

    /// The seq the next appended record will get.
    pub fn next_seq(&self) -> u64 {
        self.shared().committed().next_seq
    }

    /// One durable record.
    pub fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        if seq >= self.next_seq() {
            return Ok(None);
        }
        match self.shared().read_raw(seq)? {
            None => Ok(None),
            Some(v) => decode_record(seq, &v).map(Some),
        }
    }

    /// Durable records from `from` on, as of this call (later appends are not included).
    pub fn range(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<StoredRecord, StoreError>> + Send + 'static {
        records(&self.shared().trees.log, from, self.next_seq())
    }

    /// Like [`range`](Self::range) but undecoded, for audit.
    pub fn range_raw(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<RawRecord, StoreError>> + Send + 'static {
        raw_records(&self.shared().trees.log, from, self.next_seq())
    }

    /// History from `from`, then live records as they are committed: in order, without gaps
    /// or duplicates. A consumer that falls behind the live channel reads the log instead,
    /// so it never misses a record. Ends with `Err(Closed)` when the store shuts down.
    /// Needs a tokio runtime (history is read on the blocking pool).
    pub fn watch(
        &self,
        from: u64,
    ) -> impl futures::Stream<Item = Result<Arc<StoredRecord>, StoreError>> + Send + 'static {
        // Subscribe before reading any history: whatever commits after this point is on
        // the channel, whatever committed before is in the log.
        let rx = self.inner.live.subscribe();
        crate::watch::stream(self.inner.shared.clone(), rx, from)
    }

    /// The CA recorded by the last `CaInitialized` event.
    pub fn ca(&self) -> Result<Option<CaInitialized>, StoreError> {
        let Some(seq) = self.shared().committed().ca_seq else {
            return Ok(None);
        };
        ca_at(self.shared(), seq).map(Some)
    }

    /// Why the store refuses writes: a write or flush failed (refused until a restart
    /// recovers), or free space is below the reserve (until space is back); `None` while it
    /// accepts them.
    pub fn write_failure(&self) -> Option<String> {
        self.shared().failed().or_else(|| self.shared().low_space())
    }

    /// Recompute the projections from the whole log and make the trees equal them, writing
    /// only what differs (on the writer thread, so appends wait meanwhile; see the crate
    /// docs). Returns the number of records folded. Blocking.
    pub fn rebuild_projections(&self) -> Result<u64, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.command(Cmd::Rebuild)
    }

    /// Test hook (feature `test-hooks`, off in release builds): XOR one byte of record `seq`'s stored value
    /// (`offset` counts from the start of the value: prev_hash at 0, hash at 32, time at
    /// 64, event at 72) and flush. Lets tests prove that `verify_chain` catches tampering.
    #[cfg(feature = "test-hooks")]
    pub fn danger_flip_byte(&self, seq: u64, offset: usize) -> Result<(), StoreError> {
        self.command(|reply| Cmd::FlipByte { seq, offset, reply })
    }

    /// Flush sled (through the writer, the only thread that flushes). Appends are already
    /// durable when they return; this is for shutdown paths and tools.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.command(Cmd::Flush)
    }

    pub fn metrics(&self) -> StoreMetrics {
        let m = &self.shared().metrics;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreMetrics {
            appends_total: l(&m.appends),
            batches_total: l(&m.batches),
            records_total: l(&m.records),
            last_batch_size: l(&m.last_batch_size),
            flush_micros_total: l(&m.flush_micros),
            checkpoints_total: l(&m.checkpoints),
            checkpoint_micros_total: l(&m.checkpoint_micros),
            checkpoint_micros_max: l(&m.checkpoint_micros_max),
            journal_recovered_at_open: l(&m.journal_recovered),
            failed_batches_total: l(&m.failed_batches),
            pending_requests: l(&m.pending),
            replayed_at_open: l(&m.replayed_at_open),
            low_space_refusals_total: l(&m.low_space_refusals),
        }
    }
}

fn ca_at(sh: &Shared, seq: u64) -> Result<CaInitialized, StoreError> {
    let v = sh.read_raw(seq)?.ok_or_else(|| StoreError::Corrupt {
        seq,
        detail: "meta points at a missing CaInitialized record".into(),
    })?;
    match decode_record(seq, &v)?.event {
        Event::CaInitialized(ca) => Ok(ca),
        other => Err(StoreError::Corrupt {
            seq,
            detail: format!("meta points at a {} record, expected ca_initialized", other.kind()),
        }),
    }
}

pub(crate) fn decode_record(seq: u64, v: &[u8]) -> Result<StoredRecord, StoreError> {
    let p = codec::parse_log_value(seq, v)?;
    let event = decode_event(p.event).map_err(|e| StoreError::Decode { seq, detail: e.to_string() })?;
    Ok(StoredRecord {
        seq,
        prev_hash: p.prev_hash,
        hash: p.hash,
        recorded_at_micros: p.recorded_at_micros,
        event_bytes: p.event.to_vec(),
        event,
    })
}

/// Records `from..end` undecoded, checking that seqs run without gaps.
fn raw_records(
    log: &sled::Tree,
    from: u64,
    end: u64,
) -> impl Iterator<Item = Result<RawRecord, StoreError>> + Send + 'static {
    // sled rejects a range whose start is past its end; `from..from` is empty.
    let end = end.max(from);
    let mut expected = from;
    let mut iter = log.range(codec::log_key(from)..codec::log_key(end));
    let mut gap_reported = false;
    std::iter::from_fn(move || {
        let item = iter.next();
        let (k, v) = match item {
            None if expected < end && !gap_reported => {
                gap_reported = true;
                return Some(Err(StoreError::Corrupt {
                    seq: expected,
                    detail: format!("record missing: the log should hold records up to {}", end - 1),
                }));
            }
            None => return None,
            Some(Err(e)) => return Some(Err(e.into())),
            Some(Ok(kv)) => kv,
        };
        let r = (|| {
            let seq = codec::parse_log_key(&k, expected)?;
            if seq != expected {
                let e = StoreError::Corrupt {
                    seq: expected,
                    detail: format!("record missing (the next one is {seq})"),
                };
                expected = seq + 1;
                return Err(e);
            }
            expected += 1;
            let p = codec::parse_log_value(seq, &v)?;
            Ok((seq, p.prev_hash, p.hash, p.recorded_at_micros, p.event.to_vec()))
        })();
        Some(r)
    })
}

fn records(
    log: &sled::Tree,
    from: u64,
    end: u64,
) -> impl Iterator<Item = Result<StoredRecord, StoreError>> + Send + 'static {
    raw_records(log, from, end).map(|r| {
        let (seq, prev_hash, hash, recorded_at_micros, event_bytes) = r?;
        let event =
            decode_event(&event_bytes).map_err(|e| StoreError::Decode { seq, detail: e.to_string() })?;
        Ok(StoredRecord { seq, prev_hash, hash, recorded_at_micros, event_bytes, event })
    })
}
