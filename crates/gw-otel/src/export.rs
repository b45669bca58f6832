//! The export side of tracing: the bounded queue finished spans wait in, the task that sends
//! them in batches, and the transports: OTLP/gRPC over tonic, or OTLP/HTTP (protobuf bodies)
//! over hyper's client (`opentelemetry-http`), both over TLS (hyper-rustls) for an `https://`
//! endpoint.
//!
//! The gateway keeps its spans in its own type ([`Finished`]) and writes a batch as one
//! `ExportTraceServiceRequest` ([`crate::otlp`]), encoded once: the SDK's exporter
//! (`opentelemetry-otlp`) cloned every batch for its retries and converted each span from the
//! SDK's `SpanData`, which cost about 18,000 instructions per exported span
//! (docs/benchmarks.md). Retries here resend the encoded bytes.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf as _, BufMut as _, Bytes};
use gw_core::{AttrValue, SpanRecord};
use gw_observability::Metrics;
use http::HeaderValue;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::otlp::Origin;
use crate::{OtlpProtocol, Settings};

/// What a span is (OTLP's span kinds the gateway uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Server,
    Client,
    Internal,
}

/// A finished span waiting for export: the gateway's own record, turned into OTLP's `Span` by
/// the export task (off the request path).
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    /// All zero: the root of its trace.
    pub(crate) parent_span_id: [u8; 8],
    /// The parent span is another process's (the client's).
    pub(crate) remote_parent: bool,
    pub(crate) kind: Kind,
    pub(crate) name: Cow<'static, str>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: Vec<(&'static str, AttrValue)>,
    /// A failed span: status `Error` with this message.
    pub(crate) error: Option<Cow<'static, str>>,
    /// The client's `tracestate` (validated when it was read).
    pub(crate) tracestate: Option<HeaderValue>,
}

impl From<SpanRecord> for Finished {
    fn from(s: SpanRecord) -> Finished {
        Finished {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_span_id: s.parent_span_id,
            remote_parent: false,
            kind: match s.kind {
                gw_core::SpanKind::Client => Kind::Client,
                gw_core::SpanKind::Internal => Kind::Internal,
            },
            name: s.name,
            start: s.start,
            end: s.end,
            attributes: s.attributes,
            error: s.error.map(Cow::Owned),
            tracestate: s.tracestate,
        }
    }
}

/// The export queue: a finished span goes in without waiting; a full queue drops it and
/// counts it. Also the sink of plugins' spans ([`gw_core::SpanSink`]).
///
/// Putting a span in takes an uncontended lock and, only for the first span of a batch and
/// for the span that fills one, a wake-up of the export task: the export task runs about
/// once per batch, not once per span (each wake-up of it is a cross-thread wake of another
/// runtime's worker).
pub(crate) struct Queue {
    pending: Arc<Pending>,
    metrics: Arc<Metrics>,
    /// Set on shutdown: spans are no longer taken.
    closed: AtomicBool,
}

/// The spans waiting for export, shared by the request path and the export task.
struct Pending {
    spans: std::sync::Mutex<Vec<Finished>>,
    /// `queue_size`: spans beyond it are dropped (and counted).
    capacity: usize,
    /// `batch_size`: a full batch is exported at once.
    batch: usize,
    /// Wakes the export task: a batch started (first span in an empty queue), a batch is
    /// full, or the tracer is gone.
    wake: tokio::sync::Notify,
    /// The tracer is gone (its last user ended): export what is left and stop.
    done: AtomicBool,
}

