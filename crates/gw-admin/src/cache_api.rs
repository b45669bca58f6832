//! The response cache endpoints: purge the `proxy-cache` instances of this node (and, through
//! their Redis tier, of every node sharing it), and read their figures.
//!
//! - `GET /cache`: every cache of this node: bytes and keys in memory, evictions, requests in
//!   flight upstream.
//! - `POST /cache/purge` with exactly one of `{"url": "https://host/path?q"}` (every stored
//!   response of that URL: variants, HEAD/GET), `{"prefix": "https://host/path"}`,
//!   `{"tag": "t"}` (`Surrogate-Key` / `Cache-Tag`), `{"key": "<32 hex digits>"}` (the value of
//!   a primary key as shown by `Cache-Status`-less tooling) or `{"all": true}`; optionally
//!   `"cache": "<instance name>"` to purge one cache only. The memory tier of this node is
//!   always purged; with a Redis tier the purge removes the shared copies and is published to
//!   every node (`delivered` counts the nodes that received it, this one included); without
//!   one, in store mode on PostgreSQL, it is sent to every node through the store's
//!   notification channel (`"relayed": true`).

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
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    key: Option<String>,
    #[serde(default)]
    all: bool,
    cache: Option<String>,
}

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
    let mut out = Vec::new();
    for c in &caches {
        let r = if let Some(u) = &b.url {
            c.cache.purge_url(u).await
        } else if let Some(p) = &b.prefix {
            c.cache.purge_prefix(p).await
        } else if let Some(k) = &b.key {
            c.cache.purge_key(k).await
        } else if let Some(t) = &b.tag {
            Ok(c.cache.purge(gw_cache::Purge::Tag(t.clone())).await)
        } else {
            Ok(c.cache.purge(gw_cache::Purge::All).await)
        };
        let r = r.map_err(|e| bad(&e.to_string()))?;
        let mut one = json!({ "cache": c.instance, "redis_removed": r.redis_removed, "delivered": r.delivered });
        if r.relayed {
            one["relayed"] = Value::Bool(true);
        }
        if let Some(e) = r.redis_error {
            one["redis_error"] = Value::String(e);
        }
        out.push(one);
    }
    Ok(axum::Json(json!({ "caches": out })).into_response())
}
