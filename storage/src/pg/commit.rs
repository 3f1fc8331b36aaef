//! The writer's group commit into PostgreSQL: one transaction per batch, conditional on
//! the lease's epoch and head, and the read-back that settles a commit whose outcome the
//! connection did not report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::chain::Hash;
use tokio::runtime::Handle;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::conn;
use super::rows::{CertRow, RevokedRow, Rows, db_seq};
use super::state::State;
use crate::upstream::Upstream;
use crate::{StoreError, StoredRecord};

/// How long the writer keeps trying to learn whether a commit happened, across
/// reconnects (a primary restarting, a standby being promoted), before it gives up and
/// stops taking writes (`StoreError::Failed`).
const RESOLVE_FOR: Duration = Duration::from_secs(60);

const ADVANCE: &str = "UPDATE ca_lease SET next_seq = $1, head = $2 \
                       WHERE id = 1 AND epoch = $3 AND next_seq = $4 AND head = $5";
const INSERT_LOG: &str = "INSERT INTO ca_log (seq, prev_hash, hash, recorded_at_micros, epoch, event) \
     SELECT s, p, h, r, $5, e FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[], $6::bytea[]) \
     AS t(s, p, h, r, e)";
const UPSERT_CERTS: &str = "INSERT INTO ca_certs (serial, seq, not_after, issuer) \
     SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::integer[]) \
     ON CONFLICT (serial) DO UPDATE SET seq = EXCLUDED.seq, not_after = EXCLUDED.not_after, issuer = EXCLUDED.issuer";
const UPSERT_REVOKED: &str = "INSERT INTO ca_revoked (serial, seq, reason, revoked_at, invalidity_date) \
     SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::smallint[], $4::bigint[], $5::bigint[]) \
     ON CONFLICT (serial) DO UPDATE SET seq = EXCLUDED.seq, reason = EXCLUDED.reason, \
     revoked_at = EXCLUDED.revoked_at, invalidity_date = EXCLUDED.invalidity_date";
const UPSERT_ROTATED: &str = "INSERT INTO ca_issuers (generation, rotated_seq) \
     SELECT * FROM unnest($1::integer[], $2::bigint[]) \
     ON CONFLICT (generation) DO UPDATE SET rotated_seq = EXCLUDED.rotated_seq";
const UPSERT_CRL: &str = "INSERT INTO ca_issuers (generation, last_crl_number) \
     SELECT * FROM unnest($1::integer[], $2::bigint[]) \
     ON CONFLICT (generation) DO UPDATE SET \
     last_crl_number = GREATEST(ca_issuers.last_crl_number, EXCLUDED.last_crl_number)";
const INSERT_ACME: &str = "INSERT INTO ca_acme (key, seq) SELECT * FROM unnest($1::bytea[], $2::bigint[]) \
     ON CONFLICT DO NOTHING";

enum Failure {
    /// Before `COMMIT` was sent: the transaction cannot have committed.
    Before(tokio_postgres::Error),
    /// `COMMIT` itself got no answer: it may have.
    AtCommit(tokio_postgres::Error),
}

/// What the statements before `COMMIT` found.
enum Staged {
    Ready,
    /// The lease row did not match: another epoch holds it, or the head moved.
    Fenced,
}

