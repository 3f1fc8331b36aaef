//! The event store: an append-only, hash-chained log in sled 0.34, the projections derived
//! from it (certificates by serial, the revoked set, the expiry index), group commit, replay
//! and subscriptions. Every sled-specific line of the product lives in this crate.
//!
//! # Durability contract
//!
//! [`EventStore::append`] resolves `Ok` only after the batch holding its events has been
//! written to the **commit journal** (`<dir>/ca-journal`, `journal.rs`) with one `pwrite`,
//! and, with [`StoreOptions::fsync_each_batch`], `fdatasync`ed. The batch is in sled's
//! trees (in memory) by then too, but sled is flushed only at **checkpoints**: every
//! 16 MiB of journal or 5 s, with `sled::Db::flush()` (plus an `fdatasync` of sled's `db`
//! file with `fsync_each_batch`), after which the journal is emptied. On open, the journal's
//! records that sled's log lacks are checked against the hash chain and written back into
//! the log before anything else happens; records sled already holds must be
//! byte-identical, or the open fails naming the record.
//!
//! Why not `flush()` per batch: in sled 0.34.7 a flush (and every `apply_batch`, through
//! `PageCache::pin_log`) seals the current I/O buffer and hands its write to sled's I/O
//! pool, whose `notify_all` wakes every idle pool thread; measured under load, that was
//! ~1.4 context switches per issued certificate and the largest cost outside signing.
//!
//! - **Process crash (`kill -9`, panic, OOM kill): an acknowledged event survives.** The
//!   journal write is in the kernel's page cache before the acknowledgement; sled
//!   recovers a prefix of its own writes and the journal supplies the rest
//!   (`tests/journal_crash.rs` aborts a child process between checkpoints and checks it).
//! - **Power loss or kernel crash, default mode: the last acknowledged batches can be
//!   lost.** Nothing forces the journal to the device per batch. The chain stays valid: a
//!   torn frame fails its CRC and is dropped with everything after it.
//! - **With [`StoreOptions::fsync_each_batch`]: power-loss durable** on hardware that
//!   honours cache flushes: each batch's journal frame is `fdatasync`ed before any waiter
//!   wakes, and sled's file is `fdatasync`ed at each checkpoint before the journal is
//!   emptied. Group commit amortises the one device flush per batch.
//! - sled itself: its flush writes dirty buffers with `pwrite` and calls
//!   `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, not `fsync`; values over ~128 KiB
//!   would go to separate blob files (no event we write comes close).
//!
//! A read-only open (`audit verify`) refuses a store whose journal still holds records
//! that the log lacks ([`StoreError::Unrecovered`]) instead of verifying a log that is
//! missing acknowledged history; a read-write open (starting the server) writes them back.
//!
//! No certificate may leave the process before its `append` returned: callers rely on
//! this contract for "no acknowledged event is lost".
//!
//! If a write fails (sled, journal or checkpoint), every waiter of that batch gets an error
//! (never `Ok`) and the store refuses all later writes ([`StoreError::Failed`]): whether
//! the batch reached the disk is unknown, and chaining more records onto it could
//! acknowledge history that a restart does not have. Reopening recovers the durable state.
//!
//! Before that edge, a **free-space reserve** (`StoreOptions::min_free_bytes`, `space.rs`):
//! when the file system holding the store has less free space than the reserve, the writer
//! checkpoints once (flushing sled and emptying the journal while there is room) and
//! refuses appends with [`StoreError::LowSpace`] until space is back; reads never stop.
//!
//! Damage is reported at open, never papered over ([`StoreError::Damaged`]): a corrupt
//! journal frame with intact frames after it, and a sled log shorter than the checkpoint
//! marker at the head of the journal says it held (a truncated or damaged `db` file).
//!
//! # Group commit
//!
//! One writer thread owns every write. Appenders send `(events, reply)` over a channel
//! (the server's signing threads use [`EventStore::append_then`], whose callback answers
//! the gRPC request straight from the writer); the writer takes the first request, sleeps
//! 500 us if the previous batch held more than one event (so a loaded store gathers bigger
//! batches), drains what else is queued (up to 4096 events per batch; a bigger single
//! request goes alone, whole), assigns consecutive seqs, computes the hashes, inserts the
//! `log` records, then the projection entries, then `meta` (key by key: see `ProjBatch`),
//! appends one journal frame, publishes the new durable head to readers, wakes every
//! waiter and broadcasts the records to [`EventStore::watch`] streams. Readers never wait
//! on the writer: they read sled directly, bounded by the durable head, so they never see
//! a record that is not yet durable.
//!
//! # Crash consistency and recovery
//!
//! Writes go log first, projections second, `meta.projected_through` last, all from the
//! writer thread, so any prefix of them that sled recovers is consistent. On open: the
//! journal is folded back into the log (above); the head `(seq, hash)` is recovered from
//! the last log record, which must hash correctly and chain from its predecessor; if
//! `meta.projected_through` is behind the head, the missing records are replayed into the
//! projections (logged). Every projection write is an overwrite keyed by the record, so
//! replaying records that were already partly projected converges to the same state. If
//! `meta.projected_through` is absent while the log is not empty (the first batch never
//! reached `meta`, or a rebuild was interrupted), open runs a full rebuild (below)
//! instead, which converges from any state of the trees. A store whose projections are
//! current opens without replaying anything, whatever the log's size.
//!
//! # Rebuild
//!
//! [`EventStore::rebuild_projections`] (and open, as above) recomputes the projections
//! from the whole log and makes the trees equal them; it runs on the writer thread, so
//! appends wait. It removes `meta.projected_through` first, folds the log in memory with
//! the lean decode (`ca_proto::convert::decode_event_index`: the indexed fields only, no
//! copy of the certificate DER; it accepts exactly what the full decode accepts), on two
//! threads per core over ranges of seqs, then walks each tree once in key order beside
//! the sorted fold (`certs` and `revoked` on one thread, `expiry` on another), inserting
//! what is missing or different and removing what the fold does not hold, and writes
//! `meta` last. So a rebuild of intact projections writes nothing, and one of lost or
//! damaged projections writes only the difference, in key order. It never clears or
//! drops a tree: in sled 0.34 `Tree::clear` removes key by key and every freed page costs
//! time linear in sled's free list, which made the old clear-and-refold rebuild run at
//! ~20,000 records/s. Readers are not blocked meanwhile; each entry they read is its old
//! or its final value (an intact store's entries do not change at all). Memory: the fold
//! holds ~48 bytes per issuance; a log of more than 2,000,000 records is rebuilt in
//! several passes, each over one hash partition of the serials, to bound it. Measured on
//! 1,013,962 records (2 cores): 2.3-3.4 s with intact projections, ~8.5 s from empty trees.
//!
//! # sled trees and encodings
//!
//! All integers are big-endian, so sled's byte order is numeric order.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `log` | seq `u64` | prev_hash (32) ‖ hash (32) ‖ recorded_at_micros `i64` (8) ‖ event bytes (`ca.v1.Event`) |
//! | `certs` | serial bytes | issued seq `u64` ‖ not_after `i64` (‖ issuer generation `u32` when not 0) |
//! | `revoked` | serial bytes | seq `u64` ‖ reason code `u8` ‖ revoked_at `i64` ‖ invalidity date `i64` (0 = none, as on the wire) |
//! | `expiry` | (not_after `i64` with its sign bit flipped, as `u64`) ‖ serial bytes | empty |
//! | `issuers` | `r` ‖ generation `u32` / `c` ‖ generation `u32` | seq `u64` of its `IssuingCaRotated` / its highest full CRL number `u64` (generation 0's stays in `meta`) |
//! | `meta` | `format`, `projected_through`, `ca_seq`, `last_crl_number` | `u32` format version, `u64`s |
//!
//! `hash = SHA-256(prev_hash ‖ seq_be ‖ event_bytes)`, record 0 chaining from 32 zero bytes
//! (`ca_core::chain`). The projections equal `ca_core::projection::Inventory`'s fold of the
//! log ([`EventStore::inventory`] reads them back for that comparison). The CA itself is not
//! copied: `meta.ca_seq` points at its `CaInitialized` record.

mod acme;
mod codec;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod issuers;
mod journal;
mod pg;
mod project;
mod rebuild;
mod space;
mod store;
mod upstream;
mod watch;
mod writer;

pub use error::StoreError;
pub use pg::{PgOptions, migrate_to_postgres, read_postgres, verify_postgres};
pub use store::{
    Appended, CertRecord, ChainFailure, ChainReport, DEFAULT_CACHE_BYTES, DEFAULT_MIN_FREE_BYTES, EventStore,
    RawRecord, Role, SharedMetrics, StatusFilter, StoreMetrics, StoreOptions, StoredRecord,
};
