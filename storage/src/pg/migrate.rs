//! `ca-server storage migrate --to postgres://...`: copy an embedded (sled) log into an
//! empty database, verifying the chain as it goes, with the projections written beside
//! each chunk as the writer writes them.

use std::path::Path;
use std::sync::Arc;

use ca_core::chain::{ChainVerifier, GENESIS};

use super::rows::Rows;
use super::{block_on, commit, conn, runtime, schema};
use crate::{ChainReport, EventStore, StoreError, StoreOptions};

/// Records per transaction.
const CHUNK: usize = 5000;

/// Copy the sled store in `sled_dir` into the empty database at `url`. `progress(done,
/// total)` is called after each chunk. The database's writer lease is held by the
/// migration meanwhile, so no instance writes into a half-copied log.
pub fn migrate_to_postgres(
    sled_dir: &Path,
    url: &str,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<ChainReport, StoreError> {
    let source = EventStore::open_with(sled_dir, StoreOptions::default().read_only(true))?;
    let total = source.next_seq();
    let cfg = conn::config(url)?;
    let rt = runtime()?;
    block_on(&rt, async {
        let mut client = conn::connect(&cfg).await?;
        schema::migrate(&mut client).await?;
        let taken = client
            .query_opt(
                "UPDATE ca_lease SET epoch = epoch + 1, holder = 'storage migrate', \
                 expires_at = clock_timestamp() + interval '1 day' \
                 WHERE id = 1 AND next_seq = 0 AND expires_at < clock_timestamp() RETURNING epoch",
                &[],
            )
            .await?;
        let empty: bool = client.query_one("SELECT NOT EXISTS (SELECT 1 FROM ca_log)", &[]).await?.get(0);
        let Some(row) = taken.filter(|_| empty) else {
            return Err(StoreError::InvalidArgument(
                "the database is not empty, or an instance holds its writer lease: migrate into an empty \
                 database with no ca-server running on it"
                    .into(),
            ));
        };
        let epoch: i64 = row.get(0);
        let mut verifier = ChainVerifier::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        let (mut next, mut head) = (0u64, GENESIS);
        let mut records = source.range(0);
        loop {
            chunk.clear();
            for r in records.by_ref().take(CHUNK) {
                let r = r?;
                verifier.check(r.seq, &r.prev_hash, &r.hash, &r.event_bytes).map_err(|b| {
                    StoreError::Corrupt {
                        seq: b.seq(),
                        detail: format!("the source log's chain is broken: {b}"),
                    }
                })?;
                chunk.push(Arc::new(r));
            }
            let Some(last) = chunk.last() else { break };
            let last_hash = last.hash;
            let rows = Rows::of(&chunk);
            let tx = client.transaction().await?;
            if !commit::stage(&tx, epoch, next, &head, &rows, &last_hash).await? {
                return Err(StoreError::InvalidArgument(
                    "the database's lease moved during the migration".into(),
                ));
            }
            tx.commit().await?;
            next += chunk.len() as u64;
            head = last_hash;
            progress(next, total);
        }
        client
            .execute(
                "UPDATE ca_lease SET holder = '', expires_at = '-infinity' WHERE id = 1 AND epoch = $1",
                &[&epoch],
            )
            .await?;
        Ok(ChainReport { records: verifier.len(), head: verifier.head() })
    })
}
