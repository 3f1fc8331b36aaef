//! The PostgreSQL backend: the system of record shared by several ca-server instances.
//!
//! The log (`ca_log`) and its projections (`ca_certs`, `ca_revoked`, `ca_issuers`,
//! `ca_acme`) are written in one transaction per group commit, by the one instance that
//! holds the writer lease (`ca_lease`: an epoch, and the head it guards). Each append is
//! conditional on that epoch and head, so a writer that lost its lease (paused,
//! partitioned) can neither append, fork the chain nor reuse a serial's record.
//!
//! Every instance keeps a **replica** of the log in a local sled store (the same trees and
//! projections as the embedded backend), which answers its reads: the TLS client
//! verifier, OCSP and ACME look-ups are synchronous and run at microsecond scale, which a
//! database round trip per read would not. The writer commits each batch to the database
//! first and to its replica only once the database has it; the other instances follow
//! the database (`follow.rs`). A replica is disposable: removing its directory makes the
//! instance copy the log again at start. It must be a prefix of the database's log: one
//! that holds a record the database lacks or has differently (the database lost
//! acknowledged history) refuses to start or to follow.

mod commit;
mod conn;
mod crls;
mod export;
mod follow;
mod lease;
mod migrate;
mod rows;
mod schema;
mod state;
mod tls;
mod verify;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ca_core::event::CrlPublished;
use tokio::runtime::Runtime;

pub use export::read_postgres;
pub use migrate::migrate_to_postgres;
use state::State;
pub use verify::verify_postgres;

use crate::store::EventStore;
use crate::{Role, StoreError, StoreOptions};

/// Default writer-lease time to live: a takeover happens this long after the writer was
/// last heard from (plus one renewal tick at most).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// How to reach the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// `postgres://user:password@host:port[,host2:port2]/db?target_session_attrs=read-write`.
    pub url: String,
    /// How other instances name this one when it writes (the lease row; their
    /// `NotWriter` errors): its gRPC address, say.
    pub instance: String,
    pub lease_ttl: Duration,
    /// Where this instance takes gRPC requests, recorded in the lease row while it writes
    /// so the others can pass requests on to it ([`EventStore::writer_url`]).
    pub grpc_url: String,
}

impl PgOptions {
    pub fn new(url: impl Into<String>, instance: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            instance: instance.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            grpc_url: String::new(),
        }
    }

    pub fn grpc_url(mut self, url: impl Into<String>) -> Self {
        self.grpc_url = url.into();
        self
    }

    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
}

/// The database tasks of a replica store, on their own small runtime (the store may be
/// opened outside any runtime, and its writer thread blocks on commits).
pub(crate) struct Node {
    rt: Mutex<Option<Runtime>>,
    state: Arc<State>,
    crls: crls::Crls,
}

impl Node {
    pub(crate) fn role(&self) -> Role {
        self.state.role()
    }

    pub(crate) fn writes(&self) -> bool {
        self.state.epoch() != 0
    }

    pub(crate) fn staleness(&self) -> Duration {
        self.state.staleness()
    }

    pub(crate) fn writer_url(&self) -> Option<String> {
        self.state.writer_url()
    }

    pub(crate) fn metrics(&self) -> crate::SharedMetrics {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.state;
        crate::SharedMetrics {
            epoch: s.epoch(),
            takeovers_total: s.takeovers.load(Relaxed),
            commits_total: s.commits.load(Relaxed),
            commit_micros_total: s.commit_micros.load(Relaxed),
            commit_failures_total: s.commit_failures.load(Relaxed),
            replica_lag_micros: u64::try_from(s.staleness().as_micros()).unwrap_or(u64::MAX),
        }
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, StoreError> {
        let rt = self.rt.lock().unwrap_or_else(PoisonError::into_inner);
        rt.as_ref().map(|rt| rt.handle().clone()).ok_or(StoreError::Closed)
    }

    pub(crate) fn stop(&self) {
        if let Some(rt) = self.rt.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // Callable from inside another runtime, unlike dropping it.
            rt.shutdown_background();
        }
    }
}

pub(crate) fn runtime() -> Result<Runtime, StoreError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ca-pg")
        .enable_all()
        .build()?)
}

