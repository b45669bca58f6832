//! OpenTelemetry tracing for the gateway.
//!
//! - Trace context is read from the client's request (W3C `traceparent`/`tracestate`, or B3
//!   single or multi header) and a new trace is started without one.
//! - One SERVER span per request ([`Tracing::begin`], [`Tracing::finish_server`]): its ids and
//!   sampling decision are drawn when the request arrives, before any plugin runs, so that
//!   requests refused before (or by) routing are traced too and every call the request makes
//!   descends from it; a CLIENT span per upstream attempt ([`ClientSpan`]) whose context goes
//!   upstream in the configured format; spans of plugins' own IO ([`gw_core::ChildSpan`]).
//! - Head sampling: a new trace is sampled with `sample_ratio`; a request with a parent follows
//!   the parent's decision (parent-based), and everything under a request follows the
//!   request's. An unsampled request costs a header lookup, three random numbers and the
//!   `traceparent` it sends upstream: no allocation, no span.
//! - Spans are kept in the gateway's own record and exported with OTLP (the protobuf wire
//!   format of the official definitions, written by `otlp.rs`) over gRPC (tonic) or
//!   HTTP/protobuf (hyper's client), in clear text or TLS, by a task off the request path
//!   (`export.rs`): ending a span only puts it in a bounded queue. A full queue or a failed
//!   export drops spans and counts them (`gatehouse_tracing_spans_dropped_total`); nothing
//!   waits for the collector.
//!
//! The pipeline (`gw-proxy`) holds the spans; plugins see only [`gw_core::TraceParent`] and the
//! gateway-owned [`gw_core::AttemptReport`]s.

use std::borrow::Cow;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::TraceState;
use tokio::sync::mpsc;

pub use gw_config::model::{OtlpProtocol, Propagation, Tracing as Settings};
use gw_core::{
    AttemptOutcome, AttemptReport, AttrValue, ConnectionUse, ErrorKind, SpanRecord, TraceFormat, TraceParent,
};
use gw_observability::Metrics;

mod export;
mod otlp;
use export::{Finished, Kind, Queue};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A tracer: sampling, propagation and the export queue. Built by [`Tracing::start`] (it
/// spawns the export task on the current Tokio runtime); a configuration reload with other
/// tracing settings builds a new one, and the old one exports what it still holds once the
/// last request using it has ended.
pub struct Tracing {
    queue: Arc<Queue>,
    flush: mpsc::Sender<export::FlushRequest>,
    propagation: Propagation,
    format: TraceFormat,
    /// A new trace is sampled when a random `u64` is below this (`u64::MAX`: always, with
    /// `always`).
    threshold: u64,
    always: bool,
    settings: Settings,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("propagation", &self.propagation)
            .field("ratio", &self.settings.sample_ratio)
            .finish()
    }
}

impl Tracing {
    /// Build the exporter and start the export task (call inside a Tokio runtime). `tls`: the
    /// TLS client configuration for an `https://` endpoint (built by the gateway from
    /// `tracing.tls`, as for upstreams).
    pub fn start(
        s: &Settings,
        metrics: Arc<Metrics>,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Arc<Tracing>, String> {
        let (queue, flush) = export::start(s, metrics, tls)?;
        let format = match s.propagation {
            Propagation::W3c => TraceFormat::W3c,
            Propagation::B3 => TraceFormat::B3,
            Propagation::B3Multi => TraceFormat::B3Multi,
        };
        let always = s.sample_ratio >= 1.0;
        // `as` saturates: ratio 0 gives 0 (never), anything below 1 a share of 2^64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let threshold = (s.sample_ratio.clamp(0.0, 1.0) * (u64::MAX as f64)) as u64;
        Ok(Arc::new(Tracing {
            queue,
            flush,
            propagation: s.propagation,
            format,
            threshold,
            always,
            settings: s.clone(),
        }))
    }

    /// The settings this tracer was built with (a reload with the same ones keeps it).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Start tracing a request whose head just arrived: read its parent context (if the client
    /// sent one), decide sampling and draw the server span's id. The context its upstream
    /// calls carry, and what [`Tracing::finish_server`] needs besides.
    pub fn begin(&self, headers: &HeaderMap) -> (ServerTrace, TraceParent) {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        let (parent, decided, tracestate) = match self.propagation {
            Propagation::W3c => match extract_w3c(headers) {
                Some((p, state)) => (Some(p), Some(p.sampled), state),
                None => (None, None, None),
            },
            Propagation::B3 | Propagation::B3Multi => match extract_b3(headers) {
                Some((p, decided)) => (Some(p), decided.then_some(p.sampled), None),
                None => (None, None, None),
            },
        };
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => nonzero(|| rng.u128(..)).to_be_bytes(),
        };
        // Parent-based; a new trace (or a B3 parent that did not decide) by the ratio, drawn
        // from the trace id's random low 64 bits (as OpenTelemetry's `TraceIdRatioBased`
        // does), so every node that decides a trace decides it alike.
        let sampled = decided.unwrap_or_else(|| {
            let mut low = [0u8; 8];
            low.copy_from_slice(&trace_id[8..]);
            self.always || u64::from_be_bytes(low) < self.threshold
        });
        let span_id = nonzero(|| rng.u64(..)).to_be_bytes();
        let sink = if sampled { Some(self.queue.clone() as Arc<dyn gw_core::SpanSink>) } else { None };
        let tp = TraceParent { trace_id, span_id, sampled, format: self.format, tracestate, sink };
        (ServerTrace { parent_span_id: parent.map(|p| p.span_id) }, tp)
    }

