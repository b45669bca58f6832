//! Stored responses and the storage tiers: memory ([`MemoryTier`], per node) and Redis
//! ([`RedisTier`], shared by every node, optional).

mod memory;
mod redis;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cc::ResponseCc;
use crate::policy::{self, Age, Rules};
use crate::vary::Secondary;

pub use memory::{MemoryTier, Variants};
pub use redis::{RedisTier, RedisTierOptions, Unavailable};

/// A stored response: status, header fields (without hop-by-hop fields), the body in chunks,
/// the exchange's times, its variant (secondary key), URL and tags, and when storage drops it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Status.
    pub status: StatusCode,
    /// Header fields as stored.
    pub headers: HeaderMap,
    /// The body: one chunk (none when empty), joined at store time so that a hit is sent as
    /// one frame (see [`Stored::new`]).
    pub body: Vec<Bytes>,
    /// When the request that fetched it was sent, ms since the epoch.
    pub request_ms: u64,
    /// When its response arrived, ms since the epoch.
    pub response_ms: u64,
    /// The variant (RFC 9111 section 4.1).
    pub secondary: Secondary,
    /// The normalised URL (purge by URL and prefix).
    pub url: String,
    /// Surrogate keys (purge by tag).
    pub tags: Vec<String>,
    /// Storage expiry, ms since the epoch: freshness plus stale allowances.
    pub expires_ms: u64,
    /// Parsed `Cache-Control` (derived from `headers`).
    pub cc: ResponseCc,
    /// Freshness lifetime, ms (derived).
    pub lifetime_ms: u64,
    /// `corrected_initial_age`, ms (derived).
    pub initial_age_ms: u64,
}

/// What a stored response is made from.
#[derive(Debug, Clone)]
pub struct StoredParts {
    /// Status.
    pub status: StatusCode,
    /// Header fields (already filtered for storage).
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<Bytes>,
    /// Request time, ms.
    pub request_ms: u64,
    /// Response time, ms.
    pub response_ms: u64,
    /// Variant.
    pub secondary: Secondary,
    /// Normalised URL.
    pub url: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// The chunks of a body as one (none when it is empty): a stored response is read many times
/// and written once, and one frame is cheaper to send than many; the chunks as received may
/// also hold on to larger read buffers.
fn joined(mut chunks: Vec<Bytes>) -> Vec<Bytes> {
    chunks.retain(|c| !c.is_empty());
    if chunks.len() <= 1 {
        return chunks;
    }
    let mut all = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in &chunks {
        all.extend_from_slice(c);
    }
    vec![Bytes::from(all)]
}

impl Stored {
    /// Build a stored response, deriving freshness, age and storage expiry with `rules`; the
    /// body's chunks are joined into one.
    pub fn new(rules: &Rules, p: StoredParts) -> Stored {
        let cc = ResponseCc::parse(&p.headers);
        let lifetime_ms = policy::freshness_lifetime_ms(rules, p.status, &p.headers, &cc, p.response_ms);
        let initial_age_ms = policy::corrected_initial_age_ms(&p.headers, p.request_ms, p.response_ms);
        let ttl = policy::storage_ttl_ms(rules, &cc, lifetime_ms, policy::has_validator(&p.headers));
        let expires_ms = p.response_ms.saturating_add(ttl.saturating_sub(initial_age_ms));
        Stored {
            status: p.status,
            headers: p.headers,
            body: joined(p.body),
            request_ms: p.request_ms,
            response_ms: p.response_ms,
            secondary: p.secondary,
            url: p.url,
            tags: p.tags,
            expires_ms,
            cc,
            lifetime_ms,
            initial_age_ms,
        }
    }

    /// The parts it was made from (to rebuild it after a 304 updated the headers).
    pub fn parts(&self) -> StoredParts {
        StoredParts {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            request_ms: self.request_ms,
            response_ms: self.response_ms,
            secondary: self.secondary.clone(),
            url: self.url.clone(),
            tags: self.tags.clone(),
        }
    }

    /// Lifetime and current age at `now_ms`.
    pub fn age(&self, now_ms: u64) -> Age {
        Age {
            lifetime_ms: self.lifetime_ms,
            age_ms: policy::current_age_ms(self.initial_age_ms, self.response_ms, now_ms),
        }
    }

    /// Body length in bytes.
    pub fn body_len(&self) -> u64 {
        self.body.iter().map(|b| b.len() as u64).sum()
    }

