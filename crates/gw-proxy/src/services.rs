//! Built-in services that answer without an upstream: `echo` and `static`.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};

use crate::head::Response;
use http_body::Body;
use http_body_util::BodyExt;

use gw_config::model::StaticResponse;
use gw_core::{Ctx, RequestHead};
use gw_error::Error;

use crate::body::{RequestBody, ResponseBody};

/// Bytes of the request body echoed back; the rest is counted only.
const ECHO_BODY_MAX: usize = 64 * 1024;

/// Answer with a JSON description of the request as the gateway would send it upstream.
pub(crate) async fn echo(
    head: &RequestHead,
    mut body: RequestBody,
    cx: &Ctx,
    listener: &str,
) -> Result<Response<ResponseBody>, Error> {
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::fault::client_body_failure)?;
        if let Some(d) = frame.data_ref() {
            total += d.len() as u64;
            let room = ECHO_BODY_MAX.saturating_sub(kept.len());
            kept.extend_from_slice(&d[..d.len().min(room)]);
        }
        if body.is_end_stream() {
            break;
        }
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &head.headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = serde_json::Value::Array(vec![first, v]);
            }
            None => {
                headers.insert(k.as_str().to_string(), v);
            }
        }
    }
    let doc = serde_json::json!({
        "method": head.method.as_str(),
        "path": head.uri.path(),
        "query": head.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&kept),
        "body_bytes": total,
        "client_ip": cx.client_ip.to_string(),
        "route": cx.route.as_ref().map(|r| r.name.to_string()),
        "service": cx.route.as_ref().map(|r| r.service.to_string()),
        "consumer": cx.consumer.as_ref().map(|c| c.username.clone()),
        "params": cx.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "listener": listener,
        "request_id": cx.request_id.to_str().unwrap_or(""),
    });
    let bytes = Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default());
    let mut r = Response::new(ResponseBody::full(bytes.clone()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

/// Answer with a configured fixed response.
pub(crate) fn static_response(s: &StaticResponse) -> Response<ResponseBody> {
    let body = Bytes::from(s.body.clone());
    let mut r = Response::new(ResponseBody::full(body.clone()));
    *r.status_mut() = s.status;
    for (k, v) in &s.headers {
        r.headers_mut().insert(k.clone(), v.clone());
    }
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}
