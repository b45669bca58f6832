//! The executor: runs a [`Plan`] for one client request over an injected [`Caller`].
//!
//! * Calls start as soon as every call they depend on has answered, at most
//!   `max_concurrency` at once, in declaration order among the ready ones.
//! * Each call has its own time limit (`timeout`), and the whole aggregate a deadline.
//! * A failed **required** call ends the aggregate at once with its error (the other calls in
//!   flight are dropped, which cancels them). A failed **optional** call (and every call that
//!   needed its response) is left out; the answer then names them in the incomplete header.
//! * A backend answering 2xx with a body that is not JSON, over the call's `max_body_bytes`, or
//!   that cannot be merged (see [`crate::merge`]), always fails the aggregate with a 502: it is a
//!   broken contract, not an outage.
//! * Dropping the future returned by [`execute`] (the client went away) drops every call in
//!   flight: nothing keeps running for a client that left.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use gw_error::{Error, ErrorKind};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::merge::{merge, shape};
use crate::plan::{Call, CallBody, Plan};
use crate::request::{CallRequest, CallResponse, ClientRequest};
use crate::template::{Encoding, RenderError, Scope, check_path};

/// Calls one backend. The gateway implements it on its upstream exchange (balancing, health,
/// retries, circuit breaking, upstream TLS); tests implement it in-process or on a plain HTTP
/// client.
pub trait Caller: Send + Sync {
    /// Send `req` and read the whole response, at most `req.max_body_bytes` of body (beyond it:
    /// an error of kind [`ErrorKind::ResponseTooLarge`]). Dropping the future cancels the call.
    fn call(&self, req: CallRequest) -> impl Future<Output = Result<CallResponse, Error>> + Send;
}

/// What happened to one call (for the access log and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx with JSON that was merged.
    Ok {
        /// The backend's status.
        status: u16,
    },
    /// Failed: an error code (`upstream_timeout`, `aggregate_call_failed`, ...) and why.
    Failed {
        /// Stable code (an [`ErrorKind::code`]).
        code: &'static str,
        /// Short reason for the log.
        reason: String,
    },
    /// Never started (the aggregate ended first).
    NotStarted,
}

/// One call's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// Call name.
    pub name: String,
    /// Whether it was required.
    pub required: bool,
    /// What happened.
    pub outcome: Outcome,
    /// How long it ran (from start to answer), when it started.
    pub duration: Option<Duration>,
}

/// A successful (possibly incomplete) aggregate response.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// Status (200).
    pub status: StatusCode,
    /// Response header fields: `content-type`, and the incomplete header when calls failed.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The merged JSON document.
    pub body: Bytes,
    /// Names of the optional calls left out, in declaration order.
    pub incomplete: Vec<String>,
    /// Every call's outcome, in declaration order.
    pub calls: Vec<CallReport>,
}

/// A failed aggregate: the error, which call caused it, and every call's outcome.
#[derive(Debug)]
pub struct AggregateError {
    /// The error (its kind gives status and code).
    pub error: Error,
    /// The call that failed the aggregate, if one did.
    pub call: Option<String>,
    /// A message for the client naming what failed (no addresses or internals).
    pub detail: String,
    /// Every call's outcome, in declaration order.
    pub calls: Vec<CallReport>,
}

