//! `hmac-auth`: HTTP message signatures with a shared secret (the draft-cavage "Signing HTTP
//! Messages" format Kong uses):
//!
//! ```text
//! Authorization: hmac username="alice", algorithm="hmac-sha256", headers="date @request-target", signature="<base64>"
//! ```
//!
//! (or `Signature: keyId="alice", ...`). The signing string has one line per listed header,
//! `name: value`; `@request-target` / `(request-target)` is `<name>: <method lower> <path?query>` and
//! `request-line` is `<METHOD> <path?query> HTTP/1.1`. `Date` or `X-Date` must be signed, and
//! every signed one must be present once and within `clock_skew`: the time checked is always
//! one the signature covers (an unsigned `X-Date` added to a captured request changes nothing).
//! A signature is therefore valid for at most `2 x clock_skew`; with `reject_replays` it is
//! accepted once on a node within that window. With `validate_request_body`, a signed
//! `Digest: SHA-256=<base64>` must match the body.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use gw_config::plugins::HmacAuth as Conf;
use gw_core::{AuthOutcome, ConsumerInfo, Ctx, Flow, Hooks, Plugin, RequestHead, Result, priority};
use hmac::{Hmac, Mac};
use http::HeaderName;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::directory::Directory;
use crate::util::{ct_eq, invalid_credentials, missing_credentials, set_consumer};

pub(crate) struct HmacAuth {
    skew: Duration,
    algorithms: Vec<String>,
    enforce: Vec<String>,
    validate_body: bool,
    hide: bool,
    challenge: String,
    dir: Arc<Directory>,
    anonymous: Option<Arc<ConsumerInfo>>,
    /// Signatures accepted within their validity window (`reject_replays`).
    seen: Option<moka::sync::Cache<[u8; 32], ()>>,
}

/// Signatures remembered by `reject_replays`.
const REPLAY_CACHE: u64 = 100_000;

/// The parsed signature parameters.
struct Params {
    key_id: String,
    algorithm: String,
    headers: Vec<String>,
    signature: Vec<u8>,
    header: HeaderName,
}

/// Marker in `Ctx::vars`: the body digest still has to be checked.
#[derive(Clone)]
struct PendingDigest(Vec<u8>);

impl HmacAuth {
    pub(crate) fn new(c: &Conf, dir: Arc<Directory>) -> Self {
        HmacAuth {
            skew: c.clock_skew.get(),
            algorithms: c.algorithms.clone(),
            enforce: c.enforce_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            validate_body: c.validate_request_body,
            hide: c.hide_credentials,
            challenge: format!("hmac realm=\"{}\", headers=\"date @request-target\"", c.realm),
            anonymous: dir.anonymous(c.anonymous.as_deref()),
            dir,
            seen: c.reject_replays.then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(REPLAY_CACHE)
                    .time_to_live(c.clock_skew.get().saturating_mul(2) + Duration::from_secs(1))
                    .build()
            }),
        }
    }
}

fn parse_params(req: &RequestHead) -> Option<Option<Params>> {
    let (header, value) = if let Some(v) = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("hmac") && !scheme.eq_ignore_ascii_case("signature") {
            return None;
        }
        (http::header::AUTHORIZATION, rest.to_string())
    } else if let Some(v) = req.headers.get("signature").and_then(|v| v.to_str().ok()) {
        (HeaderName::from_static("signature"), v.to_string())
    } else {
        return None;
    };
    // From here on, the client meant to sign: malformed parameters are invalid credentials.
    let mut key_id = None;
    let mut algorithm = None;
    let mut headers = None;
    let mut signature = None;
    for part in value.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { return Some(None) };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "username" | "keyId" => key_id = Some(v),
            "algorithm" => algorithm = Some(v.to_ascii_lowercase()),
            "headers" => headers = Some(v.split_whitespace().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>()),
            "signature" => signature = base64::engine::general_purpose::STANDARD.decode(v).ok(),
            _ => {}
        }
    }
    Some(match (key_id, algorithm, signature) {
        (Some(key_id), Some(algorithm), Some(signature)) => Some(Params {
            key_id,
            algorithm,
            headers: headers.unwrap_or_else(|| vec!["date".into()]),
            signature,
            header,
        }),
        _ => None,
    })
}