impl Pending {
    fn len(&self) -> usize {
        self.spans.lock().map_or(0, |q| q.len())
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Everything queued (the queue starts again empty, room for a batch allocated here,
    /// off the request path).
    fn take(&self) -> Vec<Finished> {
        let fresh = Vec::with_capacity(self.batch);
        match self.spans.lock() {
            Ok(mut q) if !q.is_empty() => std::mem::replace(&mut *q, fresh),
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("capacity", &self.pending.capacity).finish()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.pending.done.store(true, Ordering::Release);
        self.pending.wake.notify_one();
    }
}

impl Queue {
    /// Stop taking spans (those queued stay for a flush).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn push(&self, span: Finished) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let p = &*self.pending;
        let queued = match p.spans.lock() {
            Ok(mut q) if q.len() < p.capacity => {
                q.push(span);
                q.len()
            }
            // Full (or a panic poisoned the lock): the span is dropped, after the lock.
            _ => {
                self.metrics.spans_dropped(1);
                return;
            }
        };
        if queued == 1 || queued == p.batch {
            p.wake.notify_one();
        }
    }
}

impl gw_core::SpanSink for Queue {
    fn record(&self, s: SpanRecord) {
        self.push(Finished::from(s));
    }
}

/// A flush request: the export task answers once everything queued before it is sent.
pub(crate) type FlushRequest = oneshot::Sender<()>;

/// Start the export task on the current Tokio runtime: the queue spans go into, and the
/// channel of flush requests. `tls`: the client configuration for an `https://` endpoint.
pub(crate) fn start(
    s: &Settings,
    metrics: Arc<Metrics>,
    tls: Option<&rustls::ClientConfig>,
) -> Result<(Arc<Queue>, mpsc::Sender<FlushRequest>), String> {
    let transport = Transport::new(s, tls)?;
    let pending = Arc::new(Pending {
        spans: std::sync::Mutex::new(Vec::with_capacity(s.batch_size)),
        capacity: s.queue_size,
        batch: s.batch_size,
        wake: tokio::sync::Notify::new(),
        done: AtomicBool::new(false),
    });
    let (flush, flush_rx) = mpsc::channel(4);
    let queue = Arc::new(Queue { pending: pending.clone(), metrics: metrics.clone(), closed: AtomicBool::new(false) });
    let export = Export {
        transport,
        origin: Origin::new(&s.service_name),
        batch: s.batch_size,
        timeout: s.export_timeout,
        metrics,
    };
    tokio::spawn(export_loop(pending, flush_rx, export, s.export_interval));
    Ok((queue, flush))
}

/// An export request's bytes, and whether they are gzip-compressed (an HTTP body).
#[derive(Clone)]
struct Outgoing {
    body: Bytes,
    gzip: bool,
}

/// The exporter's `user-agent`.
const USER_AGENT: &str = concat!("gatehouse/", env!("CARGO_PKG_VERSION"));

/// The gRPC method spans are exported with.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How export requests reach the collector, and the headers each one carries.
struct Transport {
    kind: TransportKind,
    headers: http::HeaderMap,
    /// Requests gzip-compressed (`tracing.compression: gzip`).
    gzip: bool,
}

enum TransportKind {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http { client: Arc<dyn opentelemetry_http::HttpClient>, uri: http::Uri },
}

/// A TLS connector for `https://` endpoints (hyper-rustls over hyper's TCP connector), with
/// the gateway's client configuration; `sni` overrides the name verified.
fn tls_connector(
    tls: &rustls::ClientConfig,
    sni: Option<&str>,
    http2: bool,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    // hyper-rustls sets the ALPN protocols itself.
    let mut cfg = tls.clone();
    cfg.alpn_protocols.clear();
    let mut b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_only();
    if let Some(name) = sni {
        let name =
            rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| format!("tracing tls.sni: {e}"))?;
        b = b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    Ok(if http2 { b.enable_http2().wrap_connector(tcp) } else { b.enable_http1().wrap_connector(tcp) })
}

impl Transport {
    fn new(s: &Settings, tls: Option<&rustls::ClientConfig>) -> Result<Transport, String> {
        if tls.is_none() && s.endpoint.starts_with("https://") {
            return Err(format!("tracing endpoint {}: https needs TLS settings", s.endpoint));
        }
        let sni = s.tls.as_ref().and_then(|t| t.sni.as_deref());
        let kind = match s.protocol {
            OtlpProtocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                    .map_err(|e| format!("tracing endpoint {}: {e}", s.endpoint))?
                    .user_agent(USER_AGENT)
                    .map_err(|e| format!("tracing: {e}"))?
                    .timeout(s.export_timeout);
                // Connects on first use (and again after a failure), never at start.
                let channel = match tls {
                    Some(tls) => endpoint.connect_with_connector_lazy(tls_connector(tls, sni, true)?),
                    None => endpoint.connect_lazy(),
                };
                let grpc = tonic::client::Grpc::new(channel);
                TransportKind::Grpc(if s.gzip {
                    grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip)
                } else {
                    grpc
                })
            }
            OtlpProtocol::Http => {
                let uri = s.endpoint.parse().map_err(|e| format!("tracing endpoint {}: {e}", s.endpoint))?;
                // hyper's client (already in the data plane) rather than reqwest.
                let client: Arc<dyn opentelemetry_http::HttpClient> = match tls {
                    Some(tls) => Arc::new(opentelemetry_http::hyper::HyperClient::new(
                        tls_connector(tls, sni, false)?,
                        s.export_timeout,
                        None,
                    )),
                    None => {
                        Arc::new(opentelemetry_http::hyper::HyperClient::with_default_connector(s.export_timeout, None))
                    }
                };
                TransportKind::Http { client, uri }
            }
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &s.headers {
            let mut v =
                HeaderValue::from_str(value.expose()).map_err(|_| format!("tracing header {name}: invalid value"))?;
            v.set_sensitive(true);
            headers.append(name.clone(), v);
        }
        Ok(Transport { kind, headers, gzip: s.gzip })
    }

    /// An encoded request as it goes out (and again on a retry): gzip-compressed over HTTP when
    /// configured (over gRPC, tonic compresses the message).
    fn prepare(&self, body: Bytes) -> Outgoing {
        if !self.gzip || !matches!(self.kind, TransportKind::Http { .. }) {
            return Outgoing { body, gzip: false };
        }
        let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
        match std::io::Write::write_all(&mut z, &body).and_then(|()| z.finish()) {
            Ok(v) => Outgoing { body: Bytes::from(v), gzip: true },
            // Writing to memory does not fail; were it to, the request goes uncompressed.
            Err(_) => Outgoing { body, gzip: false },
        }
    }

    /// Send one encoded request: the spans the collector rejected (partial success), or why
    /// it failed and whether trying again may help.
    async fn send(&self, out: Outgoing) -> Result<u64, Failure> {
        let Outgoing { body, gzip } = out;
        let response = match &self.kind {
            TransportKind::Grpc(grpc) => {
                let mut grpc = grpc.clone();
                grpc.ready().await.map_err(|e| Failure::connection(&e))?;
                let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                let metadata = tonic::metadata::MetadataMap::from_headers(self.headers.clone());
                let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), body);
                match grpc.unary(request, path, Encoded).await {
                    Ok(r) => r.into_inner(),
                    Err(status) => return Err(Failure::grpc(&status)),
                }
            }
            TransportKind::Http { client, uri } => {
                let mut req = http::Request::new(body);
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = uri.clone();
                req.headers_mut().clone_from(&self.headers);
                req.headers_mut().insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
                if gzip {
                    req.headers_mut().insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                req.headers_mut()
                    .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
                let resp = client.send_bytes(req).await.map_err(|e| Failure::connection(&*e))?;
                let status = resp.status();
                if !status.is_success() {
                    // OTLP/HTTP: these are worth another try, other errors are not.
                    let retry = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    let delay = if retry { retry_after(resp.headers()) } else { None };
                    return Err(Failure { retry, message: format!("collector answered {status}"), delay });
                }
                ExportTraceServiceResponse::decode(resp.into_body()).unwrap_or_default()
            }
        };
        let rejected = response.partial_success.map_or(0, |p| p.rejected_spans);
        Ok(u64::try_from(rejected).unwrap_or(0))
    }
}

