//! Plugins under hostile input, over real sockets: forged identity fields on every kind of
//! route, hmac-auth replays, forged forwarding fields sent to forward-auth, CORS caching, exact
//! sliding-window Retry-After, JSON edits that must not fail open, path templates, which bodies
//! are buffered, template values, bot-detection evasion and request ids on every error body.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gw_core::Clock as _;
use gw_test_util::full;
use http::HeaderValue;
use serde_json::{Value, json};

use crate::support::*;

async fn send(r: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// One service `s` (upstream `up`) and `routes` (YAML list items), then `rest`.
fn config(up: &Upstream, routes: &str, rest: &str) -> String {
    format!("services:\n  - name: s\n    url: http://{}\nroutes:\n{routes}{rest}", up.authority())
}

fn route(name: &str, path: &str) -> String {
    format!("  - name: {name}\n    service: s\n    paths: [\"{path}\"]\n")
}

// === identity fields ===

/// The identity fields configured by plugins in `identity_config` (beyond the reserved ones).
const CONFIGURED: &[&str] = &["x-user-id", "x-scopes", "x-auth-user", "x-user"];

fn identity_config(up: &Upstream, auth: &Upstream) -> String {
    let routes = [
        route("plain", "/plain/*"),
        route("key", "/key/*"),
        route("jwt", "/jwt/*"),
        route("acl", "/acl/*"),
        route("fa", "/fa/*"),
    ]
    .concat();
    let rest = format!(
        "plugins:
  - {{ plugin: key-auth, route: key }}
  - plugin: request-transformer
    route: key
    config: {{ add: {{ headers: {{ x-user: \"$(consumer.username)\" }} }} }}
  - plugin: jwt
    route: jwt
    config: {{ forward_claims: {{ sub: x-user-id, scope: x-scopes }} }}
  - {{ plugin: key-auth, route: acl }}
  - {{ plugin: acl, route: acl, config: {{ allow: [staff] }} }}
  - plugin: forward-auth
    route: fa
    config: {{ url: \"http://{}/check\", upstream_headers: [x-auth-user] }}
consumers:
  - username: alice
    custom_id: A-1
    groups: [staff]
    credentials:
      - {{ type: key-auth, id: alice-key, key: alice-secret-key }}
      - {{ type: jwt, key: alice-iss, algorithm: HS256, secret: alice-jwt-secret-0123456789-abcdefghij }}
",
        auth.authority()
    );
    config(up, &routes, &rest)
}

/// Every identity field, reserved or configured by a plugin, is removed from client input on
/// every route: without plugins, with key-auth (and a transformer adding a consumer field), jwt
/// (with claims forwarded in headers), acl and forward-auth. Each is sent twice with forged
/// values; the upstream sees only what the gateway set.
#[tokio::test]
async fn identity_fields_are_scrubbed_on_every_route() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    // An auth service that allows and vouches for nobody in particular (sets no x-auth-user).
    let auth = Upstream::start(Behavior::Status(200)).await;
    let gw = gateway(&identity_config(&up, &auth)).await;
    let url = gw.url("main");
    let names: Vec<&str> = gw_core::identity::RESERVED.iter().chain(CONFIGURED).copied().collect();
    assert!(names.len() >= 12, "{names:?}");
    let forge = |mut r: reqwest::RequestBuilder| {
        for n in &names {
            r = r.header(*n, format!("forged-{n}")).header(*n, "forged-again");
        }
        r
    };
    let token = hs256(
        &json!({"iss": "alice-iss", "sub": "u-1", "exp": now() + 300}),
        b"alice-jwt-secret-0123456789-abcdefghij",
    );
    let c = client();
    for (path, auth_header, expect) in [
        ("/plain/x", None, json!({})),
        (
            "/key/x",
            Some(("x-api-key", "alice-secret-key".to_string())),
            json!({"x-consumer-username": "alice", "x-consumer-id": "A-1", "x-consumer-custom-id": "A-1",
                   "x-credential-identifier": "alice-key", "x-user": "alice"}),
        ),
        (
            "/jwt/x",
            Some(("authorization", format!("Bearer {token}"))),
            json!({"x-consumer-username": "alice", "x-consumer-id": "A-1", "x-consumer-custom-id": "A-1",
                   "x-credential-identifier": "alice-iss", "x-user-id": "u-1"}),
        ),
        (
            "/acl/x",
            Some(("x-api-key", "alice-secret-key".to_string())),
            json!({"x-consumer-username": "alice", "x-consumer-id": "A-1", "x-consumer-custom-id": "A-1",
                   "x-consumer-groups": "staff", "x-credential-identifier": "alice-key"}),
        ),
        ("/fa/x", None, json!({})),
    ] {
        let mut r = forge(c.get(format!("{url}{path}")));
        if let Some((k, v)) = &auth_header {
            r = r.header(*k, v);
        }
        let (s, _, b) = send(r).await;
        assert_eq!(s, 200, "{path}: {b}");
        let h = &b["headers"];
        for n in &names {
            let got = h.get(*n).and_then(Value::as_str);
            assert!(!got.is_some_and(|v| v.contains("forged")), "{path}: {n} reached the upstream: {got:?}");
            assert_eq!(got, expect.get(*n).and_then(Value::as_str), "{path}: {n}");
        }
    }
}

/// A jwt token verified by a JWKS, without a consumer: the upstream gets the token's subject as
/// `X-Credential-Identifier` (the client's forged one replaced), and no consumer fields.
#[tokio::test]
async fn jwt_without_consumer_sends_credential_identifier() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]), "kid": "k1", "alg": "ES256"});
    let doc = json!({"keys": [jwk]}).to_string();
    let jwks = Upstream::start(Behavior::Custom(Arc::new(move |_req| {
        let doc = doc.clone();
        Box::pin(async move { http::Response::new(full(doc)) })
    })))
    .await;
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = format!(
        "plugins:\n  - plugin: jwt\n    config: {{ jwks: {{ url: \"http://{}/jwks\", algorithms: [ES256] }} }}\n",
        jwks.authority()
    );
    let gw = gateway(&config(&up, &route("r", "/*"), &rest)).await;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("k1".into());
    let token = jsonwebtoken::encode(
        &h,
        &json!({"sub": "service-7", "exp": now() + 300}),
        &jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (s, _, b) =
        send(client().get(gw.url("main")).bearer_auth(token).header("x-credential-identifier", "forged")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-credential-identifier"], "service-7");
    assert!(b["headers"].get("x-consumer-username").is_none());
}

// === hmac-auth ===

fn hmac_sign(secret: &[u8], text: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

fn hmac_auth(signed: &str, sig: &str) -> String {
    format!("hmac username=\"svc-key\", algorithm=\"hmac-sha256\", headers=\"{signed}\", signature=\"{sig}\"")
}

/// hmac-auth replay windows: the time checked is one the signature covers. A captured request
/// signed over `date` is refused once outside the clock skew, and a fresh, unsigned `X-Date`
/// added to it changes nothing; a request that signs `x-date` is checked on it; a duplicated
/// signed date is refused; with `reject_replays`, a signature is accepted once.
#[tokio::test]
async fn hmac_replays_are_bounded_by_the_signed_date() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |extra: &str| {
        config(
            &up,
            &route("r", "/*"),
            &format!(
                "plugins:\n  - plugin: hmac-auth\n    config: {{ clock_skew: 60s{extra} }}
consumers:\n  - username: svc\n    credentials:\n      - {{ type: hmac-auth, username: svc-key, secret: \"hmac-shared-secret\" }}\n"
            ),
        )
    };
    let gw = gateway(&yaml("")).await;
    let url = gw.url("main");
    let c = client();
    let secret = b"hmac-shared-secret";
    let date_at = |ago: u64| httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(ago));
    let captured = |date: &str| {
        let sig = hmac_sign(secret, &format!("date: {date}\n@request-target: get /orders"));
        hmac_auth("date @request-target", &sig)
    };

    // Fresh: accepted.
    let fresh = date_at(0);
    let (s, _, b) =
        send(c.get(format!("{url}/orders")).header("date", &fresh).header("authorization", captured(&fresh))).await;
    assert_eq!(s, 200, "{b}");
    // Captured 10 minutes ago: refused, with or without a fresh unsigned X-Date.
    let old = date_at(600);
    let replay = || c.get(format!("{url}/orders")).header("date", &old).header("authorization", captured(&old));
    assert_eq!(send(replay()).await.0, 401, "outside the clock skew");
    assert_eq!(send(replay().header("x-date", date_at(0))).await.0, 401, "an unsigned X-Date does not refresh it");
    // Just inside the window the same capture still works (the documented replay window).
    let recent = date_at(30);
    let (s, _, _) =
        send(c.get(format!("{url}/orders")).header("date", &recent).header("authorization", captured(&recent))).await;
    assert_eq!(s, 200);

    // Signing x-date: that is the time checked; an old unsigned Date does not matter.
    let xd = date_at(0);
    let sig = hmac_sign(secret, &format!("x-date: {xd}\n@request-target: get /orders"));
    let (s, _, _) = send(
        c.get(format!("{url}/orders"))
            .header("x-date", &xd)
            .header("date", &old)
            .header("authorization", hmac_auth("x-date @request-target", &sig)),
    )
    .await;
    assert_eq!(s, 200);
    // Signing an old x-date and adding a fresh Date does not help either.
    let sig = hmac_sign(secret, &format!("x-date: {old}\n@request-target: get /orders"));
    let (s, _, _) = send(
        c.get(format!("{url}/orders"))
            .header("x-date", &old)
            .header("date", date_at(0))
            .header("authorization", hmac_auth("x-date @request-target", &sig)),
    )
    .await;
    assert_eq!(s, 401);
    // Two Date fields: refused (the signature covers both, the check would read one).
    let two = format!("{old}, {fresh}");
    let sig = hmac_sign(secret, &format!("date: {two}\n@request-target: get /orders"));
    let (s, _, _) = send(
        c.get(format!("{url}/orders"))
            .header("date", &old)
            .header("date", &fresh)
            .header("authorization", hmac_auth("date @request-target", &sig)),
    )
    .await;
    assert_eq!(s, 401);

    // reject_replays: one use per signature.
    gw.reload(&base(&yaml(", reject_replays: true")), &[]).await.unwrap();
    let d = date_at(0);
    let once = || c.get(format!("{url}/orders")).header("date", &d).header("authorization", captured(&d));
    assert_eq!(send(once()).await.0, 200);
    assert_eq!(send(once()).await.0, 401, "the same signature again");
    let d2 = date_at(1);
    let (s, _, _) =
        send(c.get(format!("{url}/orders")).header("date", &d2).header("authorization", captured(&d2))).await;
    assert_eq!(s, 200, "another signature");
}

// === forward-auth ===

/// A field name and the values the auth service received for it.
type Seen = (String, Vec<String>);

/// forward-auth: the client's `X-Forwarded-*` never reach the auth service; the gateway's
/// values are the only ones. The auth service here allows what the first `X-Forwarded-Uri`
/// names under `/public`, as a real one reading the first value would.
#[tokio::test]
async fn forward_auth_gets_only_the_gateways_forwarding_fields() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let auth = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        let mut got = Vec::new();
        for n in ["x-forwarded-uri", "x-forwarded-method", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-for"] {
            let vals = req.headers().get_all(n).iter().map(|v| v.to_str().unwrap_or("").to_string()).collect();
            got.push((n.to_string(), vals));
        }
        let first_uri = req.headers().get("x-forwarded-uri").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        s2.lock().unwrap().extend(got);
        Box::pin(async move {
            let mut r = http::Response::new(full(""));
            if !first_uri.starts_with("/public") {
                *r.status_mut() = http::StatusCode::FORBIDDEN;
            }
            r
        })
    })))
    .await;
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest =
        format!("plugins:\n  - plugin: forward-auth\n    config: {{ url: \"http://{}/check\" }}\n", auth.authority());
    let gw = gateway(&config(&up, &route("r", "/*"), &rest)).await;
    let c = client();
    let (s, _, _) = send(
        c.get(format!("{}/admin/users", gw.url("main")))
            .header("x-forwarded-uri", "/public/x")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-host", "evil.test")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "203.0.113.1"),
    )
    .await;
    assert_eq!(s, 403, "the auth service read the gateway's X-Forwarded-Uri");
    assert_eq!(up.hits(), 0);
    let port = gw.addr("main").port();
    let seen = seen.lock().unwrap().clone();
    let get = |n: &str| seen.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("x-forwarded-uri"), ["/admin/users"]);
    assert_eq!(get("x-forwarded-method"), ["GET"]);
    assert_eq!(get("x-forwarded-host"), ["127.0.0.1"], "port {port} is not part of the host");
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"]);
    let (s, _, _) = send(c.get(format!("{}/public/x", gw.url("main")))).await;
    assert_eq!(s, 200);
}

