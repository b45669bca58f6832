//! `request-size-limiting`: refuse bodies over a size with 413 (by `Content-Length` before
//! reading, or while streaming), optionally require `Content-Length` (411).

use gw_config::plugins::RequestSizeLimiting as Conf;
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, Result, Stage, priority};
use http::StatusCode;
use http::header::CONTENT_LENGTH;

pub(crate) struct RequestSizeLimiting {
    limit: u64,
    require_length: bool,
}

impl RequestSizeLimiting {
    pub(crate) fn new(c: &Conf) -> Self {
        RequestSizeLimiting { limit: c.allowed_payload_size.get(), require_length: c.require_content_length }
    }
}

#[gw_core::plugin]
impl Plugin for RequestSizeLimiting {
    fn name(&self) -> &'static str {
        "request-size-limiting"
    }

    fn priority(&self) -> i32 {
        priority::REQUEST_SIZE_LIMITING
    }

    fn stage(&self) -> Stage {
        Stage::PreAuth
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        match req.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(len) if len > self.limit => {
                return Ok(Flow::Respond(Reply::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    &format!("request body larger than {} bytes", self.limit),
                )));
            }
            None if self.require_length && cx.has_body => {
                return Ok(Flow::Respond(Reply::error(
                    StatusCode::LENGTH_REQUIRED,
                    "length_required",
                    "Content-Length required",
                )));
            }
            _ => {}
        }
        cx.max_body_bytes = Some(cx.max_body_bytes.map_or(self.limit, |l| l.min(self.limit)));
        Ok(Flow::Continue)
    }
}