/// A failed export.
#[derive(Debug)]
struct Failure {
    /// The failure is transient (OTLP's retryable gRPC codes and HTTP statuses).
    retry: bool,
    message: String,
    /// How long the collector asked the exporter to wait before trying again (HTTP
    /// `Retry-After`, gRPC `RetryInfo`).
    delay: Option<Duration>,
}

/// The wait before the next try: the backoff with jitter (`jitter` in 0..1: 50% to 100% of
/// it), or the collector's delay when it asked for a longer one (plus up to 10%, so that a
/// cluster's nodes do not come back at the same instant). A delay is at least the backoff (a
/// zero or past one does not make the exporter hammer the collector) and at most an hour (no
/// arithmetic overflows, whatever the collector sends; `export_timeout` is shorter anyway).
fn retry_wait(delay: Option<Duration>, backoff: Duration, jitter: f64) -> Duration {
    let backoff = backoff.mul_f64(0.5 + jitter / 2.0);
    match delay {
        Some(d) => d.min(Duration::from_secs(3600)).mul_f64(1.0 + jitter / 10.0).max(backoff),
        None => backoff,
    }
}

/// An HTTP `Retry-After`: seconds, or a date.
fn retry_after(h: &http::HeaderMap) -> Option<Duration> {
    let v = h.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v).ok().map(|t| t.duration_since(SystemTime::now()).unwrap_or_default()),
    }
}

