//! Opening the sled store: the file lock, the format check, journal recovery, catching the
//! projections up, and starting the writer thread.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use ca_core::chain::{GENESIS, record_hash};
use tokio::sync::broadcast;

use super::{
    Appended, Committed, DEFAULT_CACHE_BYTES, EventStore, Inner, LIVE_CAPACITY, Metrics, Shared, StoreOptions,
};
use crate::journal::{Checkpoint, Journal, JournalError, JournalRecord};
use crate::project::{self, ProjState, Trees};
use crate::rebuild;
use crate::space::SpaceGuard;
use crate::upstream::Upstream;
use crate::writer::Writer;
use crate::{StoreError, codec};

impl EventStore {
    /// Open the local sled store; with `upstream`, as the replica of a shared store whose
    /// writes are committed there first.
    pub(crate) fn open_local(
        dir: &Path,
        opts: StoreOptions,
        upstream: Option<Arc<dyn Upstream>>,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let db = open_sled(dir, opts.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES))?;
        let trees = Trees::open(db)?;
        check_format(&trees, opts.read_only)?;

        let mut head = last_record(&trees.log, !opts.read_only)?;
        let mut recovered = 0;
        let journal = if opts.read_only {
            let contents = Journal::read(dir)?;
            check_checkpoint(&trees.log, dir, head, contents.checkpoint)?;
            let beyond = head.map_or(0, |h| h.seq + 1);
            let pending = contents.records.iter().filter(|r| r.seq >= beyond).count();
            if pending > 0 {
                return Err(StoreError::Unrecovered(pending));
            }
            None
        } else {
            let (mut journal, contents) = Journal::open(dir, opts.fsync_each_batch)?;
            check_checkpoint(&trees.log, dir, head, contents.checkpoint)?;
            if !contents.records.is_empty() {
                recovered = recover_journal(&trees.log, &mut head, &contents.records)?;
                trees.db.flush()?;
                if opts.fsync_each_batch {
                    File::open(dir.join("db"))?.sync_data()?;
                }
                journal.reset(Checkpoint {
                    next_seq: head.map_or(0, |h| h.seq + 1),
                    head: head.map_or(GENESIS, |h| h.hash),
                })?;
                if recovered > 0 {
                    tracing::warn!(
                        recovered,
                        "wrote acknowledged records from the commit journal back into the log (unclean shutdown)"
                    );
                }
            }
            Some(journal)
        };
        let next_seq = head.map_or(0, |h| h.seq + 1);
        let mut st = ProjState::load(&trees.meta)?;
        let mut replayed = 0;
        if !opts.read_only {
            if let Some(t) = st.through
                && t >= next_seq
            {
                return Err(StoreError::Corrupt {
                    seq: t,
                    detail: format!(
                        "projections claim records up to {t} but the log ends at {}",
                        next_seq as i128 - 1
                    ),
                });
            }
            match st.through {
                Some(t) if t + 1 < next_seq => {
                    tracing::info!(
                        from = t + 1,
                        to = next_seq - 1,
                        "projections are behind the log; replaying"
                    );
                    replayed = project::fold_log(&trees, &mut st, t + 1, next_seq, "catch-up")?;
                    trees.db.flush()?;
                }
                Some(_) => {}
                // Nothing projected, or a rebuild did not finish: the trees may hold anything
                // the log implies, in any state, so only a full rebuild is certain to converge.
                None if next_seq > 0 => {
                    tracing::info!(
                        records = next_seq,
                        "projections are missing; rebuilding them from the log"
                    );
                    let t = Instant::now();
                    let (rebuilt, report) =
                        rebuild::rebuild(&trees, next_seq, rebuild::PASS_RECORDS, rebuild::scan_threads())?;
                    trees.db.flush()?;
                    report.log(t, "projections rebuilt at open");
                    st = rebuilt;
                    replayed = next_seq;
                }
                None => {}
            }
        }

        let fsync_file = if opts.fsync_each_batch {
            // sled 0.34 keeps its pages in `<dir>/db`; fsync through our own descriptor
            // flushes the same inode.
            Some(File::open(dir.join("db"))?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            trees,
            committed: RwLock::new(Committed { next_seq, head, ca_seq: st.ca_seq, last_crl: st.last_crl }),
            failed: RwLock::new(None),
            low_space: RwLock::new(None),
            metrics: Metrics::default(),
        });
        shared.metrics.replayed_at_open.store(replayed, Ordering::Relaxed);
        shared.metrics.journal_recovered.store(recovered, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            live: live.clone(),
            next_seq,
            head: head.map_or(GENESIS, |h| h.hash),
            proj: st,
            journal,
            last_checkpoint: Instant::now(),
            fsync_file,
            failed: None,
            space: SpaceGuard::new(dir.to_path_buf(), if opts.read_only { 0 } else { opts.min_free_bytes }),
            upstream: upstream.clone(),
        };
        let handle = std::thread::Builder::new().name("ca-log-writer".into()).spawn(move || writer.run())?;
        tracing::info!(
            dir = %dir.display(),
            records = next_seq,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            read_only = opts.read_only,
            fsync_each_batch = opts.fsync_each_batch,
            "event store opened"
        );
        Ok(EventStore {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                live,
                writer: Some(handle),
                read_only: opts.read_only,
                upstream,
                pg: OnceLock::new(),
            }),
        })
    }
}

