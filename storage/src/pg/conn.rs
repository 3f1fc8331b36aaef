//! Connections: parsed once from the URL, each driven by a task on the store's runtime,
//! over TLS (`tls.rs`) when the URL names a CA file.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::tls::MakeRustls;

use crate::StoreError;

/// How long a connection attempt may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to connect: the parsed URL, and the TLS connector when it asks for TLS.
#[derive(Clone)]
pub(crate) struct Target {
    cfg: Config,
    tls: Option<MakeRustls>,
}

impl Target {
    /// The same target with a server setting for its sessions (`-c name=value`).
    pub(crate) fn with_setting(&self, name: &str, value: &str) -> Target {
        let mut t = self.clone();
        let options = format!("{} -c {name}={value}", t.cfg.get_options().unwrap_or(""));
        t.cfg.options(options.trim());
        t
    }
}

/// Parse `url` (`postgres://user:password@host:port[,host:port...]/db?...`). Besides what
/// tokio-postgres reads, `sslrootcert=PATH` (PEM CA certificates) turns TLS on, verified
/// against that CA and the host name; `sslmode=verify-full` (libpq's name) requires it;
/// `sslmode=require` without it is refused rather than left unverified. The error never
/// repeats the URL, which may hold a password.
pub(crate) fn config(url: &str) -> Result<Target, StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut root, mut mode) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let tls = match (mode.as_deref(), root) {
        (Some("disable"), _) => None,
        (_, Some(root)) => Some(MakeRustls::from_ca_file(std::path::Path::new(&root))?),
        (Some(m @ ("require" | "verify-ca" | "verify-full")), None) => {
            return Err(StoreError::InvalidArgument(format!(
                "sslmode={m} needs sslrootcert=PATH in the PostgreSQL URL: the CA file the server's certificate is verified against"
            )));
        }
        (None | Some("prefer"), None) => None,
        (Some(other), None) => {
            return Err(StoreError::InvalidArgument(format!(
                "the PostgreSQL URL's sslmode={other} is not known"
            )));
        }
    };
    let rest = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    let mut cfg = Config::from_str(&format!("{base}{rest}"))
        .map_err(|e| StoreError::InvalidArgument(format!("the PostgreSQL URL does not parse: {e}")))?;
    cfg.ssl_mode(if tls.is_some() { SslMode::Require } else { SslMode::Disable });
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    cfg.keepalives_idle(Duration::from_secs(5));
    cfg.application_name("ca-server");
    Ok(Target { cfg, tls })
}

pub(crate) fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    match StoreError::from_pg(e) {
        StoreError::Backend(m) => StoreError::Unavailable(m),
        other => other,
    }
}

/// A connection whose driver runs on the current runtime.
pub(crate) async fn connect(t: &Target) -> Result<Client, StoreError> {
    open(t, None).await
}

/// A connection that `LISTEN`s on `channel`: each notification puts a token on the
/// returned receiver (coalesced: one pending token is enough to wake the reader).
pub(crate) async fn listen(t: &Target, channel: &str) -> Result<(Client, mpsc::Receiver<()>), StoreError> {
    let (tx, rx) = mpsc::channel(1);
    let client = open(t, Some(tx)).await?;
    client.batch_execute(&format!("LISTEN {channel}")).await.map_err(|e| unavailable(&e))?;
    Ok((client, rx))
}

async fn open(t: &Target, notify: Option<mpsc::Sender<()>>) -> Result<Client, StoreError> {
    match &t.tls {
        None => {
            let (client, connection) = t.cfg.connect(NoTls).await.map_err(|e| unavailable(&e))?;
            tokio::spawn(drive(connection, notify));
            Ok(client)
        }
        Some(tls) => {
            let (client, connection) = t.cfg.connect(tls.clone()).await.map_err(|e| unavailable(&e))?;
            tokio::spawn(drive(connection, notify));
            Ok(client)
        }
    }
}

/// Run a connection until it closes, passing notifications on when asked to.
async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, notify: Option<mpsc::Sender<()>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(_)) => {
                if let Some(tx) = &notify {
                    let _ = tx.try_send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "database connection closed");
                break;
            }
        }
    }
}
