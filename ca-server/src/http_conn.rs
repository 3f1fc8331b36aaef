//! How the HTTP and ACME listeners serve connections, with the limits both apply
//! (`[http]`): a header read timeout, so a client that sends partial headers (or sits idle
//! between keep-alive requests) is dropped instead of holding a file descriptor forever, and
//! a cap on open connections per listener, so one client cannot use up the process's file
//! descriptors and starve OCSP, CRLs and gRPC. A connection over the cap is closed at once
//! and counted (`ca_http_connections_refused_total`). Each request carries its TCP peer as
//! axum's `ConnectInfo<SocketAddr>` (the ACME limits count by client IP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[http]`: limits of the HTTP (CRL, OCSP, certificates) and ACME listeners, each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// A request's headers must arrive within this many seconds of the connection (or of
    /// the previous response on a kept-alive one).
    pub header_read_timeout_secs: u64,
    /// Open connections per listener; more are closed at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { header_read_timeout_secs: 10, max_connections: 4096 }
    }
}

/// Connection admission and serving for one listener.
#[derive(Clone)]
pub struct ConnGate {
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    refused: Arc<AtomicU64>,
}

impl ConnGate {
    pub fn new(limits: &HttpLimits, refused: Arc<AtomicU64>) -> Self {
        ConnGate {
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs.max(1)),
            refused,
        }
    }

    /// A slot for a new connection, or `None` (counted) when the listener is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Serve HTTP/1.1 or HTTP/2 on `io` from `peer` until the connection ends; `slot` is
    /// released then.
    pub async fn serve<I>(&self, io: I, peer: SocketAddr, router: Router, slot: OwnedSemaphorePermit)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use tower::ServiceExt as _;
        let router = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req
        });
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1().timer(TokioTimer::new()).header_read_timeout(self.header_read_timeout);
        b.http2().timer(TokioTimer::new());
        let _ = b.serve_connection(TokioIo::new(io), TowerToHyperService::new(router)).await;
        drop(slot);
    }
}
