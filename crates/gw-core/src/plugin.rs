//! The plugin trait.

use std::ops::BitOr;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BodyFilter, Ctx, Flow, LogEntry, Reply, RequestHead, ResponseHead, Result};

/// Fixed priorities of the built-in plugins: higher runs first within a phase (and within a
/// [`Stage`] of the access phase). Priority only orders: where an access hook runs is its
/// plugin's [`Plugin::stage`].
pub mod priority {
    /// `ip-restriction`.
    pub const IP_RESTRICTION: i32 = 3000;
    /// `bot-detection`.
    pub const BOT_DETECTION: i32 = 2500;
    /// `cors` (answers preflights before authentication).
    pub const CORS: i32 = 2000;
    /// `request-size-limiting`.
    pub const REQUEST_SIZE_LIMITING: i32 = 1900;
    /// Authentication plugins (run through [`super::Plugin::authenticate`]).
    pub const AUTH: i32 = 1000;
    /// `acl`.
    pub const ACL: i32 = 950;
    /// `forward-auth`.
    pub const FORWARD_AUTH: i32 = 940;
    /// `rate-limiting`.
    pub const RATE_LIMITING: i32 = 900;
    /// `concurrency-limit`.
    pub const CONCURRENCY_LIMIT: i32 = 890;
    /// `quota`.
    pub const QUOTA: i32 = 880;
    /// `request-termination`.
    pub const REQUEST_TERMINATION: i32 = 850;
    /// `request-transformer` / `response-transformer`.
    pub const TRANSFORMER: i32 = 800;
    /// `soap` (after the transformers: it reads the JSON they edited).
    pub const SOAP: i32 = 720;
    /// `grpc-transcode`.
    pub const GRPC_TRANSCODE: i32 = 710;
    /// `grpc-web`.
    pub const GRPC_WEB: i32 = 700;
}

/// Where a plugin's [`Plugin::access`] hook runs in the access phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before authentication (IP restriction, bot detection, CORS preflights, size limits):
    /// no consumer is known yet.
    PreAuth,
    /// After authentication (ACL, forward auth, rate limits, quotas, termination), with the
    /// consumer's own plugin instances merged in.
    #[default]
    PostAuth,
}

/// A set of phase hooks. A plugin's set is derived by [`macro@crate::plugin`] from the hook
/// methods its impl block defines ([`Plugin::hooks`]); the pipeline calls only those, and
/// buffers bodies only when a body hook is present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks(u16);

impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks(0);
    /// [`Plugin::authenticate`].
    pub const AUTHENTICATE: Hooks = Hooks(1);
    /// [`Plugin::access`].
    pub const ACCESS: Hooks = Hooks(1 << 1);
    /// [`Plugin::request_body`].
    pub const REQUEST_BODY: Hooks = Hooks(1 << 2);
    /// [`Plugin::upstream_request`].
    pub const UPSTREAM_REQUEST: Hooks = Hooks(1 << 3);
    /// [`Plugin::upstream_response`].
    pub const UPSTREAM_RESPONSE: Hooks = Hooks(1 << 4);
    /// [`Plugin::response_body`].
    pub const RESPONSE_BODY: Hooks = Hooks(1 << 5);
    /// [`Plugin::response`].
    pub const RESPONSE: Hooks = Hooks(1 << 6);
    /// [`Plugin::log`].
    pub const LOG: Hooks = Hooks(1 << 7);
    /// [`Plugin::pre_route`].
    pub const PRE_ROUTE: Hooks = Hooks(1 << 8);
    /// [`Plugin::response_filter`].
    pub const RESPONSE_FILTER: Hooks = Hooks(1 << 9);
    /// [`Plugin::request_filter`].
    pub const REQUEST_FILTER: Hooks = Hooks(1 << 10);

    /// Whether every hook of `other` is in `self`.
    pub fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// `self` without the hooks of `other`.
    #[must_use]
    pub fn without(self, other: Hooks) -> Hooks {
        Hooks(self.0 & !other.0)
    }
}

