//! CRLs shared through the database. Only the writer signs CRLs; the other instances serve
//! the writer's. After a publication is durable in the log, the writer stores its bytes
//! (`ca_crl`: the newest per issuer and kind). The log stays the authority: a reader
//! serves a row only when the `CrlPublished` record at the row's `seq` names these exact
//! bytes (`der_sha256`), so a row written by anyone else is never served.

use std::sync::Arc;

use ca_core::event::{CrlPublished, Event};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::conn;
use super::rows::db_seq;
use crate::StoreError;
use crate::store::EventStore;

const UPSERT: &str = "INSERT INTO ca_crl (issuer, delta, seq, der) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (issuer, delta) DO UPDATE SET seq = EXCLUDED.seq, der = EXCLUDED.der \
     WHERE ca_crl.seq < EXCLUDED.seq";
/// A shared CRL row: its `CrlPublished` record's seq and the bytes.
type Row = (u64, Vec<u8>);
type Pending<'c, T> = futures::future::BoxFuture<'c, Result<T, tokio_postgres::Error>>;

const NEWEST: &str = "SELECT seq, der FROM ca_crl WHERE issuer = $1 AND delta = $2";

/// One connection for CRL reads and writes, opened when first needed and again after a
/// failure.
pub(crate) struct Crls {
    cfg: conn::Target,
    client: Arc<Mutex<Option<Client>>>,
}

impl Crls {
    pub(crate) fn new(cfg: conn::Target) -> Self {
        Crls { cfg, client: Arc::new(Mutex::new(None)) }
    }

    /// Run `f` on the connection (on the store's runtime: the connection's driver lives
    /// there); a failed statement drops the connection for the next call to replace.
    pub(crate) async fn with<T, F>(&self, rt: tokio::runtime::Handle, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Client) -> Pending<'c, T> + Send + 'static,
    {
        let (cfg, slot) = (self.cfg.clone(), self.client.clone());
        rt.spawn(async move {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(conn::connect(&cfg).await?);
            }
            let Some(client) = guard.as_ref() else { return Err(StoreError::Closed) };
            match f(client).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    *guard = None;
                    Err(conn::unavailable(&e))
                }
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("CRL task: {e}")))?
    }
}

pub(crate) fn upsert<'c>(
    client: &'c Client,
    issuer: u32,
    delta: bool,
    seq: u64,
    der: Vec<u8>,
) -> Pending<'c, ()> {
    Box::pin(async move {
        let issuer = i32::try_from(issuer).unwrap_or(i32::MAX);
        client.execute(UPSERT, &[&issuer, &delta, &db_seq(seq), &der]).await.map(|_| ())
    })
}

pub(crate) fn newest<'c>(client: &'c Client, issuer: u32, delta: bool) -> Pending<'c, Option<Row>> {
    Box::pin(async move {
        let issuer = i32::try_from(issuer).unwrap_or(i32::MAX);
        let row = client.query_opt(NEWEST, &[&issuer, &delta]).await?;
        Ok(row.map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))))
    })
}

/// The `CrlPublished` record at `seq` of the replica, if it names `der` as issuer
/// `issuer`'s CRL of this kind. `None` when the replica does not hold `seq` yet.
pub(crate) fn checked(
    store: &EventStore,
    issuer: u32,
    delta: bool,
    seq: u64,
    der: &[u8],
) -> Result<Option<CrlPublished>, StoreError> {
    let Some(rec) = store.read(seq)? else { return Ok(None) };
    let bad = |why: &str| {
        StoreError::Damaged(format!("the database's CRL row for issuer {issuer} at {seq}: {why}"))
    };
    match rec.event {
        Event::CrlPublished(c) => {
            if c.issuer_generation != issuer || c.delta_base.is_some() != delta {
                return Err(bad("the record there is another CRL"));
            }
            if c.der_sha256 != Some(ca_core::chain::sha256(der)) {
                return Err(bad("its bytes are not the ones the log names"));
            }
            Ok(Some(c))
        }
        _ => Err(bad("the record there is not a CRL publication")),
    }
}
