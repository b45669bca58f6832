//! The one error type of the Gatehouse request path.
//!
//! Every failure on the request path is an [`Error`]: it records *what* went wrong ([`ErrorKind`]),
//! *which side* caused it ([`Side`]: the downstream client, the upstream, or the gateway itself),
//! whether the request may safely be retried ([`Retry`]), and a short context string for logs.
//! The proxy turns an `Error` into a response in exactly one place, using [`Error::status`] and
//! [`ErrorKind::code`]; the context and cause go to the log and never to the client.
//!
//! ```
//! use gw_error::{Error, ErrorKind, OrErr};
//! let err = "x".parse::<u16>().or_err(ErrorKind::BadRequest, "parsing port").unwrap_err();
//! assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
//! ```

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the gateway [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which side of the proxy a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong, or was refused (4xx).
    Downstream,
    /// The upstream could not be reached or misbehaved (502/503/504).
    Upstream,
    /// The gateway itself failed (500) or refused to do work (503).
    Internal,
}

/// Whether a failed upstream attempt may be retried on another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing of the request reached the upstream: retry is always safe.
    Safe,
    /// The request may have been processed: retry only idempotent methods.
    IfIdempotent,
    /// Do not retry.
    Never,
}

/// What went wrong. Each kind maps to one HTTP status and one stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No route matched the request (404).
    NoRoute,
    /// The route matched but not the method (405).
    MethodNotAllowed,
    /// The request is malformed or ambiguous (400).
    BadRequest,
    /// The request URI is longer than allowed (414).
    UriTooLong,
    /// Request headers are too large or too many (431).
    HeadersTooLarge,
    /// The request body exceeds the route's limit (413).
    PayloadTooLarge,
    /// Credentials missing or invalid (401).
    Unauthorized,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// Rate limited (429).
    TooManyRequests,
    /// The client did not send the request in time (408).
    RequestTimeout,
    /// The route only accepts HTTPS (426).
    HttpsRequired,
    /// Connecting to the upstream failed (502).
    ConnectFailed,
    /// Connecting to the upstream timed out (504).
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (502).
    UpstreamTls,
    /// The upstream did not answer (or stalled) within the read timeout (504).
    UpstreamTimeout,
    /// Writing the request to the upstream stalled past the write timeout (504).
    UpstreamWriteTimeout,
    /// The whole request exceeded its total time budget (504).
    TotalTimeout,
    /// The upstream closed the connection or sent an invalid response (502).
    UpstreamProtocol,
    /// An upstream response body a plugin must edit is larger than the gateway buffers (502).
    /// Not the upstream's fault: never counted against its health.
    ResponseTooLarge,
    /// An upstream response body a plugin must edit cannot be parsed (e.g. invalid JSON under a
    /// JSON content type) (502). Not counted against the upstream's health.
    ResponseNotEditable,
    /// A backend call of an aggregate that the aggregate needs failed (an error status, or a
    /// value an aggregate call needed is missing from an earlier response) (502). The call's
    /// own connection failures and timeouts keep their kinds.
    AggregateCallFailed,
    /// No healthy target is available (503).
    NoHealthyUpstream,
    /// The upstream's circuit breaker is open (503).
    CircuitOpen,
    /// The per-target connection cap is reached (503).
    UpstreamOverloaded,
    /// The gateway sheds load (503).
    Overloaded,
    /// A dependency of the gateway (auth server, Redis) is unavailable (503).
    DependencyUnavailable,
    /// The downstream connection failed while streaming (logged only; status 499 in logs).
    DownstreamClosed,
    /// The request was still running when the gateway's `shutdown_timeout` ran out and its
    /// connection was closed (logged only; status 503 in logs when no response had started).
    ShutdownTimeout,
    /// A bug or unexpected state in the gateway (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status this kind maps to.
    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            NoRoute => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadRequest => StatusCode::BAD_REQUEST,
            UriTooLong => StatusCode::URI_TOO_LONG,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpsRequired => StatusCode::UPGRADE_REQUIRED,
            ConnectFailed | UpstreamTls | UpstreamProtocol | ResponseTooLarge | ResponseNotEditable
            | AggregateCallFailed => StatusCode::BAD_GATEWAY,
            ConnectTimeout | UpstreamTimeout | UpstreamWriteTimeout | TotalTimeout => StatusCode::GATEWAY_TIMEOUT,
            NoHealthyUpstream | CircuitOpen | UpstreamOverloaded | Overloaded | DependencyUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // 499 is nginx's "client closed request"; only ever seen in logs.
            DownstreamClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ShutdownTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable snake_case code, used in JSON error bodies, logs and metrics.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NoRoute => "no_route",
            MethodNotAllowed => "method_not_allowed",
            BadRequest => "bad_request",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "headers_too_large",
            PayloadTooLarge => "payload_too_large",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            TooManyRequests => "too_many_requests",
            RequestTimeout => "request_timeout",
            HttpsRequired => "https_required",
            ConnectFailed => "upstream_connect_failed",
            ConnectTimeout => "upstream_connect_timeout",
            UpstreamTls => "upstream_tls_failed",
            UpstreamTimeout => "upstream_timeout",
            UpstreamWriteTimeout => "upstream_write_timeout",
            TotalTimeout => "request_timeout_total",
            UpstreamProtocol => "upstream_protocol_error",
            ResponseTooLarge => "response_too_large",
            ResponseNotEditable => "response_not_editable",
            AggregateCallFailed => "aggregate_call_failed",
            NoHealthyUpstream => "no_healthy_upstream",
            CircuitOpen => "circuit_open",
            UpstreamOverloaded => "upstream_overloaded",
            Overloaded => "overloaded",
            DependencyUnavailable => "dependency_unavailable",
            DownstreamClosed => "downstream_closed",
            ShutdownTimeout => "shutdown_timeout",
            Internal => "internal_error",
        }
    }

    /// A short human message safe to show to clients (no internals).
    pub fn public_message(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NoRoute => "no route matched the request",
            MethodNotAllowed => "method not allowed",
            BadRequest => "bad request",
            UriTooLong => "request URI too long",
            HeadersTooLarge => "request header fields too large",
            PayloadTooLarge => "request body too large",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            TooManyRequests => "too many requests",
            RequestTimeout => "request timeout",
            HttpsRequired => "please use HTTPS",
            ConnectFailed | UpstreamTls | UpstreamProtocol => "bad gateway",
            ResponseTooLarge => "upstream response too large to edit",
            ResponseNotEditable => "upstream response could not be edited",
            AggregateCallFailed => "a backend call of the aggregate failed",
            ConnectTimeout | UpstreamTimeout | UpstreamWriteTimeout | TotalTimeout => "upstream timed out",
            NoHealthyUpstream => "no healthy upstream",
            CircuitOpen => "upstream unavailable (circuit open)",
            UpstreamOverloaded | Overloaded => "service overloaded",
            DependencyUnavailable => "service unavailable",
            DownstreamClosed => "client closed request",
            ShutdownTimeout => "the gateway is shutting down",
            Internal => "internal error",
        }
    }

    /// The side this kind belongs to by default.
    pub fn side(self) -> Side {
        use ErrorKind::*;
        match self {
            NoRoute | MethodNotAllowed | BadRequest | UriTooLong | HeadersTooLarge | PayloadTooLarge | Unauthorized
            | Forbidden | TooManyRequests | RequestTimeout | HttpsRequired | DownstreamClosed => Side::Downstream,
            ConnectFailed | ConnectTimeout | UpstreamTls | UpstreamTimeout | UpstreamWriteTimeout | TotalTimeout
            | UpstreamProtocol | NoHealthyUpstream | CircuitOpen | UpstreamOverloaded | ResponseNotEditable
            | AggregateCallFailed => Side::Upstream,
            Overloaded | DependencyUnavailable | ShutdownTimeout | Internal | ResponseTooLarge => Side::Internal,
        }
    }

    /// Whether this kind of failure counts against an upstream target's health.
    pub fn is_upstream_failure(self) -> bool {
        use ErrorKind::*;
        matches!(self, ConnectFailed | ConnectTimeout | UpstreamTls | UpstreamTimeout | UpstreamProtocol)
    }
}

