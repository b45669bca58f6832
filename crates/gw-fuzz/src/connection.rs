//! `request_connection`: the fuzz input is what a client sends on one connection to the
//! gateway's HTTP/1.1 server (`h1server::Connection`), over an in-memory duplex stream, in
//! pieces whose sizes follow the input's own bytes. The service counts the requests dispatched,
//! reads each body to its end (except for targets containing `skip`: then it drops the body
//! unread) and answers 200, or 400 when the body failed; an upgrade request whose target
//! contains `101` is answered `101 Switching Protocols` at once (body unread, as the pipeline
//! does when an upstream switches protocols) and the service reads the tunnel.
//!
//! A standalone reading of the same bytes ([`expect`]: the same head parser and body decoder,
//! request after request) says which requests the connection must dispatch, with which body,
//! and how the connection must end. Oracle:
//! * the requests dispatched are those of the standalone reading, in order, with the same
//!   method, target and body (data and trailers, or a failure) — all of them unless a body was
//!   left unread (the server may then close early);
//! * after a request whose body framing failed, no further request is dispatched and the
//!   connection ends (request smuggling otherwise);
//! * after a refused head, or a request that does not keep the connection alive, the
//!   connection ends; while it waits for more bytes, it stays open (a head that will be refused
//!   may wait for its blank line or the head limit before the server parses it);
//! * the client receives one well-framed response per answered request (parsed with the
//!   gateway's response parser), with the status the service gave, then the refusal if any;
//! * after a `101`, the connection is handed over: the tunnel carries exactly the bytes the
//!   client sent after the request, never a byte of the request's body (issue 17: an upgrade
//!   request's body must not be pushed into the tunnel).
//!
//! Time is paused (tokio's test clock): a lingering close costs no real time, and "still open"
//! means idle with no timer left but the harness's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gw_proxy::fuzzing::{
    BodyFraming, ChunkedDecoder, RequestBody, Step, parse_request, parse_response_head, take_upgrade,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rfc::show;

/// The server's limits for this target (the smallest head limit a configuration allows).
const MAX_HEAD: usize = 8192;
const MAX_FIELDS: usize = 100;

/// A request body as the service (or the standalone reading) saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySeen {
    Complete {
        data: Vec<u8>,
        trailers: Option<HeaderMap>,
    },
    /// The framing broke (the body reported an error).
    Failed,
    /// The service dropped it unread.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: Method,
    pub target: String,
    /// `None` while the body is still being read.
    pub body: Option<BodySeen>,
    /// Answered `101 Switching Protocols`.
    pub upgraded: bool,
}

/// Whether the service answers a request with `101` (when its head asked for an upgrade).
fn wants_101(target: &str) -> bool {
    target.contains("101")
}

/// How the standalone reading of the input ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Waiting for more bytes of a head (an idle keep-alive connection included).
    WaitingForHead,
    /// Waiting for more bytes of the last request's body.
    WaitingForBody,
    /// The last request's body framing failed: the connection must end.
    BodyFailed,
    /// The next head was refused with this status: the connection must end.
    Refused(u16),
    /// The next head is refused with this status once the server looks at it, which it does
    /// when a line end and an empty line or more than the head limit arrived, or earlier,
    /// depending on read boundaries (a bad request line without a blank line after it, say):
    /// the connection may end or wait; nothing further is dispatched.
    RefusedLater(u16),
    /// The last request does not keep the connection alive.
    Close,
    /// The last request was answered `101`: the tunnel must carry exactly these bytes.
    Upgraded(Vec<u8>),
}