fn signing_string(req: &RequestHead, headers: &[String]) -> Option<String> {
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut lines = Vec::with_capacity(headers.len());
    for h in headers {
        let line = match h.as_str() {
            "@request-target" | "(request-target)" => {
                format!("{h}: {} {target}", req.method.as_str().to_ascii_lowercase())
            }
            "request-line" => format!("{} {target} HTTP/1.1", req.method),
            name => {
                let values: Vec<&str> = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                if values.is_empty() {
                    return None;
                }
                format!("{name}: {}", values.join(", "))
            }
        };
        lines.push(line);
    }
    Some(lines.join("\n"))
}

fn sign(algorithm: &str, secret: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    Some(match algorithm {
        "hmac-sha256" => {
            let mut m = Hmac::<Sha256>::new_from_slice(secret).ok()?;
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        "hmac-sha384" => {
            let mut m = Hmac::<Sha384>::new_from_slice(secret).ok()?;
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        "hmac-sha512" => {
            let mut m = Hmac::<Sha512>::new_from_slice(secret).ok()?;
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => return None,
    })
}

impl HmacAuth {
    fn check(&self, req: &RequestHead, p: &Params) -> Option<usize> {
        if !self.algorithms.contains(&p.algorithm) {
            return None;
        }
        if self.enforce.iter().any(|e| !p.headers.contains(e)) {
            return None;
        }
        if self.validate_body && !p.headers.iter().any(|h| h == "digest") {
            return None;
        }
        // The time checked must be covered by the signature: each signed date field, and at
        // least one of them.
        let mut dated = false;
        let now = SystemTime::now();
        for name in ["date", "x-date"] {
            if !p.headers.iter().any(|h| h == name) {
                continue;
            }
            let mut values = req.headers.get_all(name).iter();
            let (Some(v), None) = (values.next(), values.next()) else { return None };
            let date = httpdate::parse_http_date(v.to_str().ok()?).ok()?;
            let diff = now.duration_since(date).or_else(|_| date.duration_since(now)).ok()?;
            if diff > self.skew {
                return None;
            }
            dated = true;
        }
        if !dated {
            return None;
        }
        let (consumer, secret) = self.dir.hmac(&p.key_id)?;
        let text = signing_string(req, &p.headers)?;
        let expected = sign(&p.algorithm, secret.expose().as_bytes(), text.as_bytes())?;
        if !ct_eq(&expected, &p.signature) {
            return None;
        }
        if let Some(seen) = &self.seen {
            // Atomic: of two concurrent uses of one signature, one is first.
            let mut h = Sha256::new();
            h.update(p.key_id.as_bytes());
            h.update([0]);
            h.update(&p.signature);
            if !seen.entry(h.finalize().into()).or_insert(()).is_fresh() {
                return None;
            }
        }
        Some(consumer)
    }
}

#[gw_core::plugin]
impl Plugin for HmacAuth {
    fn name(&self) -> &'static str {
        "hmac-auth"
    }

    fn priority(&self) -> i32 {
        priority::AUTH + 50
    }

    fn inactive(&self) -> Hooks {
        if self.validate_body { Hooks::NONE } else { Hooks::REQUEST_BODY }
    }

    fn anonymous(&self) -> Option<Arc<ConsumerInfo>> {
        self.anonymous.clone()
    }

    async fn authenticate(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<AuthOutcome> {
        let params = match parse_params(req) {
            None => return Ok(AuthOutcome::NoCredentials { challenge: missing_credentials(&self.challenge) }),
            Some(None) => return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge))),
            Some(Some(p)) => p,
        };
        let Some(consumer) = self.check(req, &params).and_then(|i| self.dir.consumer(i).cloned()) else {
            return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
        };
        if self.validate_body {
            let Some(expected) = req
                .headers
                .get("digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("SHA-256=").or_else(|| v.strip_prefix("sha-256=")))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            else {
                return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
            };
            cx.vars.insert(PendingDigest(expected));
        }
        set_consumer(cx, consumer, Some(&params.key_id));
        if self.hide {
            req.headers.remove(&params.header);
        }
        Ok(AuthOutcome::Authenticated)
    }

    /// Only a request this plugin authenticated with a digest to check.
    fn wants_request_body(&self, _req: &RequestHead, cx: &Ctx) -> bool {
        cx.vars.get::<PendingDigest>().is_some()
    }

    async fn request_body(&self, _req: &mut RequestHead, body: &mut Bytes, cx: &mut Ctx) -> Result<Flow> {
        if let Some(PendingDigest(expected)) = cx.vars.remove::<PendingDigest>() {
            let actual = Sha256::digest(body.as_ref());
            if !ct_eq(&actual, &expected) {
                return Ok(Flow::Respond(invalid_credentials(&self.challenge)));
            }
        }
        Ok(Flow::Continue)
    }
}
