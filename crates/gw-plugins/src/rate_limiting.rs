//! `rate-limiting`: limits per second, minute, hour, day and month at once, per client key,
//! counted locally or on Redis; `RateLimit-Policy`/`RateLimit` headers (IETF
//! draft-ietf-httpapi-ratelimit-headers) on every response; 429 with `Retry-After`; optional
//! throttling (wait for room instead of refusing).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gw_config::plugins::{CounterPolicy, RateAlgorithm, RateLimiting as Conf, StoreFailure};
use gw_core::{Clock, Ctx, Error, ErrorKind, Flow, Plugin, Reply, RequestHead, Result, priority};
use gw_observability::Metrics;
use gw_ratelimit::{Algorithm, BatchedStore, Decision, Limit, LocalStore, RedisStore};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use crate::limits::{FailureLog, KeySpec, local_store, redis_store};

enum Store {
    Local(Arc<LocalStore>),
    Redis(Arc<RedisStore>),
    Batched(BatchedStore),
}

pub(crate) struct RateLimiting {
    scope: String,
    keys: KeySpec,
    alg: Algorithm,
    limits: Vec<Limit>,
    store: Store,
    fail_open: bool,
    headers: bool,
    legacy: bool,
    throttle: Option<(Duration, u32)>,
    queued: AtomicU32,
    message: String,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    failures: FailureLog,
    /// `RateLimit-Policy` value (constant per instance).
    policy_header: Option<HeaderValue>,
}

impl RateLimiting {
    pub(crate) fn new(c: &Conf, env: &crate::BuildEnv<'_>, instance: &str) -> Result<Self, String> {
        let alg = match c.algorithm {
            RateAlgorithm::Gcra => Algorithm::Gcra,
            RateAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
            RateAlgorithm::FixedWindow => Algorithm::FixedWindow,
        };
        let limits: Vec<Limit> =
            c.limits().into_iter().map(|(name, window_ms, max)| Limit { name, window_ms, max }).collect();
        let longest = limits.iter().map(|l| l.window_ms).max().unwrap_or(1000);
        let scope = format!("rl:{instance}");
        let store = match c.policy {
            CounterPolicy::Local => Store::Local(local_store(
                &format!("{scope}|{alg:?}"),
                c.max_keys.unwrap_or(100_000),
                // Sliding windows need the previous window too.
                Duration::from_millis(longest.saturating_mul(2)),
            )),
            CounterPolicy::Redis => match &c.sync_interval {
                Some(every) => {
                    let metrics = env.metrics.clone();
                    Store::Batched(
                        BatchedStore::new(
                            redis_store(env.config)?,
                            every.get(),
                            c.max_keys.unwrap_or(100_000),
                            Duration::from_millis(longest.saturating_mul(2)),
                        )
                        .on_sync_failure(Arc::new(move || metrics.plugin_event("rate_limiting_sync_failed")))
                        .with_spans(env.spans.clone(), instance),
                    )
                }
                None => Store::Redis(redis_store(env.config)?),
            },
        };
        let mut policy = String::new();
        for l in &limits {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            let _ = write!(policy, "\"{}\";q={};w={}", l.name, l.max, l.window_ms / 1000);
        }
        Ok(RateLimiting {
            scope,
            keys: KeySpec::parse(&c.limit_by)?,
            alg,
            limits,
            store,
            fail_open: c.failure_mode == StoreFailure::Open,
            headers: c.headers,
            legacy: c.legacy_headers,
            throttle: c.throttle.as_ref().map(|t| (t.max_wait.get(), t.max_queued.unwrap_or(1000))),
            queued: AtomicU32::new(0),
            message: c.message.clone().unwrap_or_else(|| "rate limit exceeded".into()),
            clock: env.clock.clone(),
            metrics: env.metrics.clone(),
            failures: FailureLog::default(),
            policy_header: HeaderValue::from_str(&policy).ok(),
        })
    }

