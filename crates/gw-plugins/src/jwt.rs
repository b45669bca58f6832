//! `jwt`: JSON Web Tokens signed with a consumer's key (selected by a claim, `iss` by default)
//! or with a key of a JWKS (selected by `kid`).
//!
//! Every key is pinned to one algorithm: the token's `alg` must be that algorithm, so `none` and
//! HS/RS confusion (an RSA public key used as an HMAC secret) are impossible. Symmetric keys are
//! never taken from a JWKS. Tokens larger than `max_token_bytes` are refused before parsing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use gw_config::plugins::Jwt as Conf;
use gw_core::{AuthOutcome, Body, ConsumerInfo, Ctx, Plugin, RequestHead, Result, Upstreams, priority};
use http::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::directory::{Directory, algorithm};
use crate::util::{
    header_name, invalid_credentials, missing_credentials, query_pairs, remove_query_params, set_consumer,
};

const CHALLENGE: &str = "Bearer realm=\"gatehouse\"";

pub(crate) struct JwtPlugin {
    headers: Vec<HeaderName>,
    query: Vec<String>,
    cookies: Vec<String>,
    key_claim: String,
    jwks: Option<Arc<Jwks>>,
    consumer_claim: Option<String>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    required: Vec<String>,
    leeway: u64,
    max_lifetime: Option<u64>,
    max_bytes: usize,
    forward: Vec<(String, HeaderName)>,
    hide: bool,
    dir: Arc<Directory>,
    anonymous: Option<Arc<ConsumerInfo>>,
}

/// Where the token was found (to remove it when hiding credentials).
enum Source {
    Header(HeaderName),
    Query,
    Cookie(String),
}

impl JwtPlugin {
    pub(crate) fn new(c: &Conf, dir: Arc<Directory>) -> Result<Self, String> {
        let jwks = match &c.jwks {
            Some(j) => {
                let algs: Vec<Algorithm> = match &j.algorithms {
                    Some(a) => a.iter().filter_map(|n| algorithm(n)).collect(),
                    None => vec![Algorithm::RS256],
                };
                Some(Arc::new(Jwks::new(
                    j.url.clone(),
                    j.cache_ttl.as_ref().map(|d| d.get()).unwrap_or(Duration::from_secs(300)),
                    j.timeout.as_ref().map(|d| d.get()).unwrap_or(Duration::from_secs(2)),
                    algs,
                )))
            }
            None => None,
        };
        Ok(JwtPlugin {
            headers: c.header_names.iter().map(|n| header_name(n)).collect::<Result<_, _>>()?,
            query: c.query_param_names.clone(),
            cookies: c.cookie_names.clone(),
            key_claim: c.key_claim.clone(),
            jwks,
            consumer_claim: c.consumer_claim.clone(),
            issuers: c.issuers.clone(),
            audiences: c.audiences.clone(),
            required: c.required_claims.clone().unwrap_or_else(|| vec!["exp".into()]),
            leeway: c.leeway.as_ref().map(|d| d.get().as_secs()).unwrap_or(30),
            max_lifetime: c.maximum_expiration.as_ref().map(|d| d.get().as_secs()),
            max_bytes: c.max_token_bytes.as_ref().map(|b| b.get() as usize).unwrap_or(8192),
            forward: c
                .forward_claims
                .iter()
                .map(|(k, h)| Ok((k.clone(), header_name(h)?)))
                .collect::<Result<_, String>>()?,
            hide: c.hide_credentials,
            anonymous: dir.anonymous(c.anonymous.as_deref()),
            dir,
        })
    }