/// Read `wire` as the server must: head, body, head, ... with the same parser and decoder.
pub fn expect(wire: &[u8]) -> (Vec<Seen>, End) {
    let mut buf = BytesMut::from(wire);
    let mut seen = Vec::new();
    // Bounded: each round consumes a head.
    loop {
        if buf.is_empty() {
            return (seen, End::WaitingForHead);
        }
        // The server parses once the bytes may hold a whole head (`may_hold_head`: a line end
        // and an empty line, past the empty lines a request may start with).
        let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
        let rest = &buf[start..];
        let looks =
            buf.len() > MAX_HEAD || rest.windows(2).any(|w| w == b"\n\n") || rest.windows(3).any(|w| w == b"\n\r\n");
        let h = match parse_request(&mut buf, MAX_HEAD, MAX_FIELDS) {
            Ok(Some(h)) => h,
            Ok(None) => return (seen, End::WaitingForHead),
            Err(r) if looks => return (seen, End::Refused(r.status.as_u16())),
            Err(r) => return (seen, End::RefusedLater(r.status.as_u16())),
        };
        let target = h.uri.to_string();
        let skip = target.contains("skip");
        let body = match h.framing {
            BodyFraming::None => Some(BodySeen::Complete { data: Vec::new(), trailers: None }),
            BodyFraming::Length(n) => {
                if (buf.len() as u64) < n {
                    None
                } else {
                    let data = buf.split_to(n as usize).to_vec();
                    Some(BodySeen::Complete { data, trailers: None })
                }
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::default();
                let (mut data, mut trailers) = (Vec::new(), None);
                loop {
                    match dec.step(&mut buf) {
                        Err(_) => break Some(BodySeen::Failed),
                        Ok(Step::Data(d)) => data.extend_from_slice(&d),
                        Ok(Step::Trailers(t)) => trailers = Some(t),
                        Ok(Step::End) => break Some(BodySeen::Complete { data, trailers }),
                        Ok(Step::More) => break None,
                    }
                    if dec.is_done() {
                        break Some(BodySeen::Complete { data, trailers });
                    }
                }
            }
            BodyFraming::UntilClose => unreachable!("requests are never read until close"),
        };
        if h.upgrade && wants_101(&target) {
            // Answered 101 with the body unread: the tunnel gets what follows the body, and
            // nothing when the body has not ended (every byte of it is the body's).
            let tunnel = if let Some(BodySeen::Complete { .. }) = body { buf.to_vec() } else { Vec::new() };
            seen.push(Seen { method: h.method, target, body: Some(BodySeen::Skipped), upgraded: true });
            return (seen, End::Upgraded(tunnel));
        }
        // The service drops a body it skips unread; the server still reads past it.
        let shown = if skip { Some(BodySeen::Skipped) } else { body.clone() };
        seen.push(Seen { method: h.method, target, body: shown, upgraded: false });
        match body {
            None => return (seen, End::WaitingForBody),
            Some(BodySeen::Failed) => return (seen, End::BodyFailed),
            Some(_) if !h.keep_alive => return (seen, End::Close),
            Some(_) => {}
        }
    }
}

/// The service: records each request and reads its body, then answers (or switches
/// protocols, reading the tunnel into `tunnel`).
fn service(
    log: Arc<Mutex<Vec<Seen>>>,
    tunnel: Arc<Mutex<Vec<u8>>>,
) -> impl FnMut(Request<RequestBody>) -> std::pin::Pin<Box<dyn Future<Output = Response<Bytes>> + Send>> + Send + 'static
{
    move |mut req: Request<RequestBody>| {
        let log = log.clone();
        let tunnel = tunnel.clone();
        Box::pin(async move {
            let target = req.uri().to_string();
            let i = {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.push(Seen { method: req.method().clone(), target: target.clone(), body: None, upgraded: false });
                l.len() - 1
            };
            if wants_101(&target)
                && let Some(up) = take_upgrade(&mut req)
            {
                tokio::spawn(async move {
                    let Ok(mut io) = up.wait().await else { return };
                    let mut b = [0u8; 16 * 1024];
                    while let Ok(n) = io.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                        tunnel.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&b[..n]);
                    }
                });
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l[i].body = Some(BodySeen::Skipped);
                l[i].upgraded = true;
                let mut resp = Response::new(Bytes::new());
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                return resp;
            }
            let body = if target.contains("skip") {
                drop(req);
                BodySeen::Skipped
            } else {
                let mut body = req.into_body();
                let (mut data, mut trailers) = (Vec::new(), None);
                loop {
                    match body.frame().await {
                        None => break BodySeen::Complete { data, trailers },
                        Some(Err(_)) => break BodySeen::Failed,
                        Some(Ok(f)) => match f.into_data() {
                            Ok(d) => data.extend_from_slice(&d),
                            Err(f) => trailers = f.into_trailers().ok(),
                        },
                    }
                }
            };
            let status = if body == BodySeen::Failed { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            log.lock().unwrap_or_else(|e| e.into_inner())[i].body = Some(body);
            let mut resp = Response::new(Bytes::from_static(b"answer"));
            *resp.status_mut() = status;
            resp
        })
    }
}

