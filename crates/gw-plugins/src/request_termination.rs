//! `request-termination`: answer every request with a fixed response; the upstream is never
//! called. Useful for maintenance windows and for blocking a route.

use bytes::Bytes;
use gw_config::plugins::RequestTermination as Conf;
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, Result, priority};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// The built plugin: the response is prepared once.
pub(crate) struct RequestTermination {
    reply: Reply,
}

impl RequestTermination {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        let status = StatusCode::from_u16(c.status).map_err(|e| e.to_string())?;
        let reply = match (&c.body, &c.message) {
            (Some(body), _) => {
                let ct = c.content_type.as_deref().unwrap_or("text/plain; charset=utf-8");
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).map_err(|e| format!("content_type: {e}"))?);
                Reply { status, headers, body: Bytes::from(body.clone()), add_request_id: false }
            }
            (None, msg) => {
                let message = msg
                    .clone()
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("request terminated").to_string());
                Reply::json(status, &serde_json::json!({ "message": message }))
            }
        };
        Ok(RequestTermination { reply })
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
        Ok(Flow::Respond(self.reply.clone()))
    }
}
