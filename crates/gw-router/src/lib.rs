//! Gatehouse's route matcher: a pure, IO-free function from (host, path, method, headers,
//! query) to the best route and its path parameters. Lookup cost does not grow with the number
//! of routes: exact hosts and paths are hash lookups, templates live in a radix tree
//! (`matchit`), prefixes are found by walking the path's segment boundaries, regexes are
//! pre-filtered by one `RegexSet`.
//!
//! How to use:
//! ```
//! use gw_router::{PathPattern, RequestParts, RouteSpec, Router};
//! let r = Router::new(vec![RouteSpec {
//!     hosts: vec![], paths: vec![PathPattern::parse("/users/{id}").unwrap()],
//!     methods: vec![], headers: vec![], query: vec![], priority: 0, value: "users",
//! }]).unwrap();
//! let h = http::HeaderMap::new();
//! let m = r.find(&RequestParts { host: "api", path: "/users/7", method: &http::Method::GET, headers: &h, query: None }).unwrap();
//! assert_eq!((*m.value, m.params.get("id")), ("users", Some("7")));
//! ```
//!
//! # Priority
//! 1. Host tiers, in order: routes with the exact request host; wildcard hosts (`*.example.com`),
//!    longest suffix first; routes without hosts. The first tier with a match wins.
//! 2. Within a tier, path kinds in order: exact paths; templates (the radix tree's order: static
//!    segments before parameters before catch-alls); regexes (priority, then declaration order);
//!    prefixes, longest first.
//! 3. Within one path pattern: higher `priority`, then more conditions (a method list counts
//!    one, each header and query condition one), then declaration order. The first route whose
//!    method, header and query conditions hold wins; otherwise the search goes on.
//!
//! Paths and query strings are compared as received, without percent-decoding (the gateway
//! rejects ambiguous paths before routing).

mod pattern;
mod router;

pub use pattern::{HeaderMatch, HostPattern, PathPattern, PatternError, QueryMatch, StrMatch};
pub use router::{Edit, Match, Params, RequestParts, RouteSpec, Router, RouterError};

#[cfg(test)]
mod tests;