impl AggregateError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The JSON error body: `{"error", "message", "detail", "call"}`.
    pub fn body(&self) -> Bytes {
        let mut m = Map::new();
        m.insert("error".into(), self.error.kind().code().into());
        m.insert("message".into(), self.error.kind().public_message().into());
        m.insert("detail".into(), self.detail.clone().into());
        if let Some(c) = &self.call {
            m.insert("call".into(), c.clone().into());
        }
        Bytes::from(Value::Object(m).to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
}

/// Whether a content type is JSON (`application/json`, `*/*+json`).
fn is_json(ct: &str) -> bool {
    let mt = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mt == "application/json" || (mt.contains('/') && mt.ends_with("+json"))
}

/// Build the request of call `i`.
fn build_request(i: usize, c: &Call, scope: &Scope<'_>) -> Result<CallRequest, RenderError> {
    let client = scope.client;
    let raw_path = c.path.render(scope, Encoding::PathSegment, false)?.unwrap_or_default();
    // A path made bad by client values alone is the client's fault (400); one with a value from
    // a response fails the call.
    let mut path =
        check_path(&raw_path).map_err(|m| RenderError { client: c.path.refs().all(|s| s.is_client()), message: m })?;
    let mut first = true;
    for (name, t) in &c.query {
        if let Some(v) = t.render(scope, Encoding::Query, true)? {
            path.push(if first { '?' } else { '&' });
            first = false;
            path.extend(percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC));
            path.push('=');
            path.push_str(&v);
        }
    }
    let mut headers: Vec<(HeaderName, HeaderValue)> = client.propagate.clone();
    for (name, t) in &c.headers {
        if let Some(v) = t.render(scope, Encoding::Raw, true)? {
            let hv = HeaderValue::from_str(&v).map_err(|_| RenderError {
                client: t.refs().all(|s| s.is_client()),
                message: format!("header field {name} would not be a valid value"),
            })?;
            headers.retain(|(n, _)| n != name);
            headers.push((name.clone(), hv));
        }
    }
    let has = |h: &[(HeaderName, HeaderValue)], n: &HeaderName| h.iter().any(|(k, _)| k == n);
    let body = match &c.body {
        CallBody::None => Bytes::new(),
        CallBody::Client => {
            if let Some(ct) = client.headers.get(header::CONTENT_TYPE)
                && !has(&headers, &header::CONTENT_TYPE)
            {
                headers.push((header::CONTENT_TYPE, ct.clone()));
            }
            client.body.clone()
        }
        CallBody::Json(j) => {
            if !has(&headers, &header::CONTENT_TYPE) {
                headers.push((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
            }
            Bytes::from(j.render(scope)?.to_string())
        }
    };
    Ok(CallRequest {
        index: i,
        name: c.name.clone(),
        target: c.target.clone(),
        method: c.method.clone(),
        path_and_query: path,
        headers,
        body,
        timeout: c.timeout,
        max_body_bytes: c.max_body_bytes,
    })
}

async fn run_call<C: Caller>(caller: &C, req: CallRequest) -> (usize, Result<CallResponse, Error>, Duration) {
    let start = Instant::now();
    let i = req.index;
    let timeout = req.timeout;
    let name = req.name.clone();
    let fut = caller.call(req);
    let r = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(ErrorKind::UpstreamTimeout, format!("aggregate call {name:?} timed out"))),
        },
        None => fut.await,
    };
    (i, r, start.elapsed())
}

struct Run<'a> {
    plan: &'a Plan,
    state: Vec<State>,
    reports: Vec<CallReport>,
}

impl Run<'_> {
    /// Record a failure of call `i`; for a required call, the error that ends the aggregate.
    fn fail(&mut self, i: usize, err: Error, detail: String) -> Result<(), AggregateError> {
        self.state[i] = State::Failed;
        self.reports[i].outcome = Outcome::Failed { code: err.kind().code(), reason: detail.clone() };
        if self.plan.calls[i].required { Err(self.abort(err, Some(i), detail)) } else { Ok(()) }
    }

    fn abort(&self, error: Error, call: Option<usize>, detail: String) -> AggregateError {
        AggregateError {
            error,
            call: call.map(|i| self.plan.calls[i].name.clone()),
            detail,
            calls: self.reports.clone(),
        }
    }
}

