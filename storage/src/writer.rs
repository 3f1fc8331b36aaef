//! The single writer thread: group commit, projection upkeep and every other mutation.
//!
//! One thread owns all writes so sequence numbers and the hash chain need no lock, and so
//! `sled::Db::flush` is only ever called from one thread (concurrent flushes can deadlock in
//! sled 0.34, issue 1308). Appenders queue `(events, reply)` and wait; the writer takes the
//! first request, drains whatever else is already queued (up to [`MAX_BATCH_EVENTS`]),
//! writes log + projections + meta into sled's memory, appends one commit-journal frame,
//! then answers every waiter of the batch; sled itself is flushed at checkpoints.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ca_core::Event;
use ca_core::chain::{Hash, record_hash};
use ca_proto::convert::{IndexEvent, decode_event};
use tokio::sync::{broadcast, oneshot};

use crate::journal::{CHECKPOINT_BYTES, CHECKPOINT_INTERVAL, Checkpoint, Journal};
use crate::project::{ProjBatch, ProjState};
use crate::rebuild;
use crate::space::{Change, SpaceGuard};
use crate::store::Shared;
use crate::upstream::{self, Upstream};
use crate::{Appended, RawRecord, StoreError, StoredRecord, codec};

/// Upper bound on events per batch: keeps one flush (and one sled batch in memory) bounded.
/// A single request larger than this still goes in whole, alone: a request is atomic.
pub(crate) const MAX_BATCH_EVENTS: usize = 4096;

/// Under load (the previous batch held more than one event), the writer waits this long
/// after the first request for more to join the batch. One group commit costs about the
/// same for 1 or 1,000 records, so a slightly longer wait buys fewer, larger ones; an idle
/// store (single requests) never waits.
const LINGER: Duration = Duration::from_micros(500);
/// How often an idle writer below the free-space reserve looks again.
const SPACE_RECHECK: Duration = Duration::from_secs(1);
/// No linger when the first request already brings this many events.
const LINGER_TARGET: usize = 64;

/// Where a command's result goes: a tokio oneshot for async callers, a std channel for
/// blocking ones (tokio's `blocking_recv` would panic inside a runtime), or a callback run
/// on the writer thread (so a signing thread can hand its event over and have the writer
/// answer the request directly: one wake-up per request instead of two).
pub(crate) enum Reply<T> {
    Async(oneshot::Sender<Result<T, StoreError>>),
    Blocking(SyncSender<Result<T, StoreError>>),
    Callback(Box<dyn FnOnce(Result<T, StoreError>) + Send>),
}

impl<T> Reply<T> {
    pub(crate) fn send(self, r: Result<T, StoreError>) {
        // A gone receiver means the caller stopped waiting (a dropped future): the outcome
        // stands either way, so there is nobody left to tell.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(r);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(r);
            }
            Reply::Callback(f) => f(r),
        }
    }
}

/// An event already encoded, with its canonical (decoded-again) form, which is what the
/// projections fold and what readers and watchers get back.
pub(crate) struct Prepared {
    pub bytes: Vec<u8>,
    pub event: Event,
}

pub(crate) struct AppendReq {
    pub events: Vec<Prepared>,
    pub reply: Reply<Vec<Appended>>,
}