/// forward-auth failing open lets the request through without the client's copies of the
/// headers the auth service would have vouched for.
#[tokio::test]
async fn forward_auth_failing_open_drops_forged_upstream_headers() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let rest = format!(
        "plugins:\n  - plugin: forward-auth\n    config: {{ url: \"http://{dead}/check\", upstream_headers: [x-auth-user, authorization], failure_mode: open, timeout: 300ms }}\n"
    );
    let gw = gateway(&config(&up, &route("r", "/*"), &rest)).await;
    let (s, _, b) =
        send(client().get(gw.url("main")).header("x-auth-user", "admin").header("authorization", "Bearer forged"))
            .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["headers"].get("x-auth-user").is_none(), "{b}");
    assert!(b["headers"].get("authorization").is_none(), "{b}");
}

// === cors ===

/// Every response of a route with cors varies on Origin: allowed, refused, absent, preflight.
#[tokio::test]
async fn cors_varies_on_origin_for_every_response() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = "plugins:\n  - plugin: cors\n    config: { origins: [\"https://app.example.com\"] }\n";
    let gw = gateway(&config(&up, &route("r", "/*"), rest)).await;
    let url = gw.url("main");
    let c = client();
    let vary = |h: &reqwest::header::HeaderMap| {
        h.get_all("vary").iter().any(|v| v.to_str().unwrap_or("").to_ascii_lowercase().contains("origin"))
    };
    for origin in [Some("https://app.example.com"), Some("https://evil.test"), None] {
        let mut r = c.get(&url);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let (s, h, _) = send(r).await;
        assert_eq!(s, 200);
        assert!(vary(&h), "{origin:?}: {h:?}");
        assert_eq!(h.contains_key("access-control-allow-origin"), origin == Some("https://app.example.com"));
    }
    let (s, h, _) = send(
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", "https://evil.test")
            .header("access-control-request-method", "GET"),
    )
    .await;
    assert_eq!(s, 204);
    assert!(vary(&h));
}