/// Append `rows` as the writer of `epoch` whose head is `(next, head)` before them, in an
/// open transaction on `client` (committed by the caller). Shared with `migrate`.
pub(crate) async fn stage(
    tx: &tokio_postgres::Transaction<'_>,
    epoch: i64,
    next: u64,
    head: &Hash,
    rows: &Rows,
    new_head: &Hash,
) -> Result<bool, tokio_postgres::Error> {
    let new_next = db_seq(next) + rows.seq.len() as i64;
    let (cert_serials, cert_cols): (Vec<&Vec<u8>>, Vec<&CertRow>) = rows.certs.iter().unzip();
    let cert_seq: Vec<i64> = cert_cols.iter().map(|c| c.0).collect();
    let cert_na: Vec<i64> = cert_cols.iter().map(|c| c.1).collect();
    let cert_iss: Vec<i32> = cert_cols.iter().map(|c| c.2).collect();
    let (rev_serials, rev_cols): (Vec<&Vec<u8>>, Vec<&RevokedRow>) = rows.revoked.iter().unzip();
    let rev_seq: Vec<i64> = rev_cols.iter().map(|c| c.0).collect();
    let rev_reason: Vec<i16> = rev_cols.iter().map(|c| c.1).collect();
    let rev_at: Vec<i64> = rev_cols.iter().map(|c| c.2).collect();
    let rev_inv: Vec<Option<i64>> = rev_cols.iter().map(|c| c.3).collect();
    let (rot_gen, rot_seq): (Vec<i32>, Vec<i64>) = rows.rotated.iter().map(|(g, s)| (*g, *s)).unzip();
    let (crl_gen, crl_num): (Vec<i32>, Vec<i64>) = rows.crl.iter().map(|(g, n)| (*g, *n)).unzip();
    let (head_v, new_head_v) = (head.to_vec(), new_head.to_vec());
    let next_i = db_seq(next);
    // Sent back to back (tokio-postgres pipelines concurrent queries on one connection):
    // one round trip for the whole batch, then COMMIT.
    let advance = async { tx.execute(ADVANCE, &[&new_next, &new_head_v, &epoch, &next_i, &head_v]).await };
    let log = async {
        tx.execute(
            INSERT_LOG,
            &[&rows.seq, &rows.prev_hash, &rows.hash, &rows.recorded_at, &epoch, &rows.event],
        )
        .await
    };
    let certs = async {
        if cert_serials.is_empty() {
            return Ok(0);
        }
        tx.execute(UPSERT_CERTS, &[&cert_serials, &cert_seq, &cert_na, &cert_iss]).await
    };
    let revoked = async {
        if rev_serials.is_empty() {
            return Ok(0);
        }
        tx.execute(UPSERT_REVOKED, &[&rev_serials, &rev_seq, &rev_reason, &rev_at, &rev_inv]).await
    };
    let issuers = async {
        if !rot_gen.is_empty() {
            tx.execute(UPSERT_ROTATED, &[&rot_gen, &rot_seq]).await?;
        }
        if !crl_gen.is_empty() {
            tx.execute(UPSERT_CRL, &[&crl_gen, &crl_num]).await?;
        }
        Ok(0)
    };
    let acme = async {
        if rows.acme_key.is_empty() {
            return Ok(0);
        }
        tx.execute(INSERT_ACME, &[&rows.acme_key, &rows.acme_seq]).await
    };
    let notify = async { tx.execute("SELECT pg_notify('ca_log', $1::bigint::text)", &[&new_next]).await };
    let (advanced, ..) = futures::try_join!(advance, log, certs, revoked, issuers, acme, notify)?;
    Ok(advanced == 1)
}

/// The writer's side of the database: called on the store's writer thread.
pub(crate) struct PgUpstream {
    pub rt: Handle,
    pub cfg: conn::Target,
    pub state: Arc<State>,
    pub conn: tokio::sync::Mutex<Option<Client>>,
}

impl Upstream for PgUpstream {
    fn refuse(&self) -> Option<StoreError> {
        (self.state.epoch() == 0).then(|| self.state.not_writer("it does not hold the writer lease"))
    }

    fn commit(&self, records: &[Arc<StoredRecord>]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(()) };
        let epoch = self.state.epoch();
        if epoch == 0 {
            return Err(self.state.not_writer("it does not hold the writer lease"));
        }
        let rows = Rows::of(records);
        let started = Instant::now();
        let r = self.rt.block_on(self.commit_async(
            epoch,
            first.seq,
            &first.prev_hash,
            &rows,
            last.seq,
            &last.hash,
        ));
        self.state.observe_commit(started.elapsed(), r.is_ok());
        r
    }
}

