//! IO helpers of upstream connections, below the HTTP/1.1 client (`h1`) and the pool: the
//! stream with a write-stall timeout ([`StallIo`]) and the response-head timer kept with a
//! connection ([`ReadTimer`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A connection's current write-stall limit in milliseconds, set by each request that uses it.
pub(crate) type WriteTimeout = Arc<AtomicU64>;

/// TCP or TLS stream with a write-stall timeout.
pub(crate) struct StallIo {
    inner: UpstreamStream,
    write_timeout: WriteTimeout,
    stall: Option<Pin<Box<Sleep>>>,
    /// Set for an HTTP/2 connection that waits for the peer's SETTINGS (`pool`).
    first: Option<Box<FirstFrame>>,
}

/// The transport under a [`StallIo`].
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl StallIo {
    pub(crate) fn new(inner: UpstreamStream, write_timeout: WriteTimeout) -> Self {
        StallIo { inner, write_timeout, stall: None, first: None }
    }

    /// Notify `applied` once the peer's first HTTP/2 frame has been read and processed (see
    /// [`FirstFrame`]).
    pub(crate) fn tell_first_frame(&mut self, applied: Arc<tokio::sync::Notify>) {
        self.first = Some(Box::new(FirstFrame { head: [0; 3], read: 0, complete: false, applied }));
    }

    /// A write's result through the stall timer: a write that stays pending past the write
    /// timeout fails with `TimedOut`; any other outcome disarms the timer.
    fn stall_checked(&mut self, r: Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let ms = self.write_timeout.load(Ordering::Relaxed);
        let sleep = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(ms.max(1)))));
        if sleep.as_mut().poll(cx).is_ready() {
            self.stall = None;
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "upstream write stalled")));
        }
        Poll::Pending
    }
}

impl AsyncRead for StallIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.first.as_mut().is_some_and(|f| f.told()) {
            self.first = None;
        }
        let before = buf.filled().len();
        let r = match &mut self.inner {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Some(f) = &mut self.first {
            f.count(&buf.filled()[before..]);
        }
        r
    }
}

/// Tells when the peer's first HTTP/2 frame (its SETTINGS, RFC 9113 §3.4) has been read and
/// applied: at the first read after the one that completed the frame (9-byte header, then its
/// length). h2 processes every frame it has read, and applies a received SETTINGS as it
/// acknowledges it, before it reads again.
pub(crate) struct FirstFrame {
    /// The frame's 24-bit length, as read so far.
    head: [u8; 3],
    /// Bytes read so far, counted until the frame is complete.
    read: usize,
    complete: bool,
    applied: Arc<tokio::sync::Notify>,
}

impl FirstFrame {
    /// Before a read: once the frame is complete, notify and say so (the watch is then done).
    fn told(&self) -> bool {
        if self.complete {
            self.applied.notify_one();
        }
        self.complete
    }

    /// Bytes just read.
    fn count(&mut self, new: &[u8]) {
        for &b in new {
            if let Some(h) = self.head.get_mut(self.read) {
                *h = b;
            }
            self.read += 1;
        }
        let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
        self.complete = self.read >= 9 + len;
    }
}

impl AsyncWrite for StallIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = match &mut self.inner {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        self.stall_checked(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match &mut self.inner {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        self.stall_checked(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A timer kept with an HTTP/1.1 connection for the response-head timeout. Re-arming a
/// registered timer to a later deadline is one atomic store in tokio, where a new timer per
/// request is registered in and removed from the timer wheel under its lock each time. While
/// the connection sits idle, the last deadline may still pass and wake the task that last used
/// it once (a spurious wake, harmless); the next request re-arms the timer.
pub(crate) type ReadTimer = Pin<Box<Sleep>>;

pub(crate) fn new_read_timer() -> ReadTimer {
    // Armed for real before each use.
    Box::pin(tokio::time::sleep(Duration::from_secs(86_400)))
}

// === Reading ===

/// First read size of an exchange; doubles while reads fill it, up to [`MAX_READ`].
pub(crate) const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Read more bytes from `io` into `buf` (`Ok(0)` at end of stream). The read size starts at
/// [`MIN_READ`] and doubles while reads fill it, up to [`MAX_READ`] (client and server side).
pub(crate) fn poll_fill<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    read_size: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < *read_size / 2 {
        buf.reserve(*read_size);
    }
    let spare = buf.capacity() - buf.len();
    let r = tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    if let Poll::Ready(Ok(n)) = r
        && n == spare
        && *read_size < MAX_READ
    {
        *read_size *= 2;
    }
    r
}

// === Upgraded connections ===

/// Any bidirectional byte stream.
pub(crate) trait UpgradeIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradeIo for T {}

/// A connection handed over after `101 Switching Protocols` (the client's, by the server; the
/// upstream's, by [`upgrade`]): the bytes read past the head first, then the socket.
pub(crate) struct Upgraded {
    pub(crate) pre: Bytes,
    pub(crate) io: Box<dyn UpgradeIo>,
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
