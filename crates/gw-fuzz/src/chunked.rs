//! `chunked`: arbitrary bytes into the chunked body decoder shared by requests and responses
//! (`h1::H1Body::step`, which calls `parse_chunk_line`), fed in pieces of different sizes.
//!
//! Oracle: the input is decoded whole, one byte at a time (inputs up to 4 KiB) and in pieces
//! whose sizes follow the input's own bytes. Every split gives the same outcome (the same data,
//! trailers and end, or a refusal, or "more bytes needed" with the same data so far). An outcome
//! other than a refusal must be what [`reference`] (a strict RFC 9112 §7.1 decoder written from
//! the ABNF) gives: a body the gateway completes is complete for the reference with the same
//! data, trailers and length on the wire; a body the gateway still waits for is not complete
//! for the reference. (Refusing is always allowed: the gateway has limits the RFC does not.)

use bytes::BytesMut;
use gw_proxy::fuzzing::{ChunkedDecoder, Step};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::rfc::{field_line, is_tchar, is_ws, show};

/// What a decoder made of the input.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Outcome {
    /// The body ended after `used` bytes.
    Complete { data: Vec<u8>, trailers: HeaderMap, used: usize },
    /// The input ended inside the body.
    Incomplete { data: Vec<u8> },
    /// Not a chunked body.
    Invalid,
}

// === the reference decoder ===

/// Where the reference stopped: at the end of the input (more could follow) or at a byte
/// that cannot be there.
enum Stop {
    More,
    Invalid,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.b.get(self.at).copied().ok_or(Stop::More)
    }

    fn next(&mut self) -> Result<u8, Stop> {
        let c = self.peek()?;
        self.at += 1;
        Ok(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), Stop> {
        if self.next()? == c { Ok(()) } else { Err(Stop::Invalid) }
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.expect(b'\r')?;
        self.expect(b'\n')
    }

    fn bws(&mut self) -> Result<(), Stop> {
        while is_ws(self.peek()?) {
            self.at += 1;
        }
        Ok(())
    }

    /// `1*tchar` up to the first other byte.
    fn token(&mut self) -> Result<(), Stop> {
        if !is_tchar(self.peek()?) {
            return Err(Stop::Invalid);
        }
        while is_tchar(self.peek()?) {
            self.at += 1;
        }
        Ok(())
    }

    /// `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE`.
    fn quoted_string(&mut self) -> Result<(), Stop> {
        self.expect(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => {
                    let c = self.next()?;
                    if !(c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80) {
                        return Err(Stop::Invalid);
                    }
                }
                c if c == b'\t'
                    || c == b' '
                    || c == 0x21
                    || (0x23..=0x5b).contains(&c)
                    || (0x5d..=0x7e).contains(&c)
                    || c >= 0x80 => {}
                _ => return Err(Stop::Invalid),
            }
        }
    }

    /// `chunk-size [ chunk-ext ] CRLF`: the size (saturating: no input holds that much).
    fn chunk_line(&mut self) -> Result<u64, Stop> {
        if !self.peek()?.is_ascii_hexdigit() {
            return Err(Stop::Invalid);
        }
        let mut size: u64 = 0;
        while let Some(d) = char::from(self.peek()?).to_digit(16) {
            size = size.saturating_mul(16).saturating_add(u64::from(d));
            self.at += 1;
        }
        // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ): white
        // space only before a ";".
        loop {
            let before = self.at;
            self.bws()?;
            match self.peek()? {
                b';' => {
                    self.at += 1;
                    self.bws()?;
                    self.token()?;
                    let after_name = self.at;
                    self.bws()?;
                    if self.peek()? == b'=' {
                        self.at += 1;
                        self.bws()?;
                        if self.peek()? == b'"' {
                            self.quoted_string()?;
                        } else {
                            self.token()?;
                        }
                    } else {
                        self.at = after_name;
                    }
                }
                _ => {
                    self.at = before;
                    break;
                }
            }
        }
        self.crlf()?;
        Ok(size)
    }
}

