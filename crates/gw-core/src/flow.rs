//! The outcome of a phase hook.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// What the pipeline does after a hook.
#[derive(Debug)]
#[must_use = "a Flow says whether to answer the client now"]
pub enum Flow {
    /// Go on with the next plugin / phase.
    Continue,
    /// Stop and answer the client with this response (the `response` and `log` phases still run).
    Respond(Reply),
}

/// A complete, small response produced by the gateway itself (a plugin or an error).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// An empty response.
    pub fn empty(status: StatusCode) -> Self {
        Reply { status, headers: HeaderMap::new(), body: Bytes::new() }
    }

    /// A JSON response.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(value).unwrap_or_default();
        Reply { status, headers, body: Bytes::from(body) }
    }

    /// The gateway's standard error body: `{"error": code, "message": msg}`. The proxy adds the
    /// request id when it sends the reply.
    pub fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Reply::json(status, &serde_json::json!({ "error": code, "message": message }))
    }

    /// Add a header (builder style).
    #[must_use]
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}
