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
    Sampler, SamplingDecision, SdkTracer, SdkTracerProvider, ShouldSample as _, Span, SpanData, SpanExporter as _,
    SpanProcessor,
};
use tokio::sync::mpsc;

pub use gw_config::model::{OtlpProtocol, Propagation, Tracing as Settings};
use gw_core::{AttemptOutcome, AttemptReport, ConnectionUse, ErrorKind, TraceParent};
use gw_observability::Metrics;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The process's tracer: sampling, propagation and the export queue. Built once at start (it
/// spawns the export task on the current Tokio runtime).
pub struct Tracing {
    provider: SdkTracerProvider,
    flush: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    tracer: SdkTracer,
    propagation: Propagation,
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
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(s.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gatehouse");
        Ok(Arc::new(Tracing { provider, flush, tracer, propagation: s.propagation, ratio: s.sample_ratio }))
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
                    // No sampling decision from upstream: ours (the ratio), on the same trace id.
                    let r = Sampler::TraceIdRatioBased(self.ratio).should_sample(
                        None,
                        sc.trace_id(),
                        "",
                        &SpanKind::Server,
                        &[],
                        &[],
                    );
                    let flags = if r.decision == SamplingDecision::RecordAndSample {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    };
                    SpanContext::new(sc.trace_id(), sc.span_id(), flags, true, TraceState::default())
                }
            }),
        };
        let wall = SystemTime::now() - started.elapsed();
        Box::new(ServerTrace { parent, wall, started, span: None })
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
        let headers = format_headers(self.propagation, span.span_context(), None);
        ClientSpan { span, headers }
    }

    /// Put the trace context of `span` on an upstream request (replacing the client's).
    pub fn inject_span(&self, span: &ClientSpan, headers: &mut HeaderMap) {
        remove_trace_headers(self.propagation, headers);
        for (k, v) in &span.headers {
            headers.insert(k.clone(), v.clone());
        }
    }

    /// Put `parent`'s trace context on an upstream request (replacing the client's): for
    /// requests whose attempts get no span of their own (not sampled).
    pub fn inject_parent(&self, parent: &TraceParent, headers: &mut HeaderMap) {
        remove_trace_headers(self.propagation, headers);
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
    wall: SystemTime,
    started: Instant,
    span: Option<Span>,
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
    /// Create the server span (if not yet) and return the context upstream calls descend from.
    /// `name` is the span name (`GET /users/{id}`).
    pub fn start(&mut self, t: &Tracing, name: String) -> TraceParent {
        let span = self.span.get_or_insert_with(|| {
            let cx = match &self.parent {
                Some(sc) => Context::new().with_remote_span_context(sc.clone()),
                None => Context::new(),
            };
            t.tracer.build_with_context(
                t.tracer.span_builder(name).with_kind(SpanKind::Server).with_start_time(self.wall),
                &cx,
            )
        });
        let sc = span.span_context();
        let headers = format_headers(t.propagation, sc, None);
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
            headers: headers.into(),
        }
    }

    /// The trace and server span ids (`None` before the span exists).
    pub fn ids(&self) -> Option<([u8; 16], [u8; 8])> {
        self.span.as_ref().map(|s| (s.span_context().trace_id().to_bytes(), s.span_context().span_id().to_bytes()))
    }

    /// Record the request's outcome and end the span (created now if the request ended before
    /// reaching a route).
    pub fn finish(mut self: Box<Self>, t: &Tracing, f: &ServerFacts<'_>) {
        if self.span.is_none() {
            self.start(t, f.method.to_string());
        }
        let Some(mut span) = self.span.take() else { return };
        if !span.is_recording() {
            return;
        }
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
        span.end_with_timestamp(self.wall + f.ended.saturating_duration_since(self.started));
    }
}

/// The CLIENT span of one upstream attempt.
#[derive(Debug)]
pub struct ClientSpan {
    span: Span,
    headers: Vec<(HeaderName, HeaderValue)>,
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
    let state = TraceState::from_str(&state).unwrap_or_default();
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

fn remove_trace_headers(p: Propagation, h: &mut HeaderMap) {
    match p {
        Propagation::W3c => {
            h.remove(&TRACEPARENT);
        }
        Propagation::B3 | Propagation::B3Multi => {
            for n in [&B3, &B3_TRACE_ID, &B3_SPAN_ID, &B3_PARENT_SPAN_ID, &B3_SAMPLED, &B3_FLAGS] {
                h.remove(n);
            }
        }
    }
}

/// The headers that carry `sc` in format `p`.
fn format_headers(p: Propagation, sc: &SpanContext, _parent: Option<SpanId>) -> Vec<(HeaderName, HeaderValue)> {
    let (t, s) = (sc.trace_id(), sc.span_id());
    let v = |s: String| HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""));
    match p {
        Propagation::W3c => {
            let flags = if sc.is_sampled() { "01" } else { "00" };
            let mut out = vec![(TRACEPARENT.clone(), v(format!("00-{t}-{s}-{flags}")))];
            let state = sc.trace_state().header();
            if !state.is_empty() {
                out.push((TRACESTATE.clone(), v(state)));
            }
            out
        }
        Propagation::B3 => {
            let flag = if sc.is_sampled() { "1" } else { "0" };
            vec![(B3.clone(), v(format!("{t}-{s}-{flag}")))]
        }
        Propagation::B3Multi => vec![
            (B3_TRACE_ID.clone(), v(t.to_string())),
            (B3_SPAN_ID.clone(), v(s.to_string())),
            (B3_SAMPLED.clone(), HeaderValue::from_static(if sc.is_sampled() { "1" } else { "0" })),
        ],
    }
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
