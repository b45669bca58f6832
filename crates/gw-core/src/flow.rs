//! The outcome of a phase hook.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::Body;

/// What the pipeline does after a hook.
#[derive(Debug)]
#[must_use = "a Flow says whether to answer the client now"]
pub enum Flow {
    /// Go on with the next plugin / phase.
    Continue,
    /// Stop and answer the client with this response (the `response` and `log` phases still run).
    Respond(Reply),
}

/// A response produced by the gateway itself (a plugin or an error): a whole body (JSON, an
/// error, a fixed answer) or a streaming one ([`Reply::stream`], e.g. a cached response still
/// arriving from the upstream), sent frame by frame as it is produced.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers. A whole body's `Content-Length` is set by the proxy; a streaming body keeps
    /// the one given here (else it is framed by the protocol: chunked on HTTP/1.1).
    pub headers: HeaderMap,
    /// Body (whole, or streaming with optional trailers).
    pub body: Body,
    /// The body is a JSON object the gateway built ([`Reply::json`], [`Reply::error`]): the
    /// proxy adds the request's `"request_id"` to it when it sends the reply (in one place, for
    /// every plugin). `false` for bodies passed through as they are (e.g. an auth service's).
    pub add_request_id: bool,
}

impl Reply {
    /// An empty response.
    pub fn empty(status: StatusCode) -> Self {
        Reply { status, headers: HeaderMap::new(), body: Body::empty(), add_request_id: false }
    }

    /// A whole body, sent as it is.
    pub fn full(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        Reply { status, headers, body: Body::full(body), add_request_id: false }
    }

    /// A streaming body, sent frame by frame as `body` produces them (trailers included where
    /// the protocol carries them).
    pub fn stream(status: StatusCode, headers: HeaderMap, body: Body) -> Self {
        Reply { status, headers, body, add_request_id: false }
    }

    /// A JSON response. When `value` is an object, the proxy adds `"request_id"` to it when it
    /// sends the reply.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(value).unwrap_or_default();
        Reply { status, headers, body: Body::full(body), add_request_id: value.is_object() }
    }

    /// The gateway's standard error body: `{"error": code, "message": msg}`. The proxy adds
    /// `"request_id"` when it sends the reply.
    pub fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Reply::json(status, &serde_json::json!({ "error": code, "message": message }))
    }

    /// Add a header (builder style).
    #[must_use]
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The body with `"request_id": id` added, when [`Reply::add_request_id`] is set and the
    /// body is a whole JSON object without one; otherwise the body as it is.
    pub fn body_with_request_id(self, id: &str) -> Body {
        let Some(whole) = self.body.whole().filter(|_| self.add_request_id) else { return self.body };
        if whole.first() != Some(&b'{') {
            return self.body;
        }
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(whole) {
            Ok(mut m) if !m.contains_key("request_id") => {
                m.insert("request_id".into(), serde_json::Value::String(id.to_string()));
                serde_json::to_vec(&m).map_or(self.body, Body::full)
            }
            _ => self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(r: Reply, id: &str) -> Bytes {
        r.body_with_request_id(id).whole().cloned().unwrap_or_default()
    }

    /// JSON object bodies get the request id (escaped); other bodies are left alone.
    #[test]
    fn request_id_is_added_to_json_objects() {
        let r = Reply::error(StatusCode::FORBIDDEN, "forbidden", "no");
        let v: serde_json::Value = serde_json::from_slice(&with_id(r, "a\"b")).unwrap();
        assert_eq!(v, serde_json::json!({"request_id": "a\"b", "error": "forbidden", "message": "no"}));
        let empty = Reply::json(StatusCode::OK, &serde_json::json!({}));
        assert_eq!(&with_id(empty, "x")[..], b"{\"request_id\":\"x\"}");
        let nested = Reply::json(StatusCode::OK, &serde_json::json!({"a": {"request_id": 1}}));
        let v: serde_json::Value = serde_json::from_slice(&with_id(nested, "x")).unwrap();
        assert_eq!(v["request_id"], "x");
        let arr = Reply::json(StatusCode::OK, &serde_json::json!([1]));
        assert_eq!(&with_id(arr, "x")[..], b"[1]");
        let raw = Reply::full(StatusCode::FORBIDDEN, HeaderMap::new(), Bytes::from_static(b"{\"denied\":true}"));
        assert_eq!(&with_id(raw, "x")[..], b"{\"denied\":true}");
        let has = Reply::json(StatusCode::OK, &serde_json::json!({"request_id": "y"}));
        assert_eq!(&with_id(has, "x")[..], b"{\"request_id\":\"y\"}");
    }
}
