//! OpenTelemetry tracing for the gateway.
//!
//! - Trace context is read from the client's request (W3C `traceparent`/`tracestate`, or B3
//!   single or multi header) and a new trace is started without one.
//! - One SERVER span per request ([`ServerTrace`]), started before routing so that requests
//!   refused before (or by) routing are traced too, and a CLIENT span per upstream attempt
//!   ([`ClientSpan`]) whose context goes upstream in the configured format.
//! - Spans are exported with OTLP (gRPC through tonic, or HTTP/protobuf through a hyper client)
//!   by a task off the request path: ending a span only puts it in a bounded queue. A full
//!   queue or a failed export drops spans and counts them
//!   (`gatehouse_tracing_spans_dropped_total`); nothing waits for the collector.
//! - Head sampling: a new trace is sampled with `sample_ratio`; a request with a parent follows
//!   the parent's decision (parent-based), and the attempts of a request follow the request's.
//!
//! The pipeline (`gw-proxy`) holds the spans; plugins see only [`gw_core::TraceParent`] and the
//! gateway-owned [`gw_core::AttemptReport`]s.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use tokio::sync::mpsc;

pub use gw_config::model::{OtlpProtocol, Propagation, Tracing as Settings};
use gw_core::{AttemptOutcome, AttemptReport, ConnectionUse, ErrorKind, TraceFormat, TraceParent};
use gw_observability::Metrics;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The process's tracer: sampling, propagation and the export queue. Built once at start (it
/// spawns the export task on the current Tokio runtime).
pub struct Tracing {
    provider: SdkTracerProvider,
    flush: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    tracer: SdkTracer,
    propagation: Propagation,
    format: TraceFormat,
    ratio: f64,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").field("propagation", &self.propagation).field("ratio", &self.ratio).finish()
    }
}

impl Tracing {
    /// Build the exporter and start the export task (call inside a Tokio runtime).
    pub fn start(s: &Settings, metrics: Arc<Metrics>) -> Result<Arc<Tracing>, String> {
        let resource = Resource::builder_empty().with_service_name(s.service_name.clone()).build();
        let mut exporter = match s.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.export_timeout)
                .build(),
            OtlpProtocol::Http => {
                // hyper's client (already in the data plane) rather than reqwest.
                let client = opentelemetry_http::hyper::HyperClient::with_default_connector(s.export_timeout, None);
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(s.endpoint.clone())
                    .with_timeout(s.export_timeout)
                    .build()
            }
        }
        .map_err(|e| format!("tracing exporter: {e}"))?;
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(s.queue_size);
        let (flush, flush_rx) = mpsc::channel(4);
        let queue = Queue { tx, metrics: metrics.clone() };
        let export = Export { exporter, batch: s.batch_size, timeout: s.export_timeout, metrics };
        tokio::spawn(export_loop(rx, flush_rx, export, s.export_interval));
        // Sampling is decided before a span is built (`ServerTrace::start`): unsampled requests
        // never reach the SDK, and the spans it builds are all recorded.
        let sampler = Sampler::AlwaysOn;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gatehouse");
        let format = match s.propagation {
            Propagation::W3c => TraceFormat::W3c,
            Propagation::B3 => TraceFormat::B3,
            Propagation::B3Multi => TraceFormat::B3Multi,
        };
        Ok(Arc::new(Tracing { provider, flush, tracer, propagation: s.propagation, format, ratio: s.sample_ratio }))
    }

    /// Start tracing a request whose head just arrived: its parent context (if the client sent
    /// one) and its start time. The span itself is created by [`ServerTrace::start`].
    pub fn begin(&self, headers: &HeaderMap, started: Instant) -> Box<ServerTrace> {
        let parent = match self.propagation {
            Propagation::W3c => extract_w3c(headers),
            Propagation::B3 | Propagation::B3Multi => extract_b3(headers).map(|(sc, decided)| {
                if decided {
                    sc
                } else {
                    // No sampling decision from upstream: ours (the ratio), on the same trace.
                    let flags = if self.sample_new() { TraceFlags::SAMPLED } else { TraceFlags::default() };
                    SpanContext::new(sc.trace_id(), sc.span_id(), flags, true, TraceState::default())
                }
            }),
        };
        Box::new(ServerTrace { parent, started, state: State::Pending })
    }

    /// The head-sampling decision for a new trace (or one whose parent did not decide).
    fn sample_new(&self) -> bool {
        self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio)
    }

    /// A CLIENT span for one upstream attempt under `parent` (the request's server span), named
    /// after the method. Its context goes upstream ([`ClientSpan::inject`]).
    pub fn client_span(&self, parent: &TraceParent, method: &str, target: &str, attempt: u32) -> ClientSpan {
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let psc = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            flags,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(psc);
        let (host, port) = split_authority(target);
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("server.address", host.to_string()),
            KeyValue::new("gatehouse.attempt", i64::from(attempt)),
        ];
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        if attempt > 0 {
            attrs.push(KeyValue::new("http.request.resend_count", i64::from(attempt)));
        }
        let span = self.tracer.build_with_context(
            self.tracer.span_builder(method.to_string()).with_kind(SpanKind::Client).with_attributes(attrs),
            &cx,
        );
        let ids = (sc_ids(span.span_context()), span.span_context().is_sampled());
        ClientSpan { span, ids }
    }

    /// Put the trace context of `span` on an upstream request (replacing the client's).
    pub fn inject_span(&self, span: &ClientSpan, headers: &mut HeaderMap) {
        let ((trace_id, span_id), sampled) = &span.ids;
        gw_core::trace::inject(self.format, trace_id, span_id, *sampled, None, headers);
    }

    /// Put `parent`'s trace context on an upstream request (replacing the client's): for
    /// requests whose attempts get no span of their own (not sampled).
    pub fn inject_parent(&self, parent: &TraceParent, headers: &mut HeaderMap) {
        parent.inject(headers);
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

    /// Stop recording spans (those already queued stay there for [`Tracing::flush`]).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_millis(100));
    }
}