impl PgUpstream {
    async fn commit_async(
        &self,
        epoch: u64,
        next: u64,
        head: &Hash,
        rows: &Rows,
        last_seq: u64,
        last_hash: &Hash,
    ) -> Result<(), StoreError> {
        let mut slot = self.conn.lock().await;
        let client = match slot.take() {
            Some(c) if !c.is_closed() => c,
            _ => conn::connect(&self.cfg).await?,
        };
        let epoch_i = i64::try_from(epoch).unwrap_or(i64::MAX);
        let mut client = client;
        let outcome = async {
            let tx = client.transaction().await.map_err(Failure::Before)?;
            if !stage(&tx, epoch_i, next, head, rows, last_hash).await.map_err(Failure::Before)? {
                return Ok(Staged::Fenced);
            }
            // COMMIT is the one step whose failure leaves the outcome open.
            tx.commit().await.map_err(Failure::AtCommit)?;
            Ok(Staged::Ready)
        }
        .await;
        match outcome {
            Ok(Staged::Ready) => {
                *slot = Some(client);
                Ok(())
            }
            Ok(Staged::Fenced) => {
                *slot = Some(client);
                Err(self.fenced(epoch).await)
            }
            // A statement the server refused rolled the transaction back; so did a
            // connection lost before COMMIT was sent: nothing was committed.
            Err(Failure::Before(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                *slot = Some(client);
                Err(self.state.not_writer("another writer appended at the same sequence numbers"))
            }
            Err(Failure::Before(e)) => {
                if !client.is_closed() {
                    *slot = Some(client);
                }
                Err(conn::unavailable(&e))
            }
            Err(Failure::AtCommit(e)) => {
                drop(client);
                tracing::warn!(error = %e, seq = last_seq, "the database connection failed during COMMIT; reading the batch back");
                self.resolve(&mut slot, last_seq, last_hash).await
            }
        }
    }

    /// The lease row did not match: say why, and step down if the epoch moved on.
    async fn fenced(&self, epoch: u64) -> StoreError {
        let holder = self.state.lease_holder(&self.cfg).await;
        match holder {
            Some((e, who)) if e != epoch => {
                self.state.lost(epoch, Some(who.clone()));
                StoreError::NotWriter {
                    writer: Some(who),
                    why: format!("its lease (epoch {epoch}) was taken over (epoch {e})"),
                }
            }
            // Still this instance's epoch, yet the row's head is not the one it appended:
            // the database lost records it had acknowledged (a failover to a standby that
            // was not synchronous). Writing on would build on the gap; stop, loudly, and
            // keep the lease so no other instance builds on it either.
            Some(_) => {
                let msg = "the database's log no longer ends where this writer's does: it lost records this \
                           writer had acknowledged (a failover to a standby that was not synchronous?). This \
                           instance stops writing and keeps the lease so that no other instance writes over the \
                           gap. Compare `audit verify --storage-url` with this instance's replica, then decide";
                tracing::error!("{msg}");
                StoreError::Failed(msg.into())
            }
            None => self.state.not_writer("the log's head moved under this writer"),
        }
    }

    /// Learn whether a batch whose COMMIT got no answer was committed: lock the lease row
    /// (which the batch's transaction held until it ended, so this waits out a commit
    /// still in progress), then read its last record back and compare the hash. Retried
    /// across reconnects for [`RESOLVE_FOR`]; never answered by retrying the write.
    async fn resolve(
        &self,
        slot: &mut Option<Client>,
        last_seq: u64,
        last_hash: &Hash,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + RESOLVE_FOR;
        let mut last_err = String::new();
        while Instant::now() < deadline {
            match read_back(&self.cfg, last_seq).await {
                Ok((client, found)) => {
                    *slot = Some(client);
                    let committed = found.as_deref() == Some(&last_hash[..]);
                    tracing::warn!(seq = last_seq, committed, "the batch's outcome was read back");
                    return if committed {
                        Ok(())
                    } else if found.is_some() {
                        Err(self
                            .state
                            .not_writer("another writer's record holds this batch's sequence number"))
                    } else {
                        Err(StoreError::Unavailable(
                            "the database connection failed; the batch was not committed".into(),
                        ))
                    };
                }
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(StoreError::Failed(format!(
            "the outcome of the commit of record {last_seq} is unknown (the database was unreachable for {}s: {last_err})",
            RESOLVE_FOR.as_secs()
        )))
    }
}

async fn read_back(cfg: &conn::Target, seq: u64) -> Result<(Client, Option<Vec<u8>>), StoreError> {
    let mut client = conn::connect(cfg).await?;
    let found = {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
        tx.query_one("SELECT epoch FROM ca_lease WHERE id = 1 FOR UPDATE", &[]).await?;
        let row = tx.query_opt("SELECT hash FROM ca_log WHERE seq = $1", &[&db_seq(seq)]).await?;
        tx.rollback().await?;
        row.map(|r| r.get::<_, Vec<u8>>(0))
    };
    Ok((client, found))
}
