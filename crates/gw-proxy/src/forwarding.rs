//! Proxy header semantics: hop-by-hop removal, the real client IP behind trusted proxies,
//! `X-Forwarded-*` and `Forwarded` (RFC 7239), and request ids.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

// Built once: `HeaderName::from_static` validates its argument each time it runs outside a
// constant context.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Remove hop-by-hop headers (RFC 9110 §7.6.1: `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Transfer-Encoding`, `Upgrade`) and those
/// named in `Connection`. `Trailer` is end to end (RFC 9110 §6.6.2) and stays: an HTTP/1.1
/// client only gets the trailer fields it announces. `TE: trailers` is kept (gRPC needs it end
/// to end). `Upgrade` is kept when `keep_upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    scrub(headers, keep_upgrade, false, &[]);
}

/// [`strip_hop_by_hop`] for requests: also removes `Expect` (the gateway answers
/// `100-continue` itself) and the identity fields, which only the gateway may set: the
/// reserved ones ([`gw_core::identity::RESERVED`]: `X-Consumer-*`, `X-Credential-Identifier`,
/// `X-Anonymous-Consumer`, ...) and `identity`, the names the configuration's plugins set
/// (compiled once per configuration, see `Plugins::identity_headers`).
pub(crate) fn scrub_request(headers: &mut HeaderMap, keep_upgrade: bool, identity: &[HeaderName]) {
    scrub(headers, keep_upgrade, true, identity);
}

fn scrub(headers: &mut HeaderMap, keep_upgrade: bool, request: bool, identity: &[HeaderName]) {
    // One pass: a match on the name string per header (a length switch and a compare), then
    // removals only for what is present. The configured identity names are compared only
    // when there are any.
    let mut remove: Vec<HeaderName> = Vec::new();
    let (mut connection, mut te) = (false, false);
    for k in headers.keys() {
        match k.as_str() {
            "connection" => connection = true,
            "te" => te = true,
            "keep-alive" | "proxy-connection" | "proxy-authenticate" | "proxy-authorization" | "transfer-encoding" => {
                remove.push(k.clone());
            }
            "upgrade" if !keep_upgrade => remove.push(k.clone()),
            "expect" if request => remove.push(k.clone()),
            n if request && (gw_core::identity::is_reserved(n) || identity.contains(k)) => remove.push(k.clone()),
            _ => {}
        }
    }
    if connection {
        for v in headers.get_all(header::CONNECTION) {
            let Ok(v) = v.to_str() else { continue };
            for n in v.split(',') {
                let n = n.trim();
                // The usual options name no header to remove (`keep-alive` is removed anyway).
                if n.is_empty() || n.eq_ignore_ascii_case("close") || n.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                // `from_bytes` lowercases.
                if let Ok(n) = HeaderName::from_bytes(n.as_bytes())
                    && !(keep_upgrade && n == header::UPGRADE)
                    && n != header::CONNECTION
                {
                    remove.push(n);
                }
            }
        }
    }
    if te {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            remove.push(header::TE);
        }
    }
    if connection {
        headers.remove(header::CONNECTION);
    }
    for h in remove {
        headers.remove(h);
    }
}

fn trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The real client IP: the peer, unless the peer is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    if trusted_proxies.is_empty() || !trusted(peer, trusted_proxies) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match parse_forwarded_ip(part.trim()) {
                Some(ip) => hops.push(ip),
                None => return peer,
            }
        }
    }
    for ip in hops.into_iter().rev() {
        if !trusted(ip, trusted_proxies) {
            return ip;
        }
    }
    peer
}

/// An IP from an `X-Forwarded-For` element, tolerating `[v6]`, `v4:port` and `[v6]:port`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (ip, _port) = s.rsplit_once(':')?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Forwarding header values that depend only on the connection, computed once per connection,
/// and those that also depend on the request host, kept for the host last seen.
#[derive(Debug)]
pub(crate) struct ConnForwarding {
    /// The peer IP as a header value (`X-Forwarded-For` from an untrusted peer).
    pub(crate) peer: HeaderValue,
    /// `for=<peer>;proto=<scheme>`, the start of this hop's `Forwarded` element.
    pub(crate) forwarded_for: String,
    /// `http` or `https`.
    pub(crate) proto: HeaderValue,
    /// The local port.
    pub(crate) port: HeaderValue,
    /// The host-dependent values for the last host on this connection (requests on one
    /// connection nearly always name the same host).
    by_host: std::sync::Mutex<Option<(Box<str>, HostValues)>>,
}

/// `X-Forwarded-Host` and this hop's `Forwarded` element for one host.
#[derive(Debug)]
struct HostValues {
    x_forwarded_host: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
    /// The header block an untrusted peer's request gets, encoded for HTTP/1.1 (see
    /// [`ConnForwarding::untrusted_block`]).
    block: Bytes,
}

