//! Tracing facts the gateway shares with plugins: the trace context upstream calls descend
//! from, and a report per upstream attempt. Gateway-owned types: the exporter (`gw-otel`)
//! reads these rather than the HTTP engine's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ErrorKind;

/// The trace context a request's upstream calls descend from (its server span): ids, the
/// sampling decision, and the headers that carry it in the configured format.
#[derive(Debug, Clone)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id of the request's server span.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded.
    pub sampled: bool,
    /// The trace context headers for a call made directly under the server span (e.g. an
    /// authorization sub-request), in the configured format (`traceparent`/`tracestate` or B3).
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl TraceParent {
    /// Put the trace context headers on a request to another service (replacing any there).
    pub fn inject(&self, headers: &mut HeaderMap) {
        for (k, v) in self.headers.iter() {
            headers.insert(k.clone(), v.clone());
        }
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

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
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
