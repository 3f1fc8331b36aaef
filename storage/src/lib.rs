//! The event store: an append-only, hash-chained log in sled 0.34, the projections derived
//! from it (certificates by serial, the revoked set, the expiry index), group commit, replay
//! and subscriptions. Every sled-specific line of the product lives in this crate.
//!
//! # Durability contract
//!
//! [`EventStore::append`] resolves `Ok` only after the batch holding its events has gone
//! through `sled::Db::flush()`. What that flush does in sled 0.34.7 on Linux (default
//! features, no `io_uring`): it writes every dirty log buffer into the `db` file with
//! `pwrite` and then calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on exactly
//! the written byte range. It does **not** call `fsync`/`fdatasync` (sled calls
//! `sync_all` only when `sync_file_range` is unavailable, and on non-Linux systems).
//! Values too large for a log segment (over ~128 KiB; no event we write comes close) go to
//! separate blob files that are written without any sync. Therefore:
//!
//! - **Process crash (`kill -9`, panic, OOM kill): an acknowledged event survives.** The
//!   data is in the kernel's page cache (indeed already handed to the device).
//! - **Power loss or kernel crash: weaker than fsync.** `sync_file_range` neither flushes
//!   the device's volatile write cache nor persists file metadata (e.g. the file size when
//!   the file grew), so the last acknowledged batches can be lost. sled recovers a prefix
//!   of its log (each `apply_batch` all-or-nothing), and the chain stays valid.
//! - **Stronger guarantee:** [`StoreOptions::fsync_each_batch`] adds an `fdatasync` of
//!   sled's `db` file right after each batch's flush, in the writer before any waiter is
//!   woken (`Writer::flush` in `writer.rs`), which makes acknowledged batches survive power
//!   loss on hardware that honours cache flushes, at the cost of one more device flush per
//!   batch (group commit amortises it across the batch).
//!
//! No certificate may leave the process before its `append` returned: callers rely on
//! this contract for "no acknowledged event is lost".
//!
//! If a write or flush fails, every waiter of that batch gets an error (never `Ok`) and
//! the store refuses all later writes ([`StoreError::Failed`]): whether the batch reached
//! the disk is unknown, and chaining more records onto it could acknowledge history that a
//! restart does not have. Reopening recovers the durable state.
//!
//! # Group commit
//!
//! One writer thread owns every write. Appenders send `(events, reply)` over a channel; the
//! writer blocks for the first request, drains what else is queued (up to 4096 events per
//! batch; a bigger single request goes alone, whole), assigns consecutive seqs, computes
//! the hashes, writes the `log` batch, then the projection trees, then `meta`, then calls
//! `flush()` once (sled 0.34's `flush_async` can deadlock with concurrent callers, sled
//! issue 1308, so only this thread flushes), publishes the new durable head to readers,
//! wakes every waiter and broadcasts the records to [`EventStore::watch`] streams. Readers
//! never wait on the writer: they read sled directly, bounded by the durable head, so they
//! never see a record that is not yet flushed.
//!
//! # Crash consistency and recovery
//!
//! Writes go log first, projections second, `meta` last. On open: the head `(seq, hash)`
//! is recovered from the last log record, which must hash correctly and chain from its
//! predecessor; if `meta.projected_through` is behind the head, the missing records are
//! replayed into the projections (logged). Every projection write is an overwrite keyed
//! by the record, so replaying records that were already partly projected converges to
//! the same state. If `meta.projected_through` is absent while the log is not empty (the
//! first batch never reached `meta`, or a rebuild was interrupted), open runs a full
//! rebuild (below) instead, which converges from any state of the trees. A store whose
//! projections are current opens without replaying anything, whatever the log's size.
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
//! | `certs` | serial bytes | issued seq `u64` ‖ not_after `i64` |
//! | `revoked` | serial bytes | seq `u64` ‖ reason code `u8` ‖ revoked_at `i64` ‖ invalidity date `i64` (0 = none, as on the wire) |
//! | `expiry` | (not_after `i64` with its sign bit flipped, as `u64`) ‖ serial bytes | empty |
//! | `meta` | `format`, `projected_through`, `ca_seq`, `last_crl_number` | `u32` format version, `u64`s |
//!
//! `hash = SHA-256(prev_hash ‖ seq_be ‖ event_bytes)`, record 0 chaining from 32 zero bytes
//! (`ca_core::chain`). The projections equal `ca_core::projection::Inventory`'s fold of the
//! log ([`EventStore::inventory`] reads them back for that comparison). The CA itself is not
//! copied: `meta.ca_seq` points at its `CaInitialized` record.

mod codec;
mod error;
mod project;
mod rebuild;
mod store;
mod watch;
mod writer;

pub use error::StoreError;
pub use store::{
    Appended, CertRecord, ChainFailure, ChainReport, EventStore, RawRecord, StatusFilter, StoreMetrics,
    StoreOptions, StoredRecord,
};