    /// A CLIENT span for one upstream attempt under `parent` (the request's server span, which
    /// is sampled), named after the method. Its context goes upstream ([`Tracing::inject_span`]).
    pub fn client_span(&self, parent: &TraceParent, method: &str, target: &str, attempt: u32) -> ClientSpan {
        let (host, port) = split_authority(target);
        let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(10);
        attrs.push(("http.request.method", AttrValue::Str(static_or_owned(method))));
        attrs.push(("server.address", AttrValue::from(host.to_string())));
        attrs.push(("gatehouse.attempt", AttrValue::Int(i64::from(attempt))));
        if let Some(p) = port {
            attrs.push(("server.port", AttrValue::Int(i64::from(p))));
        }
        if attempt > 0 {
            attrs.push(("http.request.resend_count", AttrValue::Int(i64::from(attempt))));
        }
        ClientSpan {
            trace_id: parent.trace_id,
            span_id: nonzero(|| fastrand::u64(..)).to_be_bytes(),
            parent_span_id: parent.span_id,
            name: static_or_owned(method),
            start: SystemTime::now(),
            attrs,
            tracestate: parent.tracestate.clone(),
            // The request's sink: its spans are held with the others while they are.
            sink: parent.sink.clone().unwrap_or_else(|| self.queue.clone() as Arc<dyn gw_core::SpanSink>),
        }
    }

    /// Put the trace context of `span` on an upstream request (replacing the client's), with the
    /// client's `tracestate`.
    pub fn inject_span(&self, span: &ClientSpan, headers: &mut HeaderMap) {
        gw_core::trace::inject(self.format, &span.trace_id, &span.span_id, true, span.tracestate.as_ref(), headers);
    }

    /// Put `parent`'s trace context on an upstream request (replacing the client's): for
    /// requests whose attempts get no span of their own (not sampled).
    pub fn inject_parent(&self, parent: &TraceParent, headers: &mut HeaderMap) {
        parent.inject(headers);
    }

    /// End the request's server span with what the request did (nothing for a request that
    /// is not sampled). `started`: when the request's head arrived.
    pub fn finish_server(&self, tr: &ServerTrace, parent: &TraceParent, f: &ServerFacts<'_>, started: Instant) {
        if !parent.sampled {
            return;
        }
        let name = match f.route_pattern {
            Some(p) => format!("{} {p}", f.method),
            None => f.method.to_string(),
        };
        let mut attrs: Vec<(&'static str, AttrValue)> = Vec::with_capacity(14);
        attrs.extend([
            ("http.request.method", AttrValue::Str(static_or_owned(f.method))),
            ("url.path", AttrValue::from(f.path.to_string())),
            ("url.scheme", AttrValue::Str(static_or_owned(f.scheme))),
            ("http.response.status_code", AttrValue::Int(i64::from(f.status))),
            ("server.address", AttrValue::from(f.host.to_string())),
            ("client.address", AttrValue::from(f.client_ip.to_string())),
            ("network.protocol.version", AttrValue::Str(static_or_owned(f.protocol_version))),
            ("gatehouse.request_id", AttrValue::from(f.request_id.to_string())),
        ]);
        if let Some(p) = f.route_pattern {
            attrs.push(("http.route", AttrValue::from(p.to_string())));
        }
        for (k, v) in [("gatehouse.route", f.route), ("gatehouse.service", f.service)] {
            if let Some(v) = v {
                attrs.push((k, AttrValue::from(v.to_string())));
            }
        }
        if let Some(c) = f.consumer {
            attrs.push(("gatehouse.consumer", AttrValue::from(c.to_string())));
        }
        if let Some(e) = f.error {
            attrs.push(("error.type", AttrValue::from(e.code())));
        } else if f.status >= 500 {
            attrs.push(("error.type", AttrValue::from(f.status.to_string())));
        }
        let error = (f.status >= 500).then(|| Cow::Borrowed(f.error.map_or("", |e| e.code())));
        // Wall-clock times from the monotonic ones.
        let end = SystemTime::now() - f.ended.elapsed();
        let start = end - f.ended.saturating_duration_since(started);
        self.queue.push(Finished {
            trace_id: parent.trace_id,
            span_id: parent.span_id,
            parent_span_id: tr.parent_span_id.unwrap_or([0; 8]),
            remote_parent: tr.parent_span_id.is_some(),
            kind: Kind::Server,
            name: Cow::Owned(name),
            start,
            end,
            attributes: attrs,
            error,
            tracestate: parent.tracestate.clone(),
        });
    }

    /// Export every span queued so far, waiting at most `timeout` (graceful shutdown: the
    /// requests have ended). Whether the queue was written out in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.flush.send(done).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(())))
    }

