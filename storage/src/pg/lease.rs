//! The writer lease: a row with an epoch. The holder renews it every third of its time to
//! live; an instance takes it over (epoch + 1) only once it has run out, by the database's
//! clock, or when the row names this same instance (a restart). A holder that cannot renew
//! in time steps down by itself; either way the epoch in every append is the fence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::conn;
use super::follow;
use super::state::State;
use crate::StoreError;
use crate::store::WeakStore;

const RENEW: &str = "UPDATE ca_lease SET expires_at = clock_timestamp() + make_interval(secs => $2::bigint / 1000.0) \
                     WHERE id = 1 AND epoch = $1";
const TAKE: &str = "UPDATE ca_lease SET epoch = epoch + 1, holder = $1, grpc_url = $3, \
                    expires_at = clock_timestamp() + make_interval(secs => $2::bigint / 1000.0) \
                    WHERE id = 1 AND (expires_at < clock_timestamp() OR holder = $1) \
                    RETURNING epoch, next_seq, head";
const LOOK: &str = "SELECT holder, expires_at > clock_timestamp(), grpc_url FROM ca_lease WHERE id = 1";

pub(crate) async fn run(cfg: conn::Target, state: Arc<State>, store: WeakStore) {
    let ttl_ms = i64::try_from(state.ttl.as_millis()).unwrap_or(i64::MAX);
    let tick = state.ttl / 3;
    let mut client: Option<Client> = None;
    // When the last successful renewal (or the takeover) was sent: the lease is ours for
    // `ttl` from then at the least, whatever the database's clock says.
    let mut held_since: Option<Instant> = (state.epoch() != 0).then(Instant::now);
    loop {
        if store.upgrade().is_none() {
            return;
        }
        let epoch = state.epoch();
        if epoch != 0 && held_since.is_none_or(|t| t.elapsed() >= state.ttl) {
            tracing::warn!(epoch, "the writer lease could not be renewed in time; stepping down");
            state.lost(epoch, None);
        }
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => match conn::connect(&cfg).await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(tick.min(Duration::from_millis(250))).await;
                    continue;
                }
            },
        };
        let epoch = state.epoch();
        let sent = Instant::now();
        let r = if epoch != 0 {
            renew(&c, &state, epoch, ttl_ms).await
        } else {
            take(&c, &state, &store, ttl_ms).await
        };
        match r {
            Ok(true) => held_since = Some(sent),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "writer lease: database call failed"),
        }
        client = Some(c);
        tokio::time::sleep(tick).await;
    }
}

/// `Ok(true)` while the lease is still ours.
async fn renew(c: &Client, state: &State, epoch: u64, ttl_ms: i64) -> Result<bool, StoreError> {
    let e = i64::try_from(epoch).unwrap_or(i64::MAX);
    if c.execute(RENEW, &[&e, &ttl_ms]).await? == 1 {
        return Ok(true);
    }
    let row = c.query_one(LOOK, &[]).await?;
    state.seen_url(row.get(2));
    state.lost(epoch, Some(row.get(0)));
    Ok(false)
}

/// Take the lease if it ran out; catch the replica up to the head it guards before
/// writing. `Ok(true)` once this instance is the writer.
pub(crate) async fn take(
    c: &Client,
    state: &State,
    store: &WeakStore,
    ttl_ms: i64,
) -> Result<bool, StoreError> {
    let Some(row) = c.query_opt(TAKE, &[&state.instance, &ttl_ms, &state.grpc_url]).await? else {
        let row = c.query_one(LOOK, &[]).await?;
        let (holder, live): (String, bool) = (row.get(0), row.get(1));
        state.seen_url(row.get(2));
        state.seen_writer(live.then_some(holder));
        return Ok(false);
    };
    let started = Instant::now();
    let epoch = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    let next_seq = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    let head: Vec<u8> = row.get(2);
    let Some(s) = store.upgrade() else { return Ok(false) };
    // Nobody else can append now: what the database holds up to `next_seq` is final.
    follow::catch_up(&s, c, Some(next_seq)).await?;
    let local = s.head();
    let matches = s.next_seq() == next_seq && local.map_or([0u8; 32], |h| h.hash)[..] == head[..];
    if !matches {
        // Give it back at once, or this instance would take it again on every tick.
        let e = i64::try_from(epoch).unwrap_or(i64::MAX);
        c.execute(
            "UPDATE ca_lease SET holder = '', expires_at = '-infinity' WHERE id = 1 AND epoch = $1",
            &[&e],
        )
        .await?;
        return Err(StoreError::Damaged(format!(
            "took the writer lease at epoch {epoch} but the replica (next seq {}) does not match the lease's head \
             (next seq {next_seq}); not writing",
            s.next_seq()
        )));
    }
    state.became_writer(epoch);
    tracing::info!(
        epoch,
        next_seq,
        catch_up_ms = started.elapsed().as_millis() as u64,
        instance = %state.instance,
        "this instance holds the writer lease"
    );
    Ok(true)
}