/// A request's trace: parent context and start time until the span is created (once the route
/// is known, or at the end for requests that never reached a route).
#[derive(Debug)]
pub struct ServerTrace {
    parent: Option<SpanContext>,
    started: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No decision yet.
    Pending,
    /// Not sampled: ids only (the context still goes upstream), no SDK span.
    Unsampled { trace_id: [u8; 16], span_id: [u8; 8] },
    /// Sampled: the SDK's span and the request's start on the wall clock.
    Sampled { span: Box<Span>, wall: SystemTime },
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
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
    pub route: Option<&'a str>,
    /// Service name.
    pub service: Option<&'a str>,
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

impl ServerTrace {
    /// Decide sampling and create the server span (if not yet); the context upstream calls
    /// descend from. `name` gives the span name (`GET /users/{id}`); it is called only for a
    /// sampled request.
    pub fn start(&mut self, t: &Tracing, name: impl FnOnce() -> String) -> TraceParent {
        if matches!(self.state, State::Pending) {
            let sampled = match &self.parent {
                Some(p) => p.is_sampled(),
                None => t.sample_new(),
            };
            self.state = if sampled {
                let cx = match &self.parent {
                    Some(sc) => Context::new().with_remote_span_context(sc.clone()),
                    None => Context::new(),
                };
                let wall = SystemTime::now() - self.started.elapsed();
                let builder = t.tracer.span_builder(name()).with_kind(SpanKind::Server).with_start_time(wall);
                State::Sampled { span: Box::new(t.tracer.build_with_context(builder, &cx)), wall }
            } else {
                let trace_id = self.parent.as_ref().map_or_else(random_trace_id, |p| p.trace_id().to_bytes());
                State::Unsampled { trace_id, span_id: random_span_id() }
            };
        }
        let (trace_id, span_id, sampled) = self.ids_sampled().unwrap_or_default();
        // The client's `tracestate` goes on (W3C; none when it sent none).
        let tracestate = match &self.parent {
            Some(p) if t.format == TraceFormat::W3c && p.trace_state() != &TraceState::NONE => {
                HeaderValue::from_str(&p.trace_state().header()).ok()
            }
            _ => None,
        };
        TraceParent { trace_id, span_id, sampled, format: t.format, tracestate }
    }

    fn ids_sampled(&self) -> Option<([u8; 16], [u8; 8], bool)> {
        match &self.state {
            State::Pending => None,
            State::Unsampled { trace_id, span_id } => Some((*trace_id, *span_id, false)),
            State::Sampled { span, .. } => {
                let sc = span.span_context();
                Some((sc.trace_id().to_bytes(), sc.span_id().to_bytes(), true))
            }
        }
    }

    /// The trace and server span ids (`None` before [`ServerTrace::start`]).
    pub fn ids(&self) -> Option<([u8; 16], [u8; 8])> {
        self.ids_sampled().map(|(t, s, _)| (t, s))
    }