/// What happened on the connection.
#[derive(Debug)]
pub struct Run {
    pub dispatched: Vec<Seen>,
    /// The connection future finished (the server closed).
    pub ended: bool,
    /// What the client received.
    pub received: Vec<u8>,
    /// What the tunnel carried after a `101`.
    pub tunnel: Vec<u8>,
}

/// Serve `wire` on one connection, written in pieces whose sizes follow its bytes.
pub fn run(wire: &[u8]) -> Run {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let tunnel = Arc::new(Mutex::new(Vec::new()));
    let wire = wire.to_vec();
    let ended = rt.block_on({
        let log = log.clone();
        let received = received.clone();
        let tunnel = tunnel.clone();
        async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            let conn = tokio::spawn(gw_proxy::fuzzing::serve_h1(server, MAX_HEAD, MAX_FIELDS, service(log, tunnel)));
            let (mut rd, mut wr) = tokio::io::split(client);
            let reader = tokio::spawn(async move {
                let mut b = [0u8; 16 * 1024];
                while let Ok(n) = rd.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                    received.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&b[..n]);
                }
            });
            let mut at = 0;
            while at < wire.len() {
                let n = (1 + usize::from(wire[at]) * 7 % 97).min(wire.len() - at);
                if wr.write_all(&wire[at..at + n]).await.is_err() {
                    break;
                }
                at += n;
                tokio::task::yield_now().await;
            }
            // The client keeps its side open: the connection must end on its own where it must.
            // (Paused time: the runtime skips ahead to this deadline once everything is idle.)
            let ended = matches!(tokio::time::timeout(Duration::from_secs(3600), conn).await, Ok(Ok(_)));
            // Let the reader (and a tunnel's reader) take everything sent: it ends when the
            // server's side is gone, or everything is idle again.
            let _ = tokio::time::timeout(Duration::from_secs(3600), reader).await;
            drop(wr);
            ended
        }
    });
    let dispatched = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let received = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let tunnel = tunnel.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Run { dispatched, ended, received, tunnel }
}

/// The statuses of the responses in `received`, each parsed with the method of its request,
/// and whether the last one keeps the connection alive.
fn responses(received: &[u8], methods: &mut dyn Iterator<Item = Method>) -> Result<(Vec<u16>, bool), String> {
    let mut keep_alive = true;
    let mut buf = BytesMut::from(received);
    let mut statuses = Vec::new();
    while !buf.is_empty() {
        let method = methods.next().unwrap_or(Method::GET);
        // After a 101 the connection is a tunnel (and the parser refuses 101s: it is the
        // upstream client's).
        if buf.starts_with(b"HTTP/1.1 101 ") {
            statuses.push(101);
            keep_alive = false;
            break;
        }
        let h = match parse_response_head(&mut buf, &method) {
            Ok(Some(h)) => h,
            // Interim heads alone (a `100 Continue` sent for a body still arriving): the
            // parser consumed them, and the final response has not been sent yet.
            Ok(None) if buf.is_empty() => break,
            Ok(None) => return Err(format!("incomplete response head after {statuses:?}")),
            Err(e) => return Err(format!("malformed response after {statuses:?}: {e}")),
        };
        match h.framing {
            BodyFraming::None => {}
            BodyFraming::Length(n) => {
                if (buf.len() as u64) < n {
                    return Err(format!("response body shorter than its length after {statuses:?}"));
                }
                let _ = buf.split_to(n as usize);
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::default();
                while !dec.is_done() {
                    match dec.step(&mut buf) {
                        Ok(Step::Data(_) | Step::Trailers(_)) => {}
                        Ok(Step::End) => break,
                        Ok(Step::More) => return Err("incomplete chunked response body".into()),
                        Err(e) => return Err(format!("malformed chunked response body: {e}")),
                    }
                }
            }
            BodyFraming::UntilClose => buf.clear(),
        }
        statuses.push(h.status.as_u16());
        keep_alive = h.keep_alive;
    }
    Ok((statuses, keep_alive))
}