    /// The tracer of the gateway's background work (root spans of their own traces, sampled
    /// with `sample_ratio`), for [`gw_core::BackgroundSpans::set`].
    pub fn background(&self) -> gw_core::BackgroundTracer {
        gw_core::BackgroundTracer::new(self.queue.clone(), self.settings.sample_ratio)
    }

    /// Stop recording spans (those already queued stay there for [`Tracing::flush`]).
    pub fn shutdown(&self) {
        self.queue.close();
    }
}

/// What the server span of a request needs besides its [`TraceParent`] (kept by the pipeline).
#[derive(Debug, Clone, Copy)]
pub struct ServerTrace {
    /// The client's span (the server span's remote parent).
    parent_span_id: Option<[u8; 8]>,
}

/// `s` without a copy when it is one of the usual methods, schemes or protocol versions.
fn static_or_owned(s: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 16] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "http", "https", "1.0", "1.1",
        "2", "3", "0.9",
    ];
    match KNOWN.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_string()),
    }
}

/// A random id that is not zero (W3C: all-zero ids are invalid).
fn nonzero<T: PartialEq + Default>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let id = draw();
        if id != T::default() {
            return id;
        }
    }
}

/// What the server span records when the request ends.
#[derive(Debug)]
pub struct ServerFacts<'a> {
    /// Method.
    pub method: &'a str,
    /// Path (without query).
    pub path: &'a str,
    /// `http.route`: the matched route's path pattern (its name when it has several).
    pub route_pattern: Option<&'a str>,
    /// Route name.
    pub route: Option<&'a Arc<str>>,
    /// Service name.
    pub service: Option<&'a Arc<str>>,
    /// Consumer user name.
    pub consumer: Option<&'a str>,
    /// Host the request was sent to.
    pub host: &'a str,
    /// Real client IP.
    pub client_ip: std::net::IpAddr,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `1.1`, `2`...
    pub protocol_version: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Gateway error kind of a failed request.
    pub error: Option<ErrorKind>,
    /// Request id.
    pub request_id: &'a str,
    /// When the response ended.
    pub ended: Instant,
}

/// The CLIENT span of one upstream attempt (sampled requests only).
#[derive(Debug)]
pub struct ClientSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: [u8; 8],
    name: Cow<'static, str>,
    start: SystemTime,
    attrs: Vec<(&'static str, AttrValue)>,
    tracestate: Option<HeaderValue>,
    sink: Arc<dyn gw_core::SpanSink>,
}

impl ClientSpan {
    /// The span's trace and span ids (the context its attempt sends upstream).
    pub fn ids(&self) -> (&[u8; 16], &[u8; 8]) {
        (&self.trace_id, &self.span_id)
    }

    /// Record the attempt's report and end the span.
    pub fn finish(mut self, r: &AttemptReport) {
        let connection = match r.connection {
            Some(ConnectionUse::New) => "new",
            Some(ConnectionUse::Reused) => "reused",
            None => "none",
        };
        self.attrs.push(("gatehouse.connection", AttrValue::from(connection)));
        if let Some(c) = r.connect_time {
            self.attrs.push(("gatehouse.connect_time_ms", AttrValue::Float(c.as_secs_f64() * 1000.0)));
        }
        let mut error = None;
        match r.outcome {
            AttemptOutcome::Status(s) => {
                self.attrs.push(("http.response.status_code", AttrValue::Int(i64::from(s))));
                if s >= 400 {
                    self.attrs.push(("error.type", AttrValue::from(s.to_string())));
                    error = Some(String::new());
                }
            }
            AttemptOutcome::Failed(kind) => {
                self.attrs.push(("error.type", AttrValue::from(kind.code())));
                error = Some(kind.code().to_string());
            }
        }
        self.sink.record(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: self.name,
            kind: gw_core::SpanKind::Client,
            start: self.start,
            end: self.start + r.duration,
            attributes: self.attrs,
            error,
            tracestate: self.tracestate,
        });
    }
}

