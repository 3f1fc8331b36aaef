//! How the HTTP and ACME listeners serve connections, with the limits both apply
//! (`[http]`): a header read timeout, so a client that sends partial headers (or sits idle
//! between keep-alive requests) is dropped instead of holding a file descriptor forever, and
//! a cap on open connections per listener, so one client cannot use up the process's file
//! descriptors and starve OCSP, CRLs and gRPC. A connection over the cap is closed at once
//! and counted (`ca_http_connections_refused_total`). Each request carries its TCP peer as
//! axum's `ConnectInfo<SocketAddr>` (the ACME limits count by client IP). A request body
//! must also arrive whole within `body_read_timeout_secs` of its headers (hyper has no body
//! timeout): a client that trickles or withholds the body gets 408 and the connection is
//! closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
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
    /// A request's body must arrive whole within this many seconds of its headers; a
    /// slower one gets 408 and the connection is closed.
    pub body_read_timeout_secs: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { header_read_timeout_secs: 10, max_connections: 4096, body_read_timeout_secs: 30 }
    }
}

/// Connection admission and serving for one listener.
#[derive(Clone)]
pub struct ConnGate {
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    refused: Arc<AtomicU64>,
}

impl ConnGate {
    pub fn new(limits: &HttpLimits, refused: Arc<AtomicU64>) -> Self {
        ConnGate {
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(limits.body_read_timeout_secs.max(1)),
            refused,
        }
    }

    /// `router` with the body read deadline applied to every request; call once per listener.
    pub fn wrap(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.body_read_timeout, body_deadline))
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

/// Gives the request body a deadline; when it passed before the body was read whole, the
/// handler's answer (a body error) is replaced by 408 and the connection closed.
async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limit)),
        timed_out: timed_out.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    if timed_out.load(Ordering::Relaxed) {
        tracing::debug!(secs = limit.as_secs(), "request body not received in time");
        return (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            [(axum::http::header::CONNECTION, "close")],
            format!("request body not received within {} s\n", limit.as_secs()),
        )
            .into_response();
    }
    resp
}

/// A body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body read timed out");
            return Poll::Ready(Some(Err(axum::Error::new(e))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