/// Whether `e` (or what caused it) is a TLS error: a certificate the gateway does not trust, a
/// handshake the collector refused. Trying again will not help.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        // An `io::Error`'s `source` skips the error it wraps: look at that one.
        next = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

impl Failure {
    /// A connection (or TLS handshake) that failed: transient, unless TLS refused it.
    fn connection(e: &(dyn std::error::Error + 'static)) -> Failure {
        Failure { retry: !is_tls_error(e), message: error_chain(e), delay: None }
    }

    fn grpc(s: &tonic::Status) -> Failure {
        use tonic::Code;
        if is_tls_error(s) {
            return Failure { retry: false, message: error_chain(s), delay: None };
        }
        let retry = matches!(
            s.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
        );
        // The collector's `RetryInfo` sets the wait; with one, RESOURCE_EXHAUSTED is worth
        // another try too (OTLP: the server says it can take the data later).
        let delay = tonic_types::StatusExt::get_details_retry_info(s).and_then(|r| r.retry_delay);
        let retry = retry || (s.code() == Code::ResourceExhausted && delay.is_some());
        Failure { retry, message: format!("{:?}: {}", s.code(), s.message()), delay }
    }
}

/// `e` and its causes, for the log.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        out.push_str(": ");
        out.push_str(&c.to_string());
        next = c.source();
    }
    out
}

/// tonic codec of an export: the request is already encoded (sent as is, and again on a
/// retry), the response is decoded with prost.
#[derive(Debug, Clone, Copy)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let len = src.remaining();
        ExportTraceServiceResponse::decode(src.take(len))
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("export response: {e}")))
    }
}

/// The transport, what an export may take, and the spans' origin.
struct Export {
    transport: Transport,
    origin: Origin,
    batch: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Export {
    /// Export `spans` in batches of at most `batch` (`retry`: try a batch again after a
    /// transient failure; not when flushing at shutdown, which has a deadline of its own).
    async fn send_all(&self, mut spans: Vec<Finished>, retry: bool) {
        while spans.len() > self.batch {
            let rest = spans.split_off(self.batch);
            self.send(std::mem::replace(&mut spans, rest), retry).await;
        }
        self.send(spans, retry).await;
    }

    /// Export one batch, trying again after a transient failure (after about 100 ms, then
    /// twice as long each time, with jitter so that a cluster's nodes do not retry in step)
    /// while `export_timeout` allows; a batch the collector did not take in that time is
    /// dropped and counted.
    async fn send(&self, spans: Vec<Finished>, retry: bool) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        let body = self.transport.prepare(self.origin.encode(&spans));
        drop(spans);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(100);
        let failure = loop {
            match tokio::time::timeout_at(deadline, self.transport.send(body.clone())).await {
                Ok(Ok(rejected)) => {
                    let rejected = rejected.min(n);
                    self.metrics.spans_exported(n - rejected);
                    if rejected > 0 {
                        self.metrics.spans_dropped(rejected);
                        tracing::debug!(rejected, spans = n, "the collector rejected spans");
                    }
                    return;
                }
                // Only when the try after the wait still fits in `export_timeout`.
                Ok(Err(f)) => {
                    let wait = retry_wait(f.delay, backoff, fastrand::f64());
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if !(retry && f.retry && wait + Duration::from_millis(50) < left) {
                        break f.message;
                    }
                    tracing::debug!(error = %f.message, spans = n, "trace export failed, trying again");
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                }
                Err(_) => break "timed out".to_string(),
            }
        };
        self.metrics.spans_dropped(n);
        tracing::debug!(error = %failure, spans = n, "trace export failed");
    }
}

