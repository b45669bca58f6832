//! Tracing facts the gateway shares with plugins: the trace context upstream calls descend
//! from, and a report per upstream attempt. Gateway-owned types: the exporter (`gw-otel`)
//! reads these rather than the HTTP engine's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ErrorKind;

/// How a trace context travels in headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// W3C Trace Context: `traceparent` (and `tracestate`).
    W3c,
    /// Zipkin B3, the single `b3` header.
    B3,
    /// Zipkin B3, `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    B3Multi,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The B3 headers (single and multi), all removed before B3 is written.
static B3_ALL: [HeaderName; 6] = [
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
];

/// The trace context a request's upstream calls descend from (its server span): ids, the
/// sampling decision, and how it is written in headers.
#[derive(Debug, Clone)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id of the request's server span.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded.
    pub sampled: bool,
    /// The configured header format.
    pub format: TraceFormat,
    /// The client's `tracestate`, passed on (W3C).
    pub tracestate: Option<HeaderValue>,
    /// Where spans of this trace go (set by the gateway on sampled requests only): plugins
    /// record spans for their own IO with [`TraceParent::child`].
    pub sink: Option<Arc<dyn SpanSink>>,
}

/// The exporter's side of [`TraceParent::child`] (implemented by `gw-otel`).
pub trait SpanSink: Send + Sync + std::fmt::Debug + 'static {
    /// Queue a finished span for export (never waits).
    fn record(&self, span: SpanRecord);
}

/// What a span is (OpenTelemetry span kinds that plugins use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A call to another service (Redis, a database).
    Client,
    /// Work inside the gateway.
    Internal,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    Float(f64),
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(Cow::Owned(s))
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Float(v)
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// A finished span of a plugin's own IO, child of the request's server span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The parent (the request's server span); all zero for the root of a trace
    /// ([`BackgroundSpans::root`]).
    pub parent_span_id: [u8; 8],
    /// Name (`redis EVALSHA`).
    pub name: Cow<'static, str>,
    /// Kind.
    pub kind: SpanKind,
    /// Start, wall clock.
    pub start: SystemTime,
    /// End, wall clock.
    pub end: SystemTime,
    /// Attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Set when the operation failed (the span's status is then `Error` with this message).
    pub error: Option<String>,
    /// The client's `tracestate`, kept in the span's context.
    pub tracestate: Option<HeaderValue>,
}

/// A span being timed ([`TraceParent::child`]); recorded by [`ChildSpan::end`], forgotten if
/// dropped.
#[derive(Debug)]
pub struct ChildSpan {
    record: SpanRecord,
    started: Instant,
    sink: Arc<dyn SpanSink>,
}

impl ChildSpan {
    /// A span of trace `trace_id` under `parent_span_id` (all zeros: a root), with a new span
    /// id (never all zeros), started now.
    fn open(
        trace_id: [u8; 16],
        parent_span_id: [u8; 8],
        name: Cow<'static, str>,
        kind: SpanKind,
        tracestate: Option<HeaderValue>,
        sink: Arc<dyn SpanSink>,
    ) -> Self {
        let span_id = loop {
            let v = fastrand::u64(..);
            if v != 0 {
                break v.to_be_bytes();
            }
        };
        let now = SystemTime::now();
        ChildSpan {
            record: SpanRecord {
                trace_id,
                span_id,
                parent_span_id,
                name,
                kind,
                start: now,
                end: now,
                attributes: Vec::new(),
                error: None,
                tracestate,
            },
            started: Instant::now(),
            sink,
        }
    }

    /// Add an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        self.record.attributes.push((key, value.into()));
    }

    /// End the span now (failed with `error` if given) and queue it for export.
    pub fn end(mut self, error: Option<String>) {
        self.record.end = self.record.start + self.started.elapsed();
        self.record.error = error;
        self.sink.record(self.record);
    }
}

/// Spans of the gateway's own background work, outside any request (a rate limiter's batched
/// Redis sync): each is the root of a trace of its own, sampled with the gateway's ratio, and
/// goes to the gateway's tracer. Gateway-owned: `gw-otel` provides the tracer, the gateway
/// sets it here (and again when a reload changes it), and plugins hold this handle.
#[derive(Clone, Default)]
pub struct BackgroundSpans(Arc<std::sync::RwLock<Option<BackgroundTracer>>>);

impl std::fmt::Debug for BackgroundSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self.0.read().map(|g| g.is_some()).unwrap_or(false);
        f.debug_struct("BackgroundSpans").field("on", &on).finish()
    }
}

