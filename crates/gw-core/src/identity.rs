//! The identity fields: request header fields through which the gateway tells an upstream who
//! the client is. Only the gateway may set them, so they are removed from every client request
//! before anything else looks at it, on every route, whether or not a plugin runs.
//!
//! There is one list, [`RESERVED`], of the fields the gateway itself sets (or reserves); plugins
//! add the names their configuration says they set ([`crate::Plugin::identity_headers`], e.g.
//! the headers `jwt` forwards claims in), compiled once per configuration.

use http::HeaderName;

macro_rules! reserved {
    ($($(#[$doc:meta])* $konst:ident = $name:literal,)*) => {
        $( $(#[$doc])* pub static $konst: HeaderName = HeaderName::from_static($name); )*

        /// Every reserved identity field (lower case). Removed from every client request.
        pub const RESERVED: &[&str] = &[$($name),*];

        /// Whether `name` (lower case, as `HeaderName::as_str` gives it) is in [`RESERVED`].
        /// A `match` on the name: a length switch and a compare, no hashing.
        #[inline]
        pub fn is_reserved(name: &str) -> bool {
            matches!(name, $($name)|*)
        }
    };
}

reserved! {
    /// The consumer's custom id, or its username when it has none.
    CONSUMER_ID = "x-consumer-id",
    /// The consumer's username.
    CONSUMER_USERNAME = "x-consumer-username",
    /// The consumer's custom id.
    CONSUMER_CUSTOM_ID = "x-consumer-custom-id",
    /// The consumer's groups (`acl`).
    CONSUMER_GROUPS = "x-consumer-groups",
    /// The credential that authenticated the request.
    CREDENTIAL_IDENTIFIER = "x-credential-identifier",
    /// `true` for the anonymous consumer.
    ANONYMOUS_CONSUMER = "x-anonymous-consumer",
    /// Reserved: the authenticated scopes (the name OAuth2 gateways use; upstreams trust it).
    AUTHENTICATED_SCOPE = "x-authenticated-scope",
    /// Reserved: the authenticated user id (the name OAuth2 gateways use; upstreams trust it).
    AUTHENTICATED_USERID = "x-authenticated-userid",
}

/// Whether a field a plugin's configuration names as an identity field may be removed from
/// client requests. Fields a client legitimately sends to authenticate or to frame and describe
/// its request (`Authorization`, `Cookie`, `Host`, `Content-*`, ...) are never removed: a
/// plugin that sets one (e.g. `forward-auth` copying the auth service's `Authorization`
/// upstream) replaces the client's value itself.
pub fn may_scrub(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "accept"
            | "accept-encoding"
            | "user-agent"
            | "origin"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants, the list and the match agree.
    #[test]
    fn list_and_match_agree() {
        for n in RESERVED {
            assert!(is_reserved(n), "{n}");
            assert_eq!(HeaderName::from_static(n).as_str(), *n, "lower case");
        }
        assert_eq!(RESERVED.len(), 8);
        assert_eq!(CONSUMER_GROUPS.as_str(), "x-consumer-groups");
        assert!(!is_reserved("x-consumer"));
        assert!(!is_reserved("x-request-id"));
        assert!(may_scrub(&HeaderName::from_static("x-user-id")));
        assert!(!may_scrub(&http::header::AUTHORIZATION));
    }
}
