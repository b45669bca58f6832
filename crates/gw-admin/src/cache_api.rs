//! The response cache endpoints: purge the `proxy-cache` instances of this node (and, through
//! their Redis tier, of every node sharing it), and read their figures.
//!
//! - `GET /cache`: every cache of this node: bytes and keys in memory, evictions, requests in
//!   flight upstream.
//! - `POST /cache/purge` with exactly one of `{"url": "https://host/path?q"}` (every stored
//!   response of that URL: variants, HEAD/GET), `{"prefix": "https://host/path"}`,
//!   `{"tag": "t"}` (`Surrogate-Key` / `Cache-Tag`), `{"key": "<32 hex digits>"}` (a primary
//!   key, as `Cache-Status` shows it with `cache_status_key`) — each also as a list — or
//!   `{"all": true}`; optionally `"cache": "<instance name>"` to purge one cache only. The
//!   memory tier of this node is always purged; with a Redis tier the purge removes the shared
//!   copies and is published to every node (`delivered`: Redis `PUBLISH`'s count of subscribers
//!   that received it, one per cache on that prefix per node, this one included); without one,
//!   in store mode on PostgreSQL, it is sent to every node through the store's notification
//!   channel and the answer waits for it (`"relayed": true` once PostgreSQL took it, `false`
//!   with `relay_error` when that failed). docs/admin-api.md defines each field.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{AdminState, ApiError};

/// A purge request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeBody {
    url: Option<OneOrMany>,
    prefix: Option<OneOrMany>,
    tag: Option<OneOrMany>,
    key: Option<OneOrMany>,
    #[serde(default)]
    all: bool,
    cache: Option<String>,
}

/// A value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// Most items of one purge request.
pub(crate) const MAX_PURGE_ITEMS: usize = 10_000;

pub(crate) async fn list(State(_s): State<Arc<AdminState>>) -> Response {
    let caches: Vec<Value> = gw_plugins::caches()
        .iter()
        .map(|c| {
            let st = c.cache.stats();
            json!({
                "cache": c.instance,
                "memory_bytes": st.bytes,
                "memory_entries": st.entries,
                "evictions": st.evictions,
                "in_flight": st.in_flight,
                "redis": c.cache.options().redis.is_some(),
            })
        })
        .collect();
    axum::Json(json!({ "caches": caches })).into_response()
}

pub(crate) async fn purge(
    State(_s): State<Arc<AdminState>>,
    body: Result<axum::Json<PurgeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid", m.to_string());
    let axum::Json(b) = body.map_err(|e| bad(&e.body_text()))?;
    let chosen =
        [b.url.is_some(), b.prefix.is_some(), b.tag.is_some(), b.key.is_some(), b.all].iter().filter(|x| **x).count();
    if chosen != 1 {
        return Err(bad("give exactly one of url, prefix, tag, key, all: true"));
    }
    let caches: Vec<_> =
        gw_plugins::caches().into_iter().filter(|c| b.cache.as_ref().is_none_or(|n| *n == c.instance)).collect();
    if let Some(n) = &b.cache
        && caches.is_empty()
    {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no cache named {n:?} on this node")));
    }
    let items = [&b.url, &b.prefix, &b.tag, &b.key].into_iter().flatten().map(OneOrMany::items).next().unwrap_or(&[]);
    if !b.all && (items.is_empty() || items.len() > MAX_PURGE_ITEMS) {
        return Err(bad(&format!("give between 1 and {MAX_PURGE_ITEMS} items")));
    }
    // Every item is checked before anything is purged.
    let mut plans = Vec::new();
    for c in &caches {
        let ps: Result<Vec<gw_cache::Purge>, gw_cache::PurgeError> = if b.all {
            Ok(vec![gw_cache::Purge::All])
        } else {
            items
                .iter()
                .map(|i| {
                    if b.url.is_some() {
                        c.cache.url_purge(i)
                    } else if b.prefix.is_some() {
                        gw_cache::Cache::prefix_purge(i)
                    } else if b.key.is_some() {
                        gw_cache::Cache::key_purge(i)
                    } else {
                        gw_cache::Cache::tag_purge(i)
                    }
                })
                .collect()
        };
        plans.push((c, ps.map_err(|e| bad(&e.to_string()))?));
    }
    let mut out = Vec::new();
    for (c, ps) in plans {
        let r = c.cache.purge_all_of(ps, true).await;
        let mut one = json!({ "cache": c.instance, "redis_removed": r.redis_removed, "delivered": r.delivered });
        match r.relay {
            gw_cache::RelayOutcome::None => {}
            gw_cache::RelayOutcome::Sent | gw_cache::RelayOutcome::Pending => one["relayed"] = Value::Bool(true),
            gw_cache::RelayOutcome::Failed(e) => {
                one["relayed"] = Value::Bool(false);
                one["relay_error"] = Value::String(e);
            }
        }
        if let Some(e) = r.redis_error {
            one["redis_error"] = Value::String(e);
        }
        out.push(one);
    }
    Ok(axum::Json(json!({ "caches": out })).into_response())
}