/// The tracer of background spans: where they go and the share of them recorded.
#[derive(Clone, Debug)]
pub struct BackgroundTracer {
    sink: Arc<dyn SpanSink>,
    /// A span is recorded when a random `u64` is at most this.
    threshold: u64,
}

impl BackgroundTracer {
    /// Spans to `sink`, a share `sample_ratio` (0 to 1) of them.
    pub fn new(sink: Arc<dyn SpanSink>, sample_ratio: f64) -> BackgroundTracer {
        // `as` saturates: 1.0 gives u64::MAX (always), 0 gives 0 (a 2^-64 chance).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let threshold = (sample_ratio.clamp(0.0, 1.0) * (u64::MAX as f64)) as u64;
        BackgroundTracer { sink, threshold: if sample_ratio <= 0.0 { 0 } else { threshold } }
    }
}

impl BackgroundSpans {
    /// The tracer to use from now on (`None`: tracing off, no span).
    pub fn set(&self, tracer: Option<BackgroundTracer>) {
        if let Ok(mut g) = self.0.write() {
            *g = tracer;
        }
    }

    /// Start the root span of a new trace (`None` when tracing is off or the trace is not
    /// sampled); record it with [`ChildSpan::end`].
    pub fn root(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<ChildSpan> {
        let t = self.0.read().ok()?.clone()?;
        if t.threshold == 0 || (t.threshold != u64::MAX && fastrand::u64(..) > t.threshold) {
            return None;
        }
        let trace_id = loop {
            let v = fastrand::u128(..);
            if v != 0 {
                break v.to_be_bytes();
            }
        };
        Some(ChildSpan::open(trace_id, [0; 8], name.into(), kind, None, t.sink))
    }
}

impl TraceParent {
    /// Put the trace context on a request to another service, as a call made directly under
    /// the server span (replacing the trace headers there).
    pub fn inject(&self, headers: &mut HeaderMap) {
        inject(self.format, &self.trace_id, &self.span_id, self.sampled, self.tracestate.as_ref(), headers);
    }

    /// Start a child span of the request's server span for a plugin's own IO (a Redis call, a
    /// database query): `None` when the request is not recorded (not sampled). Plugins add
    /// `gatehouse.route` and `gatehouse.consumer` (see [`ChildSpan::set`]).
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<ChildSpan> {
        let sink = self.sink.as_ref()?;
        Some(ChildSpan::open(self.trace_id, self.span_id, name.into(), kind, self.tracestate.clone(), sink.clone()))
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// Two lowercase hex digits per byte value.
static HEX2: [[u8; 2]; 256] = {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [D[i >> 4], D[i & 15]];
        i += 1;
    }
    t
};

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (o, b) in out.chunks_exact_mut(2).zip(bytes) {
        o.copy_from_slice(&HEX2[*b as usize]);
    }
}

/// A header value of ASCII hex digits and punctuation (valid by construction).
fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The W3C `traceparent` value of a span (`00-<trace id>-<span id>-<flags>`), written into a
/// fixed buffer (no allocation).
pub fn traceparent_value(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; 55] {
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut v[3..35], trace_id);
    hex_into(&mut v[36..52], span_id);
    if sampled {
        v[54] = b'1';
    }
    v
}

/// The context an upstream request's W3C `traceparent` carries (a span's ids and the sampling
/// flag), kept as is until the request is encoded: the proxy's HTTP/1.1 client writes the whole
/// field line straight into the request head ([`Traceparent::write_line`]), with no value
/// built or copied before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The parent span's id (the span of the call that carries it).
    pub span_id: [u8; 8],
    /// The sampled flag.
    pub sampled: bool,
}

impl Traceparent {
    /// Append the HTTP/1.1 field line `traceparent: <value>\r\n` to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        const LINE: &[u8; 70] = b"traceparent: 00-00000000000000000000000000000000-0000000000000000-00\r\n";
        let at = out.len();
        out.extend_from_slice(LINE);
        let line = &mut out[at..];
        hex_into(&mut line[16..48], &self.trace_id);
        hex_into(&mut line[49..65], &self.span_id);
        if self.sampled {
            line[67] = b'1';
        }
    }

    /// The field's value (55 bytes).
    pub fn value(&self) -> [u8; 55] {
        traceparent_value(&self.trace_id, &self.span_id, self.sampled)
    }
}

