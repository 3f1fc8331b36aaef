//! Connections: parsed once from the URL, each driven by a task on the store's runtime.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::StoreError;

/// How long a connection attempt may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Parse `url` (`postgres://user:password@host:port[,host:port...]/db?...`). The error
/// never repeats the URL, which may hold a password.
pub(crate) fn config(url: &str) -> Result<Config, StoreError> {
    let mut cfg = Config::from_str(url)
        .map_err(|e| StoreError::InvalidArgument(format!("the PostgreSQL URL does not parse: {e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    cfg.keepalives_idle(Duration::from_secs(5));
    cfg.application_name("ca-server");
    Ok(cfg)
}

pub(crate) fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    match StoreError::from_pg(e) {
        StoreError::Backend(m) => StoreError::Unavailable(m),
        other => other,
    }
}

/// A connection whose driver runs on the current runtime.
pub(crate) async fn connect(cfg: &Config) -> Result<Client, StoreError> {
    let (client, connection) = cfg.connect(NoTls).await.map_err(|e| unavailable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A connection that `LISTEN`s on `channel`: each notification puts a token on the
/// returned receiver (coalesced: one pending token is enough to wake the reader).
pub(crate) async fn listen(cfg: &Config, channel: &str) -> Result<(Client, mpsc::Receiver<()>), StoreError> {
    let (client, mut connection) = cfg.connect(NoTls).await.map_err(|e| unavailable(&e))?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "database connection closed");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await.map_err(|e| unavailable(&e))?;
    Ok((client, rx))
}
