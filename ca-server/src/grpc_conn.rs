//! The gRPC listener's connection cap (`[grpc] max_connections`), like `[http]
//! max_connections` for the HTTP and ACME listeners: a connection over the cap is closed at
//! once, before the TLS handshake, so a flood of idle or handshaking connections cannot use
//! up the process's file descriptors. Each admitted connection holds a slot until it closes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission for the gRPC listener.
#[derive(Clone)]
pub struct GrpcGate {
    slots: Arc<Semaphore>,
}

impl GrpcGate {
    pub fn new(max_connections: usize) -> Self {
        GrpcGate { slots: Arc::new(Semaphore::new(max_connections.max(1))) }
    }

    /// A slot for a new connection, or `None` when the listener is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!("gRPC connection over [grpc] max_connections closed");
        }
        permit
    }
}

/// A connection with its slot: the slot is released when tonic drops the connection.
pub struct Slotted<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
}

impl<T> Slotted<T> {
    pub fn new(inner: T, slot: OwnedSemaphorePermit) -> Self {
        Slotted { inner, _slot: slot }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Slotted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Slotted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Slotted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