/// Run `f` to completion on `rt` from synchronous code, also when the caller is itself on
/// a runtime's thread (which may not block on another runtime directly).
pub(crate) fn block_on<F>(rt: &Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl EventStore {
    /// After the `CrlPublished` record at `seq` is durable: let the instances that do not
    /// write serve this CRL (`der`, issuer `issuer`'s full CRL or its delta). The embedded
    /// store has no one to share it with.
    pub async fn share_crl(
        &self,
        issuer: u32,
        delta: bool,
        seq: u64,
        der: Vec<u8>,
    ) -> Result<(), StoreError> {
        match self.pg_node() {
            None => Ok(()),
            Some(node) => {
                node.crls.with(node.handle()?, move |c| crls::upsert(c, issuer, delta, seq, der)).await
            }
        }
    }

    /// The newest CRL the writer shared for issuer `issuer` (full, or the delta), with its
    /// `CrlPublished` record, once this instance's replica holds that record and the
    /// record names these bytes. `None` on the embedded store, when nothing was shared, or
    /// while the replica has not caught up to it.
    pub async fn shared_crl(
        &self,
        issuer: u32,
        delta: bool,
    ) -> Result<Option<(CrlPublished, Vec<u8>)>, StoreError> {
        let Some(node) = self.pg_node() else { return Ok(None) };
        let newest = node.crls.with(node.handle()?, move |c| crls::newest(c, issuer, delta)).await?;
        let Some((seq, der)) = newest else { return Ok(None) };
        Ok(crls::checked(self, issuer, delta, seq, &der)?.map(|c| (c, der)))
    }

    /// Open a replica store in `replica_dir` on the shared database at `pg.url`: migrate
    /// the schema, check that the replica is a prefix of the database's log, copy what it
    /// lacks, then follow the database and compete for the writer lease.
    pub fn open_postgres(
        replica_dir: &Path,
        opts: StoreOptions,
        pg: PgOptions,
    ) -> Result<EventStore, StoreError> {
        if opts.read_only {
            return Err(StoreError::InvalidArgument("a replica store cannot be opened read-only".into()));
        }
        let cfg = conn::config(&pg.url)?;
        let rt = runtime()?;
        let state = Arc::new(State::new(pg.instance.clone(), pg.grpc_url.clone(), pg.lease_ttl));
        let client = block_on(&rt, async {
            let mut client = conn::connect(&cfg).await?;
            schema::migrate(&mut client).await?;
            Ok::<_, StoreError>(client)
        })?;
        // A writer paused (SIGSTOP, a VM freeze) between its batch's statements and COMMIT
        // holds the lease row's lock, and the takeover's UPDATE would wait on it for as long
        // as the pause lasts: the database ends such a transaction after a lease TTL.
        let commit_cfg =
            cfg.with_setting("idle_in_transaction_session_timeout", &pg.lease_ttl.as_millis().to_string());
        let upstream = Arc::new(commit::PgUpstream {
            rt: rt.handle().clone(),
            cfg: commit_cfg,
            state: state.clone(),
            conn: tokio::sync::Mutex::new(None),
        });
        let store = EventStore::open_local(replica_dir, opts, Some(upstream))?;
        let (_, complete_at) = block_on(&rt, async {
            check_prefix(&store, &client).await?;
            follow::catch_up(&store, &client, None).await
        })?;
        if let Some(at) = complete_at {
            state.synced(at);
        }
        let weak = store.downgrade();
        // One attempt at the lease now, so a lone instance writes from its first request.
        let ttl_ms = i64::try_from(pg.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = block_on(&rt, lease::take(&client, &state, &weak, ttl_ms)) {
            tracing::warn!(error = %e, "could not take the writer lease at start");
        }
        drop(client);
        rt.spawn(follow::run(cfg.clone(), state.clone(), weak.clone()));
        rt.spawn(lease::run(cfg.clone(), state.clone(), weak));
        store.set_pg(Node { rt: Mutex::new(Some(rt)), state, crls: crls::Crls::new(cfg) });
        Ok(store)
    }
}

/// The replica's head must be the database's record at the same seq.
async fn check_prefix(store: &EventStore, client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let Some(head) = store.head() else { return Ok(()) };
    let row = client.query_opt("SELECT hash FROM ca_log WHERE seq = $1", &[&rows::db_seq(head.seq)]).await?;
    match row.map(|r| r.get::<_, Vec<u8>>(0)) {
        Some(h) if h[..] == head.hash[..] => Ok(()),
        found => Err(StoreError::Damaged(format!(
            "this instance's replica holds record {} but the database {}: the database lost acknowledged \
             history, or it is another CA's database. Nothing was written. If the database is the right one, \
             remove the replica directory to copy the log again",
            head.seq,
            if found.is_some() { "has another record there" } else { "ends before it" }
        ))),
    }
}