/// The fuzz target.
pub fn request_connection(wire: &[u8]) {
    let w = || show(wire);
    let (want, end) = expect(wire);
    let got = run(wire);
    let skipped = got.dispatched.iter().any(|s| s.body == Some(BodySeen::Skipped) && !s.upgraded);

    // The same requests, in order, with the same bodies.
    assert!(
        got.dispatched.len() <= want.len(),
        "{} requests dispatched, {} in the input (ends {end:?}): {:?} vs {:?}: {}",
        got.dispatched.len(),
        want.len(),
        got.dispatched,
        want,
        w()
    );
    for (i, (g, e)) in got.dispatched.iter().zip(&want).enumerate() {
        assert_eq!(
            (&g.method, &g.target, g.upgraded),
            (&e.method, &e.target, e.upgraded),
            "request {i} differs: {}",
            w()
        );
        if g.body.is_some() || !got.ended {
            assert_eq!(g.body, e.body, "request {i}'s body differs: {}", w());
        }
    }
    if !skipped {
        assert_eq!(
            got.dispatched.len(),
            want.len(),
            "requests dispatched {:?}, expected {want:?}: {}",
            got.dispatched,
            w()
        );
    }

    // How the connection ends.
    match &end {
        End::BodyFailed | End::Refused(_) | End::Close => {
            assert!(got.ended, "the connection stays open after {end:?} (dispatched {:?}): {}", got.dispatched, w());
        }
        End::Upgraded(tunnel) => {
            assert!(got.ended, "the connection was not handed over after a 101: {}", w());
            assert_eq!(
                show(&got.tunnel),
                show(tunnel),
                "the tunnel carried other bytes than those after the request: {}",
                w()
            );
        }
        End::WaitingForHead | End::WaitingForBody if !skipped => {
            assert!(!got.ended, "the connection closed while waiting ({end:?}): {}", w());
        }
        _ => {}
    }

    // One well-framed response per answered request, then the refusal.
    let mut methods = got.dispatched.iter().map(|s| s.method.clone());
    let (statuses, last_keeps_alive) = match responses(&got.received, &mut methods) {
        Ok(s) => s,
        Err(e) => panic!("{e}; received {}: input {}", show(&got.received), w()),
    };
    let mut expected: Vec<u16> = got
        .dispatched
        .iter()
        .filter_map(|s| match &s.body {
            _ if s.upgraded => Some(101),
            Some(BodySeen::Failed) => Some(400),
            Some(_) => Some(200),
            None => None,
        })
        .collect();
    // A body the service skipped whose end had not arrived yet ends the connection after its
    // response, which says so (`Connection: close`): the next head is then never read, and
    // its refusal never sent. Nothing may follow a response that said it was the last.
    let closed_after_skip = skipped && got.ended && statuses.len() == expected.len() && !last_keeps_alive;
    match end {
        End::Refused(status) if got.dispatched.len() == want.len() && !closed_after_skip => expected.push(status),
        End::RefusedLater(status) if got.ended && got.dispatched.len() == want.len() && !closed_after_skip => {
            expected.push(status);
        }
        _ => {}
    }
    assert_eq!(statuses, expected, "responses received: {}", w());
}
