//! A per-connection limit on HTTP/2 stream resets by the client (rapid reset, CVE-2023-44487,
//! including the paced variant that hyper's own limits miss: each stream is accepted before
//! its reset, so `max_pending_accept_reset_streams` never counts it).
//!
//! hyper offers no way to count a client's `RST_STREAM` frames or to send a GOAWAY with an
//! error code of our choice, so this is a thin IO wrapper under hyper's HTTP/2 server:
//!
//! - the read side follows the client's frame headers (9 bytes each; payloads are skipped by
//!   length, never inspected) and counts `RST_STREAM` frames and the highest stream opened;
//! - the write side follows the server's frame boundaries and counts streams the server
//!   completed (a `DATA` or `HEADERS` frame with `END_STREAM`);
//! - when the client's resets outnumber the completed streams by more than
//!   `limits.http2_max_resets` within `limits.http2_reset_window`, it writes a
//!   `GOAWAY(last stream, ENHANCE_YOUR_CALM)` at the next frame boundary of the server's
//!   output, ends the write side, reads what the client still sends for up to a second (so
//!   that closing does not turn into a TCP reset that destroys the GOAWAY), then ends the
//!   connection.
//!
//! Normal traffic pays a few comparisons per frame header; the clock is read only when a
//! client reset arrives.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use gw_observability::Metrics;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Length of the client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: u8 = 24;
const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FLAG_END_STREAM: u8 = 0x1;
/// RFC 9113 error code ENHANCE_YOUR_CALM.
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;
/// How long the client's remaining bytes are read (and dropped) after the GOAWAY.
const LINGER: Duration = Duration::from_secs(1);

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

/// Follows HTTP/2 frame boundaries through a byte stream fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub(crate) struct FrameScanner {
    /// Preface bytes still to skip (client side only).
    preface_left: u8,
    hdr: [u8; 9],
    hdr_len: u8,
    /// Payload bytes of the current frame still to skip.
    payload_left: u32,
}

impl FrameScanner {
    /// For bytes a client sends (they start with the connection preface).
    pub(crate) fn client() -> Self {
        FrameScanner { preface_left: PREFACE_LEN, hdr: [0; 9], hdr_len: 0, payload_left: 0 }
    }

    /// For bytes a server sends.
    pub(crate) fn server() -> Self {
        FrameScanner { preface_left: 0, hdr: [0; 9], hdr_len: 0, payload_left: 0 }
    }

    /// Whether the bytes fed so far end exactly at a frame boundary.
    pub(crate) fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.hdr_len == 0 && self.payload_left == 0
    }

    /// How many bytes can pass before the scanner reaches a boundary or learns where the next
    /// one is (the rest of a header); 0 at a boundary.
    pub(crate) fn next_stop(&self) -> usize {
        if self.preface_left > 0 {
            usize::from(self.preface_left)
        } else if self.hdr_len > 0 {
            9 - usize::from(self.hdr_len)
        } else {
            self.payload_left as usize
        }
    }

    /// Feed bytes; `on_header` sees every complete frame header.
    pub(crate) fn feed(&mut self, mut buf: &[u8], mut on_header: impl FnMut(FrameHeader)) {
        while !buf.is_empty() {
            if self.preface_left > 0 {
                let n = buf.len().min(usize::from(self.preface_left));
                self.preface_left -= n as u8;
                buf = &buf[n..];
            } else if self.payload_left > 0 {
                let n = buf.len().min(self.payload_left as usize);
                self.payload_left -= n as u32;
                buf = &buf[n..];
            } else {
                let have = usize::from(self.hdr_len);
                let n = buf.len().min(9 - have);
                self.hdr[have..have + n].copy_from_slice(&buf[..n]);
                self.hdr_len += n as u8;
                buf = &buf[n..];
                if self.hdr_len == 9 {
                    let h = &self.hdr;
                    let header = FrameHeader {
                        len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    self.hdr_len = 0;
                    self.payload_left = header.len;
                    on_header(header);
                }
            }
        }
    }
}

/// The reset budget of one connection: client resets may outnumber completed streams by at
/// most `max` over the current and the previous window.
#[derive(Debug)]
pub(crate) struct ResetBudget {
    max: u64,
    window: Duration,
    start: Option<Instant>,
    resets: u64,
    prev_resets: u64,
    completed: u64,
    completed_at_start: u64,
    prev_completed: u64,
}