impl ConnForwarding {
    pub(crate) fn new(peer: IpAddr, tls: bool, port: u16) -> Self {
        let proto = if tls { "https" } else { "http" };
        ConnForwarding {
            peer: HeaderValue::from_str(&peer.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded_for: format!("for={};proto={proto}", forwarded_node(peer)),
            proto: HeaderValue::from_static(proto),
            port: HeaderValue::from(port),
            by_host: std::sync::Mutex::new(None),
        }
    }

    /// What [`set_forwarding_headers`] sets for a request from an untrusted peer, as HTTP/1.1
    /// header lines: the HTTP/1.1 upstream client writes it after the request's own fields,
    /// leaving out the client's own copies of these fields (see [`is_forwarding_field`]). Built
    /// once per connection and host, where inserting the fields into the request's map costs
    /// five hash-table inserts per request.
    pub(crate) fn untrusted_block(&self, host: &str) -> Bytes {
        self.with_host_values(host, |v| v.block.clone())
    }

    /// `f` applied to the values for `host`: the cached ones (only what `f` takes is cloned), or
    /// new ones, which become the cache.
    fn with_host_values<R>(&self, host: &str, f: impl FnOnce(&HostValues) -> R) -> R {
        if let Ok(cached) = self.by_host.lock()
            && let Some((h, v)) = cached.as_ref()
            && **h == *host
        {
            return f(v);
        }
        let mut elem = String::with_capacity(self.forwarded_for.len() + host.len() + 10);
        elem.push_str(&self.forwarded_for);
        if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            elem.push_str(";host=\"");
            elem.push_str(host);
            elem.push('"');
        }
        let x_forwarded_host = HeaderValue::from_str(host).ok();
        // The string's buffer becomes the value (checked, not copied).
        let forwarded = HeaderValue::from_maybe_shared(Bytes::from(elem)).ok();
        let mut block = Vec::with_capacity(160);
        let mut line = |name: &HeaderName, value: &HeaderValue| crate::wire::put_field(&mut block, name, value);
        line(&X_FORWARDED_FOR, &self.peer);
        line(&X_FORWARDED_PROTO, &self.proto);
        if let Some(v) = &x_forwarded_host {
            line(&X_FORWARDED_HOST, v);
        }
        line(&X_FORWARDED_PORT, &self.port);
        if let Some(v) = &forwarded {
            line(&header::FORWARDED, v);
        }
        let v = HostValues { x_forwarded_host, forwarded, block: Bytes::from(block) };
        let out = f(&v);
        if let Ok(mut cached) = self.by_host.lock() {
            *cached = Some((host.into(), v));
        }
        out
    }
}

fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Whether `name` is one of the fields [`set_forwarding_headers`] sets.
pub(crate) fn is_forwarding_field(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port"
    )
}

/// Set `X-Forwarded-For/-Proto/-Host/-Port` and append to `Forwarded`. From an untrusted peer,
/// incoming values are discarded so a client cannot forge its address.
pub(crate) fn set_forwarding_headers(headers: &mut HeaderMap, f: &ConnForwarding, peer_trusted: bool, host: &str) {
    let (xff, xfp, xfh, xfport) = (&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_FORWARDED_PORT);
    let (x_forwarded_host, forwarded) = f.with_host_values(host, |v| (v.x_forwarded_host.clone(), v.forwarded.clone()));
    if peer_trusted {
        let prior: Vec<&str> = headers.get_all(xff).iter().filter_map(|v| v.to_str().ok()).collect();
        if prior.is_empty() {
            headers.insert(xff, f.peer.clone());
        } else {
            let joined = format!("{}, {}", prior.join(", "), f.peer.to_str().unwrap_or(""));
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(xff, v);
            }
        }
        if !headers.contains_key(xfp) {
            headers.insert(xfp, f.proto.clone());
        }
        if !headers.contains_key(xfh)
            && let Some(v) = x_forwarded_host
        {
            headers.insert(xfh, v);
        }
        if !headers.contains_key(xfport) {
            headers.insert(xfport, f.port.clone());
        }
        let Some(elem) = forwarded else { return };
        let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", elem.to_str().unwrap_or(""))).ok(),
            None => Some(elem),
        };
        if let Some(v) = value {
            headers.insert(header::FORWARDED, v);
        }
    } else {
        headers.insert(xff, f.peer.clone());
        headers.insert(xfp, f.proto.clone());
        match x_forwarded_host {
            Some(v) => {
                headers.insert(xfh, v);
            }
            None => {
                headers.remove(xfh);
            }
        }
        headers.insert(xfport, f.port.clone());
        match forwarded {
            Some(v) => {
                headers.insert(header::FORWARDED, v);
            }
            None => {
                headers.remove(header::FORWARDED);
            }
        }
    }
}

/// Whether the peer is a trusted proxy.
pub(crate) fn is_trusted(peer: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    trusted(peer, trusted_proxies)
}