/// Fields an error adds to the client's JSON error body, kept in the cause chain (first link)
/// so that errors without them stay as small as before; the cause they wrap stays the source.
#[derive(Debug)]
struct PublicFields {
    fields: Vec<(&'static str, String)>,
    inner: Option<BoxError>,
}

impl fmt::Display for PublicFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.fields.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

impl std::error::Error for PublicFields {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The gateway error: kind, side, retry safety, context for logs and an optional cause.
pub struct Error {
    kind: ErrorKind,
    side: Side,
    retry: Retry,
    context: Cow<'static, str>,
    cause: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`, with the kind's default side and no retry.
    pub fn new(kind: ErrorKind, context: impl Into<Cow<'static, str>>) -> Self {
        Error { kind, side: kind.side(), retry: Retry::Never, context: context.into(), cause: None }
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Set whether a retry is safe.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Override the side.
    #[must_use]
    pub fn with_side(mut self, side: Side) -> Self {
        self.side = side;
        self
    }

    /// Add a field to the client's JSON error body (beside `error` and `message`): a detail
    /// that is safe to show the client, such as which backend call of an aggregate failed.
    #[must_use]
    pub fn with_public_field(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let field = (name, value.into());
        self.cause = Some(match self.cause.take() {
            None => Box::new(PublicFields { fields: vec![field], inner: None }),
            Some(c) => match c.downcast::<PublicFields>() {
                Ok(mut p) => {
                    p.fields.push(field);
                    p
                }
                Err(c) => Box::new(PublicFields { fields: vec![field], inner: Some(c) }),
            },
        });
        self
    }

    /// The fields added with [`Error::with_public_field`].
    pub fn public_fields(&self) -> &[(&'static str, String)] {
        self.cause.as_deref().and_then(|c| c.downcast_ref::<PublicFields>()).map_or(&[], |p| p.fields.as_slice())
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether a retry is safe.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The status this error becomes.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The log context.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The underlying cause, if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    /// Whether `self` was caused, directly or transitively, by an error of type `E`.
    pub fn is_caused_by<E: std::error::Error + 'static>(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cur {
            if e.is::<E>() {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.code())?;
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
            let mut src = c.source();
            while let Some(s) = src {
                write!(f, ": {s}")?;
                src = s.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attach a kind and context to a foreign error at the call site (Pingora's `OrErr`).
pub trait OrErr<T> {
    /// Map the error to `kind` with a static context.
    fn or_err(self, kind: ErrorKind, context: &'static str) -> Result<T>;
    /// Map the error to `kind` with a context built lazily.
    fn or_err_with<F: FnOnce() -> String>(self, kind: ErrorKind, context: F) -> Result<T>;
}

impl<T, E: Into<BoxError>> OrErr<T> for std::result::Result<T, E> {
    fn or_err(self, kind: ErrorKind, context: &'static str) -> Result<T> {
        self.map_err(|e| Error::new(kind, context).with_cause(e))
    }

    fn or_err_with<F: FnOnce() -> String>(self, kind: ErrorKind, context: F) -> Result<T> {
        self.map_err(|e| Error::new(kind, context()).with_cause(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_expected_statuses() {
        assert_eq!(ErrorKind::NoRoute.status(), 404);
        assert_eq!(ErrorKind::ConnectFailed.status(), 502);
        assert_eq!(ErrorKind::NoHealthyUpstream.status(), 503);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::HeadersTooLarge.status(), 431);
        assert_eq!(ErrorKind::UriTooLong.status(), 414);
        assert_eq!(ErrorKind::DownstreamClosed.status().as_u16(), 499);
        assert_eq!(ErrorKind::ShutdownTimeout.status(), 503);
        assert_eq!(ErrorKind::ShutdownTimeout.side(), Side::Internal);
        assert_eq!(ErrorKind::ResponseTooLarge.status(), 502);
        assert_eq!(ErrorKind::ResponseTooLarge.code(), "response_too_large");
        assert!(!ErrorKind::ResponseTooLarge.is_upstream_failure());
        assert!(!ErrorKind::ResponseNotEditable.is_upstream_failure());
        assert_eq!(ErrorKind::AggregateCallFailed.status(), 502);
        assert_eq!(ErrorKind::AggregateCallFailed.code(), "aggregate_call_failed");
        assert!(!ErrorKind::AggregateCallFailed.is_upstream_failure());
    }

    #[test]
    fn display_chains_causes_and_is_caused_by_finds_them() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::new(ErrorKind::ConnectFailed, "connecting to 127.0.0.1:1").with_cause(io);
        assert_eq!(e.to_string(), "upstream_connect_failed: connecting to 127.0.0.1:1: refused");
        assert!(e.is_caused_by::<std::io::Error>());
        assert!(!e.is_caused_by::<std::fmt::Error>());
        assert_eq!(e.side(), Side::Upstream);
        assert_eq!(e.retry(), Retry::Never);
    }

    /// Public fields accumulate, keep the cause as the source, and add nothing to the size of
    /// an error.
    #[test]
    fn public_fields_ride_in_the_cause_chain() {
        let io = std::io::Error::other("refused");
        let e = Error::new(ErrorKind::ConnectFailed, "call").with_cause(io).with_public_field("call", "orders");
        let e = e.with_public_field("detail", "call \"orders\" failed");
        assert_eq!(
            e.public_fields(),
            &[("call", "orders".to_string()), ("detail", "call \"orders\" failed".to_string())]
        );
        assert!(e.is_caused_by::<std::io::Error>(), "{e}");
        assert!(e.to_string().ends_with(": refused"), "{e}");
        assert!(Error::new(ErrorKind::Internal, "x").public_fields().is_empty());
        assert!(std::mem::size_of::<Error>() <= 48, "{}", std::mem::size_of::<Error>());
    }
}