/// A strict RFC 9112 §7.1 chunked decoder over the whole input:
/// `chunked-body = *chunk last-chunk trailer-section CRLF`, CRLF line ends throughout,
/// extensions by their grammar, trailer fields as `field-line`s.
pub fn reference(wire: &[u8]) -> Outcome {
    let mut c = Cursor { b: wire, at: 0 };
    let mut data = Vec::new();
    let mut trailers = HeaderMap::new();
    let r = (|| -> Result<(), Stop> {
        loop {
            let size = c.chunk_line()?;
            if size == 0 {
                break;
            }
            let left = (wire.len() - c.at) as u64;
            if left < size {
                data.extend_from_slice(&wire[c.at..]);
                c.at = wire.len();
                return Err(Stop::More);
            }
            data.extend_from_slice(&wire[c.at..c.at + size as usize]);
            c.at += size as usize;
            c.crlf()?;
        }
        // trailer-section = *( field-line CRLF ), then CRLF.
        loop {
            let rest = &wire[c.at..];
            if rest.starts_with(b"\r\n") {
                c.at += 2;
                return Ok(());
            }
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                // The line can still be completed unless it holds a CR before its end.
                if rest == b"\r" || rest.iter().all(|&b| b != b'\r') {
                    return Err(Stop::More);
                }
                return Err(Stop::Invalid);
            };
            let Some(line) = rest[..end].strip_suffix(b"\r") else { return Err(Stop::Invalid) };
            let Some((n, v)) = field_line(line) else { return Err(Stop::Invalid) };
            match (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                (Ok(n), Ok(v)) => {
                    trailers.append(n, v);
                }
                _ => return Err(Stop::Invalid),
            }
            c.at += end + 1;
        }
    })();
    match r {
        Ok(()) => Outcome::Complete { data, trailers, used: c.at },
        Err(Stop::More) => Outcome::Incomplete { data },
        Err(Stop::Invalid) => Outcome::Invalid,
    }
}

// === the gateway's decoder ===