/// Run the plan for one client request.
pub async fn execute<C: Caller>(plan: &Plan, caller: &C, client: &ClientRequest) -> Result<Aggregated, AggregateError> {
    let deadline = Instant::now() + plan.deadline;
    let n = plan.calls.len();
    let mut run = Run {
        plan,
        state: vec![State::Waiting; n],
        reports: plan
            .calls
            .iter()
            .map(|c| CallReport {
                name: c.name.clone(),
                required: c.required,
                outcome: Outcome::NotStarted,
                duration: None,
            })
            .collect(),
    };
    let mut responses: Vec<Option<Value>> = vec![None; n];
    let mut inflight = FuturesUnordered::new();
    loop {
        // Start what is ready; a failure can make others fail in turn, so repeat until stable.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                if run.state[i] != State::Waiting {
                    continue;
                }
                let c = &plan.calls[i];
                if let Some(&d) = c.deps.iter().find(|&&d| run.state[d] == State::Failed) {
                    let dep = &plan.calls[d].name;
                    run.fail(
                        i,
                        Error::new(ErrorKind::AggregateCallFailed, format!("call {dep:?} failed")),
                        format!("call {:?} needs call {dep:?}, which failed", c.name),
                    )?;
                    changed = true;
                    continue;
                }
                if !c.deps.iter().all(|&d| run.state[d] == State::Done) || inflight.len() >= plan.max_concurrency {
                    continue;
                }
                let scope = Scope { client, responses: &responses };
                match build_request(i, c, &scope) {
                    Ok(req) => {
                        run.state[i] = State::Running;
                        inflight.push(run_call(caller, req));
                    }
                    Err(e) if e.client => {
                        let detail = format!("call {:?}: {}", c.name, e.message);
                        return Err(run.abort(Error::new(ErrorKind::BadRequest, detail.clone()), Some(i), detail));
                    }
                    Err(e) => {
                        let detail = format!("call {:?}: {}", c.name, e.message);
                        run.fail(i, Error::new(ErrorKind::AggregateCallFailed, detail.clone()), detail)?;
                        changed = true;
                    }
                }
            }
        }
        if inflight.is_empty() {
            break;
        }
        let next = match tokio::time::timeout_at(deadline, inflight.next()).await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(_) => {
                // The deadline: whatever has not answered fails (required first, in order).
                drop(inflight);
                for i in 0..n {
                    if matches!(run.state[i], State::Waiting | State::Running) {
                        let started = run.state[i] == State::Running;
                        let detail =
                            format!("call {:?} had not answered at the aggregate's deadline", plan.calls[i].name);
                        if started {
                            run.reports[i].duration = Some(plan.deadline);
                        }
                        run.fail(i, Error::new(ErrorKind::TotalTimeout, detail.clone()), detail)?;
                    }
                }
                break;
            }
        };
        let (i, result, took) = next;
        run.reports[i].duration = Some(took);
        let c = &plan.calls[i];
        let resp = match result {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::ResponseTooLarge => {
                let detail = format!("call {:?} answered more than {} bytes", c.name, c.max_body_bytes);
                run.reports[i].outcome = Outcome::Failed { code: e.kind().code(), reason: detail.clone() };
                return Err(run.abort(e, Some(i), detail));
            }
            Err(e) => {
                let detail = format!("call {:?} failed: {}", c.name, e.kind().code());
                run.fail(i, e, detail)?;
                continue;
            }
        };
        if !resp.status.is_success() {
            let detail = format!("call {:?} answered {}", c.name, resp.status.as_u16());
            run.fail(i, Error::new(ErrorKind::AggregateCallFailed, detail.clone()), detail)?;
            continue;
        }
        if resp.body.len() as u64 > c.max_body_bytes {
            let detail = format!("call {:?} answered more than {} bytes", c.name, c.max_body_bytes);
            let e = Error::new(ErrorKind::ResponseTooLarge, detail.clone());
            run.reports[i].outcome = Outcome::Failed { code: e.kind().code(), reason: detail.clone() };
            return Err(run.abort(e, Some(i), detail));
        }
        let ct = resp.headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let parsed = if resp.status == StatusCode::NO_CONTENT {
            Ok(Value::Object(Map::new()))
        } else if ct.as_deref().is_some_and(|t| !is_json(t)) {
            Err(format!("call {:?} answered {}, not JSON", c.name, ct.as_deref().unwrap_or("")))
        } else {
            serde_json::from_slice::<Value>(&resp.body)
                .map_err(|e| format!("call {:?} answered a body that is not valid JSON ({e})", c.name))
        };
        match parsed {
            Ok(v) => {
                run.state[i] = State::Done;
                run.reports[i].outcome = Outcome::Ok { status: resp.status.as_u16() };
                responses[i] = Some(v);
            }
            Err(detail) => {
                let e = Error::new(ErrorKind::ResponseNotEditable, detail.clone());
                run.reports[i].outcome = Outcome::Failed { code: e.kind().code(), reason: detail.clone() };
                return Err(run.abort(e, Some(i), detail));
            }
        }
    }
    // Every call has settled: shape and merge in declaration order.
    let mut out = Map::new();
    let mut incomplete = Vec::new();
    for (i, c) in plan.calls.iter().enumerate() {
        match responses[i].take() {
            Some(v) if run.state[i] == State::Done => match shape(&c.shape, v) {
                Ok(m) => merge(&mut out, m),
                Err(e) => {
                    let detail = format!("call {:?}: {}", c.name, e.0);
                    run.reports[i].outcome =
                        Outcome::Failed { code: ErrorKind::ResponseNotEditable.code(), reason: detail.clone() };
                    return Err(run.abort(Error::new(ErrorKind::ResponseNotEditable, detail.clone()), Some(i), detail));
                }
            },
            // Unreachable by construction (a required failure returned above); never answer
            // without a required call.
            _ if c.required => {
                let detail = format!("call {:?} did not complete", c.name);
                return Err(run.abort(Error::new(ErrorKind::Internal, detail.clone()), Some(i), detail));
            }
            _ => incomplete.push(c.name.clone()),
        }
    }
    let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    if !incomplete.is_empty()
        && let Ok(v) = HeaderValue::from_str(&incomplete.join(","))
    {
        headers.push((plan.incomplete_header.clone(), v));
    }
    Ok(Aggregated {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(Value::Object(out).to_string()),
        incomplete,
        calls: run.reports,
    })
}

#[cfg(test)]
mod tests;