pub(crate) enum Cmd {
    Append(AppendReq),
    Flush(Reply<()>),
    Rebuild(Reply<u64>),
    /// Records from the system of record, to follow it (see `Writer::replicate`).
    Replicate(Vec<RawRecord>, Reply<u64>),
    #[cfg(feature = "test-hooks")]
    FlipByte {
        seq: u64,
        offset: usize,
        reply: Reply<()>,
    },
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Cmd>,
    pub live: broadcast::Sender<Arc<StoredRecord>>,
    pub next_seq: u64,
    pub head: Hash,
    pub proj: ProjState,
    /// Makes each batch durable before it is acknowledged; emptied at checkpoints. `None`
    /// for a read-only store (which refuses appends before they reach the writer).
    pub journal: Option<Journal>,
    pub last_checkpoint: Instant,
    /// `Some` when fsync-per-batch is on: the sled data file, synced at each checkpoint
    /// before the journal is emptied (the journal itself then syncs every batch).
    pub fsync_file: Option<File>,
    /// Set by the first failed write; every later write is refused with it.
    pub failed: Option<String>,
    /// The free-space reserve, checked before every batch.
    pub space: SpaceGuard,
    /// Where batches are committed first, for a replica of a shared store.
    pub upstream: Option<Arc<dyn Upstream>>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut carry: Option<Cmd> = None;
        loop {
            let first = match carry.take() {
                Some(c) => c,
                None => {
                    // An idle store with journaled records checkpoints after a quiet
                    // interval, so a crash while idle leaves nothing to write back.
                    // Below the free-space reserve, free space is re-measured while idle
                    // too, so `/readyz` turns ready again without waiting for a write.
                    let journaled = self.journal.as_ref().is_some_and(|j| j.len() > 0);
                    let next = if self.space.is_low() {
                        self.rx.recv_timeout(SPACE_RECHECK)
                    } else if journaled && self.failed.is_none() {
                        self.rx.recv_timeout(CHECKPOINT_INTERVAL)
                    } else {
                        self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    };
                    match next {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) if self.space.is_low() => {
                            if let Change::Recovered { free } = self.space.check() {
                                self.space_recovered(free);
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            let r = self.checkpoint();
                            let _ = self.note_failure(r);
                            continue;
                        }
                        // Every store handle is gone: shut down.
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.shared.metrics.pending.fetch_sub(1, Ordering::Relaxed);
            match first {
                Cmd::Append(req) => {
                    let mut n = req.events.len();
                    let mut batch = vec![req];
                    // Under load, sleep through the linger instead of waking for every
                    // arrival (a blocking receive with a timeout costs a context switch
                    // per request), then take whatever queued up.
                    if self.shared.metrics.last_batch_size.load(Ordering::Relaxed) > 1 && n < LINGER_TARGET {
                        std::thread::sleep(LINGER);
                    }
                    loop {
                        match self.rx.try_recv() {
                            Ok(Cmd::Append(r)) if n + r.events.len() <= MAX_BATCH_EVENTS => {
                                self.shared.metrics.pending.fetch_sub(1, Ordering::Relaxed);
                                n += r.events.len();
                                batch.push(r);
                            }
                            // Too big for this batch, or not an append: it goes next, after
                            // this batch, so commands keep their order relative to appends.
                            Ok(other) => {
                                carry = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.commit_batch(batch, n);
                }
                Cmd::Flush(reply) => {
                    let r = self.guard().and_then(|()| self.checkpoint());
                    reply.send(self.note_failure(r));
                }
                Cmd::Replicate(raw, reply) => reply.send(self.replicate(raw)),
                Cmd::Rebuild(reply) => {
                    let r = self.guard().and_then(|()| self.rebuild());
                    reply.send(self.note_failure(r));
                }
                #[cfg(feature = "test-hooks")]
                Cmd::FlipByte { seq, offset, reply } => reply.send(self.flip_byte(seq, offset)),
            }
        }
        if self.failed.is_none()
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "final checkpoint of the event store failed");
        }
        tracing::debug!("event store writer stopped");
    }

    fn guard(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(msg) => Err(StoreError::Failed(msg.clone())),
            None => Ok(()),
        }
    }

    /// Poison the writer on a write-path error (see [`StoreError::Failed`]).
    fn note_failure<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && !matches!(e, StoreError::Failed(_))
        {
            self.poison(e.to_string());
        }
        r
    }

    /// Refuse every further write, saying why (the first reason is kept).
    fn poison(&mut self, msg: String) {
        if self.failed.is_none() {
            tracing::error!(error = %msg, "event store write failed; refusing further writes until restart");
            self.shared.set_failed(msg.clone());
            self.failed = Some(msg);
        }
    }

    /// Flush sled (and fsync its file when asked), then empty the journal: everything it
    /// held is now in sled's durable state.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        self.shared.trees.db.flush()?;
        if let Some(f) = &self.fsync_file {
            f.sync_data()?;
        }
        if let Some(j) = &mut self.journal {
            j.reset(Checkpoint { next_seq: self.next_seq, head: self.head })?;
        }
        self.last_checkpoint = Instant::now();
        let m = &self.shared.metrics;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        m.checkpoints.fetch_add(1, Ordering::Relaxed);
        m.checkpoint_micros.fetch_add(took, Ordering::Relaxed);
        m.checkpoint_micros_max.fetch_max(took, Ordering::Relaxed);
        Ok(())
    }

