//! RFC 9111 shared-cache rules as pure functions: whether a response may be stored (section 3),
//! its freshness lifetime (4.2.1, 4.2.2), its current age (4.2.3), and whether a stored
//! response may answer a request as it is, stale, or only after validation (4.2, 4.2.4, 5.2.1,
//! RFC 5861).
//!
//! Times are milliseconds since the Unix epoch (`gw_core::Clock`); HTTP dates have whole
//! seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use crate::cc::{Delta, RequestCc, ResponseCc};
use crate::vary;

/// Heuristic freshness (RFC 9111 section 4.2.2): a fraction of the time since `Last-Modified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    /// Percentage of the `Last-Modified` age (1-100; 10 is the RFC's example).
    pub percent: u8,
    /// Upper bound of a heuristic lifetime.
    pub max: Duration,
}

/// The configurable part of the semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Methods whose responses are stored (`GET`; `HEAD` is answered from a stored `GET`).
    pub methods: Vec<Method>,
    /// Status codes that may be stored.
    pub statuses: Vec<u16>,
    /// Heuristic freshness; `None` (the default) means responses without explicit freshness
    /// are stored only to be revalidated.
    pub heuristic: Option<Heuristic>,
    /// `stale-while-revalidate` applied when a response has none, seconds (0 = none).
    pub default_stale_while_revalidate: u64,
    /// `stale-if-error` applied when a response has none, seconds (0 = none).
    pub default_stale_if_error: u64,
    /// Whether responses with `Set-Cookie` are stored (default `false`: a shared cache would
    /// hand one client's cookie to others).
    pub store_set_cookie: bool,
}

