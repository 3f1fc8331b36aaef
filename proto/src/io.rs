//! [`CoalescingIo`]: one `write` system call per scheduler round for an HTTP/2 connection,
//! shared by the server's gRPC listener and ca-loadtest's client.
//!
//! Why: h2 cannot buffer a frame behind a DATA frame whose payload it chains (anything over
//! 256 bytes with vectored I/O), so it flushes to the socket once per such frame. A
//! SignCsr response (a certificate chain) is one, so the server made about two `writev`
//! calls per response and the client one per request, each a packet on a real network
//! and, on loopback, a run of the receiver's TCP path. This adapter accepts every write into its own buffer and postpones the first flush of a
//! connection-task poll to that task's next poll (it wakes the task itself), so frames
//! produced by every stream that became ready meanwhile leave in one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many buffered bytes a write goes through to the socket first (backpressure:
/// a peer that stops reading cannot make us buffer without bound).
const HIGH_WATER: usize = 256 << 10;
/// A buffer that grew past this during a burst is released once drained, so thousands of
/// mostly idle connections do not each keep their largest burst's allocation.
const KEEP_CAPACITY: usize = 64 << 10;

/// Wraps a byte stream (a `TcpStream`) for an HTTP/2 connection; see the module doc.
///
/// The contract that makes postponing safe: a postponed flush wakes the task, and h2's
/// connection reads from the socket on every poll, so the bytes go out at the start of the
/// next poll ([`AsyncRead::poll_read`] writes them first); shutdown writes them too.
#[derive(Debug)]
pub struct CoalescingIo<T> {
    inner: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// A flush was postponed: `buf` goes out at the next read, at shutdown, or when it
    /// reaches [`HIGH_WATER`].
    postponed: bool,
}

impl<T> CoalescingIo<T> {
    pub fn new(inner: T) -> Self {
        CoalescingIo { inner, buf: Vec::new(), written: 0, postponed: false }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
    /// Write every buffered byte to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        self.postponed = false;
        Poll::Ready(Ok(()))
    }

    fn make_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.postponed {
            // A full socket must not stop us reading (the peer may be waiting for us to
            // read before it reads): on Pending the bytes stay buffered, and the socket's
            // write readiness wakes the task to try again.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.make_room(cx))?;
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.make_room(cx))?;
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() == 0 {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.postponed {
            this.postponed = true;
            // Poll the connection again after the tasks already woken have run: their
            // frames join these.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for CoalescingIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_wait_for_the_next_read_or_shutdown() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = CoalescingIo::new(a);
        a.write_all(b"one ").await.unwrap();
        a.flush().await.unwrap();
        a.write_all(b"two").await.unwrap();
        a.flush().await.unwrap();
        // Postponed: nothing has reached the peer yet.
        let mut got = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut got)).await;
        assert!(early.is_err(), "bytes left before the next read: {early:?}");
        // Our next read sends both flushes' bytes in one write, then reads.
        b.write_all(b"!").await.unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"!");
        let n = b.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"one two");
        a.write_all(b" three").await.unwrap();
        a.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" three");
    }

    #[tokio::test]
    async fn a_postponed_flush_wakes_its_task() {
        let (a, _b) = tokio::io::duplex(1 << 20);
        let mut a = CoalescingIo::new(a);
        a.write_all(b"x").await.unwrap();
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Flag(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(Pin::new(&mut a).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(a.pending(), 1);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_gets_backpressure() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut a = CoalescingIo::new(a);
        let chunk = vec![7u8; 64 << 10];
        // The adapter takes HIGH_WATER, then must wait for the (small, unread) pipe.
        let stuck = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            for _ in 0..64 {
                a.write_all(&chunk).await.unwrap();
            }
        })
        .await;
        assert!(stuck.is_err(), "buffered 4 MiB for a peer that reads nothing");
        assert!(a.pending() <= HIGH_WATER + chunk.len());
        // Once the peer reads everything, the buffer drains and its burst-sized
        // allocation is released.
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            b.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        a.shutdown().await.unwrap();
        assert!(reader.await.unwrap().unwrap() >= HIGH_WATER);
        assert_eq!((a.pending(), a.buf.capacity()), (0, 0));
    }
}
