//! `concurrency-limit`: at most `max` requests in flight per key on this node; more are shed
//! with 503. A request counts until its response has been sent (or the client went away).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gw_config::plugins::ConcurrencyLimit as Conf;
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, Result, priority};
use gw_observability::Metrics;
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};

use crate::limits::KeySpec;

type Counters = moka::sync::Cache<u128, Arc<AtomicU32>, xxhash_rust::xxh3::Xxh3Builder>;

pub(crate) struct ConcurrencyLimit {
    scope: String,
    keys: KeySpec,
    max: u32,
    counters: Arc<Counters>,
    message: String,
    metrics: Arc<Metrics>,
}

/// Held in the request context; gives the slot back when the request ends.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters shared by instances of the same name, so that a reload keeps counting the
/// requests already in flight.
fn counters(instance: &str) -> Arc<Counters> {
    static ALL: crate::limits::Shared<Counters> = crate::limits::Shared::new();
    ALL.get(instance.to_string(), || {
        moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_idle(Duration::from_secs(3600))
            .build_with_hasher(xxhash_rust::xxh3::Xxh3Builder::new())
    })
}

impl ConcurrencyLimit {
    pub(crate) fn new(c: &Conf, metrics: Arc<Metrics>, instance: &str) -> Result<Self, String> {
        Ok(ConcurrencyLimit {
            scope: format!("cl:{instance}"),
            keys: KeySpec::parse(&c.limit_by)?,
            max: c.max,
            counters: counters(instance),
            message: c.message.clone().unwrap_or_else(|| "too many requests in flight".into()),
            metrics,
        })
    }
}

#[gw_core::plugin]
impl Plugin for ConcurrencyLimit {
    fn name(&self) -> &'static str {
        "concurrency-limit"
    }

    fn priority(&self) -> i32 {
        priority::CONCURRENCY_LIMIT
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let key = gw_ratelimit::digest(&self.keys.key(&self.scope, req, cx));
        let counter = self.counters.get_with(key, || Arc::new(AtomicU32::new(0)));
        let admitted =
            counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).is_ok();
        if !admitted {
            self.metrics.plugin_event("concurrency_limit_shed");
            let mut r = Reply::error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &self.message);
            r.headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(Flow::Respond(r));
        }
        cx.vars.insert(Arc::new(Slot(counter)));
        Ok(Flow::Continue)
    }
}