/// Decode `wire` with the gateway's decoder, fed in pieces: `sizes(offset)` bytes at a time.
pub fn gateway(wire: &[u8], sizes: &mut dyn FnMut(usize) -> usize) -> Outcome {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let (mut data, mut trailers, mut fed) = (Vec::new(), HeaderMap::new(), 0);
    // Bounded: every step consumes bytes, ends, or asks for more (and the input is finite).
    while !dec.is_done() {
        match dec.step(&mut buf) {
            Err(_) => return Outcome::Invalid,
            Ok(Step::Data(d)) => {
                assert!(!d.is_empty(), "empty data frame");
                data.extend_from_slice(&d);
            }
            Ok(Step::Trailers(t)) => trailers = t,
            Ok(Step::End) => break,
            Ok(Step::More) => {
                if fed == wire.len() {
                    return Outcome::Incomplete { data };
                }
                let n = sizes(fed).clamp(1, wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
    Outcome::Complete { data, trailers, used: fed - buf.len() }
}

/// The fuzz target.
pub fn chunked(wire: &[u8]) {
    let w = || show(wire);
    let whole = gateway(wire, &mut |_| usize::MAX);
    let mut splits = vec![("in pieces sized by the input", gateway(wire, &mut |at| 1 + usize::from(wire[at]) % 29))];
    if wire.len() <= 4096 {
        splits.push(("one byte at a time", gateway(wire, &mut |_| 1)));
    }
    for (how, o) in &splits {
        assert_eq!(o, &whole, "decoded {how} differs from decoded whole: {}", w());
    }
    if let Outcome::Complete { trailers, .. } = &whole {
        trailer_filter(trailers, wire);
    }
    let r = reference(wire);
    match (&whole, &r) {
        (Outcome::Invalid, _) | (Outcome::Incomplete { .. }, Outcome::Invalid) => {}
        (Outcome::Complete { .. }, Outcome::Complete { .. }) => {
            assert_eq!(whole, r, "gateway and reference decode differently: {}", w());
        }
        (Outcome::Incomplete { data }, Outcome::Incomplete { data: rd }) => {
            assert_eq!(data, rd, "different data before the end of the input: {}", w());
        }
        (Outcome::Complete { .. }, _) => {
            panic!("gateway completed a body the reference reads as {r:?}: {} (gateway: {whole:?})", w())
        }
        (Outcome::Incomplete { .. }, Outcome::Complete { .. }) => {
            panic!("gateway waits for more after a complete body: {} (reference: {r:?})", w())
        }
    }
}

/// Second oracle (issue 17 item 2): whatever trailer section the decoder accepted, the filter
/// applied before trailers are forwarded (`wire::strip_trailers`, both directions) leaves no
/// field that must not travel as a trailer (framing, routing, authentication, control, identity,
/// forwarding, the request id, a configured identity field) and no field a `Connection`
/// trailer names, and keeps every other field with all its values, in order.
fn trailer_filter(trailers: &HeaderMap, wire: &[u8]) {
    let rid = HeaderName::from_static("x-request-id");
    let configured = [HeaderName::from_static("x-user-claim")];
    let mut named: Vec<HeaderName> = Vec::new();
    for v in trailers.get_all(http::header::CONNECTION) {
        named.extend(v.as_bytes().split(|&b| b == b',').filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()));
    }
    let mut out = trailers.clone();
    gw_proxy::wire::strip_trailers(&mut out, &rid, &configured);
    for name in trailers.keys() {
        let gone = gw_proxy::wire::is_forbidden_trailer(name, &rid, &configured) || named.contains(name);
        let kept: Vec<&HeaderValue> = out.get_all(name).iter().collect();
        if gone {
            assert!(kept.is_empty(), "trailer {name} forwarded: {}", show(wire));
        } else {
            let sent: Vec<&HeaderValue> = trailers.get_all(name).iter().collect();
            assert_eq!(kept, sent, "trailer {name} altered by the filter: {}", show(wire));
        }
    }
    for name in out.keys() {
        assert!(trailers.contains_key(name), "the filter added {name}: {}", show(wire));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(data: &[u8], trailers: &[(&str, &str)], used: usize) -> Outcome {
        let mut t = HeaderMap::new();
        for (n, v) in trailers {
            t.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        Outcome::Complete { data: data.to_vec(), trailers: t, used }
    }

    /// The reference follows the ABNF: what it accepts and refuses, and where it stops.
    #[test]
    fn reference_decoder() {
        assert_eq!(reference(b"0\r\n\r\n"), complete(b"", &[], 5));
        assert_eq!(reference(b"5\r\nhello\r\n0\r\n\r\nNEXT"), complete(b"hello", &[], 15));
        let ext = b"5 ; a = \"q\\\"\" ;b\r\nhello\r\n0\r\nX-A: 1\r\n\r\n";
        assert_eq!(reference(ext), complete(b"hello", &[("x-a", "1")], ext.len()));
        assert_eq!(reference(b"A\r\n0123456789\r\n0;e=t\r\n\r\n"), complete(b"0123456789", &[], 24));
        assert_eq!(reference(b"5\r\nhel"), Outcome::Incomplete { data: b"hel".to_vec() });
        assert_eq!(reference(b"1;a=\"x"), Outcome::Incomplete { data: vec![] });
        assert_eq!(reference(b"0\r\nx: y"), Outcome::Incomplete { data: vec![] });
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"1;a=\"\r\nx\r\n0\r\n\r\n",
            b"1;\r\nx\r\n0\r\n\r\n",
            b"1;a=\r\nx\r\n0\r\n\r\n",
            b"1 x\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5;a \r\nhello\r\n0\r\n\r\n",
            b"5;a=b\t\r\nhello\r\n0\r\n\r\n",
            b"x\r\n",
            b"0\r\nx : y\r\n\r\n",
            b"0\r\nx: y\n\r\n",
            b"0\r\nx: \x01\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(reference(bad), Outcome::Invalid, "{}", show(bad));
        }
    }

    /// The gateway's decoder agrees on plain bodies, whole and split.
    #[test]
    fn gateway_matches_on_plain_bodies() {
        for wire in [&b"0\r\n\r\n"[..], b"5\r\nhello\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\nrest"] {
            chunked(wire);
            assert!(matches!(gateway(wire, &mut |_| 1), Outcome::Complete { .. }), "{}", show(wire));
        }
    }
}