/// Statuses that are heuristically cacheable (RFC 9110 section 15.1).
pub const HEURISTIC_STATUSES: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The default stored statuses: the heuristically cacheable ones (without 206: ranges are not
/// stored), and 302/307 (stored only with explicit freshness).
pub const DEFAULT_STATUSES: [u16; 13] = [200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501];

impl Default for Rules {
    fn default() -> Self {
        Rules {
            methods: vec![Method::GET, Method::HEAD],
            statuses: DEFAULT_STATUSES.to_vec(),
            heuristic: None,
            default_stale_while_revalidate: 0,
            default_stale_if_error: 0,
            store_set_cookie: false,
        }
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not cacheable here.
    Method,
    /// The status is not in the stored set (or is 1xx, 206, 304).
    Status,
    /// `no-store` in the response or the request.
    NoStore,
    /// Unqualified `private` (shared cache).
    Private,
    /// The request had `Authorization` and the response does not allow sharing it.
    Authorization,
    /// `Vary: *` can never be matched.
    VaryStar,
    /// `Set-Cookie` and storing such responses is off.
    SetCookie,
    /// Neither explicit nor heuristic freshness, no validator, no stale allowance: useless.
    Useless,
}

/// An HTTP date as milliseconds since the epoch (`None` when absent or invalid).
pub fn http_date_ms(headers: &HeaderMap, name: http::header::HeaderName) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?;
    parse_http_date_ms(v)
}

/// Parse an HTTP date (IMF-fixdate, RFC 850, asctime).
pub fn parse_http_date_ms(v: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(v.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Format milliseconds since the epoch as an IMF-fixdate.
pub fn fmt_http_date(ms: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Whether the response has explicit freshness (`s-maxage`, `max-age` or `Expires`).
pub fn has_explicit_freshness(cc: &ResponseCc, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// Whether a validator is present (`ETag` or `Last-Modified`).
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// RFC 9111 section 3 (and 3.5 for `Authorization`): may this response be stored by a shared
/// cache?
pub fn storable(
    rules: &Rules,
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(), NotStorable> {
    if method != Method::GET || !rules.methods.contains(method) {
        return Err(NotStorable::Method);
    }
    let code = status.as_u16();
    if status.is_informational() || code == 206 || code == 304 || !rules.statuses.contains(&code) {
        return Err(NotStorable::Status);
    }
    let cc = ResponseCc::parse(headers);
    // `must-understand` lets a cache that understands the status (every stored status is
    // understood here) ignore `no-store` (RFC 9111 section 5.2.2.3).
    if (cc.no_store && !cc.must_understand) || RequestCc::parse(req_headers).no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    if req_headers.contains_key(AUTHORIZATION) && !shareable_with_authorization(&cc) {
        return Err(NotStorable::Authorization);
    }
    if vary::is_star(headers) {
        return Err(NotStorable::VaryStar);
    }
    if !rules.store_set_cookie
        && headers.contains_key(SET_COOKIE)
        && !cc.private_fields.iter().any(|f| f == "set-cookie")
    {
        return Err(NotStorable::SetCookie);
    }
    let explicit = has_explicit_freshness(&cc, headers);
    let heuristic_ok = HEURISTIC_STATUSES.contains(&code) || cc.public;
    if !explicit && !heuristic_ok {
        return Err(NotStorable::Status);
    }
    let stale_allowance = cc.stale_if_error.is_some()
        || cc.stale_while_revalidate.is_some()
        || rules.default_stale_if_error > 0
        || rules.default_stale_while_revalidate > 0;
    if !explicit && rules.heuristic.is_none() && !has_validator(headers) && !stale_allowance {
        return Err(NotStorable::Useless);
    }
    Ok(())
}

/// A response to a request with `Authorization` may be shared only with `public`,
/// `must-revalidate` or `s-maxage` (RFC 9111 section 3.5).
pub fn shareable_with_authorization(cc: &ResponseCc) -> bool {
    cc.public || cc.must_revalidate || cc.s_maxage.is_some()
}

/// Freshness lifetime in milliseconds (RFC 9111 section 4.2.1): `s-maxage`, else `max-age`,
/// else `Expires` minus `Date` (an invalid `Expires` means already expired), else the
/// heuristic when configured and allowed, else 0. `response_ms` stands in for a missing `Date`.
pub fn freshness_lifetime_ms(
    rules: &Rules,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseCc,
    response_ms: u64,
) -> u64 {
    if let Some(d) = cc.s_maxage {
        return delta_ms(d);
    }
    if let Some(d) = cc.max_age {
        return delta_ms(d);
    }
    let date = http_date_ms(headers, DATE).unwrap_or(response_ms);
    if headers.contains_key(EXPIRES) {
        return match http_date_ms(headers, EXPIRES) {
            Some(e) => e.saturating_sub(date),
            None => 0,
        };
    }
    if let Some(h) = rules.heuristic
        && (HEURISTIC_STATUSES.contains(&status.as_u16()) || cc.public)
        && let Some(lm) = http_date_ms(headers, LAST_MODIFIED)
    {
        let since = date.saturating_sub(lm);
        let life = since / 100 * u64::from(h.percent.min(100));
        return life.min(h.max.as_millis() as u64);
    }
    0
}

fn delta_ms(d: Delta) -> u64 {
    match d {
        Delta::Secs(s) => s * 1000,
        Delta::Invalid => 0,
    }
}

/// The `Age` field value in seconds: the first value when it is a valid delta-seconds, else 0.
pub fn age_value(headers: &HeaderMap) -> u64 {
    headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| crate::cc::parse_delta(s.split(',').next().unwrap_or("").trim()))
        .unwrap_or(0)
}

/// `corrected_initial_age` (RFC 9111 section 4.2.3), milliseconds.
pub fn corrected_initial_age_ms(headers: &HeaderMap, request_ms: u64, response_ms: u64) -> u64 {
    let date = http_date_ms(headers, DATE).unwrap_or(response_ms);
    let apparent = response_ms.saturating_sub(date);
    let delay = response_ms.saturating_sub(request_ms);
    let corrected_age_value = age_value(headers).saturating_mul(1000).saturating_add(delay);
    apparent.max(corrected_age_value)
}

/// `current_age` (RFC 9111 section 4.2.3), milliseconds.
pub fn current_age_ms(corrected_initial_age_ms: u64, response_ms: u64, now_ms: u64) -> u64 {
    corrected_initial_age_ms.saturating_add(now_ms.saturating_sub(response_ms))
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh: serve it.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it: serve it.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first; `stale_if_error` says whether it may be served
    /// if that fails (RFC 5861).
    Revalidate {
        /// Serving the stale copy on an upstream error is allowed.
        stale_if_error: bool,
    },
}

/// What a stored response carries for the reuse decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    /// Freshness lifetime, ms.
    pub lifetime_ms: u64,
    /// Current age, ms.
    pub age_ms: u64,
}

impl Age {
    /// Whether the response is fresh.
    pub fn is_fresh(&self) -> bool {
        self.lifetime_ms > self.age_ms
    }

    /// How long past its lifetime, ms (0 when fresh).
    pub fn staleness_ms(&self) -> u64 {
        self.age_ms.saturating_sub(self.lifetime_ms)
    }

    /// Remaining freshness in seconds, negative when stale (`ttl` of RFC 9211): the lifetime
    /// minus the `Age` value sent with it (both whole seconds).
    pub fn ttl_secs(&self) -> i64 {
        (self.lifetime_ms / 1000) as i64 - (self.age_ms / 1000) as i64
    }
}

/// Whether a stale response may be served because the upstream failed (RFC 5861 section 4):
/// within the response's `stale-if-error` (or the default), or the request's, and never when
/// the response forbids stale copies.
pub fn stale_if_error_allows(rules: &Rules, resp: &ResponseCc, req: &RequestCc, age: Age) -> bool {
    if resp.forbids_stale() {
        return false;
    }
    let s = age.staleness_ms();
    let resp_sie = resp.stale_if_error.unwrap_or(rules.default_stale_if_error);
    s <= resp_sie * 1000 && resp_sie > 0 || req.stale_if_error.is_some_and(|r| s <= r * 1000)
}

/// RFC 9111 sections 4.2, 4.2.4 and 5.2.1 with RFC 5861: may this stored response answer the
/// request without contacting the origin?
pub fn reuse(rules: &Rules, req: &RequestCc, resp: &ResponseCc, age: Age) -> Reuse {
    let sie = stale_if_error_allows(rules, resp, req, age);
    let revalidate = Reuse::Revalidate { stale_if_error: sie };
    if req.no_cache || resp.no_cache {
        return revalidate;
    }
    if let Some(ma) = req.max_age
        && age.age_ms > ma * 1000
    {
        return revalidate;
    }
    if age.is_fresh() {
        if let Some(mf) = req.min_fresh
            && age.lifetime_ms - age.age_ms < mf * 1000
        {
            return revalidate;
        }
        return Reuse::Fresh;
    }
    if resp.forbids_stale() {
        return Reuse::Revalidate { stale_if_error: false };
    }
    let staleness = age.staleness_ms();
    match req.max_stale {
        Some(None) => return Reuse::StaleAccepted,
        Some(Some(n)) if staleness <= n * 1000 => return Reuse::StaleAccepted,
        _ => {}
    }
    let swr = resp.stale_while_revalidate.unwrap_or(rules.default_stale_while_revalidate);
    if swr > 0 && staleness <= swr * 1000 && req.min_fresh.is_none() {
        return Reuse::StaleWhileRevalidate;
    }
    revalidate
}

/// How long a stored response is kept (storage TTL): its lifetime plus the longest of its
/// stale allowances and a grace period: one hour when it has a validator (the 304 path pays
/// off), one minute otherwise (for `max-stale` requests and `EXPIRED` reporting), none when it
/// may never be served stale and cannot be validated.
pub fn storage_ttl_ms(rules: &Rules, cc: &ResponseCc, lifetime_ms: u64, has_validator: bool) -> u64 {
    let allowance = if cc.forbids_stale() {
        0
    } else {
        cc.stale_while_revalidate
            .unwrap_or(rules.default_stale_while_revalidate)
            .max(cc.stale_if_error.unwrap_or(rules.default_stale_if_error))
            * 1000
    };
    let grace = if has_validator {
        3_600_000
    } else if cc.forbids_stale() {
        0
    } else {
        60_000
    };
    lifetime_ms.saturating_add(allowance.max(grace))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CACHE_CONTROL, ETAG, VARY};

    pub(crate) fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        m
    }

    const T0: u64 = 1_700_000_000_000;

    fn date(ms: u64) -> String {
        fmt_http_date(ms)
    }

    fn store(status: u16, req: &[(&str, &str)], resp: &[(&str, &str)]) -> Result<(), NotStorable> {
        storable(
            &Rules::default(),
            &Method::GET,
            &hm(req),
            StatusCode::from_u16(status).unwrap_or_else(|e| panic!("{e}")),
            &hm(resp),
        )
    }

    #[test]
    fn storability_rules() {
        assert_eq!(store(200, &[], &[("cache-control", "max-age=60")]), Ok(()));
        assert_eq!(store(200, &[], &[("cache-control", "no-store, max-age=60")]), Err(NotStorable::NoStore));
        assert_eq!(
            store(200, &[("cache-control", "no-store")], &[("cache-control", "max-age=60")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(store(200, &[], &[("cache-control", "must-understand, no-store, max-age=60")]), Ok(()));
        assert_eq!(
            store(299, &[], &[("cache-control", "must-understand, no-store, max-age=60")]),
            Err(NotStorable::Status)
        );
        assert_eq!(store(200, &[], &[("cache-control", "private, max-age=60")]), Err(NotStorable::Private));
        assert_eq!(store(200, &[], &[("cache-control", "private=\"x-user\", max-age=60")]), Ok(()));
        assert_eq!(store(200, &[], &[("cache-control", "max-age=60"), ("vary", "*")]), Err(NotStorable::VaryStar));
        assert_eq!(
            store(200, &[], &[("cache-control", "max-age=60"), ("vary", "accept, *")]),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(store(206, &[], &[("cache-control", "max-age=60")]), Err(NotStorable::Status));
        assert_eq!(store(500, &[], &[("cache-control", "max-age=60")]), Err(NotStorable::Status));
        // 302 with explicit freshness yes, without no (not heuristically cacheable).
        assert_eq!(store(302, &[], &[("cache-control", "max-age=60")]), Ok(()));
        assert_eq!(store(302, &[], &[("etag", "\"a\"")]), Err(NotStorable::Status));
        // Heuristically cacheable with a validator: stored to be revalidated.
        assert_eq!(store(200, &[], &[("etag", "\"a\"")]), Ok(()));
        assert_eq!(store(404, &[], &[("last-modified", &date(T0))]), Ok(()));
        assert_eq!(store(501, &[], &[("etag", "\"a\"")]), Ok(()), "501 is heuristically cacheable");
        assert_eq!(store(200, &[], &[]), Err(NotStorable::Useless));
        assert_eq!(
            store(200, &[], &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
            Err(NotStorable::SetCookie)
        );
        let r = storable(
            &Rules::default(),
            &Method::POST,
            &hm(&[]),
            StatusCode::OK,
            &hm(&[("cache-control", "max-age=60")]),
        );
        assert_eq!(r, Err(NotStorable::Method));
        let r = storable(
            &Rules::default(),
            &Method::HEAD,
            &hm(&[]),
            StatusCode::OK,
            &hm(&[("cache-control", "max-age=60")]),
        );
        assert_eq!(r, Err(NotStorable::Method), "a HEAD response has no body to store");
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(store(200, &auth, &[("cache-control", "max-age=60")]), Err(NotStorable::Authorization));
        for ok in ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"] {
            assert_eq!(store(200, &auth, &[("cache-control", ok)]), Ok(()), "{ok}");
        }
    }

    #[test]
    fn lifetime_precedence() {
        let r = Rules::default();
        let life = |h: &[(&str, &str)]| {
            let h = hm(h);
            freshness_lifetime_ms(&r, StatusCode::OK, &h, &ResponseCc::parse(&h), T0)
        };
        assert_eq!(life(&[("cache-control", "max-age=10, s-maxage=20")]), 20_000);
        assert_eq!(life(&[("cache-control", "max-age=10"), ("expires", &date(T0 + 100_000))]), 10_000);
        assert_eq!(life(&[("date", &date(T0)), ("expires", &date(T0 + 30_000))]), 30_000);
        // Expires without Date: the response time stands in.
        assert_eq!(life(&[("expires", &date(T0 + 5_000))]), 5_000);
        // Invalid Expires, e.g. 0: already expired.
        assert_eq!(life(&[("date", &date(T0)), ("expires", "0")]), 0);
        assert_eq!(life(&[("date", &date(T0)), ("expires", &date(T0 - 10_000))]), 0);
        // Invalid max-age: stale, and it wins over Expires.
        assert_eq!(life(&[("cache-control", "max-age=abc"), ("expires", &date(T0 + 100_000))]), 0);
        // No heuristic by default.
        assert_eq!(life(&[("date", &date(T0)), ("last-modified", &date(T0 - 1_000_000))]), 0);
    }

    #[test]
    fn heuristic_percent_and_cap() {
        let mut r =
            Rules { heuristic: Some(Heuristic { percent: 10, max: Duration::from_secs(50) }), ..Rules::default() };
        let h = hm(&[("date", &date(T0)), ("last-modified", &date(T0 - 300_000))]);
        let cc = ResponseCc::parse(&h);
        assert_eq!(freshness_lifetime_ms(&r, StatusCode::OK, &h, &cc, T0), 30_000);
        let h2 = hm(&[("date", &date(T0)), ("last-modified", &date(T0 - 3_000_000))]);
        assert_eq!(freshness_lifetime_ms(&r, StatusCode::OK, &h2, &cc, T0), 50_000, "capped");
        // Not for statuses that are not heuristically cacheable.
        assert_eq!(freshness_lifetime_ms(&r, StatusCode::FOUND, &h, &cc, T0), 0);
        r.heuristic = None;
        assert_eq!(freshness_lifetime_ms(&r, StatusCode::OK, &h, &cc, T0), 0);
    }

    #[test]
    fn age_calculation_rfc9111_4_2_3() {
        // Date 10 s before the response arrived, Age 30, 2 s in flight.
        let h = hm(&[("date", &date(T0 - 10_000)), ("age", "30")]);
        let init = corrected_initial_age_ms(&h, T0 - 2_000, T0);
        assert_eq!(init, 32_000);
        assert_eq!(current_age_ms(init, T0, T0 + 5_000), 37_000);
        // Apparent age wins when larger.
        let h = hm(&[("date", &date(T0 - 100_000)), ("age", "3")]);
        assert_eq!(corrected_initial_age_ms(&h, T0, T0), 100_000);
        // Invalid Age values are ignored; the first of several is used.
        for (v, want) in [("abc", 0), ("-7200", 0), ("7200.0", 0), ("7200, 0", 7_200_000), ("0,7200", 0)] {
            let h = hm(&[("date", &date(T0)), ("age", v)]);
            assert_eq!(corrected_initial_age_ms(&h, T0, T0), want, "{v}");
        }
        // A Date in the future does not make the age negative.
        let h = hm(&[("date", &date(T0 + 60_000))]);
        assert_eq!(corrected_initial_age_ms(&h, T0, T0), 0);
    }

    fn decide(req: &str, resp: &str, lifetime_s: u64, age_s: u64) -> Reuse {
        let rq = if req.is_empty() { hm(&[]) } else { hm(&[("cache-control", req)]) };
        let rs = hm(&[("cache-control", resp)]);
        reuse(
            &Rules::default(),
            &RequestCc::parse(&rq),
            &ResponseCc::parse(&rs),
            Age { lifetime_ms: lifetime_s * 1000, age_ms: age_s * 1000 },
        )
    }

    #[test]
    fn request_directives_decide_reuse() {
        let rv = Reuse::Revalidate { stale_if_error: false };
        assert_eq!(decide("", "max-age=100", 100, 10), Reuse::Fresh);
        assert_eq!(decide("", "max-age=100", 100, 100), rv, "age == lifetime is stale");
        assert_eq!(decide("no-cache", "max-age=100", 100, 1), rv);
        assert_eq!(decide("max-age=5", "max-age=100", 100, 10), rv);
        assert_eq!(decide("max-age=20", "max-age=100", 100, 10), Reuse::Fresh);
        assert_eq!(decide("min-fresh=95", "max-age=100", 100, 10), rv);
        assert_eq!(decide("min-fresh=50", "max-age=100", 100, 10), Reuse::Fresh);
        assert_eq!(decide("max-stale", "max-age=100", 100, 5000), Reuse::StaleAccepted);
        assert_eq!(decide("max-stale=10", "max-age=100", 100, 105), Reuse::StaleAccepted);
        assert_eq!(decide("max-stale=10", "max-age=100", 100, 120), rv);
        // must-revalidate, proxy-revalidate, s-maxage, no-cache beat max-stale.
        for resp in ["max-age=100, must-revalidate", "max-age=100, proxy-revalidate", "s-maxage=100", "no-cache"] {
            assert_eq!(decide("max-stale", resp, 100, 200), rv, "{resp}");
        }
        assert_eq!(decide("", "no-cache, max-age=100", 100, 1), rv, "response no-cache: always validate");
    }

    #[test]
    fn rfc5861_stale_modes() {
        assert_eq!(decide("", "max-age=10, stale-while-revalidate=30", 10, 20), Reuse::StaleWhileRevalidate);
        assert_eq!(
            decide("", "max-age=10, stale-while-revalidate=30", 10, 50),
            Reuse::Revalidate { stale_if_error: false }
        );
        assert_eq!(decide("", "max-age=10, stale-if-error=30", 10, 20), Reuse::Revalidate { stale_if_error: true });
        assert_eq!(decide("", "max-age=10, stale-if-error=30", 10, 50), Reuse::Revalidate { stale_if_error: false });
        assert_eq!(decide("stale-if-error=60", "max-age=10", 10, 50), Reuse::Revalidate { stale_if_error: true });
        assert_eq!(
            decide("", "max-age=10, stale-while-revalidate=30, must-revalidate", 10, 20),
            Reuse::Revalidate { stale_if_error: false }
        );
        // Defaults from the configuration.
        let rules = Rules { default_stale_while_revalidate: 30, default_stale_if_error: 60, ..Rules::default() };
        let rs = hm(&[("cache-control", "max-age=10")]);
        let age = Age { lifetime_ms: 10_000, age_ms: 20_000 };
        assert_eq!(reuse(&rules, &RequestCc::default(), &ResponseCc::parse(&rs), age), Reuse::StaleWhileRevalidate);
        let age = Age { lifetime_ms: 10_000, age_ms: 50_000 };
        assert_eq!(
            reuse(&rules, &RequestCc::default(), &ResponseCc::parse(&rs), age),
            Reuse::Revalidate { stale_if_error: true }
        );
        // An explicit value wins over the default.
        let rs = hm(&[("cache-control", "max-age=10, stale-while-revalidate=1")]);
        let age = Age { lifetime_ms: 10_000, age_ms: 20_000 };
        assert_eq!(
            reuse(&rules, &RequestCc::default(), &ResponseCc::parse(&rs), age),
            Reuse::Revalidate { stale_if_error: true }
        );
    }

    #[test]
    fn storage_ttl_covers_stale_allowances() {
        let r = Rules::default();
        let cc = ResponseCc::parse(&hm(&[(
            CACHE_CONTROL.as_str(),
            "max-age=10, stale-while-revalidate=30, stale-if-error=60",
        )]));
        assert_eq!(storage_ttl_ms(&r, &cc, 10_000, false), 70_000);
        let cc = ResponseCc::parse(&hm(&[(CACHE_CONTROL.as_str(), "max-age=10")]));
        assert_eq!(storage_ttl_ms(&r, &cc, 10_000, false), 70_000, "one minute of grace");
        let cc = ResponseCc::parse(&hm(&[(CACHE_CONTROL.as_str(), "max-age=10, stale-if-error=60, must-revalidate")]));
        assert_eq!(storage_ttl_ms(&r, &cc, 10_000, false), 10_000);
        assert_eq!(storage_ttl_ms(&r, &cc, 10_000, true), 3_610_000);
        let _ = (ETAG, VARY);
    }
}
