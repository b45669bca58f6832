//! A small driver that plays the proxy around a `Cache`: it follows what `lookup` and `Fill`
//! say, and calls an in-process "origin" that records every request it gets. Phase B wires
//! the same steps into the pipeline.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gw_cache::{Cache, CacheOptions, CacheRequest, Fill, Lookup, Upstream, WaitOutcome};
use gw_core::{Clock, OffsetClock};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

pub const T0: u64 = 1_800_000_000_000;

pub fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    m
}

/// What the origin answers.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Resp {
        Resp {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
        }
    }
}

/// An origin: answers with a queue of responses (the last repeats) or fails, and records the
/// requests it receives.
#[derive(Default)]
pub struct Origin {
    pub responses: Mutex<Vec<Resp>>,
    pub seen: Mutex<Vec<(Method, String, HeaderMap)>>,
    pub down: Mutex<bool>,
}

impl Origin {
    pub fn set(&self, r: Resp) {
        *self.responses.lock().unwrap_or_else(|p| p.into_inner()) = vec![r];
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn last_request(&self) -> Option<HeaderMap> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).last().map(|s| s.2.clone())
    }
    fn call(
        &self,
        method: &Method,
        path: &str,
        headers: HeaderMap,
        clock: &dyn Clock,
    ) -> Option<(StatusCode, HeaderMap, String)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).push((method.clone(), path.to_string(), headers));
        if *self.down.lock().unwrap_or_else(|p| p.into_inner()) {
            return None;
        }
        let mut q = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        let r = if q.len() > 1 { q.remove(0) } else { q.first().cloned().unwrap_or_else(|| Resp::new(200, &[], "")) };
        let mut h = HeaderMap::new();
        let mut has_date = false;
        for (k, v) in &r.headers {
            has_date |= k.eq_ignore_ascii_case("date");
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        if !has_date {
            h.insert("date", HeaderValue::from_str(&httpdate(clock.now_ms())).unwrap_or_else(|e| panic!("{e}")));
        }
        Some((StatusCode::from_u16(r.status).unwrap_or_else(|e| panic!("{e}")), h, r.body))
    }
}

pub fn httpdate(ms: u64) -> String {
    gw_cache::policy::fmt_http_date(ms)
}

/// What the client got.
#[derive(Debug, Clone)]
pub struct Served {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The lookup's verdict, for assertions.
    pub lookup: String,
}

impl Served {
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
    pub fn cache_status(&self) -> &str {
        self.header("x-cache-status").unwrap_or("")
    }
}

pub struct World {
    pub cache: Cache,
    pub clock: Arc<OffsetClock>,
    pub origin: Arc<Origin>,
}

impl World {
    pub fn new(opts: CacheOptions) -> World {
        let clock = Arc::new(OffsetClock::starting_at(T0));
        let cache = Cache::new(opts, clock.clone()).unwrap_or_else(|e| panic!("{e}"));
        World { cache, clock, origin: Arc::new(Origin::default()) }
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(secs * 1000);
    }

    pub fn now_date(&self) -> String {
        httpdate(self.clock.now_ms())
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Served {
        self.request(Method::GET, path, headers).await
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Served {
        let h = hm(headers);
        let req = CacheRequest {
            method: &method,
            scheme: "http",
            host: "example.com",
            path_and_query: path,
            headers: &h,
            consumer: None,
        };
        let lookup = self.cache.lookup(&req).await;
        let label = format!("{lookup:?}");
        let served = match lookup {
            Lookup::Hit(hit) => served(hit.status, hit.headers, &hit.body),
            Lookup::Stale { hit, refresh } => {
                if let Some(f) = refresh {
                    // The background refresh, run here to keep the test deterministic.
                    let _ = self.through(f, &method, path, &h).await;
                }
                served(hit.status, hit.headers, &hit.body)
            }
            Lookup::Miss(f) | Lookup::Revalidate(f) => self.through(f, &method, path, &h).await,
            Lookup::Wait(w) => match w.wait().await {
                WaitOutcome::Stream { status, headers, body } => {
                    let mut chunks = Vec::new();
                    if let Some(mut b) = body {
                        while let Some(c) = b.next().await {
                            chunks.push(c.unwrap_or_else(|e| panic!("{e}")));
                        }
                    }
                    served(status, headers, &chunks)
                }
                WaitOutcome::GoUpstream { header } => self.plain(&method, path, &h, header).await,
            },
            Lookup::Forward { header, .. } => self.plain(&method, path, &h, header).await,
            Lookup::GatewayTimeout { header } => {
                let mut hh = HeaderMap::new();
                if let Some((n, v)) = header {
                    hh.insert(n, v);
                }
                served(StatusCode::GATEWAY_TIMEOUT, hh, &[])
            }
        };
        if gw_cache::invalidate::is_unsafe(&method) {
            let status = StatusCode::from_u16(served.status).unwrap_or(StatusCode::OK);
            self.cache.invalidate_after(&req, status, &served.headers).await;
        }
        Served { lookup: label, ..served }
    }

    async fn plain(&self, method: &Method, path: &str, h: &HeaderMap, header: Option<gw_cache::Field>) -> Served {
        match self.origin.call(method, path, h.clone(), self.clock.as_ref()) {
            Some((s, mut rh, body)) => {
                if let Some((n, v)) = header {
                    rh.insert(n, v);
                }
                let body = if *method == Method::HEAD { String::new() } else { body };
                served(s, rh, &[Bytes::from(body)])
            }
            None => served(StatusCode::BAD_GATEWAY, HeaderMap::new(), &[]),
        }
    }

    /// Go upstream through a fill, as the pipeline will.
    pub async fn through(&self, mut f: Fill, method: &Method, path: &str, h: &HeaderMap) -> Served {
        for _ in 0..2 {
            let mut up = h.clone();
            f.prepare_request(&mut up);
            let Some((status, mut rh, body)) = self.origin.call(method, path, up, self.clock.as_ref()) else {
                return match f.upstream_failed() {
                    Some(hit) => served(hit.status, hit.headers, &hit.body),
                    None => served(StatusCode::BAD_GATEWAY, HeaderMap::new(), &[]),
                };
            };
            match f.head(status, &rh) {
                Upstream::Replace(hit) => return served(hit.status, hit.headers, &hit.body),
                Upstream::Refetch => continue,
                Upstream::Forward { header, .. } => {
                    if let Some((n, v)) = header {
                        rh.insert(n, v);
                    }
                    // Two chunks, as a streaming body would arrive.
                    let b = Bytes::from(body);
                    let mid = b.len() / 2;
                    let chunks = [b.slice(..mid), b.slice(mid..)];
                    for c in &chunks {
                        f.data(c);
                    }
                    if let Some(job) = f.finish() {
                        let _ = job.await;
                    }
                    return served(status, rh, &chunks);
                }
            }
        }
        panic!("refetch loop");
    }
}

fn served(status: StatusCode, headers: HeaderMap, body: &[Bytes]) -> Served {
    let body = body.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<String>();
    Served { status: status.as_u16(), headers, body, lookup: String::new() }
}