impl BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, rhs: Hooks) -> Hooks {
        Hooks(self.0 | rhs.0)
    }
}

/// Result of [`Plugin::authenticate`].
#[derive(Debug)]
pub enum AuthOutcome {
    /// Credentials were valid; [`Ctx::consumer`] and [`Ctx::credential_id`] have been set.
    Authenticated,
    /// The request carries no credentials for this scheme. `challenge` is the 401 this plugin
    /// would answer (with its `WWW-Authenticate`).
    NoCredentials {
        /// The 401 response.
        challenge: Reply,
    },
    /// Credentials were present but invalid, or the auth service refused: answer this.
    Rejected(Reply),
}

/// A gateway plugin. Implement only the hooks you need, in an impl block marked
/// `#[gw_core::plugin]`: the phases the plugin runs in are derived from the hook methods that
/// block defines (there is no separate list to keep in step); every default does nothing.
///
/// ```
/// use gw_core::{Ctx, Flow, Plugin, RequestHead, Result, priority};
///
/// struct Tag;
///
/// #[gw_core::plugin]
/// impl Plugin for Tag {
///     fn name(&self) -> &'static str { "tag" }
///     fn priority(&self) -> i32 { priority::TRANSFORMER }
///     async fn upstream_request(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
///         req.headers.insert("x-tag", http::HeaderValue::from_static("1"));
///         Ok(Flow::Continue)
///     }
/// }
/// assert_eq!(Tag.hooks(), gw_core::Hooks::UPSTREAM_REQUEST);
/// ```
///
/// Plugins are built once per configuration version and shared by all requests: keep
/// per-request state in [`Ctx::vars`], and shared mutable state in atomics or concurrent maps.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Stable name used in config and logs, e.g. `"key-auth"`.
    fn name(&self) -> &'static str;

    /// Higher runs first within a phase (see [`priority`]).
    fn priority(&self) -> i32;

    /// Where [`Plugin::access`] runs: before or after authentication. Default: after.
    fn stage(&self) -> Stage {
        Stage::PostAuth
    }

    /// Written by [`macro@crate::plugin`]: the hooks the impl block defines.
    #[doc(hidden)]
    fn __phases(&self) -> Hooks;

    /// Hooks this instance implements but its configuration leaves unused (e.g. a transformer
    /// with no body edits): the pipeline then skips them (and never buffers a body for them).
    /// Narrowing only: it cannot add a hook the plugin does not implement. Default: none.
    fn inactive(&self) -> Hooks {
        Hooks::NONE
    }

    /// The hooks the pipeline calls: those implemented, minus [`Plugin::inactive`].
    fn hooks(&self) -> Hooks {
        self.__phases().without(self.inactive())
    }

    /// Pre-routing phase, for **global** plugin instances only (no route is known yet): runs
    /// for every request that passed the precheck, matched or not (a 404 included), before the
    /// host is read and the route looked up. May edit the head (routing then sees the edit; a
    /// changed path is checked like a client's). `Flow::Respond` answers at once. Default:
    /// continue.
    async fn pre_route(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Access phase, authentication step: identify the consumer. Runs for auth plugins only,
    /// combined per the route's `auth_mode`. On success, set `cx.consumer` and
    /// `cx.credential_id`, and strip credentials from `req` unless configured otherwise.
    /// Default: no credentials.
    async fn authenticate(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Result<AuthOutcome> {
        Ok(AuthOutcome::NoCredentials { challenge: Reply::empty(http::StatusCode::UNAUTHORIZED) })
    }

    /// For authentication plugins: the consumer to use when authentication fails as a whole (the
    /// route's auth plugins all failed, or one failed in `all` mode). Default: none.
    fn anonymous(&self) -> Option<std::sync::Arc<crate::ConsumerInfo>> {
        None
    }

    /// Access phase, after authentication: allow, deny, limit. `Flow::Respond` answers the client
    /// without calling the upstream. Default: continue.
    async fn access(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Identity fields this plugin's configuration says it sets on upstream requests (e.g. the
    /// headers `jwt` forwards claims in), beyond [`crate::identity::RESERVED`]. The proxy
    /// removes them from every client request, on every route, before any plugin runs (compiled
    /// once per configuration). Default: none.
    fn identity_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }

    /// With [`Hooks::REQUEST_BODY`]: whether this request's body is wanted, decided from the
    /// head after the access phase (e.g. only JSON bodies). The body is buffered only when some
    /// plugin wants it, and [`Plugin::request_body`] runs only for those; otherwise it streams.
    /// Default: always.
    fn wants_request_body(&self, _req: &RequestHead, _cx: &Ctx) -> bool {
        true
    }

    /// With [`Hooks::RESPONSE_BODY`]: whether this response's body is wanted, decided from the
    /// head after the upstream-response phase. Responses without a body (to `HEAD`, 1xx, 204,
    /// 304) are never buffered. Default: always.
    fn wants_response_body(&self, _resp: &ResponseHead, _cx: &Ctx) -> bool {
        true
    }

    /// The whole request body, buffered (only when some plugin of the route has this hook and
    /// wants this body, and within the route's body limit and 8 MiB: a larger body is refused
    /// with 413). May edit head and body. Default: continue.
    async fn request_body(&self, _req: &mut RequestHead, _body: &mut Bytes, _cx: &mut Ctx) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// A filter for this request's body on its way upstream, which sees its frames (data, then
    /// trailers) as they pass (see [`BodyFilter`]; e.g. re-framing messages one by one).
    /// Called after the request-body phase, for every request but upgrades, with or without a
    /// body (a filter may produce one at its end); `None` leaves this body alone. Unless every
    /// filter [`BodyFilter::keeps_length`], the request's `Content-Length` is removed and the
    /// body is framed by the protocol (chunked on HTTP/1.1). A filtered body streams, so a
    /// failed attempt is retried only when nothing was sent. Default: none.
    fn request_filter(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        None
    }

    /// Just before the upstream request is sent (after path rewrite): edit headers, path, query,
    /// method. Default: continue.
    async fn upstream_request(&self, _req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// The upstream's response head, before anything is sent to the client. Default: nothing.
    async fn upstream_response(&self, _resp: &mut ResponseHead, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    /// The whole upstream response body, buffered (only when some plugin has this hook and wants
    /// this body; up to 8 MiB, beyond which the client gets 502 `response_too_large`), with
    /// its trailers in [`ResponseHead::trailers`]. A convenience over
    /// [`Plugin::response_filter`] for plugins that need the whole body. Default: nothing.
    async fn response_body(&self, _resp: &mut ResponseHead, _body: &mut Bytes, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    /// A filter for this response's body, which sees its frames (data, then trailers) as they
    /// pass without the body being buffered: observe (count, copy into a cache), rewrite
    /// (re-frame, transcode), hold back, or add frames at the end (a gRPC-Web trailer frame).
    /// Called after the upstream-response phase, never for responses without a body (to
    /// `HEAD`, 1xx, 204, 304); `None` leaves this body alone. Unless every filter of the
    /// response [`BodyFilter::keeps_length`], its `Content-Length` is removed (the body is
    /// then framed by the protocol: chunked on HTTP/1.1). Filters see the upstream's frames
    /// first; [`Plugin::response_body`] plugins see the filtered body. Default: none.
    fn response_filter(&self, _resp: &mut ResponseHead, _cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        None
    }

    /// Every response on its way to the client, including gateway errors and plugin replies.
    /// Default: nothing.
    async fn response(&self, _resp: &mut ResponseHead, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    /// The final phase: runs exactly once for every request that reached the pipeline, after
    /// the response has been sent, or when the request failed, was refused, or the client left
    /// ([`LogEntry::failure`] is then the full [`crate::Error`]). Must be cheap and not block.
    fn log(&self, _cx: &Ctx, _entry: &LogEntry<'_>) {}
}
