//! Invalidation after unsafe methods (RFC 9111 section 4.4).
//!
//! When a request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`)
//! succeeds (2xx or 3xx), the stored responses for its target URI are invalidated, and those
//! for the URIs in its response's `Location` and `Content-Location` when they have the same
//! origin (scheme, host and port); relative references are resolved against the target.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::key::{QueryMode, normalise_host, normalised_url, split_target};

/// Whether a method is unsafe (RFC 9110 section 9.2.1).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The normalised URLs to invalidate after a request, per RFC 9111 section 4.4 (empty when
/// nothing is to be invalidated).
pub fn targets(
    method: &Method,
    status: StatusCode,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    resp: &HeaderMap,
    mode: &QueryMode,
) -> Vec<String> {
    if !is_unsafe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![normalised_url(scheme, host, path_and_query, mode)];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(v) = resp.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        if let Some(pq) = same_origin_target(scheme, host, path_and_query, v.trim()) {
            let u = normalised_url(scheme, host, &pq, mode);
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// The origin-form target of `reference` when it has the request's origin.
fn same_origin_target(scheme: &str, host: &str, base_pq: &str, reference: &str) -> Option<String> {
    if reference.is_empty() || reference.starts_with("//") {
        // Network-path references name another authority; compare it.
        let u: Uri = format!("{scheme}:{reference}").parse().ok()?;
        return same_authority(scheme, host, &u);
    }
    if reference.starts_with('/') {
        return Some(reference.split('#').next().unwrap_or(reference).to_string());
    }
    if let Ok(u) = reference.parse::<Uri>()
        && u.scheme().is_some()
    {
        if !u.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case(scheme)) {
            return None;
        }
        return same_authority(scheme, host, &u);
    }
    // A relative path: resolve against the directory of the target.
    let (base_path, _) = split_target(base_pq);
    let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{dir}{}", reference.split('#').next().unwrap_or(reference)))
}

fn same_authority(scheme: &str, host: &str, u: &Uri) -> Option<String> {
    let auth = u.authority()?.as_str();
    if normalise_host(scheme, auth) != normalise_host(scheme, host) {
        return None;
    }
    Some(u.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::hm;

    fn t(method: &Method, status: u16, resp: &[(&str, &str)]) -> Vec<String> {
        targets(
            method,
            StatusCode::from_u16(status).unwrap_or_else(|e| panic!("{e}")),
            "https",
            "api.example.com",
            "/items/1?b=1&a=2",
            &hm(resp),
            &QueryMode::Sorted,
        )
    }

    #[test]
    fn unsafe_success_invalidates_target() {
        assert_eq!(t(&Method::POST, 200, &[]), vec!["https://api.example.com/items/1?a=2&b=1"]);
        assert_eq!(t(&Method::DELETE, 204, &[]).len(), 1);
        assert_eq!(t(&Method::PUT, 303, &[]).len(), 1);
        assert!(t(&Method::POST, 500, &[]).is_empty(), "errors invalidate nothing");
        assert!(t(&Method::POST, 404, &[]).is_empty());
        assert!(t(&Method::GET, 200, &[]).is_empty());
        assert!(t(&Method::OPTIONS, 200, &[]).is_empty());
        assert_eq!(t(&Method::from_bytes(b"PURGEX").unwrap_or(Method::PATCH), 200, &[]).len(), 1);
    }

    #[test]
    fn location_and_content_location_same_origin_only() {
        let v = t(
            &Method::POST,
            201,
            &[("location", "/items/2"), ("content-location", "https://API.example.com:443/items/3")],
        );
        assert_eq!(
            v,
            vec![
                "https://api.example.com/items/1?a=2&b=1",
                "https://api.example.com/items/2",
                "https://api.example.com/items/3"
            ]
        );
        assert_eq!(t(&Method::POST, 201, &[("location", "https://other.example.com/x")]).len(), 1);
        assert_eq!(t(&Method::POST, 201, &[("location", "http://api.example.com/x")]).len(), 1, "other scheme");
        assert_eq!(t(&Method::POST, 201, &[("location", "//other.example.com/x")]).len(), 1);
        assert_eq!(t(&Method::POST, 201, &[("location", "5")])[1], "https://api.example.com/items/5");
    }
}