    /// Approximate memory use in bytes (the memory tier's weight).
    pub fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 24).sum();
        self.body_len() + (headers + tags + self.url.len() + 256) as u64
    }

    /// Serialise (Redis tier). Format: magic, version, then length-prefixed fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(self.weight() as usize);
        w.extend_from_slice(b"GHC\x01");
        w.extend_from_slice(&self.status.as_u16().to_be_bytes());
        for t in [self.request_ms, self.response_ms] {
            w.extend_from_slice(&t.to_be_bytes());
        }
        put_bytes(&mut w, self.url.as_bytes());
        put_len(&mut w, self.tags.len());
        for t in &self.tags {
            put_bytes(&mut w, t.as_bytes());
        }
        put_len(&mut w, self.secondary.0.len());
        for (n, v) in &self.secondary.0 {
            put_bytes(&mut w, n.as_bytes());
            match v {
                Some(v) => {
                    w.push(1);
                    put_bytes(&mut w, v.as_bytes());
                }
                None => w.push(0),
            }
        }
        put_len(&mut w, self.headers.len());
        for (n, v) in &self.headers {
            put_bytes(&mut w, n.as_str().as_bytes());
            put_bytes(&mut w, v.as_bytes());
        }
        put_len(&mut w, self.body.len());
        for c in &self.body {
            put_bytes(&mut w, c);
        }
        w
    }

    /// Deserialise what [`Stored::encode`] wrote; `None` for anything malformed.
    pub fn decode(rules: &Rules, data: &[u8]) -> Option<Stored> {
        let mut r = Reader { d: data, i: 0 };
        if r.take(4)? != b"GHC\x01" {
            return None;
        }
        let status = StatusCode::from_u16(u16::from_be_bytes(r.take(2)?.try_into().ok()?)).ok()?;
        let request_ms = r.u64()?;
        let response_ms = r.u64()?;
        let url = r.string()?;
        let n = r.len()?;
        let mut tags = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            tags.push(r.string()?);
        }
        let n = r.len()?;
        let mut sec = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = r.string()?;
            let v = match r.take(1)?[0] {
                0 => None,
                _ => Some(r.string()?),
            };
            sec.push((name, v));
        }
        let n = r.len()?;
        let mut headers = HeaderMap::with_capacity(n.min(256));
        for _ in 0..n {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
            headers.append(name, value);
        }
        let n = r.len()?;
        let mut body = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            body.push(Bytes::copy_from_slice(r.bytes()?));
        }
        if r.i != data.len() {
            return None;
        }
        Some(Stored::new(
            rules,
            StoredParts { status, headers, body, request_ms, response_ms, secondary: Secondary(sec), url, tags },
        ))
    }
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    w.extend_from_slice(&(n as u32).to_be_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

struct Reader<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.d.get(self.i..end)?;
        self.i = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn len(&mut self) -> Option<usize> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::tests::hm;

    pub(crate) fn sample(url: &str, body: &str, cc: &str, now_ms: u64) -> Stored {
        Stored::new(
            &Rules::default(),
            StoredParts {
                status: StatusCode::OK,
                headers: hm(&[
                    ("cache-control", cc),
                    ("content-type", "text/plain"),
                    ("x-multi", "a"),
                    ("x-multi", "b"),
                ]),
                body: vec![Bytes::from(body.to_string())],
                request_ms: now_ms,
                response_ms: now_ms,
                secondary: Secondary(vec![("accept".into(), Some("text/html".into())), ("x-a".into(), None)]),
                url: url.into(),
                tags: vec!["t1".into(), "t2".into()],
            },
        )
    }

    /// A body received in several chunks is stored as one (a hit is one frame); an empty one
    /// as none.
    #[test]
    fn body_chunks_are_joined() {
        let mut parts = sample("http://h/a", "", "max-age=60", 1_700_000_000_000).parts();
        parts.body =
            vec![Bytes::from_static(b"abc"), Bytes::new(), Bytes::from_static(b"de"), Bytes::from_static(b"f")];
        let s = Stored::new(&Rules::default(), parts.clone());
        assert_eq!(s.body, vec![Bytes::from_static(b"abcdef")]);
        assert_eq!(s.body_len(), 6);
        parts.body = vec![Bytes::new(), Bytes::new()];
        assert!(Stored::new(&Rules::default(), parts.clone()).body.is_empty());
        let one = Bytes::from(vec![7u8; 100]);
        parts.body = vec![one.clone()];
        let s = Stored::new(&Rules::default(), parts);
        assert_eq!(s.body.len(), 1);
        assert_eq!(s.body[0].as_ptr(), one.as_ptr(), "a single chunk is kept, not copied");
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_garbage() {
        let s = sample("http://h/a", "hello", "max-age=60", 1_700_000_000_000);
        let e = s.encode();
        let d = Stored::decode(&Rules::default(), &e).unwrap_or_else(|| panic!("decodes"));
        assert_eq!(
            (d.status, &d.headers, &d.body, &d.url, &d.tags, &d.secondary),
            (s.status, &s.headers, &s.body, &s.url, &s.tags, &s.secondary)
        );
        assert_eq!((d.lifetime_ms, d.expires_ms), (60_000, s.expires_ms));
        for cut in 0..e.len() {
            assert!(Stored::decode(&Rules::default(), &e[..cut]).is_none(), "truncated at {cut}");
        }
        let mut extra = e.clone();
        extra.push(0);
        assert!(Stored::decode(&Rules::default(), &extra).is_none());
        assert!(Stored::decode(&Rules::default(), b"GHC\x02").is_none());
    }

    #[test]
    fn expiry_covers_lifetime_and_stale_allowances() {
        let t = 1_700_000_000_000;
        assert_eq!(sample("u", "b", "max-age=60", t).expires_ms, t + 120_000);
        assert_eq!(sample("u", "b", "max-age=60, must-revalidate", t).expires_ms, t + 60_000);
        assert_eq!(sample("u", "b", "max-age=60, stale-if-error=100", t).expires_ms, t + 160_000);
    }
}