/// A request id: the client's, if it sent a sane one, else 32 random hex digits.
pub(crate) fn request_id(headers: &HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = headers.get(name) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_request_id() -> HeaderValue {
    let mut out = [0u8; 32];
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    for (i, half) in [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32].into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&hex8(half));
    }
    // Only hex digits: always a valid header value. An owned array: one allocation, shared by
    // the copies sent upstream and back (a copied slice would be copied again when first shared).
    HeaderValue::from_maybe_shared(Bytes::from_owner(out)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The eight nibbles of `x` as lowercase hex digits, most significant first, computed eight at
/// a time in one `u64` (a per-digit table lookup costs about ten times as many instructions).
fn hex8(x: u32) -> [u8; 8] {
    // Each nibble into a byte of its own: the most significant nibble in the lowest byte.
    let mut n = u64::from(x.swap_bytes());
    n = (n | (n << 16)) & 0x0000_ffff_0000_ffff;
    n = (n | (n << 8)) & 0x00ff_00ff_00ff_00ff;
    // Byte k holds the byte (hi nibble, lo nibble) of x's k-th byte: split them in order.
    let hi = (n >> 4) & 0x000f_000f_000f_000f;
    let lo = n & 0x000f_000f_000f_000f;
    let n = hi | (lo << 8);
    // Digits 0-9 become '0'-'9', 10-15 become 'a'-'f' (the bytes with 6 added carry into bit 4).
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (n + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Hop-by-hop headers and those named in Connection go; TE: trailers stays.
    #[test]
    fn strips_hop_by_hop() {
        let mut h = hm(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("upgrade").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "yes");
    }

    /// The client IP is the peer unless the peer is trusted; then the right-most untrusted hop.
    #[test]
    fn client_ip_honours_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = hm(&[("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.1.1.1")]);
        assert_eq!(client_ip("10.0.0.2".parse().unwrap(), &h, &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip("192.0.2.1".parse().unwrap(), &h, &trusted), "192.0.2.1".parse::<IpAddr>().unwrap());
        let bad = hm(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip("10.0.0.2".parse().unwrap(), &bad, &trusted), "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    /// Untrusted peers cannot forge X-Forwarded-For or Forwarded.
    #[test]
    fn forwarding_headers_from_untrusted_peer_are_replaced() {
        let mut h = hm(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let f = ConnForwarding::new("192.0.2.7".parse().unwrap(), true, 443);
        set_forwarding_headers(&mut h, &f, false, "api.example");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example");
        assert_eq!(h.get("forwarded").unwrap(), "for=192.0.2.7;proto=https;host=\"api.example\"");
    }

    /// Trusted peers' chains are extended.
    #[test]
    fn forwarding_headers_from_trusted_peer_are_appended() {
        let mut h = hm(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let f = ConnForwarding::new("::1".parse().unwrap(), false, 80);
        set_forwarding_headers(&mut h, &f, true, "h");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, ::1");
        assert_eq!(h.get("forwarded").unwrap(), "for=1.2.3.4, for=\"[::1]\";proto=http;host=\"h\"");
    }

    /// Every reserved identity field and every configured one is removed from requests, in any
    /// letter case and with repeated values; other fields stay; responses keep them.
    #[test]
    fn scrubs_identity_fields() {
        let configured = [HeaderName::from_static("x-user-id"), HeaderName::from_static("x-scopes")];
        let mut pairs: Vec<(String, &str)> = Vec::new();
        for n in gw_core::identity::RESERVED.iter().chain(["x-user-id", "x-scopes"].iter()) {
            pairs.push((n.to_ascii_uppercase(), "forged"));
            pairs.push((n.to_string(), "forged-again"));
        }
        pairs.push(("x-keep".into(), "yes"));
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_static(v));
        }
        let mut resp = h.clone();
        scrub_request(&mut h, false, &configured);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-keep").unwrap(), "yes");
        strip_hop_by_hop(&mut resp, false);
        assert_eq!(resp.get("x-consumer-groups").unwrap(), "forged", "responses are not scrubbed");
    }

    /// Request ids are kept when sane and generated otherwise.
    #[test]
    fn hex_digits() {
        for x in [0u32, 1, 0x0123_4567, 0x89ab_cdef, 0xdead_beef, u32::MAX, 0xa0b0_c0d0] {
            assert_eq!(std::str::from_utf8(&hex8(x)).unwrap(), format!("{x:08x}"));
        }
        for _ in 0..1000 {
            let x = fastrand::u32(..);
            assert_eq!(std::str::from_utf8(&hex8(x)).unwrap(), format!("{x:08x}"));
        }
    }

    #[test]
    fn request_ids() {
        let name = HeaderName::from_static("x-request-id");
        let h = hm(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h, &name), "abc-123");
        let id = request_id(&HeaderMap::new(), &name);
        assert_eq!(id.len(), 32);
        assert_ne!(id, request_id(&HeaderMap::new(), &name));
    }
}