    /// Whether the request is recorded (`false` before [`ServerTrace::start`]).
    pub fn is_sampled(&self) -> bool {
        matches!(self.state, State::Sampled { .. })
    }

    /// Record the request's outcome and end the span (created now if the request ended before
    /// reaching a route).
    pub fn finish(&mut self, t: &Tracing, f: &ServerFacts<'_>) {
        if matches!(self.state, State::Pending) {
            self.start(t, || f.method.to_string());
        }
        let State::Sampled { mut span, wall } = std::mem::replace(&mut self.state, State::Pending) else { return };
        if let Some(p) = f.route_pattern {
            span.update_name(format!("{} {p}", f.method));
        }
        let mut attrs = vec![
            KeyValue::new("http.request.method", f.method.to_string()),
            KeyValue::new("url.path", f.path.to_string()),
            KeyValue::new("url.scheme", f.scheme.to_string()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
            KeyValue::new("server.address", f.host.to_string()),
            KeyValue::new("client.address", f.client_ip.to_string()),
            KeyValue::new("network.protocol.version", f.protocol_version.to_string()),
            KeyValue::new("gatehouse.request_id", f.request_id.to_string()),
        ];
        for (k, v) in [
            ("http.route", f.route_pattern),
            ("gatehouse.route", f.route),
            ("gatehouse.service", f.service),
            ("gatehouse.consumer", f.consumer),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, v.to_string()));
            }
        }
        if let Some(e) = f.error {
            attrs.push(KeyValue::new("error.type", e.code()));
        } else if f.status >= 500 {
            attrs.push(KeyValue::new("error.type", f.status.to_string()));
        }
        span.set_attributes(attrs);
        if f.status >= 500 {
            span.set_status(Status::error(f.error.map_or("", |e| e.code())));
        }
        span.end_with_timestamp(wall + f.ended.saturating_duration_since(self.started));
    }
}

/// The CLIENT span of one upstream attempt.
#[derive(Debug)]
pub struct ClientSpan {
    span: Span,
    /// (trace id, span id), sampled.
    ids: (([u8; 16], [u8; 8]), bool),
}