impl ResetBudget {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        ResetBudget {
            max: u64::from(max),
            window: window.max(Duration::from_millis(1)),
            start: None,
            resets: 0,
            prev_resets: 0,
            completed: 0,
            completed_at_start: 0,
            prev_completed: 0,
        }
    }

    /// The server completed a stream.
    pub(crate) fn completed(&mut self) {
        self.completed += 1;
    }

    /// The client reset a stream at `now`; true when the budget is exhausted.
    pub(crate) fn reset(&mut self, now: Instant) -> bool {
        match self.start {
            None => {
                self.start = Some(now);
                self.completed_at_start = self.completed;
            }
            Some(s) => {
                let elapsed = now.saturating_duration_since(s);
                if elapsed >= self.window * 2 {
                    self.prev_resets = 0;
                    self.prev_completed = 0;
                    self.resets = 0;
                    self.completed_at_start = self.completed;
                    self.start = Some(now);
                } else if elapsed >= self.window {
                    self.prev_resets = self.resets;
                    self.prev_completed = self.completed - self.completed_at_start;
                    self.resets = 0;
                    self.completed_at_start = self.completed;
                    self.start = Some(s + self.window);
                }
            }
        }
        self.resets += 1;
        let resets = self.resets + self.prev_resets;
        let completed = self.completed - self.completed_at_start + self.prev_completed;
        resets > self.max + completed
    }
}

/// A GOAWAY frame: `last_stream`, `ENHANCE_YOUR_CALM`, and a short reason as debug data.
pub(crate) fn goaway(last_stream: u32) -> Vec<u8> {
    const REASON: &[u8] = b"too many stream resets";
    let len = 8 + REASON.len() as u32;
    let mut f = Vec::with_capacity(9 + len as usize);
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f.extend_from_slice(REASON);
    f
}

enum State {
    Open,
    /// The limit tripped: the GOAWAY goes out at the next frame boundary of our output.
    Tripped {
        frame: Vec<u8>,
        sent: usize,
    },
    /// GOAWAY written; the write side is being shut down.
    Closing,
    /// Dropping what the client still sends until it closes or the time is up.
    Lingering {
        until: Pin<Box<tokio::time::Sleep>>,
    },
    /// The connection is over (reads end, writes are dropped).
    Done,
}

/// The IO under hyper's HTTP/2 server that enforces the reset budget.
pub(crate) struct H2Guard<I> {
    inner: I,
    read: FrameScanner,
    write: FrameScanner,
    budget: ResetBudget,
    last_stream: u32,
    state: State,
    metrics: Arc<Metrics>,
}

