//! Proxy header semantics: hop-by-hop removal, the real client IP behind trusted proxies,
//! `X-Forwarded-*` and `Forwarded` (RFC 7239), and request ids.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers, including those named in `Connection`. `TE: trailers` is kept
/// (gRPC needs it end to end). `Upgrade` is removed unless `keep_upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for n in named {
        if keep_upgrade && n == header::UPGRADE {
            continue;
        }
        headers.remove(n);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
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
    for v in headers.get_all(HeaderName::from_static("x-forwarded-for")) {
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

/// Facts about the downstream request used to build the forwarding headers.
pub(crate) struct Forwarding<'a> {
    pub(crate) peer: IpAddr,
    pub(crate) peer_trusted: bool,
    pub(crate) tls: bool,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
}

fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Set `X-Forwarded-For/-Proto/-Host/-Port` and append to `Forwarded`. From an untrusted peer,
/// incoming values are discarded so a client cannot forge its address.
pub(crate) fn set_forwarding_headers(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let xfport = HeaderName::from_static("x-forwarded-port");
    let proto = if f.tls { "https" } else { "http" };
    let peer = f.peer.to_string();
    if f.peer_trusted {
        let prior: Vec<String> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let joined = if prior.is_empty() {
            peer
        } else {
            format!("{}, {peer}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(xff.clone(), v);
        }
        if !headers.contains_key(&xfp) {
            headers.insert(xfp, HeaderValue::from_static(proto));
        }
        if !headers.contains_key(&xfh) {
            if let Ok(v) = HeaderValue::from_str(f.host) {
                headers.insert(xfh, v);
            }
        }
        if !headers.contains_key(&xfport) {
            headers.insert(xfport, HeaderValue::from(f.port));
        }
    } else {
        if let Ok(v) = HeaderValue::from_str(&peer) {
            headers.insert(xff, v);
        }
        headers.insert(xfp, HeaderValue::from_static(proto));
        match HeaderValue::from_str(f.host) {
            Ok(v) => {
                headers.insert(xfh, v);
            }
            Err(_) => {
                headers.remove(xfh);
            }
        }
        headers.insert(xfport, HeaderValue::from(f.port));
        headers.remove(header::FORWARDED);
    }
    let mut elem = format!("for={};proto={proto}", forwarded_node(f.peer));
    if !f.host.is_empty()
        && f.host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        elem.push_str(";host=\"");
        elem.push_str(f.host);
        elem.push('"');
    }
    let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if f.peer_trusted => format!("{prior}, {elem}"),
        _ => elem,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::FORWARDED, v);
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    for i in 0..16 {
        out[i] = HEX[((a >> (i * 4)) & 0xf) as usize];
        out[16 + i] = HEX[((b >> (i * 4)) & 0xf) as usize];
    }
    // Only hex digits: always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
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
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("192.0.2.1".parse().unwrap(), &h, &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let bad = hm(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &bad, &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    /// Untrusted peers cannot forge X-Forwarded-For or Forwarded.
    #[test]
    fn forwarding_headers_from_untrusted_peer_are_replaced() {
        let mut h = hm(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let f = Forwarding {
            peer: "192.0.2.7".parse().unwrap(),
            peer_trusted: false,
            tls: true,
            host: "api.example",
            port: 443,
        };
        set_forwarding_headers(&mut h, &f);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=192.0.2.7;proto=https;host=\"api.example\""
        );
    }

    /// Trusted peers' chains are extended.
    #[test]
    fn forwarding_headers_from_trusted_peer_are_appended() {
        let mut h = hm(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let f = Forwarding {
            peer: "::1".parse().unwrap(),
            peer_trusted: true,
            tls: false,
            host: "h",
            port: 80,
        };
        set_forwarding_headers(&mut h, &f);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, ::1");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=1.2.3.4, for=\"[::1]\";proto=http;host=\"h\""
        );
    }

    /// Request ids are kept when sane and generated otherwise.
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
