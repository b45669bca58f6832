//! Gatehouse's response cache: an RFC 9111 shared cache for the `proxy-cache` plugin.
//!
//! What it is for: answering `GET`/`HEAD` requests from stored upstream responses, as correct
//! as a shared cache can be (freshness, `Vary`, revalidation, conditional requests, stale
//! content per RFC 5861, invalidation after unsafe methods), with a per-node memory tier, an
//! optional Redis tier shared by every node, coalescing of concurrent misses, and purges that
//! reach every node. See `docs/caching.md`.
//!
//! Layout:
//! - pure semantics, no IO: [`cc`] (`Cache-Control`), [`policy`] (storability, freshness, age,
//!   reuse), [`vary`], [`key`], [`conditional`], [`headers`] (stored fields, 304 merge, `Age`,
//!   tags), [`invalidate`], [`status`] (`HIT`/`MISS`/..., RFC 9211 `Cache-Status`);
//! - storage: [`store`] (memory tier on moka, Redis tier);
//! - [`Cache`]: lookups, fills (record a streaming response, share it with waiters), purges.
//!
//! How a proxy uses it (one request):
//! 1. [`Cache::lookup`] with a [`CacheRequest`]: a [`Lookup`] says answer now ([`Lookup::Hit`],
//!    [`Lookup::Stale`], [`Lookup::GatewayTimeout`]), wait for another request
//!    ([`Lookup::Wait`]), or go upstream ([`Lookup::Miss`] / [`Lookup::Revalidate`] with a
//!    [`Fill`], or [`Lookup::Forward`] without one).
//! 2. With a fill: [`Fill::prepare_request`] on the upstream request; [`Fill::head`] with the
//!    response head (it may replace the response: a validated 304, or stale-if-error);
//!    [`Fill::data`] for each body chunk as it passes; [`Fill::finish`] at the end, or
//!    [`Fill::abort`] / drop on an error; [`Fill::upstream_failed`] when no response came.
//! 3. After an unsafe method: [`Cache::invalidate_after`].

pub mod cc;
mod coalesce;
pub mod conditional;
pub mod headers;
pub mod invalidate;
pub mod key;
pub mod options;
pub mod policy;
pub mod status;
pub mod store;
pub mod vary;

mod cache;

pub use cache::{
    Cache, Field, Fill, Hit, Lookup, Purge, PurgeError, PurgeReport, Relay, RelayOutcome, RelaySend, Stats, Upstream,
    WaitOutcome, Waiter,
};
pub use coalesce::{Aborted, SharedBody};
pub use key::{CacheKey, CacheRequest, KeyOptions, QueryMode};
pub use options::{BypassRule, CacheOptions, OptionsError};
pub use status::{CacheStatus, StatusDetail, StatusHeader};
