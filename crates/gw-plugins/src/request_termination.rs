//! `request-termination`: answer every request with a fixed response; the upstream is never
//! called. Useful for maintenance windows and for blocking a route.

use bytes::Bytes;
use gw_config::plugins::RequestTermination as Conf;
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, Result, priority};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// The built plugin: the response is prepared once (its body is shared, not copied).
pub(crate) struct RequestTermination {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    add_request_id: bool,
}

impl RequestTermination {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        let status = StatusCode::from_u16(c.status).map_err(|e| e.to_string())?;
        let reply = match (&c.body, &c.message) {
            (Some(body), _) => {
                let ct = c.content_type.as_deref().unwrap_or("text/plain; charset=utf-8");
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).map_err(|e| format!("content_type: {e}"))?);
                Reply::full(status, headers, Bytes::from(body.clone()))
            }
            (None, msg) => {
                let message = msg
                    .clone()
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("request terminated").to_string());
                Reply::json(status, &serde_json::json!({ "message": message }))
            }
        };
        let Reply { status, headers, body, add_request_id } = reply;
        let body = body.whole().cloned().unwrap_or_default();
        Ok(RequestTermination { status, headers, body, add_request_id })
    }
}

#[gw_core::plugin]
impl Plugin for RequestTermination {
    fn name(&self) -> &'static str {
        "request-termination"
    }

    fn priority(&self) -> i32 {
        priority::REQUEST_TERMINATION
    }

    async fn access(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        let mut r = Reply::full(self.status, self.headers.clone(), self.body.clone());
        r.add_request_id = self.add_request_id;
        Ok(Flow::Respond(r))
    }
}