/// The spans of a sampled request recorded before its route is known (side calls of global
/// `pre_route` plugins), held until it is: passed on to the export queue when the request
/// stays traced, dropped when its route turns tracing off (so that no span is exported under a
/// server span that is not). Every span of such a request goes through it.
#[derive(Debug)]
pub struct HeldSpans {
    to: Arc<dyn gw_core::SpanSink>,
    state: std::sync::Mutex<Held>,
}

#[derive(Debug)]
enum Held {
    Holding(Vec<SpanRecord>),
    Pass,
    Drop,
}

impl HeldSpans {
    /// Pass on the spans held, and those recorded from now on.
    pub fn release(&self) {
        let held = match self.state.lock() {
            Ok(mut s) => match std::mem::replace(&mut *s, Held::Pass) {
                Held::Holding(v) => v,
                // Dropped stays dropped.
                Held::Drop => {
                    *s = Held::Drop;
                    return;
                }
                Held::Pass => return,
            },
            Err(_) => return,
        };
        for s in held {
            self.to.record(s);
        }
    }

    /// Drop the spans held, and those recorded from now on.
    pub fn discard(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = Held::Drop;
        }
    }
}

impl gw_core::SpanSink for HeldSpans {
    fn record(&self, span: SpanRecord) {
        let Ok(mut s) = self.state.lock() else { return };
        match &mut *s {
            Held::Holding(v) => v.push(span),
            Held::Drop => {}
            Held::Pass => {
                drop(s);
                self.to.record(span);
            }
        }
    }
}

/// Hold the spans of a sampled `parent` until [`HeldSpans::release`] or
/// [`HeldSpans::discard`] (nothing for a request that is not recorded).
pub fn hold_spans(parent: &mut TraceParent) -> Option<Arc<HeldSpans>> {
    let to = parent.sink.take()?;
    let held = Arc::new(HeldSpans { to, state: std::sync::Mutex::new(Held::Holding(Vec::new())) });
    parent.sink = Some(held.clone());
    Some(held)
}

fn split_authority(a: &str) -> (&str, Option<u16>) {
    match a.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok())
        }
        _ => (a, None),
    }
}

/// A parent context read from the client's headers.
#[derive(Debug, Clone, Copy)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn hex_digit(b: u8, upper_ok: bool) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' if upper_ok => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Exactly `N` bytes from `2 * N` hex digits (lowercase only unless `upper_ok`).
fn hex_array<const N: usize>(s: &[u8], upper_ok: bool) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (hex_digit(pair[0], upper_ok)? << 4) | hex_digit(pair[1], upper_ok)?;
    }
    Some(out)
}