/// Write a trace context (a span's ids, the sampling flag, a `tracestate` to pass on) into
/// `headers` in `format`, replacing the trace headers there.
pub fn inject(
    format: TraceFormat,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    sampled: bool,
    tracestate: Option<&HeaderValue>,
    headers: &mut HeaderMap,
) {
    match format {
        TraceFormat::W3c => {
            let v = traceparent_value(trace_id, span_id, sampled);
            // `insert` replaces the client's values.
            headers.insert(TRACEPARENT.clone(), value(&v));
            if let Some(s) = tracestate {
                headers.insert(TRACESTATE.clone(), s.clone());
            }
        }
        TraceFormat::B3 | TraceFormat::B3Multi => {
            for n in &B3_ALL {
                headers.remove(n);
            }
            if format == TraceFormat::B3 {
                let mut v = *b"00000000000000000000000000000000-0000000000000000-0";
                hex_into(&mut v[0..32], trace_id);
                hex_into(&mut v[33..49], span_id);
                if sampled {
                    v[50] = b'1';
                }
                headers.insert(B3_ALL[0].clone(), value(&v));
            } else {
                let (mut t, mut s) = ([0u8; 32], [0u8; 16]);
                hex_into(&mut t, trace_id);
                hex_into(&mut s, span_id);
                headers.insert(B3_ALL[1].clone(), value(&t));
                headers.insert(B3_ALL[2].clone(), value(&s));
                headers.insert(B3_ALL[4].clone(), HeaderValue::from_static(if sampled { "1" } else { "0" }));
            }
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let [hi, lo] = HEX2[*b as usize];
        s.push(hi as char);
        s.push(lo as char);
    }
    s
}

/// Whether an attempt's connection was opened for it or taken from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionUse {
    /// A new connection (its connect time is in [`AttemptReport::connect_time`]).
    New,
    /// An idle pooled connection (HTTP/1.1) or a shared one (HTTP/2).
    Reused,
}

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response head arrived with this status.
    Status(u16),
    /// The attempt failed (connect, timeout, protocol...).
    Failed(ErrorKind),
}

/// What one upstream attempt did (proxied requests and side calls; one per retry).
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// Target address (`host:port`).
    pub target: Arc<str>,
    /// Attempt number: 0 for the first, 1 for the first retry, ...
    pub attempt: u32,
    /// New or reused connection (`None` when no connection was had).
    pub connection: Option<ConnectionUse>,
    /// Time to connect (TCP and TLS) for a new connection.
    pub connect_time: Option<Duration>,
    /// When the attempt started.
    pub started: Instant,
    /// From the start to the response head or the failure.
    pub duration: Duration,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP/1.1 field line holds the same value as `traceparent_value`, appended after
    /// what the buffer held.
    #[test]
    fn traceparent_field_line() {
        let (trace_id, span_id) = ([0x4b; 16], [0x0f; 8]);
        for sampled in [true, false] {
            let tp = Traceparent { trace_id, span_id, sampled };
            let mut out = b"GET / HTTP/1.1\r\n".to_vec();
            tp.write_line(&mut out);
            let line = &out[16..];
            assert_eq!(&line[13..68], &traceparent_value(&trace_id, &span_id, sampled)[..]);
            assert_eq!(&tp.value()[..], &line[13..68]);
            assert!(line.starts_with(b"traceparent: 00-4b4b") && line.ends_with(b"\r\n") && line.len() == 70);
            assert_eq!(&line[49..65], b"0f0f0f0f0f0f0f0f");
            assert_eq!(&line[65..68], if sampled { b"-01" } else { b"-00" });
        }
    }

    /// Each format writes its headers and replaces the client's (B3 removes both forms).
    #[test]
    fn inject_formats() {
        let t = [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
        let s = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-11111111111111111111111111111111-2222222222222222-00"));
        h.append("traceparent", HeaderValue::from_static("second"));
        let state = HeaderValue::from_static("a=1");
        inject(TraceFormat::W3c, &t, &s, true, Some(&state), &mut h);
        let all: Vec<_> = h.get_all("traceparent").iter().collect();
        assert_eq!(all, ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]);
        assert_eq!(h["tracestate"], "a=1");

        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", HeaderValue::from_static("1"));
        h.insert("x-b3-parentspanid", HeaderValue::from_static("1"));
        inject(TraceFormat::B3, &t, &s, false, None, &mut h);
        assert_eq!(h["b3"], "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0");
        assert_eq!(h.len(), 1, "{h:?}");

        let mut h = HeaderMap::new();
        h.insert("b3", HeaderValue::from_static("1"));
        inject(TraceFormat::B3Multi, &t, &s, true, None, &mut h);
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(h.len(), 3, "{h:?}");
    }
}