    fn find(&self, req: &RequestHead) -> Option<(String, Source)> {
        for h in &self.headers {
            let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) else { continue };
            let v = v.trim();
            let token = match v.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                Some(_) => continue,
                None if *h == AUTHORIZATION => continue,
                None => v,
            };
            return Some((token.to_string(), Source::Header(h.clone())));
        }
        if !self.query.is_empty() {
            for (k, v) in query_pairs(req.query()) {
                if self.query.contains(&k) {
                    return Some((v, Source::Query));
                }
            }
        }
        if !self.cookies.is_empty() {
            for v in req.headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()) {
                for c in v.split(';') {
                    if let Some((k, val)) = c.trim().split_once('=')
                        && self.cookies.iter().any(|n| n == k)
                    {
                        return Some((val.to_string(), Source::Cookie(k.to_string())));
                    }
                }
            }
        }
        None
    }

    fn hide(&self, req: &mut RequestHead, source: Source) {
        match source {
            Source::Header(h) => {
                req.headers.remove(h);
            }
            Source::Query => {
                let names: Vec<&str> = self.query.iter().map(String::as_str).collect();
                let q = req.query().and_then(|q| remove_query_params(q, &names));
                let _ = req.set_query(q.as_deref());
            }
            Source::Cookie(name) => {
                let rest: Vec<String> = req
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty() && c.split('=').next() != Some(name.as_str()))
                    .map(str::to_string)
                    .collect();
                req.headers.remove(COOKIE);
                if let Ok(v) = HeaderValue::from_str(&rest.join("; "))
                    && !rest.is_empty()
                {
                    req.headers.insert(COOKIE, v);
                }
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_required_spec_claims(&self.required);
        if !self.issuers.is_empty() {
            v.set_issuer(&self.issuers);
        }
        if self.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audiences);
        }
        v
    }

    /// Verify `token`; on success the consumer (if any) and the credential id.
    async fn verify(
        &self,
        token: &str,
        client: Option<&Upstreams>,
    ) -> Option<(Option<Arc<ConsumerInfo>>, String, Map<String, Value>)> {
        if token.len() > self.max_bytes || token.split('.').count() != 3 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        // A key from the JWKS, by kid.
        if let (Some(jwks), Some(kid)) = (&self.jwks, header.kid.as_deref())
            && let Some(k) = jwks.key(kid, client).await
        {
            if !k.algorithms.contains(&header.alg) {
                return None;
            }
            let claims =
                jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &self.validation(header.alg)).ok()?.claims;
            self.check_times(&claims)?;
            let consumer = match &self.consumer_claim {
                Some(c) => Some(self.dir.by_name_or_custom_id(claims.get(c)?.as_str()?)?.clone()),
                None => None,
            };
            let id = claims.get("sub").and_then(Value::as_str).unwrap_or(kid).to_string();
            return Some((consumer, id, claims));
        }
        // A consumer's key, by the key claim of the (not yet verified) payload.
        let payload = token.split('.').nth(1)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let unverified: Map<String, Value> = serde_json::from_slice(&raw).ok()?;
        let key_value = unverified.get(&self.key_claim)?.as_str()?;
        let k = self.dir.jwt(key_value)?;
        if header.alg != k.algorithm {
            return None;
        }
        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &self.validation(k.algorithm)).ok()?.claims;
        self.check_times(&claims)?;
        let consumer = self.dir.consumer(k.consumer)?.clone();
        Some((Some(consumer), k.id.to_string(), claims))
    }

    /// `iat` not in the future (with leeway) and the lifetime within `maximum_expiration`.
    fn check_times(&self, claims: &Map<String, Value>) -> Option<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let iat = claims.get("iat").map(|v| v.as_u64());
        if let Some(iat) = iat
            && iat? > now + self.leeway
        {
            return None;
        }
        if let Some(max) = self.max_lifetime {
            let exp = claims.get("exp")?.as_u64()?;
            let from = iat.flatten().unwrap_or(now);
            if exp.saturating_sub(from) > max {
                return None;
            }
        }
        Some(())
    }
}

#[gw_core::plugin]
impl Plugin for JwtPlugin {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn priority(&self) -> i32 {
        priority::AUTH + 150
    }

    fn anonymous(&self) -> Option<Arc<ConsumerInfo>> {
        self.anonymous.clone()
    }

    /// The headers claims are forwarded in (`forward_claims`).
    fn identity_headers(&self) -> Vec<HeaderName> {
        self.forward.iter().map(|(_, h)| h.clone()).collect()
    }

    async fn authenticate(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<AuthOutcome> {
        let Some((token, source)) = self.find(req) else {
            return Ok(AuthOutcome::NoCredentials { challenge: missing_credentials(CHALLENGE) });
        };
        let Some((consumer, id, claims)) = self.verify(&token, cx.upstreams.as_ref()).await else {
            return Ok(AuthOutcome::Rejected(invalid_credentials(&format!("{CHALLENGE}, error=\"invalid_token\""))));
        };
        match consumer {
            Some(c) => set_consumer(cx, c, Some(&id)),
            None => cx.credential_id = Some(id),
        }
        for (claim, header) in &self.forward {
            req.headers.remove(header);
            let text = match claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                req.headers.insert(header.clone(), v);
            }
        }
        if self.hide {
            self.hide(req, source);
        }
        Ok(AuthOutcome::Authenticated)
    }
}