// === rate limiting ===

/// Sliding window: a client that waits exactly `Retry-After` is admitted, one that waits a bit
/// less is not, locally and on Redis. A full window of 2 per minute is still weighted in the next
/// window: the wait is 90 s, not the 60 s to the window end.
#[tokio::test]
async fn sliding_window_retry_after_is_exact() {
    let up = Upstream::start(Behavior::Status(200)).await;
    for policy in ["local", "redis"] {
        let minute = 60_000;
        let w0 = (gw_core::SystemClock.now_ms() / minute + 10) * minute;
        let clock = Arc::new(gw_core::OffsetClock::starting_at(w0));
        let id =
            format!("{:x}{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos(), std::process::id());
        let yaml = format!(
            "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"redis://127.0.0.1:6379/\", timeout: 500ms }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{}",
            config(
                &up,
                &route("r", "/*"),
                &format!(
                    "plugins:\n  - plugin: rate-limiting\n    name: rl-{id}\n    config: {{ minute: 2, limit_by: [ip], algorithm: sliding-window, policy: {policy}, failure_mode: closed }}\n"
                ),
            )
        );
        let gw = gw_test_util::TestGateway::start_with_clock(&yaml, clock.clone()).await;
        let url = gw.url("main");
        let c = client();
        assert_eq!(send(c.get(&url)).await.0, 200, "{policy}");
        assert_eq!(send(c.get(&url)).await.0, 200, "{policy}");
        let (s, h, b) = send(c.get(&url)).await;
        let refused_by = clock.now_ms();
        assert_eq!(s, 429, "{policy}");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert_eq!(retry, 90, "{policy}: {b}");
        assert_eq!(b["retry_after"], 90);
        // A bit less than the exact admission time (w0 + 90 s): refused.
        clock.set(w0 + 90_000 - 300);
        assert_eq!(send(c.get(&url)).await.0, 429, "{policy}: 300 ms early");
        // Retry-After after the refusal: admitted.
        clock.set(refused_by + retry * 1000);
        assert_eq!(send(c.get(&url)).await.0, 200, "{policy}: waited Retry-After");
    }
}

// === transformers: JSON bodies ===

/// Bodies declared JSON that the gateway cannot parse, or that are not objects, with a field
/// the transformer must remove.
fn unparseable_bodies() -> Vec<(&'static str, String)> {
    let deep = format!("{{\"password\":\"hunter2\",\"d\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    vec![
        ("nesting deeper than 127", deep),
        ("lone surrogate", r#"{"password":"hunter2","s":"\ud800"}"#.to_string()),
        ("number out of range", r#"{"password":"hunter2","n":1e400}"#.to_string()),
        ("not an object", r#"[{"password":"hunter2"}]"#.to_string()),
        ("truncated", r#"{"password":"hunter2","#.to_string()),
        ("trailing garbage", r#"{"password":"hunter2"} x"#.to_string()),
    ]
}

/// request-transformer `remove: json:[password]`: a declared JSON body it cannot edit is refused
/// with 400 `invalid_json_body` (never forwarded unedited), whatever the JSON content type;
/// `invalid_json: pass` forwards it unedited, by choice. Editable bodies are edited.
#[tokio::test]
async fn request_json_edits_never_fail_open() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |extra: &str| {
        config(
            &up,
            &route("r", "/*"),
            &format!(
                "plugins:\n  - plugin: request-transformer\n    config: {{ remove: {{ json: [password] }}{extra} }}\n"
            ),
        )
    };
    let gw = gateway(&yaml("")).await;
    let url = gw.url("main");
    let c = client();
    for ct in ["application/json", "application/json; charset=utf-8", "application/vnd.api+json", "Application/JSON"] {
        for (why, body) in unparseable_bodies() {
            let (s, h, b) = send(c.post(&url).header("content-type", ct).body(body.clone())).await;
            assert_eq!(s, 400, "{ct} {why}: {b}");
            assert_eq!(b["error"], "invalid_json_body", "{why}");
            assert_eq!(b["request_id"], h["x-request-id"].to_str().unwrap(), "{why}");
        }
        let (s, _, b) = send(c.post(&url).header("content-type", ct).body(r#"{"password":"x","a":1}"#)).await;
        assert_eq!(s, 200);
        assert_eq!(b["body"], r#"{"a":1}"#, "{ct}");
    }
    // A second Content-Type field cannot hide a JSON body.
    let (s, _, _) = send(
        c.post(&url)
            .header("content-type", "text/plain")
            .header("content-type", "application/json")
            .body("{\"password\":1"),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(up.hits(), 4, "only the editable bodies reached the upstream");

    gw.reload(&base(&yaml(", invalid_json: pass")), &[]).await.unwrap();
    for (why, body) in unparseable_bodies() {
        let (s, _, b) = send(c.post(&url).header("content-type", "application/json").body(body.clone())).await;
        assert_eq!(s, 200, "{why}");
        assert_eq!(b["body_bytes"], body.len(), "{why}: passed unedited, as configured");
    }
}

/// response-transformer: a declared JSON response it cannot edit becomes 502
/// `response_not_editable` (not counted against the upstream), unless `invalid_json: pass`.
#[tokio::test]
async fn response_json_edits_never_fail_open() {
    let body: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let b2 = body.clone();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |_req| {
        let b = b2.lock().unwrap().clone();
        Box::pin(async move {
            let mut r = http::Response::new(full(b));
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r
        })
    })))
    .await;
    let yaml = |extra: &str| {
        config(
            &up,
            &route("r", "/*"),
            &format!(
                "plugins:\n  - plugin: response-transformer\n    config: {{ remove: {{ json: [password] }}{extra} }}\n"
            ),
        )
    };
    let gw = gateway(&yaml("")).await;
    let url = gw.url("main");
    let c = client();
    for (why, b) in unparseable_bodies() {
        *body.lock().unwrap() = b;
        let (s, h, v) = send(c.get(&url)).await;
        assert_eq!(s, 502, "{why}: {v}");
        assert_eq!(v["error"], "response_not_editable", "{why}");
        assert_eq!(v["request_id"], h["x-request-id"].to_str().unwrap());
    }
    *body.lock().unwrap() = r#"{"password":"x","a":1}"#.into();
    let (s, _, v) = send(c.get(&url)).await;
    assert_eq!((s, v), (200, json!({"a": 1})));

    gw.reload(&base(&yaml(", invalid_json: pass")), &[]).await.unwrap();
    for (why, b) in unparseable_bodies() {
        *body.lock().unwrap() = b.clone();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{why}");
        assert_eq!(r.text().await.unwrap(), b, "{why}");
    }
}

/// Only bodies declared JSON are buffered for JSON edits: a 20 MB upload of another type
/// streams through (the route allows it); a JSON body over 8 MiB gets 413; a response over
/// 8 MiB to edit gets 502 `response_too_large`, one of another type streams; a HEAD keeps the
/// upstream's Content-Length.
#[tokio::test]
async fn only_bodies_to_edit_are_buffered() {
    let big = 9 << 20;
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = req.into_parts();
            let received = body.collect().await.map(|c| c.to_bytes().len()).unwrap_or(0);
            let ct = match parts.uri.path() {
                "/big-json" | "/small-json" => "application/json",
                _ => "application/octet-stream",
            };
            let body = match parts.uri.path() {
                "/big-json" | "/big-bin" => vec![b' '; big],
                "/small-json" => br#"{"a":1,"password":"x"}"#.to_vec(),
                _ => format!("{{\"received\":{received}}}").into_bytes(),
            };
            let len = body.len();
            let mut r = http::Response::new(full(body));
            r.headers_mut().insert("content-type", HeaderValue::from_static(ct));
            r.headers_mut().insert("content-length", HeaderValue::from(len));
            r
        })
    })))
    .await;
    let routes = "  - name: r\n    service: s\n    paths: [\"/*\"]\n    max_body_bytes: 64MiB\n";
    let rest = "plugins:
  - plugin: request-transformer
    config: { remove: { json: [password] } }
  - plugin: response-transformer
    config: { remove: { json: [password] } }
";
    let gw = gateway(&config(&up, routes, rest)).await;
    let url = gw.url("main");
    let c = client();
    let (s, _, b) = send(
        c.post(format!("{url}/upload")).header("content-type", "application/octet-stream").body(vec![7u8; 20_000_000]),
    )
    .await;
    assert_eq!((s, &b["received"]), (200, &json!(20_000_000)), "{b}");
    let (s, _, b) = send(c.post(format!("{url}/upload")).body(vec![7u8; 20_000_000])).await;
    assert_eq!(s, 200, "no content type: not JSON: {b}");
    // A JSON body over 8 MiB: 413 from its Content-Length, before the body is sent (curl waits
    // for `100 Continue`, which never comes).
    let mut json_body = b"{\"a\":\"".to_vec();
    json_body.resize(big, b'a');
    json_body.extend_from_slice(b"\"}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    std::fs::write(&file, &json_body).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sv",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "10",
            "-H",
            "content-type: application/json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}/upload"))
        .output()
        .await
        .unwrap();
    let (verbose, body) = (String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert!(verbose.contains("HTTP/1.1 413"), "{verbose}");
    assert!(!verbose.contains("100 Continue"), "{verbose}");
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b["error"], "payload_too_large");
    assert!(b["request_id"].as_str().is_some_and(|id| verbose.contains(&format!("x-request-id: {id}"))), "{b}");

    let (s, _, b) = send(c.get(format!("{url}/big-json"))).await;
    assert_eq!(s, 502);
    assert_eq!(b["error"], "response_too_large", "{b}");
    let r = c.get(format!("{url}/big-bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), big, "streamed");

    let (s, _, b) = send(c.get(format!("{url}/small-json"))).await;
    assert_eq!((s, b), (200, json!({"a": 1})));
    let r = c.head(format!("{url}/small-json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], r#"{"a":1,"password":"x"}"#.len().to_string(), "the upstream's length");
}

// === transformers: paths and template values ===

/// Values placed in a path are percent-encoded as one segment each (route parameters keep
/// their slashes); the result is checked like a client path.
#[tokio::test]
async fn path_template_values_are_encoded() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let routes = "  - name: r\n    service: s\n    paths: [\"/t/{*rest}\"]\n";
    let rest =
        "plugins:\n  - plugin: request-transformer\n    config: { path: \"/base/$(params.rest)/x/$(headers.x-p)\" }\n";
    let gw = gateway(&config(&up, routes, rest)).await;
    let url = gw.url("main");
    let c = client();
    for (rest, xp, path) in [
        ("a", "z?evil=1", "/base/a/x/z%3Fevil=1"),
        ("a", "../../admin", "/base/a/x/..%2F..%2Fadmin"),
        ("a", "a#frag", "/base/a/x/a%23frag"),
        ("a", "100%", "/base/a/x/100%25"),
        ("a/b%20c", "ok", "/base/a/b%20c/x/ok"),
    ] {
        let (s, _, b) = send(c.get(format!("{url}/t/{rest}?orig=1")).header("x-p", xp)).await;
        assert_eq!(s, 200, "{xp}: {b}");
        assert_eq!(b["path"], path, "{xp}");
        assert_eq!(b["query"], "orig=1", "{xp}");
    }
    let (s, _, b) =
        send(c.get(format!("{url}/t/a")).header("x-p", HeaderValue::from_bytes("é".as_bytes()).unwrap())).await;
    assert_eq!((s, b["path"].as_str()), (200, Some("/base/a/x/%C3%A9")));
    let hits = up.hits();
    for xp in ["..", "."] {
        let (s, _, b) = send(c.get(format!("{url}/t/a")).header("x-p", xp)).await;
        assert_eq!(s, 400, "{xp}: a dot segment: {b}");
    }
    assert_eq!(up.hits(), hits, "refused paths never reach the upstream");
}

/// Template values: non-ASCII header values are kept; in response-transformer `$(headers.x)`
/// is the response's, `$(request_headers.x)` and `$(query.x)` the request's.
#[tokio::test]
async fn template_values() {
    let up = Upstream::start(Behavior::Echo("up-1")).await;
    let rest = "plugins:
  - plugin: request-transformer
    config: { add: { headers: { x-copy: \"<$(headers.x-name)>\" }, json: { name: \"$(headers.x-name)\" } } }
  - plugin: response-transformer
    config: { add: { headers: { x-page: \"$(query.page)\", x-client: \"$(request_headers.x-client)\", x-from: \"$(headers.x-upstream)\" } } }
";
    let gw = gateway(&config(&up, &route("r", "/*"), rest)).await;
    let r = client()
        .post(format!("{}/x?page=3", gw.url("main")))
        .header("x-name", HeaderValue::from_bytes("café".as_bytes()).unwrap())
        .header("x-client", "ios")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-page"], "3");
    assert_eq!(r.headers()["x-client"], "ios");
    assert_eq!(r.headers()["x-from"], "up-1");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["headers"]["x-copy"], "<café>");
    assert_eq!(b["body"], r#"{"name":"café"}"#);
}

// === bot-detection ===

/// bot-detection checks every User-Agent value, as bytes; an empty one counts as missing.
#[tokio::test]
async fn bot_detection_checks_every_value() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = "plugins:\n  - plugin: bot-detection\n    config: { deny_missing_user_agent: true }\n";
    let gw = gateway(&config(&up, &route("r", "/*"), rest)).await;
    let url = gw.url("main");
    let c = client();
    let ua = |vals: &[&[u8]]| {
        let mut r = c.get(&url);
        for v in vals {
            r = r.header("user-agent", HeaderValue::from_bytes(v).unwrap());
        }
        r
    };
    assert_eq!(send(ua(&[b"Mozilla/5.0 (X11) Firefox/130.0"])).await.0, 200);
    for (why, vals) in [
        ("non-ASCII byte", vec![&b"sqlmap/1.7 \xff"[..]]),
        ("UTF-8", vec!["nikto/2 é".as_bytes()]),
        ("second value", vec![&b"Mozilla/5.0"[..], &b"sqlmap/1.7"[..]]),
        ("empty", vec![&b""[..]]),
        ("blank", vec![&b"   "[..]]),
        ("missing", vec![]),
    ] {
        assert_eq!(send(ua(&vals)).await.0, 403, "{why}");
    }
    assert_eq!(up.hits(), 1);
}

// === request ids on error bodies ===

/// Every JSON error body the gateway produces carries the request id, plugin replies included:
/// 401, 403 (acl, ip-restriction, bot-detection), 429, request-termination, 404.
#[tokio::test]
async fn error_bodies_carry_the_request_id() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let routes = [
        route("auth", "/auth/*"),
        route("acl", "/acl/*"),
        route("ip", "/ip/*"),
        route("bot", "/bot/*"),
        route("rl", "/rl/*"),
        route("term", "/term/*"),
    ]
    .concat();
    let rest = "plugins:
  - { plugin: key-auth, route: auth }
  - { plugin: key-auth, route: acl }
  - { plugin: acl, route: acl, config: { allow: [admins] } }
  - { plugin: ip-restriction, route: ip, config: { deny: [127.0.0.0/8] } }
  - { plugin: bot-detection, route: bot }
  - { plugin: rate-limiting, route: rl, config: { second: 1, minute: 1 } }
  - { plugin: request-termination, route: term, config: { status: 503, message: maintenance } }
consumers:
  - username: bob
    credentials:
      - { type: key-auth, key: bob-secret-key }
";
    let gw = gateway(&config(&up, &routes, rest)).await;
    let url = gw.url("main");
    let c = client();
    assert_eq!(send(c.get(format!("{url}/rl/x"))).await.0, 200);
    for (path, key, ua, status) in [
        ("/auth/x", None, None, 401),
        ("/acl/x", Some("bob-secret-key"), None, 403),
        ("/ip/x", None, None, 403),
        ("/bot/x", None, Some("sqlmap/1.7"), 403),
        ("/rl/x", None, None, 429),
        ("/term/x", None, None, 503),
        ("/nowhere", None, None, 404),
    ] {
        let mut r = c.get(format!("{url}{path}")).header("x-request-id", format!("rid-{status}-{}", path.len()));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        if let Some(u) = ua {
            r = r.header("user-agent", u);
        }
        let (s, h, b) = send(r).await;
        assert_eq!(s, status, "{path}: {b}");
        assert_eq!(h["x-request-id"], format!("rid-{status}-{}", path.len()).as_str());
        assert_eq!(b["request_id"], h["x-request-id"].to_str().unwrap(), "{path}: {b}");
    }
}
