//! The Gatehouse request pipeline contract, independent of the HTTP engine.
//!
//! A request flows through named phases (see `docs/request-lifecycle.md`):
//!
//! ```text
//! request ─► pre-route ─► route ─► access (auth ─► ACL ─► rate limit) ─► [request body] ─► upstream select
//!         ─► upstream request ─► proxy ─► upstream response ─► [response body] ─► response ─► log
//! ```
//!
//! Plugins implement [`Plugin`] in an impl block marked [`macro@plugin`]: only the hooks they
//! need (the phases they run in are derived from those), on
//! gateway-owned types ([`RequestHead`], [`ResponseHead`], [`Ctx`]) rather than the engine's.
//! A phase hook returns [`Flow::Continue`] or [`Flow::Respond`] to answer the client at once.
//! Any `Err` becomes an error response in one place, in `gw-proxy`.
//!
//! How to use: implement [`Plugin`] for a struct, then register a constructor for it in
//! `gw-plugins` (see `docs/writing-a-plugin.md`).

pub mod body;
pub mod calendar;
mod clock;
mod ctx;
pub mod exchange;
mod flow;
mod head;
pub mod identity;
mod plugin;
pub mod tick;
pub mod trace;

pub use body::{Body, BodyFilter, Emit, Frame};
pub use clock::{Clock, OffsetClock, SystemClock};
pub use ctx::{CacheResult, ConsumerInfo, Ctx, LogEntry, RouteInfo};
pub use exchange::{Exchanged, Upstreams};
pub use flow::{Flow, Reply};
pub use gw_error::{Error, ErrorKind, OrErr, Result, Retry, Side};
pub use head::{RequestHead, ResponseHead};
pub use plugin::{AuthOutcome, Hooks, Plugin, Stage, priority};
pub use trace::{
    AttemptOutcome, AttemptReport, AttrValue, BackgroundSpans, BackgroundTracer, ChildSpan, ConnectionUse, SpanKind,
    SpanRecord, SpanSink, TraceFormat, TraceParent,
};

/// Applied by [`macro@plugin`]; re-exported so plugin crates need no `async-trait` of their own.
#[doc(hidden)]
pub use async_trait::async_trait;
/// Marks an `impl Plugin for T` block: derives the phases the plugin runs in from the hook
/// methods the block defines, and makes its `async fn` hooks object-safe (`async_trait`).
pub use gw_plugin_macros::plugin;