    async fn check(&self, key: u128, cx: &Ctx) -> std::result::Result<Decision, gw_ratelimit::StoreError> {
        let now = self.clock.now_ms();
        match &self.store {
            Store::Local(s) => Ok(s.check(self.alg, key, &self.limits, now)),
            Store::Redis(s) => {
                // A traced request records the Redis call as a span of its own.
                let span = crate::util::redis_span(cx, "rate-limiting", "EVALSHA");
                let r = s.check(self.alg, key, &self.limits, now).await;
                crate::util::end_span(span, &r);
                r
            }
            Store::Batched(s) => Ok(s.check(self.alg, key, &self.limits, now)),
        }
    }

    fn add_headers(&self, h: &mut HeaderMap, d: &Decision) {
        let Some(i) = d.tightest() else { return };
        let (l, st) = (&self.limits[i], d.limits[i]);
        let reset_s = st.reset_ms.div_ceil(1000);
        if self.headers {
            if let Some(p) = &self.policy_header {
                h.insert(HeaderName::from_static("ratelimit-policy"), p.clone());
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r={};t={}", l.name, st.remaining, reset_s)) {
                h.insert(HeaderName::from_static("ratelimit"), v);
            }
        }
        if self.legacy {
            h.insert(HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(l.max));
            h.insert(HeaderName::from_static("x-ratelimit-remaining"), HeaderValue::from(st.remaining));
            h.insert(HeaderName::from_static("x-ratelimit-reset"), HeaderValue::from(reset_s));
            for (l, st) in self.limits.iter().zip(&d.limits) {
                if let (Ok(n1), Ok(n2)) = (
                    HeaderName::from_bytes(format!("x-ratelimit-limit-{}", l.name).as_bytes()),
                    HeaderName::from_bytes(format!("x-ratelimit-remaining-{}", l.name).as_bytes()),
                ) {
                    h.insert(n1, HeaderValue::from(l.max));
                    h.insert(n2, HeaderValue::from(st.remaining));
                }
            }
        }
    }
}

#[gw_core::plugin]
impl Plugin for RateLimiting {
    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn priority(&self) -> i32 {
        priority::RATE_LIMITING
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let key = gw_ratelimit::digest(&self.keys.key(&self.scope, req, cx));
        let mut waited = false;
        let deadline = self.throttle.map(|(max, _)| tokio::time::Instant::now() + max);
        let decision = loop {
            let d = match self.check(key, cx).await {
                Ok(d) => d,
                Err(e) => {
                    self.failures.report("rate-limiting", self.fail_open, &e, self.clock.now_ms());
                    if self.fail_open {
                        self.metrics.plugin_event("rate_limiting_store_fail_open");
                        return Ok(Flow::Continue);
                    }
                    self.metrics.plugin_event("rate_limiting_store_fail_closed");
                    return Err(
                        Error::new(ErrorKind::DependencyUnavailable, "rate-limit store unavailable").with_cause(e)
                    );
                }
            };
            if d.allowed {
                break d;
            }
            // Throttling: wait for room if it comes within max_wait.
            let (Some(deadline), Some((_, max_queued))) = (deadline, self.throttle) else { break d };
            let wake = tokio::time::Instant::now() + Duration::from_millis(d.retry_after_ms.max(1));
            if wake > deadline {
                break d;
            }
            if !waited {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= max_queued {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    break d;
                }
                waited = true;
            }
            tokio::time::sleep_until(wake).await;
        };
        if waited {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.plugin_event("rate_limiting_throttled");
        }
        self.add_headers(&mut cx.response_headers, &decision);
        if decision.allowed {
            return Ok(Flow::Continue);
        }
        self.metrics.plugin_event("rate_limiting_rejected");
        let retry_s = decision.retry_after_ms.div_ceil(1000).max(1);
        let mut reply = Reply::json(
            StatusCode::TOO_MANY_REQUESTS,
            &serde_json::json!({ "error": "rate_limited", "message": self.message, "retry_after": retry_s }),
        );
        reply.headers.insert(RETRY_AFTER, HeaderValue::from(retry_s));
        Ok(Flow::Respond(reply))
    }
}