/// sled holds an exclusive file lock per database. A store handle dropped a moment ago in
/// this process releases it only when its writer thread has finished its final flush, so a
/// quick reopen (a restart in tests, `init` then `serve`) may briefly find it held: retry
/// for up to 2 s before reporting the lock error (another process holding it still fails).
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let r = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // The writer flushes explicitly, at checkpoints (the journal covers the rest).
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open();
        match r {
            // sled reports the held lock as ErrorKind::Other with this text: the one place
            // that reads it, so nothing above the store matches on sled's wording.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked(dir.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Write the journal's records that sled lost back into the log, checking each against the
/// chain; records sled already holds must be byte-identical. Returns how many were written.
/// (The projections catch up afterwards, like after any crash between log and `meta`.)
fn recover_journal(
    log: &sled::Tree,
    head: &mut Option<Appended>,
    records: &[JournalRecord],
) -> Result<u64, StoreError> {
    let mut written = 0;
    for r in records {
        let next = head.map_or(0, |h| h.seq + 1);
        if r.seq < next {
            if log.get(codec::log_key(r.seq))?.as_deref() != Some(&r.value[..]) {
                return Err(StoreError::Corrupt {
                    seq: r.seq,
                    detail: "the commit journal and the log disagree about this record".into(),
                });
            }
            continue;
        }
        if r.seq > next {
            // Frames are written in seq order, so this is a stale frame left behind by a
            // truncation that did not reach the disk: nothing after it was acknowledged
            // on top of the log we have.
            tracing::warn!(
                seq = r.seq,
                expected = next,
                "commit journal skips ahead of the log; ignoring the rest"
            );
            break;
        }
        let v = codec::parse_log_value(r.seq, &r.value)?;
        let prev = head.map_or(GENESIS, |h| h.hash);
        if v.prev_hash != prev || record_hash(&v.prev_hash, r.seq, v.event) != v.hash {
            return Err(StoreError::Corrupt {
                seq: r.seq,
                detail: "a commit journal record does not chain onto the log".into(),
            });
        }
        log.insert(codec::log_key(r.seq), &r.value[..])?;
        *head = Some(Appended { seq: r.seq, hash: v.hash });
        written += 1;
    }
    Ok(written)
}

/// sled's log must hold at least what the journal's checkpoint marker says it held durably;
/// less means its file lost acknowledged records (truncated, damaged, or replaced by an
/// older copy), which the journal, emptied at that checkpoint, cannot bring back.
fn check_checkpoint(
    log: &sled::Tree,
    dir: &Path,
    head: Option<Appended>,
    checkpoint: Option<Checkpoint>,
) -> Result<(), StoreError> {
    let Some(ck) = checkpoint else { return Ok(()) };
    let next = head.map_or(0, |h| h.seq + 1);
    let db = dir.join("db");
    let restore = "keep a copy of the data dir and restore it from a backup; `ca-server audit verify` \
                   shows what the log still holds";
    if next < ck.next_seq {
        return Err(StoreError::Damaged(format!(
            "the event log in {} ends after {next} records, but its last checkpoint held {}: the file \
             was truncated, damaged or replaced by an older copy, and acknowledged records are gone; {restore}",
            db.display(),
            ck.next_seq
        )));
    }
    if let Some(last) = ck.next_seq.checked_sub(1) {
        let hash = match log.get(codec::log_key(last))? {
            Some(v) => codec::parse_log_value(last, &v)?.hash,
            None => GENESIS,
        };
        if hash != ck.head {
            return Err(StoreError::Damaged(format!(
                "record {last} of the event log in {} is not the one its last checkpoint recorded: the \
                 log was rewritten or replaced; {restore}",
                db.display()
            )));
        }
    }
    Ok(())
}

impl From<JournalError> for StoreError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Io(e) => StoreError::Io(e),
            JournalError::Damaged(d) => StoreError::Damaged(d.to_string()),
        }
    }
}

/// The format marker: written on first open, checked on every later one.
fn check_format(trees: &Trees, read_only: bool) -> Result<(), StoreError> {
    match trees.meta.get(codec::META_FORMAT)? {
        Some(v) => match codec::be_u32(&v) {
            Some(codec::FORMAT_VERSION) => Ok(()),
            found => Err(StoreError::Format { found: found.unwrap_or(0), supported: codec::FORMAT_VERSION }),
        },
        None if read_only => Ok(()),
        None => {
            trees.meta.insert(codec::META_FORMAT, &codec::FORMAT_VERSION.to_be_bytes()[..])?;
            Ok(())
        }
    }
}

/// The last record of the log. With `validate`, also checks that its hash matches its
/// contents and chains from its predecessor: the cheap on-open check (a full walk is
/// `verify_chain`).
fn last_record(log: &sled::Tree, validate: bool) -> Result<Option<Appended>, StoreError> {
    let Some((k, v)) = log.last()? else {
        return Ok(None);
    };
    let seq = codec::parse_log_key(&k, 0)?;
    let rec = codec::parse_log_value(seq, &v)?;
    if validate {
        if record_hash(&rec.prev_hash, seq, rec.event) != rec.hash {
            return Err(StoreError::Corrupt {
                seq,
                detail: "the last record's hash does not match its contents".into(),
            });
        }
        let expected_prev = match seq.checked_sub(1) {
            None => GENESIS,
            Some(p) => {
                let pv = log.get(codec::log_key(p))?.ok_or_else(|| StoreError::Corrupt {
                    seq: p,
                    detail: "record missing before the last record".into(),
                })?;
                codec::parse_log_value(p, &pv)?.hash
            }
        };
        if rec.prev_hash != expected_prev {
            return Err(StoreError::Corrupt {
                seq,
                detail: "the last record does not chain from its predecessor".into(),
            });
        }
    }
    Ok(Some(Appended { seq, hash: rec.hash }))
}
