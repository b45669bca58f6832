//! The plugin trait.

use std::ops::BitOr;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Ctx, Flow, LogEntry, Reply, RequestHead, ResponseHead, Result};

/// Fixed priorities of the built-in plugins: higher runs first within a phase. Authentication
/// always runs before ACL, which runs before rate limiting.
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
}

/// The hooks a plugin implements; the pipeline calls only these and buffers bodies only when a
/// body hook is present.
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

    /// Whether every hook of `other` is in `self`.
    pub fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
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

/// A gateway plugin. Implement only the phases you need and list them in [`Plugin::hooks`];
/// every default does nothing.
///
/// Plugins are built once per configuration version and shared by all requests: keep
/// per-request state in [`Ctx::vars`], and shared mutable state in atomics or concurrent maps.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Stable name used in config and logs, e.g. `"key-auth"`.
    fn name(&self) -> &'static str;

    /// Higher runs first within a phase (see [`priority`]).
    fn priority(&self) -> i32;

    /// The hooks this plugin implements.
    fn hooks(&self) -> Hooks;

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
    /// this body; up to 8 MiB, beyond which the client gets 502 `response_too_large`).
    /// Default: nothing.
    async fn response_body(&self, _resp: &mut ResponseHead, _body: &mut Bytes, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    /// Every response on its way to the client, including gateway errors and plugin replies.
    /// Default: nothing.
    async fn response(&self, _resp: &mut ResponseHead, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    /// After the response has been sent (or the request failed). Must be cheap and not block.
    fn log(&self, _cx: &Ctx, _entry: &LogEntry) {}
}
