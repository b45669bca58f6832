//! Services of `type: aggregate` (`gw_aggregate`): one client request fanned out to backend
//! calls through the gateway's own exchange ([`gw_core::Upstreams`]: a named proxy service's
//! balancing, health checks, retries, circuit breaker, timeouts and upstream TLS; or a URL's
//! pooled origin), their JSON answers merged into one response. Authentication and the other
//! access-phase plugins ran once on the client request before this; the request id and the
//! consumer's headers go to every call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Version};

use crate::head::Response;
use http_body::Body as _;

use gw_aggregate::{CallReport, CallRequest, CallResponse, Caller, ClientRequest, Outcome, Plan, Target};
use gw_core::{Body, Ctx, RequestHead, Upstreams};
use gw_error::{Error, ErrorKind};

use crate::body::{RequestBody, ResponseBody};
use crate::runtime::Runtime;

/// Largest client body handed to calls that forward it (it is buffered: several calls may
/// send it).
const MAX_CLIENT_BODY: usize = 8 << 20;

/// The [`Caller`] of the gateway: every call through [`Upstreams`].
struct GatewayCaller<'a> {
    upstreams: &'a Upstreams,
}

impl Caller for GatewayCaller<'_> {
    async fn call(&self, req: CallRequest) -> Result<CallResponse, Error> {
        let CallRequest { target, method, path_and_query, headers, body, timeout, max_body_bytes, .. } = req;
        let mut map = HeaderMap::with_capacity(headers.len() + 1);
        for (k, v) in headers {
            map.append(k, v);
        }
        let body = if body.is_empty() { Body::empty() } else { Body::full(body) };
        let uri = |s: &str| s.parse().map_err(|e| Error::new(ErrorKind::Internal, "aggregate call URL").with_cause(e));
        let answer = match &target {
            Target::Service { name, .. } => {
                let head = RequestHead { method, uri: uri(&path_and_query)?, version: Version::HTTP_11, headers: map };
                self.upstreams.send(name, head, body).await?
            }
            Target::Url(base) => {
                let head = RequestHead {
                    method,
                    uri: uri(&format!("{}{path_and_query}", base.trim_end_matches('/')))?,
                    version: Version::HTTP_11,
                    headers: map,
                };
                // The executor bounds the call by its own time limit; this one bounds each
                // wait of the exchange (connect, response head, body stalls).
                let limit = timeout.unwrap_or(Duration::from_secs(60));
                self.upstreams.send_url(head, body, limit).await?
            }
        };
        let cap = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
        let collected = answer.body.collect(cap).await?;
        Ok(CallResponse { status: answer.head.status, headers: answer.head.headers, body: collected.data })
    }
}

/// Answer `head` with the aggregate `plan`.
pub(crate) async fn serve(
    head: &RequestHead,
    body: RequestBody,
    plan: &Plan,
    rt: &Arc<Runtime>,
    upstreams: &Upstreams,
    metrics: &gw_observability::Metrics,
    cx: &mut Ctx,
) -> Result<Response<ResponseBody>, Error> {
    let wants_body = plan.calls.iter().any(|c| matches!(c.body, gw_aggregate::plan::CallBody::Client));
    let client_body = if wants_body { read_body(body).await? } else { Bytes::new() };
    // What every call carries: the request id and the consumer's identity headers (set on
    // `head` by the pipeline).
    let mut propagate = Vec::new();
    for v in head.headers.get_all(&rt.gateway.request_id_header) {
        propagate.push((rt.gateway.request_id_header.clone(), v.clone()));
    }
    for name in gw_core::identity::RESERVED {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
        for v in head.headers.get_all(&name) {
            propagate.push((name.clone(), v.clone()));
        }
    }
    let client = ClientRequest {
        method: head.method.clone(),
        params: cx.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        query: head.uri.query().map(str::to_owned),
        headers: head.headers.clone(),
        body: client_body,
        request_id: cx.request_id.to_str().ok().map(str::to_owned),
        consumer: cx.consumer.as_ref().map(|c| c.username.clone()),
        propagate,
    };
    // Calls of a traced request carry its trace context (and are traced under it).
    let traced = cx.trace.clone().map(|t| upstreams.with_trace(t));
    let caller = GatewayCaller { upstreams: traced.as_ref().unwrap_or(upstreams) };
    let result = gw_aggregate::execute(plan, &caller, &client).await;
    let service = cx.route.as_ref().map_or("", |r| &*r.service);
    let reports = match &result {
        Ok(a) => &a.calls,
        Err(e) => &e.calls,
    };
    for c in reports {
        let outcome = match &c.outcome {
            Outcome::Ok { status } => class(*status),
            Outcome::Failed { code, .. } => code,
            Outcome::NotStarted => "not_started",
        };
        metrics.aggregate_call(service, &c.name, outcome, c.duration);
    }
    cx.vars.insert(Calls(summary(reports)));
    match result {
        Ok(a) => {
            let mut resp = Response::new(ResponseBody::full(a.body.clone()));
            *resp.status_mut() = a.status;
            for (k, v) in a.headers {
                resp.headers_mut().append(k, v);
            }
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
            Ok(resp)
        }
        Err(e) => {
            let mut err = e.error.with_public_field("detail", e.detail);
            if let Some(call) = e.call {
                err = err.with_public_field("call", call);
            }
            Err(err)
        }
    }
}

/// A status class as a metric label.
fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The client's request body, whole (several calls may send it), at most [`MAX_CLIENT_BODY`].
async fn read_body(mut body: RequestBody) -> Result<Bytes, Error> {
    use http_body_util::BodyExt;
    let mut out = bytes::BytesMut::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(crate::fault::client_body_failure)?;
        if let Some(d) = frame.data_ref() {
            if out.len() + d.len() > MAX_CLIENT_BODY {
                return Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("aggregate request body over {MAX_CLIENT_BODY} bytes"),
                ));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out.freeze())
}

/// The calls of an aggregate, for the access log line (in `Ctx::vars`).
#[derive(Clone)]
pub(crate) struct Calls(pub(crate) String);

/// The calls of one aggregate for the access log: `name:outcome:ms` each, comma-separated
/// (`user:200:12,orders:upstream_timeout:800,news:-`).
fn summary(calls: &[CallReport]) -> String {
    let mut out = String::new();
    for c in calls {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&c.name);
        out.push(':');
        match &c.outcome {
            Outcome::Ok { status } => out.push_str(&status.to_string()),
            Outcome::Failed { code, .. } => out.push_str(code),
            Outcome::NotStarted => out.push_str("not_started"),
        }
        if let Some(d) = c.duration {
            out.push(':');
            out.push_str(&d.as_millis().to_string());
        }
    }
    out
}
