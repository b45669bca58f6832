//! How bodies fail, and which side is to blame: the error types request and response bodies
//! fail with, below every body type (the HTTP/1.1 client and server, the body adapters), and
//! [`body_error_kind`], which reads the error kind (and so the status) off a failed body's chain.

use std::error::Error as StdError;
use std::fmt;

use gw_error::ErrorKind;

/// Boxed error of body streams.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body exceeded the route's limit.
#[derive(Debug)]
pub(crate) struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds the route's max_body_bytes")
    }
}

impl StdError for BodyTooLarge {}

/// Why a client's request body failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// Its framing is invalid (a malformed chunked body).
    Malformed,
    /// The client closed or reset its connection (or stream) before the body's end.
    Closed,
    /// The client sent nothing for `limits.body_read_timeout`.
    Timeout,
    /// More than the route's `max_body_bytes`.
    TooLarge,
}

impl BodyFault {
    /// The error kind (and so the status) this failure becomes.
    pub(crate) fn kind(self) -> ErrorKind {
        match self {
            BodyFault::Malformed => ErrorKind::BadRequest,
            BodyFault::Closed => ErrorKind::DownstreamClosed,
            BodyFault::Timeout => ErrorKind::RequestTimeout,
            BodyFault::TooLarge => ErrorKind::PayloadTooLarge,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            BodyFault::Malformed => 1,
            BodyFault::Closed => 2,
            BodyFault::Timeout => 3,
            BodyFault::TooLarge => 4,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<BodyFault> {
        Some(match c {
            1 => BodyFault::Malformed,
            2 => BodyFault::Closed,
            3 => BodyFault::Timeout,
            4 => BodyFault::TooLarge,
            _ => return None,
        })
    }
}

/// A client's request body failed: what the HTTP/1.1 server's decoder found, or the body
/// read timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientBodyError {
    pub(crate) fault: BodyFault,
    pub(crate) why: &'static str,
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why)
    }
}

impl StdError for ClientBodyError {}

/// The client's request body failed while streaming upstream (the wrapper [`RequestBody`] puts
/// around whatever the client's body reported).
#[derive(Debug)]
pub(crate) struct DownstreamBodyError(pub(crate) BoxError);

impl DownstreamBodyError {
    /// What kind of failure: as the gateway's own server classified it; other errors (hyper's
    /// HTTP/2 server: a reset stream) are a client that went away.
    pub(crate) fn fault(&self) -> BodyFault {
        self.0.downcast_ref::<ClientBodyError>().map_or(BodyFault::Closed, |e| e.fault)
    }
}

impl fmt::Display for DownstreamBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the client's request body: {}", self.0)
    }
}

impl StdError for DownstreamBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// The error kind of a failed body, from the error's chain: the client's request body (by its
/// [`BodyFault`], or over the route's limit), or else an upstream that stalled (504) or broke
/// its framing or connection (502).
pub(crate) fn body_error_kind(e: &(dyn StdError + 'static)) -> ErrorKind {
    let mut cur = Some(e);
    while let Some(e) = cur {
        // A body filter's own failure, or a failure an adapter already classified.
        if let Some(g) = e.downcast_ref::<gw_error::Error>() {
            return g.kind();
        }
        if e.is::<UpstreamReadTimeout>() {
            return ErrorKind::UpstreamTimeout;
        }
        if let Some(d) = e.downcast_ref::<DownstreamBodyError>() {
            return d.fault().kind();
        }
        if e.is::<BodyTooLarge>() {
            return ErrorKind::PayloadTooLarge;
        }
        cur = e.source();
    }
    ErrorKind::UpstreamProtocol
}

/// The upstream stopped sending the response body for longer than the read timeout.
#[derive(Debug)]
pub(crate) struct UpstreamReadTimeout;

impl fmt::Display for UpstreamReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream response body stalled past the read timeout")
    }
}

impl StdError for UpstreamReadTimeout {}

/// The error for a client's request body that failed while it was sent (malformed, stalled,
/// over the route's limit, or the client gone): the client's failure, never the upstream's.
pub(crate) fn client_body_failure(e: BoxError) -> gw_error::Error {
    let kind = body_error_kind(&*e);
    gw_error::Error::new(kind, "the client's request body failed").with_cause(e)
}