/// Export queued spans in batches: a batch goes when it has `batch` spans or `interval` after
/// its first span arrived, whichever comes first; on a flush request, everything queued at
/// once. Idle (nothing queued) the task waits without a timer.
async fn export_loop(
    pending: Arc<Pending>,
    mut flush: mpsc::Receiver<FlushRequest>,
    export: Export,
    interval: Duration,
) {
    let mut flush_open = true;
    loop {
        let mut reply = None;
        if pending.len() == 0 {
            if pending.is_done() {
                break;
            }
            tokio::select! {
                () = pending.wake.notified() => {}
                r = flush.recv(), if flush_open => match r {
                    Some(done) => reply = Some(done),
                    None => flush_open = false,
                },
            }
            if reply.is_none() && pending.len() == 0 {
                continue;
            }
        }
        if reply.is_none() {
            // A batch has started: wait for it to fill, or for the interval to pass.
            let sleep = tokio::time::sleep(interval);
            tokio::pin!(sleep);
            while pending.len() < pending.batch && !pending.is_done() {
                tokio::select! {
                    () = &mut sleep => break,
                    () = pending.wake.notified() => {}
                    r = flush.recv(), if flush_open => match r {
                        Some(done) => {
                            reply = Some(done);
                            break;
                        }
                        None => flush_open = false,
                    },
                }
            }
        }
        // Flushing at shutdown: one attempt per batch (the flush has its own deadline).
        export.send_all(pending.take(), reply.is_none() && !pending.is_done()).await;
        if let Some(done) = reply {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait before a retry: the jittered backoff, or the collector's delay when longer; a
    /// zero, past or absurd delay neither hammers the collector nor overflows.
    #[test]
    fn retry_waits() {
        let b = Duration::from_millis(100);
        assert_eq!(retry_wait(None, b, 0.0), Duration::from_millis(50));
        assert_eq!(retry_wait(None, b, 1.0), b);
        assert_eq!(retry_wait(Some(Duration::from_secs(2)), b, 0.0), Duration::from_secs(2));
        assert_eq!(retry_wait(Some(Duration::from_secs(2)), b, 1.0), Duration::from_millis(2200));
        assert_eq!(
            retry_wait(Some(Duration::ZERO), b, 0.0),
            Duration::from_millis(50),
            "a zero delay waits the backoff"
        );
        assert_eq!(retry_wait(Some(Duration::MAX), b, 1.0), Duration::from_secs(3960));
        let mut h = http::HeaderMap::new();
        for (v, want) in [
            ("7", Some(Duration::from_secs(7))),
            ("18446744073709551615", Some(Duration::from_secs(u64::MAX))),
            ("99999999999999999999", None),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
        ] {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static(v));
            assert_eq!(retry_after(&h), want, "{v}");
        }
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120))).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(110) && d <= Duration::from_secs(120), "{d:?}");
    }

    /// Plugins' records keep their kind, error, parent and tracestate; their parent is local.
    #[test]
    fn plugin_records() {
        let start = SystemTime::now();
        let f = Finished::from(SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: [3; 8],
            name: Cow::Borrowed("redis EVALSHA"),
            kind: gw_core::SpanKind::Client,
            start,
            end: start,
            attributes: vec![("db.system.name", AttrValue::from("redis"))],
            error: Some("connection refused".into()),
            tracestate: Some(HeaderValue::from_static("a=1")),
        });
        assert_eq!(f.kind, Kind::Client);
        assert_eq!((f.trace_id, f.span_id, f.parent_span_id), ([1; 16], [2; 8], [3; 8]));
        assert!(!f.remote_parent);
        assert_eq!(f.error.as_deref(), Some("connection refused"));
        assert_eq!(f.tracestate.unwrap(), "a=1");
        assert_eq!(f.attributes, vec![("db.system.name", AttrValue::from("redis"))]);
    }
}