    /// The free-space reserve: `Err(LowSpace)` while the file system is below it. Going
    /// below checkpoints once, while sled still has room to write everything back (and
    /// the emptied journal returns its space).
    fn space_check(&mut self) -> Result<(), StoreError> {
        let reserve = self.space.reserve();
        match self.space.check() {
            Change::None => {}
            Change::WentLow { free } => {
                let e = StoreError::LowSpace { free, reserve };
                tracing::error!(free, reserve, "event store: free space below the reserve; refusing writes");
                self.shared.set_low_space(Some(e.to_string()));
                let r = self.checkpoint();
                self.note_failure(r)?;
                // The checkpoint may have freed enough (an emptied journal).
                if let Change::Recovered { free } = self.space.check() {
                    self.space_recovered(free);
                }
            }
            Change::Recovered { free } => self.space_recovered(free),
        }
        if self.space.is_low() {
            let free = self.space.free().unwrap_or(0);
            self.shared.metrics.low_space_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::LowSpace { free, reserve });
        }
        Ok(())
    }

    fn space_recovered(&self, free: u64) {
        tracing::warn!(
            free,
            reserve = self.space.reserve(),
            "event store: free space is back; accepting writes"
        );
        self.shared.set_low_space(None);
    }

    fn commit_batch(&mut self, reqs: Vec<AppendReq>, n_events: usize) {
        if let Err(e) = self.guard() {
            let msg = e.to_string();
            for r in reqs {
                r.reply.send(Err(StoreError::Failed(msg.clone())));
            }
            return;
        }
        if let Err(e) = self.space_check() {
            for r in reqs {
                r.reply.send(Err(match &e {
                    StoreError::LowSpace { free, reserve } => {
                        StoreError::LowSpace { free: *free, reserve: *reserve }
                    }
                    other => StoreError::Failed(other.to_string()),
                }));
            }
            return;
        }
        let recorded_at = now_micros();
        let mut seq = self.next_seq;
        let mut head = self.head;
        let mut records = Vec::with_capacity(n_events);
        let mut answers = Vec::with_capacity(reqs.len());
        let n_reqs = reqs.len() as u64;
        for req in reqs {
            let mut appended = Vec::with_capacity(req.events.len());
            for p in req.events {
                let hash = record_hash(&head, seq, &p.bytes);
                appended.push(Appended { seq, hash });
                records.push(Arc::new(StoredRecord {
                    seq,
                    prev_hash: head,
                    hash,
                    recorded_at_micros: recorded_at,
                    event_bytes: p.bytes,
                    event: p.event,
                }));
                head = hash;
                seq += 1;
            }
            answers.push((req.reply, appended));
        }

        // The system of record first (a replica store): only what it committed is kept here.
        if let Some(up) = &self.upstream
            && let Err(e) = up.commit(&records)
        {
            // The system of record's `Failed` (an outcome it could not learn, a log it lost)
            // stops this store too: `note_failure` passes `Failed` through, as a poisoned
            // writer's own refusals.
            if let StoreError::Failed(msg) = &e {
                self.poison(msg.clone());
            }
            for (reply, _) in answers {
                reply.send(Err(upstream::again(&e)));
            }
            return;
        }

        let flush_time = match self.persist(&records) {
            Ok(d) => d,
            Err(msg) => {
                for (reply, _) in answers {
                    reply.send(Err(StoreError::Failed(msg.clone())));
                }
                return;
            }
        };
        let m = &self.shared.metrics;
        m.appends.fetch_add(n_reqs, Ordering::Relaxed);
        m.last_batch_size.store(n_events as u64, Ordering::Relaxed);
        m.flush_micros
            .fetch_add(u64::try_from(flush_time.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        for (reply, appended) in answers {
            reply.send(Ok(appended));
        }
        self.after_batch(records);
    }

    /// Write consecutive records (chaining from the head) into the log, the projections
    /// and the journal, then publish them to readers. `Err` carries the failure message
    /// (the store is poisoned by then).
    fn persist(&mut self, records: &[Arc<StoredRecord>]) -> Result<Duration, String> {
        let mut proj = ProjBatch::default();
        let mut st = self.proj;
        let mut values = Vec::with_capacity(records.len());
        for r in records {
            values
                .push((r.seq, codec::log_value(&r.prev_hash, &r.hash, r.recorded_at_micros, &r.event_bytes)));
            proj.apply(&mut st, r.seq, &IndexEvent::of(&r.event));
        }
        // Log first, projections second, meta last (inside `commit`), all in sled's memory;
        // then one journal write makes the batch durable. Key by key, not `apply_batch`
        // (see `ProjBatch`): sled recovers a prefix of these writes, the journal the rest.
        let written = (|| {
            for (seq, value) in &values {
                self.shared.trees.log.insert(codec::log_key(*seq), &value[..])?;
            }
            proj.commit(&self.shared.trees, &self.proj, &st)?;
            let t = Instant::now();
            self.journal
                .as_mut()
                .ok_or(StoreError::ReadOnly)?
                .append(values.iter().map(|(seq, v)| (*seq, &v[..])))?;
            Ok(t.elapsed())
        })();
        let took = match self.note_failure(written) {
            Ok(d) => d,
            Err(e) => {
                self.shared.metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
                return Err(match e {
                    StoreError::Failed(m) => m,
                    other => other.to_string(),
                });
            }
        };
        let Some(last) = records.last() else { return Ok(took) };
        self.next_seq = last.seq + 1;
        self.head = last.hash;
        self.proj = st;
        // Readers see the batch only now that it is durable, and before any waiter wakes,
        // so an acknowledged record is always readable.
        self.shared.publish_committed(self.next_seq, Some(Appended { seq: last.seq, hash: last.hash }), &st);
        let m = &self.shared.metrics;
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(took)
    }

    /// After the waiters are answered: broadcast to watchers, and checkpoint when due (a
    /// checkpoint delays the next batch, not this one).
    fn after_batch(&mut self, records: Vec<Arc<StoredRecord>>) {
        for r in records {
            // No subscribers is fine: watchers read the log for anything they missed.
            let _ = self.live.send(r);
        }
        if self.journal.as_ref().is_some_and(|j| j.len() >= CHECKPOINT_BYTES)
            || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
        {
            let r = self.checkpoint();
            if self.note_failure(r).is_err() {
                self.shared.metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Apply records another instance committed to the system of record (a replica store
    /// following it). They must continue this store's chain; records it already holds are
    /// skipped once their hash matches (the writer's own batches, seen again). Returns the
    /// next seq.
    fn replicate(&mut self, raw: Vec<RawRecord>) -> Result<u64, StoreError> {
        self.guard()?;
        let mut records = Vec::with_capacity(raw.len());
        let (mut seq, mut head) = (self.next_seq, self.head);
        for (s, prev, hash, recorded_at, bytes) in raw {
            if s < seq {
                let same = match self.shared.read_raw(s)? {
                    Some(v) => codec::parse_log_value(s, &v)?.hash == hash,
                    None => false,
                };
                if !same {
                    return Err(StoreError::Damaged(format!(
                        "the database's record {s} differs from this instance's replica: the replica holds \
                         history the database lost (or it follows another database); it cannot follow it"
                    )));
                }
                continue;
            }
            if s != seq || prev != head || record_hash(&head, s, &bytes) != hash {
                return Err(StoreError::Corrupt {
                    seq: s,
                    detail: format!("the database's record does not continue the replica's chain at {seq}"),
                });
            }
            let event =
                decode_event(&bytes).map_err(|e| StoreError::Decode { seq: s, detail: e.to_string() })?;
            records.push(Arc::new(StoredRecord {
                seq: s,
                prev_hash: prev,
                hash,
                recorded_at_micros: recorded_at,
                event_bytes: bytes,
                event,
            }));
            head = hash;
            seq += 1;
        }
        if records.is_empty() {
            return Ok(self.next_seq);
        }
        self.persist(&records).map_err(StoreError::Failed)?;
        self.after_batch(records);
        Ok(self.next_seq)
    }

    /// Recompute the projections from the whole log and make the trees equal them (see
    /// `rebuild.rs`). Runs on the writer so no append can interleave with it.
    fn rebuild(&mut self) -> Result<u64, StoreError> {
        let started = Instant::now();
        let (st, report) = rebuild::rebuild(
            &self.shared.trees,
            self.next_seq,
            rebuild::PASS_RECORDS,
            rebuild::scan_threads(),
        )?;
        self.checkpoint()?;
        self.proj = st;
        self.shared.publish_committed(self.next_seq, self.shared.head(), &st);
        report.log(started, "projections rebuilt from the log");
        Ok(report.records)
    }

    /// Test hook: corrupt one stored byte (see `EventStore::danger_flip_byte`).
    #[cfg(feature = "test-hooks")]
    fn flip_byte(&mut self, seq: u64, offset: usize) -> Result<(), StoreError> {
        let log = &self.shared.trees.log;
        let key = codec::log_key(seq);
        let mut v = log.get(key)?.ok_or(StoreError::NoSuchRecord(seq))?.to_vec();
        let len = v.len();
        let byte = v.get_mut(offset).ok_or_else(|| {
            StoreError::InvalidArgument(format!("offset {offset} is outside record {seq}'s {len}-byte value"))
        })?;
        *byte ^= 0xff;
        log.insert(key, v)?;
        self.checkpoint()?;
        tracing::warn!(seq, offset, "danger_flip_byte: deliberately corrupted a log record");
        Ok(())
    }
}

fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        // A clock before 1970 is misconfigured; record it as negative rather than failing.
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}
