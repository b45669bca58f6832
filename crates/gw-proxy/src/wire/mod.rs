//! The HTTP wire format as pure functions, no IO: what the HTTP/1.1 client and server parse and
//! encode, and the field rules that hold for both HTTP versions. Everything here works on
//! buffers and header maps, so it is unit-tested and fuzzed on its own (`fuzz/`, through
//! `crate::fuzzing`).
//!
//! | module | what |
//! | --- | --- |
//! | [`request`] | client request heads: the strict parser and its refusals |
//! | [`response`] | upstream response heads: the strict parser, [`response::RawFields`] |
//! | [`framing`] | body framing, the chunked decoder, numbers on the wire |
//! | (this file) | trailer rules, `Host` validation, field encoding, [`HeadFacts`] |

pub(crate) mod framing;
pub(crate) mod request;
pub(crate) mod response;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that never leave the gateway as trailers, in either direction (request trailers to
/// an upstream, response trailers to a client), on HTTP/1.1 and HTTP/2. A trailer arrives after
/// the head was acted on, so a field that frames the message, routes it, authenticates it,
/// controls the connection or its processing, or carries what the gateway vouches for (client
/// identity, forwarding, the request id) would be read by the receiver without the gateway's
/// checks: RFC 9110 §6.5.1, and the gateway's own fields. Names are lowercase.
pub const FORBIDDEN_TRAILER_FIELDS: &[&str] = &[
    // Framing and connection control.
    "content-length",
    "transfer-encoding",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "upgrade",
    // Routing and request modifiers.
    "host",
    "expect",
    "max-forwards",
    "cache-control",
    "pragma",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    // Authentication.
    "authorization",
    "cookie",
    "set-cookie",
    "www-authenticate",
    "authentication-info",
    // Response control data and content processing.
    "age",
    "date",
    "expires",
    "location",
    "retry-after",
    "vary",
    "warning",
    "content-encoding",
    "content-type",
    "content-range",
    // What the gateway sets or vouches for.
    "forwarded",
    "x-real-ip",
    "x-credential-identifier",
    "x-anonymous-consumer",
];

/// Name prefixes of fields that never leave as trailers: `Proxy-*` (hop-by-hop and proxy
/// authentication), `X-Consumer-*` (the authenticated consumer), `X-Forwarded-*`.
pub const FORBIDDEN_TRAILER_PREFIXES: &[&str] = &["proxy-", "x-consumer-", "x-forwarded-"];

/// Whether a field must not be forwarded as a trailer. `request_id` is the gateway's request-id
/// field (`gateway.request_id_header`); `identity` the identity fields the configuration's
/// plugins set beyond the reserved ones (`gw_core::identity`), which are forbidden too.
pub fn is_forbidden_trailer(name: &HeaderName, request_id: &HeaderName, identity: &[HeaderName]) -> bool {
    let n = name.as_str();
    name == request_id
        || FORBIDDEN_TRAILER_FIELDS.contains(&n)
        || FORBIDDEN_TRAILER_PREFIXES.iter().any(|p| n.starts_with(p))
        || gw_core::identity::is_reserved(n)
        || identity.contains(name)
}

/// Remove from a trailer section every field that must not be forwarded as a trailer, and the
/// fields a `Connection` trailer names.
pub fn strip_trailers(trailers: &mut HeaderMap, request_id: &HeaderName, identity: &[HeaderName]) {
    let mut drop: Vec<HeaderName> = Vec::new();
    for v in trailers.get_all(header::CONNECTION) {
        for n in v.as_bytes().split(|&b| b == b',') {
            if let Ok(n) = HeaderName::from_bytes(n.trim_ascii()) {
                drop.push(n);
            }
        }
    }
    drop.extend(trailers.keys().filter(|k| is_forbidden_trailer(k, request_id, identity)).cloned());
    for n in drop {
        trailers.remove(n);
    }
}

/// Whether `v` is a valid `Host` field value (RFC 9110 §7.2, RFC 3986 §3.2.2): `uri-host
/// [ ":" port ]`, where the host is an IP literal in brackets or a reg-name / IPv4 address
/// (unreserved characters, sub-delims, percent-encoded octets), and the port is digits. An
/// empty value is valid (a target without authority). No user information, no whitespace, no
/// path.
pub fn is_valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|&b| b == b']') else { return false };
        let literal = &v[1..close];
        let ip = !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let future = literal.first().is_some_and(|&b| b == b'v' || b == b'V')
            && literal.iter().all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
        let ok = ip || future;
        if !ok {
            return false;
        }
        match &v[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &[][..]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if HOST_BYTE[b as usize] => i += 1,
            _ => return false,
        }
    }
    true
}