/// W3C Trace Context (level 1): `version-traceid-parentid-flags`, ids lowercase hex, not all
/// zero; version `ff` is invalid; a later version may carry more fields after a `-`. With it,
/// the client's `tracestate` (several fields joined) when it is valid.
fn extract_w3c(h: &HeaderMap) -> Option<(Parent, Option<HeaderValue>)> {
    // Most requests have no `traceparent` and a handful of fields: looking at their names is
    // cheaper than hashing one (the hashed lookup follows when it is there).
    if h.keys_len() <= 32 && !h.keys().any(|k| *k == TRACEPARENT) {
        return None;
    }
    let mut values = h.get_all(&TRACEPARENT).iter();
    let v = values.next()?.as_bytes().trim_ascii();
    if values.next().is_some() {
        return None;
    }
    let mut parts = v.split(|&b| b == b'-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let [version] = hex_array::<1>(version, false)?;
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = hex_array::<16>(trace, false)?;
    let span_id = hex_array::<8>(span, false)?;
    let [flags] = hex_array::<1>(flags, false)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((Parent { trace_id, span_id, sampled: flags & 1 == 1 }, tracestate(h)))
}

/// The client's `tracestate` to pass on: its fields joined, when the list is valid (an
/// invalid one is dropped, as W3C Trace Context asks).
fn tracestate(h: &HeaderMap) -> Option<HeaderValue> {
    let mut values = h.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let joined;
    let (text, value) = match values.next() {
        None => (first.to_str().ok()?, Some(first)),
        Some(second) => {
            let mut parts = vec![first.to_str().ok()?, second.to_str().ok()?];
            for v in values {
                parts.push(v.to_str().ok()?);
            }
            joined = parts.join(",");
            (joined.as_str(), None)
        }
    };
    if text.trim().is_empty() {
        return None;
    }
    let state = TraceState::from_str(text).ok()?;
    match value {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(&state.header()).ok(),
    }
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, padded on the left).
fn b3_trace_id(s: &[u8]) -> Option<[u8; 16]> {
    let id = match s.len() {
        32 => hex_array::<16>(s, true)?,
        16 => {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&hex_array::<8>(s, true)?);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn b3_span_id(s: &[u8]) -> Option<[u8; 8]> {
    hex_array::<8>(s, true).filter(|id| *id != [0; 8])
}

/// B3, single (`b3: traceid-spanid[-sampled[-parentspanid]]`) or multi header (`X-B3-*`):
/// the context and whether it carries a sampling decision.
fn extract_b3(h: &HeaderMap) -> Option<(Parent, bool)> {
    let (trace_id, span_id, sampled) = if let Some(v) = h.get(&B3) {
        let mut p = v.as_bytes().trim_ascii().split(|&b| b == b'-');
        let trace = b3_trace_id(p.next()?)?;
        let span = b3_span_id(p.next()?)?;
        let sampled = match p.next() {
            None => None,
            Some(b"1" | b"d") => Some(true),
            Some(b"0") => Some(false),
            Some(_) => return None,
        };
        (trace, span, sampled)
    } else {
        let get = |n: &HeaderName| h.get(n).map(|v| v.as_bytes().trim_ascii());
        let trace = b3_trace_id(get(&B3_TRACE_ID)?)?;
        let span = b3_span_id(get(&B3_SPAN_ID)?)?;
        let sampled = if get(&B3_FLAGS) == Some(b"1") {
            Some(true)
        } else {
            match get(&B3_SAMPLED) {
                None => None,
                Some(b"1" | b"true") => Some(true),
                Some(b"0" | b"false") => Some(false),
                Some(_) => return None,
            }
        };
        (trace, span, sampled)
    };
    Some((Parent { trace_id, span_id, sampled: sampled == Some(true) }, sampled.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// W3C traceparent: valid values parse; malformed, all-zero and version ff do not.
    #[test]
    fn w3c_parsing() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (p, state) = extract_w3c(&headers(&[("traceparent", ok), ("tracestate", "a=1,b=2")])).unwrap();
        assert_eq!(gw_core::trace::hex(&p.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(gw_core::trace::hex(&p.span_id), "b7ad6b7169203331");
        assert!(p.sampled);
        assert_eq!(state.unwrap(), "a=1,b=2");
        // Several tracestate fields are one list; an invalid list is not passed on.
        let (_, state) =
            extract_w3c(&headers(&[("traceparent", ok), ("tracestate", "a=1"), ("tracestate", "b=2")])).unwrap();
        assert_eq!(state.unwrap(), "a=1,b=2");
        let (_, state) = extract_w3c(&headers(&[("traceparent", ok), ("tracestate", "not a list")])).unwrap();
        assert!(state.is_none());
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "garbage",
        ] {
            assert!(extract_w3c(&headers(&[("traceparent", bad)])).is_none(), "{bad}");
        }
        // A later version may add fields.
        assert!(extract_w3c(&headers(&[("traceparent", &format!("01{}-x", &ok[2..]))])).is_some());
    }

    /// B3 single and multi: 64- and 128-bit ids, sampling flags, deferred decisions.
    #[test]
    fn b3_parsing() {
        let (p, decided) =
            extract_b3(&headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")])).unwrap();
        assert_eq!(gw_core::trace::hex(&p.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(p.sampled && decided);
        let (p, decided) = extract_b3(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")])).unwrap();
        assert_eq!(gw_core::trace::hex(&p.trace_id), "000000000000000064fe8b2a57d3eff7");
        assert!(!decided);
        let (p, decided) = extract_b3(&headers(&[
            ("x-b3-traceid", "80F198EE56343BA864FE8B2A57D3EFF7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]))
        .unwrap();
        assert_eq!(gw_core::trace::hex(&p.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(!p.sampled && decided);
        assert!(extract_b3(&headers(&[("b3", "0")])).is_none());
        assert!(extract_b3(&headers(&[("b3", "zz-e457b5a2e4d86bd1-1")])).is_none());
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("127.0.0.1:8080"), ("127.0.0.1", Some(8080)));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("example"), ("example", None));
    }
}
