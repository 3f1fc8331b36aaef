//! `audit verify` on the shared database: walk the chain in `ca_log`, check it ends at the
//! lease's head, and check the projection tables equal a fold of the log.

use std::collections::BTreeMap;

use ca_core::chain::ChainVerifier;
use ca_proto::convert::decode_event;

use super::rows::{CertRow, RevokedRow, Rows, db_seq};
use super::{block_on, conn, follow, runtime};
use crate::{ChainFailure, ChainReport, StoreError};

const CHUNK: i64 = 10_000;

fn failure(seq: u64) -> impl Fn(StoreError) -> ChainFailure {
    move |e| ChainFailure { seq, detail: e.to_string() }
}

/// Verify the database at `url`; `progress(records)` after each chunk.
pub fn verify_postgres(
    url: &str,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ChainReport, ChainFailure> {
    let cfg = conn::config(url).map_err(failure(0))?;
    let rt = runtime().map_err(failure(0))?;
    block_on(&rt, async {
        let client = conn::connect(&cfg).await.map_err(failure(0))?;
        // One snapshot for the log, the lease and the projections: the instances may go on
        // writing meanwhile, and a later record's projection must not meet an earlier walk.
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| failure(0)(e.into()))?;
        let mut v = ChainVerifier::default();
        let mut fold = Rows::default();
        loop {
            let chunk = follow::fetch(&client, v.len(), CHUNK).await.map_err(failure(v.len()))?;
            if chunk.is_empty() {
                break;
            }
            for (seq, prev, hash, _, bytes) in chunk {
                v.check(seq, &prev, &hash, &bytes)
                    .map_err(|b| ChainFailure { seq: b.seq(), detail: b.to_string() })?;
                let event = decode_event(&bytes)
                    .map_err(|e| ChainFailure { seq, detail: format!("event does not decode: {e}") })?;
                fold.fold(db_seq(seq), &event);
            }
            progress(v.len());
        }
        let lease = client
            .query_one("SELECT next_seq, head FROM ca_lease WHERE id = 1", &[])
            .await
            .map_err(|e| failure(v.len())(e.into()))?;
        let (next, head): (i64, Vec<u8>) = (lease.get(0), lease.get(1));
        if db_seq(v.len()) != next || head[..] != v.head()[..] {
            return Err(ChainFailure {
                seq: v.len(),
                detail: format!("the log ends after {} records but its lease row says {next}", v.len()),
            });
        }
        check_projections(&client, &fold).await.map_err(|detail| ChainFailure { seq: v.len(), detail })?;
        Ok(ChainReport { records: v.len(), head: v.head() })
    })
}

/// The projection tables must hold exactly what the fold of the log does.
async fn check_projections(client: &tokio_postgres::Client, fold: &Rows) -> Result<(), String> {
    let q = |sql: &'static str| async move { client.query(sql, &[]).await.map_err(|e| e.to_string()) };
    let certs: BTreeMap<Vec<u8>, CertRow> = q("SELECT serial, seq, not_after, issuer FROM ca_certs")
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    if certs != fold.certs {
        return Err(format!(
            "ca_certs ({} rows) differs from the log's fold ({})",
            certs.len(),
            fold.certs.len()
        ));
    }
    let revoked: BTreeMap<Vec<u8>, RevokedRow> =
        q("SELECT serial, seq, reason, revoked_at, invalidity_date FROM ca_revoked")
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect();
    if revoked != fold.revoked {
        return Err(format!(
            "ca_revoked ({} rows) differs from the log's fold ({})",
            revoked.len(),
            fold.revoked.len()
        ));
    }
    let issuers = q("SELECT generation, rotated_seq, last_crl_number FROM ca_issuers").await?;
    let rotated: BTreeMap<i32, i64> =
        issuers.iter().filter_map(|r| r.get::<_, Option<i64>>(1).map(|s| (r.get(0), s))).collect();
    let crl: BTreeMap<i32, i64> =
        issuers.iter().map(|r| (r.get(0), r.get(2))).filter(|(_, n): &(i32, i64)| *n != 0).collect();
    // A row holds 0 both for "no full CRL yet" (a rotation-only row) and for a CRL
    // numbered 0, so 0 is left out on both sides.
    let want_crl: BTreeMap<i32, i64> =
        fold.crl.iter().filter(|(_, n)| **n != 0).map(|(g, n)| (*g, *n)).collect();
    if rotated != fold.rotated || crl != want_crl {
        return Err("ca_issuers differs from the log's fold".into());
    }
    let acme: i64 = q("SELECT count(*) FROM ca_acme").await?.first().map_or(0, |r| r.get(0));
    let mut want: Vec<(Vec<u8>, i64)> =
        fold.acme_key.iter().cloned().zip(fold.acme_seq.iter().copied()).collect();
    want.sort();
    want.dedup();
    if usize::try_from(acme).unwrap_or(usize::MAX) != want.len() {
        return Err(format!("ca_acme holds {acme} entries, the log's fold {}", want.len()));
    }
    Ok(())
}
