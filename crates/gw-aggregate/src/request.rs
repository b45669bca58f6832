//! The gateway-owned descriptions exchanged with the executor: the client request it reads
//! values from, the request of one backend call, and what a backend answered.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::plan::Target;

/// What the executor needs of the client request (after routing and the access phase).
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    /// Method of the client request.
    pub method: Method,
    /// Route path parameters (`{id}` in the route's path pattern).
    pub params: Vec<(String, String)>,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Request header fields.
    pub headers: HeaderMap,
    /// The request body (read in full, within the route's body limit); forwarded only to calls
    /// with `body: client`.
    pub body: Bytes,
    /// The request id (`{request_id}`).
    pub request_id: Option<String>,
    /// The authenticated consumer's user name (`{consumer.username}`).
    pub consumer: Option<String>,
    /// Header fields added to every backend call: the request id header and the consumer
    /// identity headers the authentication set, so each backend sees who is calling.
    pub propagate: Vec<(HeaderName, HeaderValue)>,
}

impl ClientRequest {
    /// The first value of query parameter `name`, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if decode(k) == name {
                return Some(decode(v));
            }
        }
        None
    }

    /// Route parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Header field `name` (lowercase), when it is valid UTF-8; several fields are joined with
    /// `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut vals = self.headers.get_all(name).iter().map(|v| v.to_str().ok());
        let first = vals.next()??;
        let mut out = first.to_string();
        for v in vals {
            out.push_str(", ");
            out.push_str(v?);
        }
        Some(out)
    }
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// One backend call, described by the gateway: what the caller must send.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// Index of the call in the plan.
    pub index: usize,
    /// Name of the call (metrics label, access log).
    pub name: String,
    /// Where it goes.
    pub target: Target,
    /// Method.
    pub method: Method,
    /// Path and query, percent-encoded, checked (no dot segments, no backslashes).
    pub path_and_query: String,
    /// Header fields to send (the caller adds Host, framing and forwarding fields).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body (empty for none).
    pub body: Bytes,
    /// The call's own time limit (the caller may stop earlier; the executor enforces it too).
    pub timeout: Option<Duration>,
    /// Largest response body accepted: the caller stops reading past it and fails with
    /// `ErrorKind::ResponseTooLarge`.
    pub max_body_bytes: u64,
}

/// What a backend answered.
#[derive(Debug, Clone)]
pub struct CallResponse {
    /// Status.
    pub status: StatusCode,
    /// Header fields.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}