impl ClientSpan {
    /// Record the attempt's report and end the span.
    pub fn finish(mut self, r: &AttemptReport) {
        let mut attrs = vec![KeyValue::new(
            "gatehouse.connection",
            match r.connection {
                Some(ConnectionUse::New) => "new",
                Some(ConnectionUse::Reused) => "reused",
                None => "none",
            },
        )];
        if let Some(c) = r.connect_time {
            attrs.push(KeyValue::new("gatehouse.connect_time_ms", c.as_secs_f64() * 1000.0));
        }
        match r.outcome {
            AttemptOutcome::Status(s) => {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
                if s >= 400 {
                    attrs.push(KeyValue::new("error.type", s.to_string()));
                    self.span.set_status(Status::error(""));
                }
            }
            AttemptOutcome::Failed(kind) => {
                attrs.push(KeyValue::new("error.type", kind.code()));
                self.span.set_status(Status::error(kind.code()));
            }
        }
        self.span.set_attributes(attrs);
        self.span.end();
    }
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

fn hex_val(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// W3C Trace Context (level 1): `version-traceid-parentid-flags`, ids lowercase hex, not all
/// zero; version `ff` is invalid; a later version may carry more fields after a `-`.
fn extract_w3c(h: &HeaderMap) -> Option<SpanContext> {
    let mut values = h.get_all(&TRACEPARENT).iter();
    let v = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() {
        return None;
    }
    let mut parts = v.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let version = hex_val(version).filter(|b| b.len() == 1)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace: [u8; 16] = hex_val(trace)?.try_into().ok()?;
    let span: [u8; 8] = hex_val(span)?.try_into().ok()?;
    let flags = hex_val(flags).filter(|b| b.len() == 1)?[0];
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    let state = h.get_all(&TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let state = if state.is_empty() { TraceState::NONE } else { TraceState::from_str(&state).unwrap_or_default() };
    Some(SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        TraceFlags::new(flags & 1),
        true,
        state,
    ))
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, padded on the left).
fn b3_trace_id(s: &str) -> Option<[u8; 16]> {
    let b = hex_val(&s.to_ascii_lowercase())?;
    let mut id = [0u8; 16];
    match b.len() {
        16 => id.copy_from_slice(&b),
        8 => id[8..].copy_from_slice(&b),
        _ => return None,
    }
    (id != [0; 16]).then_some(id)
}

fn b3_span_id(s: &str) -> Option<[u8; 8]> {
    let id: [u8; 8] = hex_val(&s.to_ascii_lowercase())?.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

/// B3, single (`b3: traceid-spanid[-sampled[-parentspanid]]`) or multi header (`X-B3-*`):
/// the context and whether it carries a sampling decision.
fn extract_b3(h: &HeaderMap) -> Option<(SpanContext, bool)> {
    let (trace, span, sampled) = if let Some(v) = h.get(&B3).and_then(|v| v.to_str().ok()) {
        let mut p = v.trim().split('-');
        let trace = b3_trace_id(p.next()?)?;
        let span = b3_span_id(p.next()?)?;
        let sampled = match p.next() {
            None => None,
            Some("1" | "d") => Some(true),
            Some("0") => Some(false),
            Some(_) => return None,
        };
        (trace, span, sampled)
    } else {
        let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let trace = b3_trace_id(get(&B3_TRACE_ID)?)?;
        let span = b3_span_id(get(&B3_SPAN_ID)?)?;
        let sampled = if get(&B3_FLAGS) == Some("1") {
            Some(true)
        } else {
            match get(&B3_SAMPLED) {
                None => None,
                Some("1" | "true") => Some(true),
                Some("0" | "false") => Some(false),
                Some(_) => return None,
            }
        };
        (trace, span, sampled)
    };
    let flags = if sampled == Some(true) { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let sc = SpanContext::new(TraceId::from_bytes(trace), SpanId::from_bytes(span), flags, true, TraceState::default());
    Some((sc, sampled.is_some()))
}

fn sc_ids(sc: &SpanContext) -> ([u8; 16], [u8; 8]) {
    (sc.trace_id().to_bytes(), sc.span_id().to_bytes())
}

/// The span processor: ending a span puts it in the bounded queue (never waits); a full queue
/// drops it and counts it.
struct Queue {
    tx: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("capacity", &self.tx.max_capacity()).finish()
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.metrics.spans_dropped(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The exporter and what an export may take.
struct Export {
    exporter: opentelemetry_otlp::SpanExporter,
    batch: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Export {
    /// Export `spans` (emptied); a batch the collector does not take within the timeout is
    /// dropped and counted.
    async fn send(&self, spans: &mut Vec<SpanData>) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        let out = std::mem::replace(spans, Vec::with_capacity(self.batch));
        match tokio::time::timeout(self.timeout, self.exporter.export(out)).await {
            Ok(Ok(())) => self.metrics.spans_exported(n),
            Ok(Err(e)) => {
                self.metrics.spans_dropped(n);
                tracing::debug!(error = %e, spans = n, "trace export failed");
            }
            Err(_) => {
                self.metrics.spans_dropped(n);
                tracing::debug!(spans = n, "trace export timed out");
            }
        }
    }
}

/// Export queued spans in batches: `batch` spans, or what arrived within `interval` of the
/// first of a batch; on a flush request, everything queued at once.
async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    mut flush: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    export: Export,
    interval: Duration,
) {
    let mut spans = Vec::with_capacity(export.batch);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = rx.recv() => {
                let Some(s) = s else { break };
                spans.push(s);
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + interval);
                if spans.len() >= export.batch {
                    export.send(&mut spans).await;
                    deadline = None;
                }
            }
            () = timer => {
                export.send(&mut spans).await;
                deadline = None;
            }
            Some(done) = flush.recv() => {
                while let Ok(s) = rx.try_recv() {
                    spans.push(s);
                    if spans.len() >= export.batch {
                        export.send(&mut spans).await;
                    }
                }
                export.send(&mut spans).await;
                deadline = None;
                let _ = done.send(());
            }
        }
    }
    export.send(&mut spans).await;
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
        let sc = extract_w3c(&headers(&[("traceparent", ok), ("tracestate", "a=1,b=2")])).unwrap();
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "a=1,b=2");
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
        let (sc, decided) =
            extract_b3(&headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")])).unwrap();
        assert_eq!(sc.trace_id().to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(sc.is_sampled() && decided);
        let (sc, decided) = extract_b3(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")])).unwrap();
        assert_eq!(sc.trace_id().to_string(), "000000000000000064fe8b2a57d3eff7");
        assert!(!decided);
        let (sc, decided) = extract_b3(&headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]))
        .unwrap();
        assert!(!sc.is_sampled() && decided);
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
