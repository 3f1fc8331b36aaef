//! Following the database: every instance (the writer too) reads records beyond its
//! replica's head and applies them, woken by `NOTIFY ca_log` from each commit and, should
//! a notification be missed, by a short poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::chain::Hash;
use tokio_postgres::Client;

use super::conn;
use super::rows::db_seq;
use super::state::State;
use crate::store::{EventStore, WeakStore};
use crate::{RawRecord, StoreError};

/// Records read per query.
const CHUNK: i64 = 2000;
/// A follower looks again this often without a notification.
const POLL: Duration = Duration::from_millis(250);
/// After a failure (database unreachable), wait this long before reconnecting.
const BACKOFF: Duration = Duration::from_millis(500);
/// Catch-up progress is logged every this many records.
const PROGRESS_EVERY: u64 = 100_000;

fn hash32(v: &[u8], seq: i64) -> Result<Hash, StoreError> {
    <Hash>::try_from(v).map_err(|_| StoreError::Corrupt {
        seq: u64::try_from(seq).unwrap_or(0),
        detail: format!("the database holds a {}-byte hash", v.len()),
    })
}

/// Up to `limit` records from `from` on, in order.
pub(crate) async fn fetch(client: &Client, from: u64, limit: i64) -> Result<Vec<RawRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT seq, prev_hash, hash, recorded_at_micros, event FROM ca_log \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&db_seq(from), &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            Ok((
                u64::try_from(seq).unwrap_or(0),
                hash32(r.get(1), seq)?,
                hash32(r.get(2), seq)?,
                r.get(3),
                r.get(4),
            ))
        })
        .collect()
}

/// Apply everything the database holds beyond the replica's head (up to `until` when
/// given); returns the replica's next seq and, when it read to the database's end, the
/// moment as of which the replica is complete (when its last read was sent).
pub(crate) async fn catch_up(
    store: &EventStore,
    client: &Client,
    until: Option<u64>,
) -> Result<(u64, Option<Instant>), StoreError> {
    let started = Instant::now();
    let from = store.next_seq();
    let mut next = from;
    let mut logged = from;
    let mut complete_at = None;
    loop {
        if until.is_some_and(|u| next >= u) {
            break;
        }
        let asked = Instant::now();
        let chunk = fetch(client, next, CHUNK).await?;
        let last = (chunk.len() as i64) < CHUNK;
        if !chunk.is_empty() {
            next = store.replicate(chunk).await?;
        }
        if last {
            complete_at = Some(asked);
            break;
        }
        if next - logged >= PROGRESS_EVERY {
            tracing::info!(records = next - from, next_seq = next, "replica catching up with the database");
            logged = next;
        }
    }
    if next > from {
        tracing::info!(
            records = next - from,
            next_seq = next,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replica caught up with the database"
        );
    }
    Ok((next, complete_at))
}

/// The follower task: runs until the store is dropped. A replica that diverges from the
/// database (which then lost acknowledged history) stops following, loudly.
pub(crate) async fn run(cfg: conn::Target, state: Arc<State>, store: WeakStore) {
    let mut failures = 0u32;
    loop {
        let (client, mut wake) = match conn::listen(&cfg, "ca_log").await {
            Ok(c) => c,
            Err(e) => {
                if failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, "replica follower cannot reach the database");
                }
                failures += 1;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        failures = 0;
        loop {
            let Some(s) = store.upgrade() else { return };
            match catch_up(&s, &client, None).await {
                Ok((_, Some(at))) => state.synced(at),
                Ok((_, None)) => {}
                Err(
                    e @ (StoreError::Damaged(_) | StoreError::Corrupt { .. } | StoreError::Decode { .. }),
                ) => {
                    tracing::error!(error = %e, "the replica cannot follow the database; it stops following");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replica follower lost the database");
                    break;
                }
            }
            drop(s);
            let _ = tokio::time::timeout(POLL, wake.recv()).await;
            if client.is_closed() {
                break;
            }
        }
        tokio::time::sleep(BACKOFF).await;
    }
}
