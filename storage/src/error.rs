//! The crate's one error type.

/// Everything the store can fail with. Corrupt or undecodable data is reported with the
/// sequence number it was found at; it never panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (sled, or PostgreSQL) reported an error: I/O, its own corruption checks,
    /// a lost connection. Carried as text so no backend type crosses the store's boundary.
    #[error("{0}")]
    Backend(String),

    /// The shared database cannot be reached now (connection refused or lost before the
    /// batch's commit was sent): nothing was written; retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),

    /// This instance does not hold the writer lease of a shared (PostgreSQL) store: another
    /// instance writes, or none does right now (a takeover is under way). `writer` names
    /// the current holder when one is known, so a client can go there.
    #[error("this instance is not the writer ({why}){}", writer.as_ref().map(|w| format!("; the writer is {w}")).unwrap_or_default())]
    NotWriter { writer: Option<String>, why: String },

    /// A stored record or index entry does not have the layout this crate writes, or the
    /// log is not a gapless sequence.
    #[error("record {seq} is corrupt: {detail}")]
    Corrupt { seq: u64, detail: String },

    /// A record's event bytes are not a decodable `ca.v1.Event`.
    #[error("record {seq} does not decode: {detail}")]
    Decode { seq: u64, detail: String },

    /// An event handed to `append` cannot be stored (it does not survive its own encoding).
    #[error("event cannot be stored: {0}")]
    InvalidEvent(String),

    /// A caller-supplied argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// There is no record with this sequence number.
    #[error("no record {0} in the log")]
    NoSuchRecord(u64),

    /// The store was opened read-only (for audit), so it refuses writes.
    #[error("the event store was opened read-only")]
    ReadOnly,

    /// Another process holds the store's exclusive lock (one process per data dir).
    #[error("the event store in {0} is locked by another process")]
    Locked(String),

    /// The writer thread is gone (the store is shutting down).
    #[error("the event store is closed")]
    Closed,

    /// A write or flush failed earlier. Whether that batch reached the disk is unknown, so
    /// the store refuses every later write instead of chaining onto a record that may not
    /// exist after a restart. Reopening the store recovers the durable state.
    #[error("the event store stopped accepting writes after a storage failure ({0}); restart to recover")]
    Failed(String),

    /// A read-only open found acknowledged records that exist only in the commit journal
    /// (the last writer did not shut down cleanly); a read-write open writes them back.
    #[error(
        "{0} acknowledged record(s) are only in the commit journal (the server did not shut down \
         cleanly); open the store read-write once (start the server, or run `audit rebuild`) to write \
         them into the log"
    )]
    Unrecovered(usize),

    /// The data dir lost acknowledged records: a commit journal frame is corrupt with
    /// intact frames after it, or sled's log is shorter than the last checkpoint recorded
    /// (its file was truncated or damaged). The message names the file and what to do.
    #[error("{0}")]
    Damaged(String),

    /// The data dir's file system has less free space than the configured reserve
    /// (`StoreOptions::min_free_bytes`). Writes are refused before the disk is full, so sled
    /// never meets `ENOSPC` with state it could not write back (which could leave
    /// acknowledged records unreadable until a restart); they resume once space is freed.
    #[error(
        "the data dir's file system has {free} bytes free, below the {reserve}-byte reserve ([storage] \
         min_free_bytes): writes are refused until space is freed; reads, OCSP and CRLs are still served"
    )]
    LowSpace { free: u64, reserve: u64 },

    /// The data dir was written by an incompatible version of this crate.
    #[error("store format {found} is not supported (this build reads format {supported})")]
    Format { found: u32, supported: u32 },

    /// Starting the writer thread or syncing a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// The store cannot take writes now but may later (a failed write path awaiting a
    /// restart, a file system below its reserve, a store shutting down): a client should
    /// retry later or elsewhere; it is not a bug in the request or the server.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Failed(_)
                | StoreError::LowSpace { .. }
                | StoreError::Closed
                | StoreError::NotWriter { .. }
                | StoreError::Unavailable(_)
        )
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(format!("sled: {e}"))
    }
}

impl StoreError {
    pub(crate) fn from_pg(e: &tokio_postgres::Error) -> Self {
        // `Display` of a database error is its kind only; the source names the cause
        // (refused connection, the server's message) without any credential.
        let detail = match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        };
        StoreError::Backend(format!("postgres: {detail}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_pg(&e)
    }
}