/// Bytes a host name may hold as they are: unreserved characters and sub-delims (one table
/// lookup per byte).
const HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_unreserved(b as u8) || is_sub_delim(b as u8);
        b += 1;
    }
    t
};

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const fn is_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Every listed field (and prefixed ones) is removed, whatever its case on the wire; the
    /// request-id field and fields named by `Connection` too; others stay.
    #[test]
    fn trailer_filter() {
        let rid = HeaderName::from_static("x-trace-id");
        let mut t = HeaderMap::new();
        for n in FORBIDDEN_TRAILER_FIELDS {
            t.append(HeaderName::from_bytes(n.to_uppercase().as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        for p in FORBIDDEN_TRAILER_PREFIXES {
            t.append(HeaderName::from_bytes(format!("{p}x").as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        t.append("content-length", HeaderValue::from_static("2"));
        t.append("x-trace-id", HeaderValue::from_static("forged"));
        t.append("connection", HeaderValue::from_static("x-named, close"));
        t.append("x-named", HeaderValue::from_static("1"));
        t.append("grpc-status", HeaderValue::from_static("0"));
        t.append("x-sum", HeaderValue::from_static("7"));
        t.append("x-request-id", HeaderValue::from_static("not the configured one"));
        t.append("x-authenticated-scope", HeaderValue::from_static("admin"));
        t.append("x-user-claim", HeaderValue::from_static("forged"));
        strip_trailers(&mut t, &rid, &[HeaderName::from_static("x-user-claim")]);
        let mut left: Vec<_> = t.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["grpc-status", "x-request-id", "x-sum"]);
        for n in ["host", "authorization", "proxy-authorization", "x-consumer-groups", "x-forwarded-for"] {
            assert!(is_forbidden_trailer(&HeaderName::from_static(n), &rid, &[]), "{n}");
        }
        for n in gw_core::identity::RESERVED {
            assert!(is_forbidden_trailer(&HeaderName::from_static(n), &rid, &[]), "{n}");
        }
        assert!(!is_forbidden_trailer(&HeaderName::from_static("server-timing"), &rid, &[]));
    }

    #[test]
    fn host_values() {
        for ok in [
            "",
            "a",
            "a.example",
            "a.example:8080",
            "a.example:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[v1.x:y]",
            "xn--bcher-kva.example",
            "a_b.example",
            "%41.example",
            "a!$&'()*+,;=b",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok:?} refused");
        }
        for bad in [
            "a b",
            "a/b",
            "a@b",
            "user@a.example",
            "a.example:80x",
            "a:b:c",
            "[::1",
            "[::1]x",
            "[]",
            "[g::1]",
            "a\"b",
            "a<b",
            "a\\b",
            "%4",
            "%zz",
            "a\tb",
            "a{b}",
            "a|b",
            "é",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} accepted");
        }
    }
}

/// One `name: value` line of an HTTP/1.1 head.
pub(crate) fn put_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Facts about a request head's framing fields. The HTTP/1.1 server collects them while it
/// parses (so the pipeline does not look them up again); for HTTP/2 requests the pipeline looks
/// them up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadFacts {
    /// `Host` fields.
    pub(crate) hosts: usize,
    /// `Content-Length` fields.
    pub(crate) content_lengths: usize,
    /// The (agreed) `Content-Length` value.
    pub(crate) content_length: Option<u64>,
    pub(crate) transfer_encoding: bool,
    /// An HTTP/1.1 upgrade request (`Upgrade` and `Connection: upgrade`).
    pub(crate) upgrade: bool,
}
