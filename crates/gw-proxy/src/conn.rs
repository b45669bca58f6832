//! Downstream connection bookkeeping: an IO wrapper that records activity, and the
//! per-connection watchdog that enforces the header-read (slowloris) and idle timeouts.
//!
//! Why a watchdog rather than a timer per read: it knows whether bytes arrived since the
//! connection last went idle, so it tells a slowloris client (bytes trickling in, no complete
//! head) from an idle keep-alive client (nothing sent), and it costs no timer operation per
//! request (hyper's `header_read_timeout` cannot tell the two apart since hyper 1.6).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared state of one downstream connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    start: Instant,
    /// Requests (HTTP/2 streams) in progress.
    in_flight: AtomicU32,
    /// Milliseconds since `start` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Bytes arrived since the connection last became idle (a head is being received).
    read_since_idle: AtomicBool,
    /// The connection was asked to close once idle (graceful shutdown, idle timeout).
    closing: AtomicBool,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnState {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            read_since_idle: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A request started on this connection.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (its response body ended or was dropped).
    #[cfg(test)]
    pub(crate) fn request_finished(&self) {
        self.request_finished_at(Instant::now());
    }

    /// [`ConnState::request_finished`] at `now` (a reading the caller already has).
    pub(crate) fn request_finished_at(&self, now: Instant) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let ms = now.saturating_duration_since(self.start).as_millis() as u64;
            self.idle_since_ms.store(ms, Ordering::Relaxed);
            self.read_since_idle.store(false, Ordering::Relaxed);
        }
    }

    /// Ask the connection to close once its current request is answered.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether [`ConnState::begin_close`] was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

/// Wraps a downstream stream to feed [`ConnState`].
pub(crate) struct TrackedIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(inner: T, state: Arc<ConnState>) -> Self {
        TrackedIo { inner, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.state.read_since_idle.store(true, Ordering::Relaxed);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the watchdog decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A head has been arriving for too long: drop the connection.
    SlowHead,
    /// Idle for too long: close gracefully.
    Idle,
}

/// Wait until the connection violates a timeout. Never returns while requests are in flight.
pub(crate) async fn watchdog(state: Arc<ConnState>, header_read: Duration, idle: Duration) -> Verdict {
    let step = header_read.min(idle);
    loop {
        let now = state.now_ms();
        let since = state.idle_since_ms.load(Ordering::Relaxed);
        let busy = state.in_flight.load(Ordering::Relaxed) > 0;
        let wait = if busy {
            step
        } else {
            let reading = state.read_since_idle.load(Ordering::Relaxed);
            let limit = if reading { header_read } else { idle };
            let elapsed = Duration::from_millis(now.saturating_sub(since));
            if elapsed >= limit {
                // Re-check the in-flight count: a request may have started meanwhile.
                if state.in_flight.load(Ordering::Relaxed) == 0 {
                    return if reading { Verdict::SlowHead } else { Verdict::Idle };
                }
                step
            } else if reading {
                limit - elapsed
            } else {
                // Bytes may start arriving: wake in time to apply the shorter header limit.
                (limit - elapsed).min(header_read)
            }
        };
        tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is closed after the idle timeout; one receiving a head after the
    /// header timeout.
    #[tokio::test(start_paused = true)]
    async fn watchdog_distinguishes_idle_from_slow_head() {
        let s = ConnState::new();
        let v = watchdog(s.clone(), Duration::from_secs(2), Duration::from_secs(10)).await;
        assert_eq!(v, Verdict::Idle);
        assert!(s.start.elapsed() >= Duration::from_secs(10));

        let s = ConnState::new();
        s.read_since_idle.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let v = watchdog(s, Duration::from_secs(2), Duration::from_secs(10)).await;
        assert_eq!(v, Verdict::SlowHead);
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    /// A busy connection is never timed out.
    #[tokio::test(start_paused = true)]
    async fn watchdog_waits_for_requests() {
        let s = ConnState::new();
        s.request_started();
        let w = tokio::spawn(watchdog(s.clone(), Duration::from_secs(1), Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!w.is_finished());
        s.request_finished();
        assert_eq!(w.await.unwrap(), Verdict::Idle);
    }
}