// === JWKS ===

/// A verification key from a JWKS.
pub(crate) struct JwksKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

struct JwksState {
    keys: HashMap<String, Arc<JwksKey>>,
    fetched: Option<Instant>,
}

/// A cached JWKS. Keys are valid for `ttl` after a successful fetch. An unknown `kid` triggers a
/// refetch, at most once per second; a failed fetch keeps the previous keys until their TTL.
pub(crate) struct Jwks {
    url: String,
    ttl: Duration,
    timeout: Duration,
    default_algorithms: Vec<Algorithm>,
    state: ArcSwap<JwksState>,
    /// Milliseconds since `epoch` of the last fetch attempt (rate limit).
    last_attempt: AtomicU64,
    epoch: Instant,
    fetching: tokio::sync::Mutex<()>,
}

/// Shortest time between two fetches.
const MIN_REFETCH: Duration = Duration::from_secs(1);

impl Jwks {
    fn new(url: String, ttl: Duration, timeout: Duration, default_algorithms: Vec<Algorithm>) -> Self {
        Jwks {
            url,
            ttl,
            timeout,
            default_algorithms,
            state: ArcSwap::from_pointee(JwksState { keys: HashMap::new(), fetched: None }),
            last_attempt: AtomicU64::new(0),
            epoch: Instant::now(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn valid(&self, st: &JwksState, now: Instant) -> bool {
        st.fetched.is_some_and(|f| now.duration_since(f) < self.ttl)
    }

    /// The key `kid`, fetching the set (through `client`, the gateway's own) when the key is
    /// unknown or the set expired.
    pub(crate) async fn key(&self, kid: &str, client: Option<&Upstreams>) -> Option<Arc<JwksKey>> {
        let now = Instant::now();
        let st = self.state.load_full();
        if self.valid(&st, now)
            && let Some(k) = st.keys.get(kid)
        {
            if st.fetched.is_some_and(|f| now.duration_since(f) > self.ttl / 2) {
                // Refresh ahead of expiry; the current keys keep serving meanwhile.
                let _ = self.refresh(now, client).await;
            }
            return Some(k.clone());
        }
        self.refresh(now, client).await;
        let st = self.state.load();
        if self.valid(&st, Instant::now()) { st.keys.get(kid).cloned() } else { None }
    }

    /// Fetch the set unless another fetch happened less than a second ago.
    async fn refresh(&self, now: Instant, client: Option<&Upstreams>) -> bool {
        let at = now.duration_since(self.epoch).as_millis() as u64 + 1;
        let last = self.last_attempt.load(Ordering::Acquire);
        if last != 0 && at.saturating_sub(last) < MIN_REFETCH.as_millis() as u64 {
            return false;
        }
        let Ok(_guard) = self.fetching.try_lock() else {
            // Someone is fetching: wait for them rather than fetch again.
            let _g = self.fetching.lock().await;
            return false;
        };
        self.last_attempt.store(at, Ordering::Release);
        match self.fetch(client).await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.state.store(Arc::new(JwksState { keys, fetched: Some(Instant::now()) }));
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the previous keys until they expire");
                false
            }
        }
    }

    async fn fetch(&self, client: Option<&Upstreams>) -> Result<HashMap<String, Arc<JwksKey>>, String> {
        let client = client.ok_or("no client for side calls")?;
        let mut req = RequestHead {
            method: http::Method::GET,
            uri: self.url.parse().map_err(|e| format!("invalid URL: {e}"))?,
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
        };
        req.headers
            .insert(http::header::ACCEPT, HeaderValue::from_static("application/jwk-set+json, application/json"));
        let resp = client.send_url(req, Body::empty(), self.timeout).await.map_err(|e| e.to_string())?;
        if !resp.head.status.is_success() {
            return Err(format!("status {}", resp.head.status));
        }
        let body = match resp.body.collect(1 << 20).await {
            Ok(c) => c.data,
            Err(e) if e.kind() == gw_core::ErrorKind::ResponseTooLarge => return Err("JWKS larger than 1 MiB".into()),
            Err(e) => return Err(e.to_string()),
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            // Symmetric keys are never accepted from a key set.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let algorithms = match jwk.common.key_algorithm.and_then(|a| algorithm(&a.to_string())) {
                Some(a) => vec![a],
                None => self.default_algorithms.clone(),
            };
            keys.insert(kid, Arc::new(JwksKey { key, algorithms }));
        }
        Ok(keys)
    }
}