impl<I> H2Guard<I> {
    pub(crate) fn new(inner: I, max_resets: u32, window: Duration, metrics: Arc<Metrics>) -> Self {
        H2Guard {
            inner,
            read: FrameScanner::client(),
            write: FrameScanner::server(),
            budget: ResetBudget::new(max_resets, window),
            last_stream: 0,
            state: State::Open,
            metrics,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> H2Guard<I> {
    /// Follow the client's frames in `bytes`; trips the limit when the budget is exhausted.
    fn scan_read(&mut self, bytes: &[u8]) {
        let (budget, last) = (&mut self.budget, &mut self.last_stream);
        let mut tripped = false;
        self.read.feed(bytes, |h| match h.kind {
            FRAME_HEADERS if h.stream > *last => *last = h.stream,
            FRAME_RST_STREAM if !tripped => tripped = budget.reset(Instant::now()),
            _ => {}
        });
        if tripped && matches!(self.state, State::Open) {
            self.metrics.http2_reset_limit_hit();
            tracing::debug!(
                last_stream = self.last_stream,
                "HTTP/2 client resets over the limit: GOAWAY ENHANCE_YOUR_CALM"
            );
            self.state = State::Tripped { frame: goaway(self.last_stream), sent: 0 };
        }
    }

    /// Follow our own frames in `bytes` (what the inner writer accepted).
    fn scan_write(&mut self, bytes: &[u8]) {
        let budget = &mut self.budget;
        self.write.feed(bytes, |h| {
            if (h.kind == FRAME_DATA || h.kind == FRAME_HEADERS) && h.flags & FLAG_END_STREAM != 0 && h.stream != 0 {
                budget.completed();
            }
        });
    }

    /// Read and drop what the client sends, until nothing is ready (a bounded number of reads
    /// per poll; the task is woken again when more remains). End of stream ends the connection.
    fn drain(&mut self, cx: &mut Context<'_>) {
        for _ in 0..64 {
            let mut scratch = [0u8; 4096];
            let mut sink = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut sink) {
                Poll::Ready(Ok(())) if !sink.filled().is_empty() => {}
                Poll::Ready(_) => {
                    self.state = State::Done;
                    return;
                }
                Poll::Pending => return,
            }
        }
        cx.waker().wake_by_ref();
    }

    /// Move the closing sequence forward: GOAWAY (once at a frame boundary), shutdown, linger.
    /// Ready when the connection is over for hyper.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Open => return Poll::Pending,
                State::Tripped { frame, sent } => {
                    if !self.write.at_boundary() {
                        // hyper is in the middle of a frame: it finishes it through poll_write.
                        return Poll::Pending;
                    }
                    while *sent < frame.len() {
                        match Pin::new(&mut self.inner).poll_write(cx, &frame[*sent..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                self.state = State::Done;
                                return Poll::Ready(());
                            }
                            Poll::Ready(Ok(n)) => *sent += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    self.state = State::Closing;
                }
                State::Closing => {
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    self.state = State::Lingering { until: Box::pin(tokio::time::sleep(LINGER)) };
                }
                State::Lingering { until } => {
                    if until.as_mut().poll(cx).is_ready() {
                        self.state = State::Done;
                        continue;
                    }
                    self.drain(cx);
                    if matches!(self.state, State::Lingering { .. }) {
                        return Poll::Pending;
                    }
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !matches!(this.state, State::Open) {
            if matches!(this.state, State::Tripped { .. }) {
                // Keep the read interest while waiting for a frame boundary of our output;
                // what the client sends now is dropped.
                this.drain(cx);
            }
            ready!(this.poll_close(cx));
            return Poll::Ready(Ok(())); // end of stream for hyper
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.scan_read(&buf.filled()[before..]);
            if matches!(this.state, State::Tripped { .. }) {
                // Send it now if our output is between frames. The bytes just read are still
                // handed to hyper (its answers to them are dropped).
                let _ = this.poll_close(cx);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H2Guard<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.state {
            State::Open => {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
                this.scan_write(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            State::Tripped { .. } if !this.write.at_boundary() => {
                // Finish the frame in progress, and no more.
                let stop = this.write.next_stop().min(buf.len());
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..stop]))?;
                this.scan_write(&buf[..n]);
                if this.write.at_boundary() {
                    let _ = this.poll_close(cx);
                }
                Poll::Ready(Ok(n))
            }
            _ => {
                let _ = this.poll_close(cx);
                // Nothing more of hyper's output is sent after the GOAWAY.
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !matches!(this.state, State::Open) {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.scan_write(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.state {
            State::Open | State::Tripped { .. } => Pin::new(&mut this.inner).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.state {
            State::Open => Pin::new(&mut this.inner).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xaa, len as usize));
        f
    }

    /// Headers are found whatever the pieces the bytes come in (one byte at a time, all at
    /// once, or split at every position), the preface is skipped, payloads are not read.
    #[test]
    fn scanner_finds_headers_in_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let frames = [
            (6, 0x4, 0, 0),
            (13, FRAME_HEADERS, 0x5, 1),
            (4, FRAME_RST_STREAM, 0, 1),
            (0, FRAME_DATA, 1, 3),
            (300, FRAME_DATA, 0, 5),
        ];
        for &(len, kind, flags, stream) in &frames {
            bytes.extend(frame(len, kind, flags, stream));
        }
        let want: Vec<FrameHeader> =
            frames.iter().map(|&(len, kind, flags, stream)| FrameHeader { len, kind, flags, stream }).collect();
        let run = |pieces: &[&[u8]]| {
            let mut s = FrameScanner::client();
            let mut got = Vec::new();
            for p in pieces {
                s.feed(p, |h| got.push(h));
            }
            (got, s.at_boundary())
        };
        assert_eq!(run(&[&bytes]), (want.clone(), true));
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), (want.clone(), true));
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(run(&[a, b]), (want.clone(), true), "cut at {cut}");
        }
        let (_, boundary) = run(&[&bytes[..bytes.len() - 1]]);
        assert!(!boundary);
        // The reserved bit of the stream id is ignored.
        let mut s = FrameScanner::server();
        let mut got = None;
        s.feed(&frame(0, FRAME_HEADERS, 0, 0x8000_0007), |h| got = Some(h.stream));
        assert_eq!(got, Some(7));
    }

    /// `next_stop` never lets a writer pass a frame boundary.
    #[test]
    fn next_stop_reaches_each_boundary() {
        let bytes = [frame(5, FRAME_DATA, 0, 1), frame(0, FRAME_DATA, 1, 1), frame(70_000, FRAME_DATA, 0, 3)].concat();
        let mut s = FrameScanner::server();
        let mut at = 0;
        let mut boundaries = vec![0];
        while at < bytes.len() {
            let step = s.next_stop().max(1).min(bytes.len() - at);
            // Feed in two pieces when the step allows, to cross partial headers too.
            let half = (step / 2).max(1);
            s.feed(&bytes[at..at + half], |_| {});
            s.feed(&bytes[at + half..at + step], |_| {});
            at += step;
            if s.at_boundary() {
                boundaries.push(at);
            }
        }
        assert_eq!(boundaries, vec![0, 14, 23, 23 + 9 + 70_000]);
    }

    /// Resets alone trip after `max`; completed streams earn room; old windows are forgotten.
    #[test]
    fn budget_counts_resets_against_completed_streams() {
        let t0 = Instant::now();
        let mut b = ResetBudget::new(10, Duration::from_secs(10));
        for i in 0..10 {
            assert!(!b.reset(t0), "reset {i}");
        }
        assert!(b.reset(t0), "the 11th reset beyond no completed stream");

        // A client that completes 25 streams per cancel never trips.
        let mut b = ResetBudget::new(10, Duration::from_secs(10));
        for i in 0..10_000u32 {
            for _ in 0..25 {
                b.completed();
            }
            assert!(!b.reset(t0 + Duration::from_millis(u64::from(i))), "cancel {i}");
        }

        // Resets spread over time: the budget applies to two windows at most.
        let mut b = ResetBudget::new(10, Duration::from_secs(1));
        for i in 0..100u64 {
            assert!(!b.reset(t0 + Duration::from_millis(300 * i)), "one reset every 300 ms: {i}");
        }
        // ... but 11 within a window trip.
        let mut b = ResetBudget::new(10, Duration::from_secs(1));
        let tripped = (0..11u64).any(|i| b.reset(t0 + Duration::from_millis(50 * i)));
        assert!(tripped);
    }

    /// The GOAWAY frame: type 7 on stream 0, last stream id, ENHANCE_YOUR_CALM.
    #[test]
    fn goaway_frame() {
        let f = goaway(0x8000_0201);
        let mut s = FrameScanner::server();
        let mut h = None;
        s.feed(&f, |x| h = Some(x));
        let h = h.unwrap_or_else(|| panic!("no header"));
        assert_eq!((h.kind, h.flags, h.stream, h.len as usize), (0x7, 0, 0, f.len() - 9));
        assert!(s.at_boundary());
        assert_eq!(&f[9..13], &0x201u32.to_be_bytes());
        assert_eq!(&f[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
    }

    /// Over a real in-memory stream: the limit trips while our output is in the middle of a
    /// DATA frame; the frame is finished, the GOAWAY follows at its boundary, nothing of
    /// hyper's output after it is sent, the write side is closed, and reads end for hyper.
    #[tokio::test]
    async fn goaway_waits_for_a_frame_boundary() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut g = H2Guard::new(server, 2, Duration::from_secs(10), Arc::new(Metrics::new()));
        let data = frame(100, FRAME_DATA, FLAG_END_STREAM, 1);
        g.write_all(&data[..50]).await.unwrap_or_else(|e| panic!("{e}"));

        let mut attack = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for sid in [1u32, 3, 5] {
            attack.extend(frame(0, FRAME_HEADERS, 0x5, sid));
            attack.extend(frame(4, FRAME_RST_STREAM, 0, sid));
        }
        client.write_all(&attack).await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 4096];
        let n = g.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, attack.len(), "the bytes read are handed on");
        assert!(matches!(g.state, State::Tripped { .. }), "tripped, waiting for the frame to end");

        // hyper goes on writing: the rest of the frame, then a whole new one.
        let next = frame(10, FRAME_DATA, 0, 3);
        let rest = [&data[50..], &next[..]].concat();
        g.write_all(&rest).await.unwrap_or_else(|e| panic!("{e}"));
        g.flush().await.unwrap_or_else(|e| panic!("{e}"));

        // hyper reads on: the connection is over for it once the client closes.
        client.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        let n = tokio::time::timeout(Duration::from_secs(3), g.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0))), "end of stream for hyper: {n:?}");

        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap_or_else(|e| panic!("{e}"));
        let want = [&data[..], &goaway(5)[..]].concat();
        assert_eq!(got, want, "the frame, then the GOAWAY, then nothing (write side closed)");
    }
}
