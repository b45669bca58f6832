//! gRPC length-prefixed message framing (the body of `application/grpc` and of gRPC-Web).
//!
//! Every message is a 5-byte header, a flags byte and a big-endian `u32` length, followed by
//! that many bytes. Flag bit 0 (`0x01`) says the message is compressed (with the
//! `grpc-encoding` of the stream); gRPC-Web adds bit 7 (`0x80`): the frame carries the
//! trailers, as `name: value\r\n` lines ([`crate::web::decode_trailer_block`]). Any other bit
//! set is a framing error.
//!
//! [`FrameDecoder`] is incremental: feed it chunks cut anywhere (one byte at a time works) and
//! take the frames out as they complete. A declared length above the decoder's bound is refused
//! as soon as the header is read, before any of the message is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Flag bit: the message is compressed with the stream's `grpc-encoding`.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit (gRPC-Web only): the frame carries the trailers.
pub const FLAG_TRAILERS: u8 = 0x80;
/// Size of the frame header: flags (1 byte) and length (4 bytes, big-endian).
pub const HEADER_LEN: usize = 5;
/// Default bound on one message: 4 MiB, gRPC's default receive limit.
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message (its bytes, still compressed when `compressed`).
    Message {
        /// Flag bit 0 was set.
        compressed: bool,
        /// The message bytes.
        data: Bytes,
    },
    /// A gRPC-Web trailer frame: the raw `name: value\r\n` block.
    Trailers(Bytes),
}

/// A framing error. Any of them means the stream cannot be trusted: the caller fails the
/// exchange (and, on a connection, closes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A message longer than the bound.
    #[error("gRPC message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Reserved flag bits set (or the trailers bit on plain gRPC).
    #[error("gRPC frame with invalid flags 0x{0:02x}")]
    BadFlags(u8),
    /// Bytes after the gRPC-Web trailer frame.
    #[error("data after the gRPC-Web trailer frame")]
    AfterTrailers,
    /// The stream ended inside a frame.
    #[error("gRPC stream ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
}

/// Incremental decoder of length-prefixed frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
    web: bool,
    trailers_seen: bool,
    /// Header of the frame being read, once complete: (flags, length).
    head: Option<(u8, usize)>,
}

impl FrameDecoder {
    /// A decoder of plain gRPC bodies: the trailers flag is an error.
    pub fn new(max_message: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), max: max_message, web: false, trailers_seen: false, head: None }
    }

    /// A decoder of gRPC-Web bodies: a trailer frame may end the stream (nothing may follow it).
    pub fn grpc_web(max_message: usize) -> Self {
        FrameDecoder { web: true, ..FrameDecoder::new(max_message) }
    }

    /// Add received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received and not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() + if self.head.is_some() { HEADER_LEN } else { 0 }
    }

    /// Whether a gRPC-Web trailer frame was decoded.
    pub fn trailers_seen(&self) -> bool {
        self.trailers_seen
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.trailers_seen && !self.buf.is_empty() {
            return Err(FrameError::AfterTrailers);
        }
        let (flags, len) = match self.head {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let flags = self.buf[0];
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                let allowed = if self.web { FLAG_COMPRESSED | FLAG_TRAILERS } else { FLAG_COMPRESSED };
                if flags & !allowed != 0 {
                    return Err(FrameError::BadFlags(flags));
                }
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                self.buf.advance(HEADER_LEN);
                self.head = Some((flags, len));
                (flags, len)
            }
        };
        if self.buf.len() < len {
            // Reserve once for the whole message (bounded by `max`), not chunk by chunk.
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        self.head = None;
        let data = self.buf.split_to(len).freeze();
        if flags & FLAG_TRAILERS != 0 {
            self.trailers_seen = true;
            if !self.buf.is_empty() {
                return Err(FrameError::AfterTrailers);
            }
            return Ok(Some(Frame::Trailers(data)));
        }
        Ok(Some(Frame::Message { compressed: flags & FLAG_COMPRESSED != 0, data }))
    }

    /// The end of the stream: an error when it ends inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

/// The 5-byte header of a frame.
pub fn header(flags: u8, len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let n = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: u32::MAX as usize })?;
    let l = n.to_be_bytes();
    Ok([flags, l[0], l[1], l[2], l[3]])
}

/// A message framed: header and bytes.
pub fn encode_message(data: &[u8], compressed: bool) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + data.len());
    out.put_slice(&header(if compressed { FLAG_COMPRESSED } else { 0 }, data.len())?);
    out.put_slice(data);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(d: &mut FrameDecoder) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    /// Messages split at every possible boundary, one byte at a time included, decode the same.
    #[test]
    fn decodes_across_any_chunk_boundary() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&encode_message(b"hello", false).unwrap());
        stream.extend_from_slice(&encode_message(b"", false).unwrap());
        stream.extend_from_slice(&encode_message(&[7u8; 300], true).unwrap());
        let want = vec![
            Frame::Message { compressed: false, data: Bytes::from_static(b"hello") },
            Frame::Message { compressed: false, data: Bytes::new() },
            Frame::Message { compressed: true, data: Bytes::from(vec![7u8; 300]) },
        ];
        for size in 1..=stream.len() {
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                d.push(chunk);
                got.extend(frames(&mut d));
            }
            assert_eq!(got, want, "chunk size {size}");
            d.finish().unwrap();
        }
    }

    /// A declared length above the bound is refused from the header alone.
    #[test]
    fn oversized_message_is_refused_at_the_header() {
        let mut d = FrameDecoder::new(10);
        d.push(&[0, 0, 0, 0, 11]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 11, max: 10 }));
        let mut d = FrameDecoder::new(10);
        d.push(&[0, 0, 0, 0, 10]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[1; 10]);
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Message { .. }))));
    }

    /// Reserved bits are errors; the trailers bit is one on plain gRPC only.
    #[test]
    fn flags_are_checked() {
        for bad in [0x02u8, 0x40, 0x81 | 0x02] {
            let mut d = FrameDecoder::grpc_web(10);
            d.push(&[bad, 0, 0, 0, 0]);
            assert_eq!(d.next_frame(), Err(FrameError::BadFlags(bad)));
        }
        let mut d = FrameDecoder::new(10);
        d.push(&[0x80, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::BadFlags(0x80)));
    }

    /// gRPC-Web: the trailer frame ends the stream; bytes after it are an error.
    #[test]
    fn web_trailer_frame_ends_the_stream() {
        let mut d = FrameDecoder::grpc_web(100);
        d.push(&encode_message(b"m", false).unwrap());
        d.push(&[0x80, 0, 0, 0, 15]);
        d.push(b"grpc-status:0\r\n");
        let got = frames(&mut d);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Frame::Trailers(Bytes::from_static(b"grpc-status:0\r\n")));
        assert!(d.trailers_seen());
        d.finish().unwrap();
        let mut d = FrameDecoder::grpc_web(100);
        d.push(&[0x80, 0, 0, 0, 1, b'x', b'y']);
        assert_eq!(d.next_frame(), Err(FrameError::AfterTrailers));
    }

    /// A stream that stops inside a header or a message is truncated.
    #[test]
    fn truncation_is_reported() {
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(3)));
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0, 0, 0, 4, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(7)));
    }
}
