//! `quota`: requests per calendar period (hour, day, week, month; UTC) per consumer, with
//! plans by consumer group. Requests without a consumer are counted per client IP against the
//! default `limit`. Counted locally or on Redis; `X-Quota-*` headers; 429 with the reset time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use gw_config::plugins::{CounterPolicy, Quota as Conf, QuotaPeriod, StoreFailure};
use gw_core::{Clock, Ctx, Error, ErrorKind, Flow, Plugin, Reply, RequestHead, Result, priority};
use gw_observability::{Metrics, rfc3339};
use gw_ratelimit::period::Period;
use gw_ratelimit::{PeriodCounters, RedisStore};
use http::StatusCode;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use crate::limits::{FailureLog, redis_store};

/// The local quota counters of this process (every `policy: local` quota instance), which the
/// gateway writes to its durable store in batches and restores at start, so that a quota does
/// not start again from zero after a restart. Keys name the instance (`q:<instance>`), so
/// counters survive reloads as long as the instance keeps its name.
pub fn quota_counters() -> Arc<PeriodCounters> {
    static C: std::sync::OnceLock<Arc<PeriodCounters>> = std::sync::OnceLock::new();
    C.get_or_init(|| Arc::new(PeriodCounters::default())).clone()
}

enum Store {
    /// Counted in this process; written to the durable usage store and restored at start
    /// (see [`quota_counters`]).
    Local(Arc<PeriodCounters>),
    Redis(Arc<RedisStore>),
}

pub(crate) struct Quota {
    scope: String,
    limit: u64,
    plans: BTreeMap<String, u64>,
    period: Period,
    store: Store,
    fail_open: bool,
    headers: bool,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    failures: FailureLog,
}

impl Quota {
    pub(crate) fn new(c: &Conf, env: &crate::BuildEnv<'_>, instance: &str) -> Result<Self, String> {
        let period = match c.period {
            QuotaPeriod::Hour => Period::Hour,
            QuotaPeriod::Day => Period::Day,
            QuotaPeriod::Week => Period::Week,
            QuotaPeriod::Month => Period::Month,
        };
        let scope = format!("q:{instance}");
        let store = match c.policy {
            CounterPolicy::Local => Store::Local(quota_counters()),
            CounterPolicy::Redis => Store::Redis(redis_store(env.config)?),
        };
        Ok(Quota {
            scope,
            limit: c.limit,
            plans: c.plans.clone(),
            period,
            store,
            fail_open: c.failure_mode == StoreFailure::Open,
            headers: c.headers,
            clock: env.clock.clone(),
            metrics: env.metrics.clone(),
            failures: FailureLog::default(),
        })
    }

    fn limit_for(&self, cx: &Ctx) -> u64 {
        cx.consumer
            .as_ref()
            .and_then(|c| c.groups.iter().filter_map(|g| self.plans.get(g)).max().copied())
            .unwrap_or(self.limit)
    }
}

#[gw_core::plugin]
impl Plugin for Quota {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn priority(&self) -> i32 {
        priority::QUOTA
    }

    async fn access(&self, _req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let who = match &cx.consumer {
            Some(c) => format!("{}|c:{}", self.scope, c.username),
            None => format!("{}|ip:{}", self.scope, cx.client_ip),
        };
        let max = self.limit_for(cx);
        let now = self.clock.now_ms();
        let (start, end) = self.period.bounds(now);
        let counted = match &self.store {
            Store::Local(s) => Ok(s.count(&who, start, max)),
            Store::Redis(s) => {
                let span = crate::util::redis_span(cx, "quota", "EVALSHA");
                let r = s.count_period(gw_ratelimit::digest(&who), start, max, end - now + 86_400_000).await;
                crate::util::end_span(span, &r);
                r
            }
        };
        let counted = match counted {
            Ok(c) => c,
            Err(e) => {
                self.failures.report("quota", self.fail_open, &e, now);
                if self.fail_open {
                    self.metrics.plugin_event("quota_store_fail_open");
                    return Ok(Flow::Continue);
                }
                self.metrics.plugin_event("quota_store_fail_closed");
                return Err(Error::new(ErrorKind::DependencyUnavailable, "quota store unavailable").with_cause(e));
            }
        };
        let reset_s = (end - now).div_ceil(1000);
        let used = match counted {
            Ok(n) | Err(n) => n,
        };
        if self.headers {
            let h = &mut cx.response_headers;
            h.insert(HeaderName::from_static("x-quota-limit"), HeaderValue::from(max));
            h.insert(HeaderName::from_static("x-quota-remaining"), HeaderValue::from(max.saturating_sub(used)));
            h.insert(HeaderName::from_static("x-quota-reset"), HeaderValue::from(reset_s));
        }
        if counted.is_ok() {
            return Ok(Flow::Continue);
        }
        self.metrics.plugin_event("quota_exceeded");
        let reset_at = rfc3339(UNIX_EPOCH + Duration::from_millis(end));
        let mut r = Reply::json(
            StatusCode::TOO_MANY_REQUESTS,
            &serde_json::json!({
                "error": "quota_exceeded",
                "message": format!("{} quota of {max} requests used up", self.period.name()),
                "reset": reset_at,
            }),
        );
        r.headers.insert(RETRY_AFTER, HeaderValue::from(reset_s));
        Ok(Flow::Respond(r))
    }
}
