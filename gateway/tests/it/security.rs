//! Security plugins over real sockets: consumers and credentials, every auth plugin (with a JWT
//! attack set and JWKS rotation against a local JWKS server, mTLS with certificates generated
//! here), forward-auth, acl, ip-restriction, cors, bot-detection, request-size-limiting and the
//! transformers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gw_test_util::{TestCa, full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

/// One service `s` (the echo upstream `up`) and one route `r` on `/*`, plus `rest` (plugins,
/// consumers, gateway settings).
fn with_route(up: &Upstream, rest: &str) -> String {
    format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/*\"]\n{rest}",
        up.authority()
    )
}

const CONSUMERS: &str = "consumers:
  - username: alice
    custom_id: A-1
    groups: [admins, staff]
    credentials:
      - { type: key-auth, id: alice-key, key: alice-secret-key }
      - { type: basic-auth, username: alice, password: \"correct horse\" }
  - username: bob
    groups: [staff]
    credentials:
      - { type: key-auth, id: bob-key, key_hash: \"sha256:BOBHASH\" }
  - username: guest
";

fn consumers() -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(b"bob-secret-key");
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    CONSUMERS.replace("BOBHASH", &hex)
}

/// An error body without its request id (present, and different for every request), to compare
/// refusals with each other.
fn without_request_id(mut b: Value) -> Value {
    let id = b.as_object_mut().and_then(|o| o.remove("request_id"));
    assert!(id.as_ref().and_then(Value::as_str).is_some_and(|s| !s.is_empty()), "request_id in {b}");
    b
}

async fn send(r: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// key-auth: keys in a header or the query, hashed keys, consumer headers upstream, credentials
/// stripped, and 401s that never say which part was wrong.
#[tokio::test]
async fn key_auth() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(&up, &format!("plugins:\n  - plugin: key-auth\n    route: r\n{}", consumers()))).await;
    let url = gw.url("main");
    let c = client();

    let (s, h, b) = send(c.get(format!("{url}/x"))).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Key realm="));
    assert_eq!(b["message"], "missing credentials");

    let (s, h, b) = send(c.get(format!("{url}/x")).header("x-api-key", "not-a-key-at-all")).await;
    assert_eq!(s, 401);
    assert!(h.contains_key("www-authenticate"));
    assert_eq!(b["message"], "invalid credentials");
    assert_eq!(up.hits(), 0, "refused requests never reach the upstream");

    // Header; spoofed consumer headers are replaced by the real ones.
    let (s, _, b) = send(
        c.get(format!("{url}/x"))
            .header("x-api-key", "alice-secret-key")
            .header("x-consumer-username", "mallory")
            .header("x-credential-identifier", "forged"),
    )
    .await;
    assert_eq!(s, 200);
    let h = &b["headers"];
    assert_eq!(h["x-consumer-username"], "alice");
    assert_eq!(h["x-consumer-id"], "A-1");
    assert_eq!(h["x-credential-identifier"], "alice-key");
    assert!(h.get("x-api-key").is_none(), "the key is stripped: {h}");

    // Query parameter; a key stored only as its SHA-256.
    let (s, _, b) = send(c.get(format!("{url}/x?keep=1&apikey=bob-secret-key&z=%20"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "bob");
    assert_eq!(b["query"], "keep=1&z=%20", "only the key parameter is removed");
}

/// hide_credentials: false passes the key on.
#[tokio::test]
async fn key_auth_keeps_credentials_when_asked() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(
        &up,
        &format!(
            "plugins:\n  - plugin: key-auth\n    config: {{ key_names: [x-key], key_in_query: false, hide_credentials: false }}\n{}",
            consumers()
        ),
    ))
    .await;
    let (s, _, b) = send(client().get(gw.url("main")).header("x-key", "alice-secret-key")).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-key"], "alice-secret-key");
    let (s, _, _) = send(client().get(format!("{}?x-key=alice-secret-key", gw.url("main")))).await;
    assert_eq!(s, 401, "query keys are off");
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

/// basic-auth (RFC 7617): argon2-hashed passwords; the same 401 for a wrong password, an unknown
/// user and a malformed header.
#[tokio::test]
async fn basic_auth() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(
        &up,
        &format!("plugins:\n  - plugin: basic-auth\n    config: {{ realm: api }}\n{}", consumers()),
    ))
    .await;
    let url = gw.url("main");
    let c = client();
    let (s, h, _) = send(c.get(&url)).await;
    assert_eq!(s, 401);
    assert_eq!(h["www-authenticate"], "Basic realm=\"api\", charset=\"UTF-8\"");
    let (s, _, b) = send(c.get(&url).header("authorization", basic("alice", "correct horse"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(b["headers"]["x-credential-identifier"], "alice");
    assert!(b["headers"].get("authorization").is_none());
    // Again: served from the verified cache, same answer.
    let (s, _, _) = send(c.get(&url).header("authorization", basic("alice", "correct horse"))).await;
    assert_eq!(s, 200);
    let mut bodies = Vec::new();
    for auth in
        [basic("alice", "wrong"), basic("nobody", "correct horse"), "Basic %%%not-base64".into(), basic("alice", "")]
    {
        let (s, h, b) = send(c.get(&url).header("authorization", auth.clone())).await;
        assert_eq!(s, 401, "{auth}");
        assert!(h.contains_key("www-authenticate"));
        bodies.push(without_request_id(b));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "no hint of what was wrong: {bodies:?}");
}

/// Several auth plugins: `any` takes the first that succeeds, `all` needs every one; an
/// anonymous consumer is used when none succeeds.
#[tokio::test]
async fn auth_modes_and_anonymous() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |mode: &str, anon: &str| {
        format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    auth_mode: {mode}\nplugins:\n  - plugin: key-auth\n    config: {{ {anon} }}\n  - plugin: basic-auth\n{}",
            up.authority(),
            consumers()
        )
    };
    let gw = gateway(&yaml("any", "")).await;
    let url = gw.url("main");
    let c = client();
    assert_eq!(send(c.get(&url).header("x-api-key", "alice-secret-key")).await.0, 200);
    assert_eq!(send(c.get(&url).header("authorization", basic("alice", "correct horse"))).await.0, 200);
    let (s, _, b) = send(c.get(&url).header("x-api-key", "wrong-key-123")).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (401, Some("invalid credentials")),
        "a rejection beats a missing credential"
    );

    gw.reload(&base(&yaml("all", "")), &[]).await.unwrap();
    assert_eq!(send(c.get(&url).header("x-api-key", "alice-secret-key")).await.0, 401, "all: basic is missing");
    let (s, _, b) = send(
        c.get(&url).header("x-api-key", "alice-secret-key").header("authorization", basic("alice", "correct horse")),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "alice");

    gw.reload(&base(&yaml("any", "anonymous: guest")), &[]).await.unwrap();
    let (s, _, b) = send(c.get(&url).header("x-consumer-username", "alice")).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "guest");
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
    assert!(b["headers"].get("x-credential-identifier").is_none());
    let (_, _, b) = send(c.get(&url).header("x-api-key", "alice-secret-key")).await;
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert!(b["headers"].get("x-anonymous-consumer").is_none());

    // An anonymous consumer that does not exist is a configuration error.
    let err = gw.reload(&base(&yaml("any", "anonymous: ghost")), &[]).await.unwrap_err();
    assert!(err.contains("ghost"), "{err}");
}

// === JWT ===

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token with an arbitrary header and payload, signed by HMAC-SHA256 with `secret` (for
/// forging attacks).
fn hs256_raw(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::Mac;
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(input.as_bytes());
    format!("{input}.{}", b64url(&m.finalize().into_bytes()))
}

struct JwtKeys {
    rsa_private: String,
    rsa_public: String,
}

fn jwt_keys() -> JwtKeys {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    JwtKeys { rsa_private: kp.serialize_pem(), rsa_public: kp.public_key_pem() }
}

fn indent(pem: &str, n: usize) -> String {
    pem.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect()
}

/// The JWT attack set against consumer keys pinned to HS256 and RS256.
#[tokio::test]
async fn jwt_consumer_keys_and_attacks() {
    let keys = jwt_keys();
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = format!(
        "plugins:
  - plugin: jwt
    config:
      audiences: [orders-api]
      leeway: 5s
      max_token_bytes: 4KiB
      forward_claims: {{ sub: x-jwt-sub, scope: x-jwt-scope }}
consumers:
  - username: hs-user
    credentials:
      - {{ type: jwt, key: hs-issuer, algorithm: HS256, secret: \"0123456789abcdef0123456789abcdef\" }}
  - username: rs-user
    credentials:
      - type: jwt
        key: rs-issuer
        algorithm: RS256
        public_key: |
{}",
        indent(&keys.rsa_public, 10)
    );
    let gw = gateway(&with_route(&up, &rest)).await;
    let url = gw.url("main");
    let c = client();
    let secret = b"0123456789abcdef0123456789abcdef";
    let hs = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let rs = |claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(keys.rsa_private.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let good =
        |iss: &str| json!({"iss": iss, "sub": "user-7", "aud": "orders-api", "exp": now() + 300, "scope": "read"});
    let status = |token: String| {
        let c = c.clone();
        let url = url.clone();
        async move { send(c.get(&url).bearer_auth(token)).await }
    };

    // Valid tokens, with claims forwarded and the token stripped.
    let (s, _, b) = status(hs(good("hs-issuer"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "hs-user");
    assert_eq!(b["headers"]["x-jwt-sub"], "user-7");
    assert_eq!(b["headers"]["x-jwt-scope"], "read");
    assert!(b["headers"].get("authorization").is_none());
    let (s, _, b) = status(rs(good("rs-issuer"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "rs-user");

    let (s, h, _) = send(c.get(&url)).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));

    let mut attacks: Vec<(&str, String)> = Vec::new();
    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64url(good("hs-issuer").to_string().as_bytes())
    );
    attacks.push(("alg none", none));
    // HS/RS confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    attacks.push((
        "HS256 with the RSA public key",
        hs256_raw(&json!({"alg": "HS256", "typ": "JWT"}), &good("rs-issuer"), keys.rsa_public.as_bytes()),
    ));
    // The HS consumer's key used with another algorithm.
    attacks.push((
        "HS512 instead of HS256",
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &good("hs-issuer"), &EncodingKey::from_secret(secret))
            .unwrap(),
    ));
    attacks.push(("expired", hs(json!({"iss": "hs-issuer", "aud": "orders-api", "exp": now() - 60}))));
    attacks.push((
        "not yet valid",
        hs(json!({"iss": "hs-issuer", "aud": "orders-api", "exp": now() + 600, "nbf": now() + 300})),
    ));
    attacks.push((
        "issued in the future",
        hs(json!({"iss": "hs-issuer", "aud": "orders-api", "exp": now() + 600, "iat": now() + 300})),
    ));
    attacks.push(("wrong audience", hs(json!({"iss": "hs-issuer", "aud": "billing", "exp": now() + 300}))));
    attacks.push(("no exp", hs(json!({"iss": "hs-issuer", "aud": "orders-api"}))));
    attacks.push(("unknown issuer/key", hs(json!({"iss": "someone-else", "aud": "orders-api", "exp": now() + 300}))));
    let big = hs(json!({"iss": "hs-issuer", "aud": "orders-api", "exp": now() + 300, "pad": "x".repeat(5000)}));
    attacks.push(("oversized", big));
    // Tampered payload, original signature.
    let t = hs(good("hs-issuer"));
    let parts: Vec<&str> = t.split('.').collect();
    let mut claims = good("hs-issuer");
    claims["sub"] = json!("admin");
    attacks.push(("tampered payload", format!("{}.{}.{}", parts[0], b64url(claims.to_string().as_bytes()), parts[2])));
    let mut sig = parts[2].to_string();
    sig.replace_range(0..2, if sig.starts_with("AA") { "BB" } else { "AA" });
    attacks.push(("tampered signature", format!("{}.{}.{sig}", parts[0], parts[1])));
    attacks.push(("garbage", "not.a.jwt".into()));

    let mut bodies = Vec::new();
    for (name, token) in attacks {
        let (s, h, b) = status(token).await;
        assert_eq!(s, 401, "{name} must be refused");
        assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{name}");
        bodies.push(without_request_id(b));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "no hint of what was wrong");
    assert_eq!(up.hits(), 2, "only the two valid tokens reached the upstream");

    // Leeway: expired 3 s ago is still accepted with 5 s leeway.
    let (s, _, _) = status(hs(json!({"iss": "hs-issuer", "aud": "orders-api", "exp": now() - 3}))).await;
    assert_eq!(s, 200);
}

/// A local JWKS server whose key set the test can change and stop.
struct JwksServer {
    up: Upstream,
    doc: Arc<Mutex<Value>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

async fn jwks_server() -> JwksServer {
    let doc = Arc::new(Mutex::new(json!({"keys": []})));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d, f) = (doc.clone(), fetches.clone());
    let up = Upstream::start(Behavior::Custom(Arc::new(move |_req| {
        let body = d.lock().unwrap().to_string();
        f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let mut r = http::Response::new(full(body));
            r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            r
        })
    })))
    .await;
    JwksServer { up, doc, fetches }
}

/// An ES256 signing key and its public JWK.
struct EcKey {
    private_pem: String,
    jwk: Value,
}

fn ec_key(kid: &str) -> EcKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    assert_eq!(raw.len(), 65);
    EcKey {
        private_pem: kp.serialize_pem(),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64url(&raw[1..33]), "y": b64url(&raw[33..]), "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

fn es256(k: &EcKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(k.private_pem.as_bytes()).unwrap()).unwrap()
}

/// JWKS: keys by kid, the consumer found by a claim, rotation picked up on an unknown kid
/// (refetches rate-limited), and cached keys kept while the JWKS endpoint is down.
#[tokio::test]
async fn jwt_jwks_rotation() {
    let jwks = jwks_server().await;
    let k1 = ec_key("k1");
    let k2 = ec_key("k2");
    *jwks.doc.lock().unwrap() = json!({"keys": [k1.jwk]});
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = format!(
        "plugins:
  - plugin: jwt
    config:
      jwks: {{ url: \"http://{}/.well-known/jwks.json\", algorithms: [ES256], cache_ttl: 1h }}
      issuers: [https://idp.test]
      consumer_claim: preferred_username
{}",
        jwks.up.authority(),
        consumers()
    );
    let gw = gateway(&with_route(&up, &rest)).await;
    let url = gw.url("main");
    let c = client();
    let claims = json!({"iss": "https://idp.test", "sub": "u1", "preferred_username": "alice", "exp": now() + 300});
    let (s, _, b) = send(c.get(&url).bearer_auth(es256(&k1, "k1", &claims))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(b["headers"]["x-credential-identifier"], "u1");

    // Wrong issuer, and a consumer claim naming nobody.
    let mut bad = claims.clone();
    bad["iss"] = json!("https://evil.test");
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k1, "k1", &bad))).await.0, 401);
    let mut nobody = claims.clone();
    nobody["preferred_username"] = json!("nobody");
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k1, "k1", &nobody))).await.0, 401);
    // A token signed by k2 but labelled k1.
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k2, "k1", &claims))).await.0, 401);

    // Unknown kid: refetched at most once a second.
    let before = jwks.fetches.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(send(c.get(&url).bearer_auth(es256(&k2, "k2", &claims))).await.0, 401, "k2 not published yet");
    }
    let after = jwks.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after - before <= 1, "unknown kids refetch at most once a second ({} fetches)", after - before);

    // Rotation: k2 published; after the 1 s refetch interval the new kid works.
    *jwks.doc.lock().unwrap() = json!({"keys": [k1.jwk, k2.jwk]});
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _) = send(c.get(&url).bearer_auth(es256(&k2, "k2", &claims))).await;
    assert_eq!(s, 200, "the rotated key is picked up");

    // JWKS endpoint down: cached keys keep working.
    jwks.up.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k1, "k1", &claims))).await.0, 200);
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k2, "k2", &claims))).await.0, 200);
    let k3 = ec_key("k3");
    assert_eq!(send(c.get(&url).bearer_auth(es256(&k3, "k3", &claims))).await.0, 401);
}

// === HMAC ===

fn hmac_sign(secret: &[u8], text: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// hmac-auth: signatures over method, path, date and chosen headers; clock skew; body digest.
#[tokio::test]
async fn hmac_auth() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let rest = "plugins:
  - plugin: hmac-auth
    config: { clock_skew: 60s, enforce_headers: [x-tenant], validate_request_body: true }
consumers:
  - username: svc
    credentials:
      - { type: hmac-auth, username: svc-key, secret: \"hmac-shared-secret\" }
";
    let gw = gateway(&with_route(&up, rest)).await;
    let url = gw.url("main");
    let c = client();
    let secret = b"hmac-shared-secret";
    let sha = |body: &[u8]| {
        use sha2::Digest;
        format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)))
    };
    let signed = |date: String, body: &'static [u8], sign_body: &[u8], path: &str, sign_path: &str| {
        let text = format!("date: {date}\n@request-target: post {sign_path}\nx-tenant: t1\ndigest: {}", sha(sign_body));
        let sig = hmac_sign(secret, &text);
        c.post(format!("{url}{path}"))
            .header("date", date)
            .header("x-tenant", "t1")
            .header("digest", sha(body))
            .header(
                "authorization",
                format!(
                    "hmac username=\"svc-key\", algorithm=\"hmac-sha256\", headers=\"date @request-target x-tenant digest\", signature=\"{sig}\""
                ),
            )
            .body(body)
    };
    let date = httpdate::fmt_http_date(SystemTime::now());
    let (s, _, b) = send(signed(date.clone(), b"{\"a\":1}", b"{\"a\":1}", "/orders?x=1", "/orders?x=1")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "svc");
    assert_eq!(b["body"], "{\"a\":1}");
    assert!(b["headers"].get("authorization").is_none());

    // Signed for another path.
    assert_eq!(send(signed(date.clone(), b"{\"a\":1}", b"{\"a\":1}", "/admin", "/orders?x=1")).await.0, 401);
    // A body that does not match its (signed) digest.
    let (s, _, _) = send({
        let text = format!("date: {date}\n@request-target: post /o\nx-tenant: t1\ndigest: {}", sha(b"small"));
        let sig = hmac_sign(secret, &text);
        c.post(format!("{url}/o"))
            .header("date", date.clone())
            .header("x-tenant", "t1")
            .header("digest", sha(b"small"))
            .header("authorization", format!("hmac username=\"svc-key\", algorithm=\"hmac-sha256\", headers=\"date @request-target x-tenant digest\", signature=\"{sig}\""))
            .body("a different, larger body")
    })
    .await;
    assert_eq!(s, 401, "body digest mismatch");
    // Outside the clock skew.
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600));
    assert_eq!(send(signed(old, b"x", b"x", "/o", "/o")).await.0, 401);
    // Wrong secret.
    let text = format!("date: {date}\n@request-target: get /o");
    let sig = hmac_sign(b"another-secret", &text);
    let (s, h, _) = send(c.get(format!("{url}/o")).header("date", date.clone()).header(
        "authorization",
        format!("hmac username=\"svc-key\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{sig}\""),
    ))
    .await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("hmac"));
    // x-tenant is enforced: a valid signature without it is refused.
    let sig = hmac_sign(secret, &text);
    let (s, _, _) = send(c.get(format!("{url}/o")).header("date", date).header(
        "authorization",
        format!("hmac username=\"svc-key\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{sig}\""),
    ))
    .await;
    assert_eq!(s, 401);
    assert_eq!(up.hits(), 1);
}

// === mTLS ===

/// mtls-auth: the listener verifies client certificates against a CA; the consumer is mapped
/// from the certificate's subject; unknown subjects and missing certificates get 401.
#[tokio::test]
async fn mtls_auth() {
    let ca = TestCa::new("mtls-ca");
    let rogue = TestCa::new("rogue-ca");
    let dir = tempfile::tempdir().unwrap();
    let srv = ca.server(&["gw.test"]);
    let (cert, key, ca_file) = (dir.path().join("s.crt"), dir.path().join("s.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &srv.cert_pem).unwrap();
    std::fs::write(&key, &srv.key_pem).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}
certificates:\n  - name: srv\n    cert_file: {}\n    key_file: {}
listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls: {{ client_ca_file: {} }}
services:\n  - name: s\n    url: http://{}
routes:\n  - name: r\n    service: s
plugins:\n  - plugin: mtls-auth
consumers:\n  - username: billing\n    credentials:\n      - {{ type: mtls, subject_name: billing.internal }}\n",
        cert.display(),
        key.display(),
        ca_file.display(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let addr = gw.addr("tls");
    let client_with = |id: Option<&gw_test_util::TestCert>| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .resolve("gw.test", addr);
        if let Some(c) = id {
            b = b.identity(reqwest::Identity::from_pem(format!("{}{}", c.cert_pem, c.key_pem).as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://gw.test:{}/", addr.port());
    let (s, _, b) = send(client_with(Some(&ca.client("billing.internal"))).get(&url)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "billing");
    assert_eq!(b["headers"]["x-credential-identifier"], "billing.internal");
    assert_eq!(send(client_with(Some(&ca.client("stranger.internal"))).get(&url)).await.0, 401, "no such subject");
    assert_eq!(send(client_with(None).get(&url)).await.0, 401, "no certificate");
    // A certificate from another CA fails the handshake itself.
    assert!(client_with(Some(&rogue.client("billing.internal"))).get(&url).send().await.is_err());
    assert_eq!(up.hits(), 1);
}

// === forward-auth ===

/// forward-auth: 2xx allows (and adds headers upstream), other statuses go back to the client;
/// an unreachable auth service fails closed (503) or open, as configured.
#[tokio::test]
async fn forward_auth() {
    let auth = Upstream::start(Behavior::Custom(Arc::new(|req| {
        let ok = req.headers().get("authorization").is_some_and(|v| v == "Bearer letmein");
        let uri =
            req.headers().get("x-forwarded-uri").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
        let method = req.headers().get("x-forwarded-method").cloned();
        Box::pin(async move {
            if ok && uri.starts_with("/allowed") && method.is_some_and(|m| m == "POST") {
                let mut r = http::Response::new(full(""));
                r.headers_mut().insert("x-auth-user", http::HeaderValue::from_static("u-42"));
                r.headers_mut().insert("x-internal-secret", http::HeaderValue::from_static("do-not-leak"));
                r
            } else {
                let mut r = http::Response::new(full("{\"denied\":true}"));
                *r.status_mut() = http::StatusCode::FORBIDDEN;
                r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                r.headers_mut().insert("x-internal-secret", http::HeaderValue::from_static("do-not-leak"));
                r
            }
        })
    })))
    .await;
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |url: &str, mode: &str| {
        with_route(
            &up,
            &format!(
                "plugins:\n  - plugin: forward-auth\n    config: {{ url: \"{url}\", upstream_headers: [x-auth-user], failure_mode: {mode}, timeout: 500ms }}\n"
            ),
        )
    };
    let gw = gateway(&yaml(&format!("http://{}/check", auth.authority()), "closed")).await;
    let url = gw.url("main");
    let c = client();
    let (s, _, b) = send(c.post(format!("{url}/allowed/1")).bearer_auth("letmein")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-auth-user"], "u-42");
    assert!(b["headers"].get("x-internal-secret").is_none());
    let (s, h, b) = send(c.post(format!("{url}/other")).bearer_auth("letmein")).await;
    assert_eq!(s, 403);
    assert_eq!(b["denied"], true, "the auth service's answer is returned");
    assert!(!h.contains_key("x-internal-secret"), "only the listed client headers are copied");
    assert_eq!(up.hits(), 1);

    // Unreachable auth service: closed -> 503, open -> passes.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    gw.reload(&base(&yaml(&format!("http://{dead}/check"), "closed")), &[]).await.unwrap();
    let (s, _, b) = send(c.post(format!("{url}/allowed/1")).bearer_auth("letmein")).await;
    assert_eq!(s, 503, "{b}");
    gw.reload(&base(&yaml(&format!("http://{dead}/check"), "open")), &[]).await.unwrap();
    let (s, _, _) = send(c.get(format!("{url}/anything"))).await;
    assert_eq!(s, 200);
    // A hung auth service times out (500 ms) rather than stalling the request.
    let hung = Upstream::start(Behavior::Hang).await;
    gw.reload(&base(&yaml(&format!("http://{}/check", hung.authority()), "closed")), &[]).await.unwrap();
    let t = std::time::Instant::now();
    assert_eq!(send(c.get(format!("{url}/x"))).await.0, 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// forward-auth goes through the gateway's own client: the checks of successive requests share
/// one pooled connection to the auth service (not a connection per request), and the `Host`
/// sent is the URL's authority. The auth service is a raw socket, so what arrives is seen as
/// sent.
#[tokio::test]
async fn forward_auth_reuses_a_pooled_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (conns, heads) = (conns.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut b).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&b[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            heads.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-auth-user: u-7\r\n\r\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
    }
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(
        &up,
        &format!(
            "plugins:\n  - plugin: forward-auth\n    config: {{ url: \"http://{auth}/check?from=gw\", upstream_headers: [x-auth-user] }}\n"
        ),
    ))
    .await;
    let c = client();
    for i in 0..5 {
        let (s, _, b) = send(c.get(format!("{}/item/{i}", gw.url("main")))).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["headers"]["x-auth-user"], "u-7");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 5, "{heads:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one pooled connection carries every check: {heads:?}");
    for (i, h) in heads.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        assert!(lower.starts_with("get /check?from=gw http/1.1\r\n"), "{h}");
        assert!(lower.contains(&format!("\r\nhost: {auth}\r\n")), "{h}");
        assert!(lower.contains(&format!("\r\nx-forwarded-uri: /item/{i}\r\n")), "{h}");
    }
}

// === acl ===

/// acl: allow and deny lists of consumer groups; 403 for an authenticated consumer not allowed;
/// the groups go upstream.
#[tokio::test]
async fn acl_groups() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |acl: &str| {
        with_route(&up, &format!("plugins:\n  - plugin: key-auth\n  - plugin: acl\n    config: {acl}\n{}", consumers()))
    };
    let gw = gateway(&yaml("{ allow: [admins] }")).await;
    let url = gw.url("main");
    let c = client();
    let (s, _, b) = send(c.get(&url).header("x-api-key", "alice-secret-key")).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-groups"], "admins, staff");
    let (s, _, b) = send(c.get(&url).header("x-api-key", "bob-secret-key")).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"], "forbidden");
    assert_eq!(send(c.get(&url)).await.0, 401, "no consumer: authentication fails first");

    gw.reload(&base(&yaml("{ deny: [admins], hide_groups_header: true }")), &[]).await.unwrap();
    assert_eq!(send(c.get(&url).header("x-api-key", "alice-secret-key")).await.0, 403);
    let (s, _, b) = send(c.get(&url).header("x-api-key", "bob-secret-key")).await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("x-consumer-groups").is_none());
}

// === ip-restriction ===

/// ip-restriction: IPv4 and IPv6 CIDRs, the most specific entry wins, evaluated on the real
/// client IP behind a trusted proxy.
#[tokio::test]
async fn ip_restriction() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |cfg: &str| {
        format!(
            "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  trusted_proxies: [127.0.0.1]\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{}",
            with_route(&up, &format!("plugins:\n  - plugin: ip-restriction\n    config: {cfg}\n"))
        )
    };
    let gw = TestGateway::start(
        &yaml(
            "{ allow: [10.0.0.0/8, \"2001:db8::/32\"], deny: [10.6.0.0/16, \"2001:db8:bad::/48\"], message: go away }",
        ),
        &[],
    )
    .await;
    let url = gw.url("main");
    let c = client();
    let from = |ip: &str| c.get(&url).header("x-forwarded-for", ip);
    assert_eq!(send(from("10.1.2.3")).await.0, 200);
    let (s, _, b) = send(from("10.6.7.8")).await;
    assert_eq!((s, b["message"].as_str()), (403, Some("go away")), "the more specific deny wins");
    assert_eq!(send(from("11.0.0.1")).await.0, 403, "not in the allow list");
    assert_eq!(send(from("2001:db8:1::5")).await.0, 200);
    assert_eq!(send(from("2001:db8:bad::5")).await.0, 403);
    assert_eq!(send(from("2001:db9::1")).await.0, 403);
    assert_eq!(send(c.get(&url)).await.0, 403, "the proxy itself (127.0.0.1) is not allowed");

    // A specific allow inside a denied network; a custom status.
    gw.reload(&yaml("{ deny: [127.0.0.0/8], allow: [127.0.0.1/32], status: 401 }"), &[]).await.unwrap();
    assert_eq!(send(c.get(&url)).await.0, 200);
    assert_eq!(send(from("127.0.0.2")).await.0, 401);
}

// === cors ===

/// cors: preflights answered by the gateway, exact and regex origins, credentials, max-age,
/// exposed headers; a disallowed origin gets no CORS headers.
#[tokio::test]
async fn cors() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(
        &up,
        "plugins:\n  - plugin: cors\n    config: { origins: [\"https://app.example.com\", \"~^https://[a-z]+\\\\.partner\\\\.test$\"], methods: [GET, POST], exposed_headers: [x-total], credentials: true, max_age: 10m }\n",
    ))
    .await;
    let url = gw.url("main");
    let c = client();
    let (s, h, _) = send(
        c.request(reqwest::Method::OPTIONS, format!("{url}/items"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-trace"),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(h["access-control-allow-headers"].to_str().unwrap().contains("x-trace"));
    assert!(h["vary"].to_str().unwrap().to_ascii_lowercase().contains("origin"));
    assert_eq!(up.hits(), 0, "preflight answered by the gateway");

    let (s, h, _) = send(c.get(format!("{url}/items")).header("origin", "https://shop.partner.test")).await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://shop.partner.test");
    assert_eq!(h["access-control-expose-headers"], "x-total");

    let (s, h, _) = send(c.get(format!("{url}/items")).header("origin", "https://evil.test")).await;
    assert_eq!(s, 200);
    assert!(!h.contains_key("access-control-allow-origin"));
    let (_, h, _) = send(
        c.request(reqwest::Method::OPTIONS, format!("{url}/items"))
            .header("origin", "https://x.partner.test.evil")
            .header("access-control-request-method", "GET"),
    )
    .await;
    assert!(!h.contains_key("access-control-allow-origin"), "the regex is anchored");
}

// === bot-detection ===

/// bot-detection: deny regexes, the built-in list, an allow list that wins, and missing agents.
#[tokio::test]
async fn bot_detection() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(
        &up,
        "plugins:\n  - plugin: bot-detection\n    config: { deny: [\"(?i)badcrawler\"], allow: [\"^Googlebot-Verified\"], deny_missing_user_agent: true }\n",
    ))
    .await;
    let url = gw.url("main");
    let c = client();
    let ua = |ua: &str| c.get(&url).header("user-agent", ua);
    assert_eq!(send(ua("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")).await.0, 200);
    assert_eq!(send(ua("my-BadCrawler/2.0")).await.0, 403);
    assert_eq!(send(ua("sqlmap/1.7.2#stable (https://sqlmap.org)")).await.0, 403, "built-in list");
    assert_eq!(send(ua("Googlebot-Verified/2.1 badcrawler")).await.0, 200, "allow wins");
    assert_eq!(send(c.get(&url)).await.0, 403, "reqwest sends no user agent by default");
}

// === request-size-limiting ===

/// request-size-limiting: 413 by Content-Length before reading, 413 while streaming a chunked
/// body, 411 when a length is required.
#[tokio::test]
async fn request_size_limiting() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = |extra: &str| {
        with_route(
            &up,
            &format!(
                "plugins:\n  - plugin: request-size-limiting\n    config: {{ allowed_payload_size: 1KiB{extra} }}\n"
            ),
        )
    };
    let gw = gateway(&yaml("")).await;
    let url = gw.url("main");
    let c = client();
    assert_eq!(send(c.post(&url).body(vec![b'a'; 1024])).await.0, 200);
    let (s, _, b) = send(c.post(&url).body(vec![b'a'; 1025])).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(up.hits(), 1, "a declared oversized body is refused before the upstream is called");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![b'b'; 512])).collect();
    let (s, _, _) = send(c.post(&url).body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))).await;
    assert_eq!(s, 413, "a chunked body over the limit");

    gw.reload(&base(&yaml(", require_content_length: true")), &[]).await.unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"tiny".to_vec())];
    let (s, _, _) = send(c.post(&url).body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))).await;
    assert_eq!(s, 411);
    assert_eq!(send(c.post(&url).body("tiny")).await.0, 200);
}

// === transformers ===

/// request-transformer: headers, query, path (with route parameters), method and JSON body
/// fields, with templates; response-transformer: headers and JSON fields.
#[tokio::test]
async fn transformers() {
    let up = Upstream::start(Behavior::Echo("legacy")).await;
    let rest = format!(
        "plugins:
  - plugin: key-auth
  - plugin: request-transformer
    config:
      remove: {{ headers: [x-remove-me], querystring: [debug], json: [password] }}
      rename: {{ headers: {{ x-old: x-new }}, querystring: {{ q: search }}, json: {{ userName: user_name }} }}
      replace: {{ headers: {{ x-mode: replaced }} }}
      add: {{ headers: {{ x-user: \"$(consumer.username)\", x-order: \"order-$(params.id)\", x-mode: not-added }}, querystring: {{ v: \"2\" }}, json: {{ source: gateway, version: 2 }} }}
      append: {{ headers: {{ x-tag: \"from-$(headers.x-client)\" }} }}
      http_method: PUT
      path: \"/legacy/orders/$(params.id)\"
  - plugin: response-transformer
    config:
      remove: {{ headers: [x-upstream], json: [headers] }}
      rename: {{ json: {{ method: http_method }} }}
      add: {{ headers: {{ x-served-by: gatehouse }}, json: {{ gateway: true }} }}
{}",
        consumers()
    );
    let yaml = format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/orders/{{id}}\"]\n{rest}",
        up.authority()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    let r = c
        .post(format!("{}/orders/77?q=shoes&debug=1", gw.url("main")))
        .header("x-api-key", "alice-secret-key")
        .header("x-remove-me", "1")
        .header("x-old", "o")
        .header("x-mode", "original")
        .header("x-tag", "first")
        .header("x-client", "ios")
        .header("content-type", "application/json")
        .body(r#"{"userName":"al","password":"hunter2","items":[1,2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-served-by"], "gatehouse");
    assert!(!r.headers().contains_key("x-upstream"));
    let b: Value = r.json().await.unwrap();
    assert!(b.get("headers").is_none(), "field removed from the response: {b}");
    assert_eq!(b["gateway"], true);
    assert_eq!(b["http_method"], "PUT", "method rewritten upstream, field renamed in the response");
    assert_eq!(b["path"], "/legacy/orders/77");
    let q = b["query"].as_str().unwrap();
    assert!(q.contains("search=shoes") && q.contains("v=2") && !q.contains("debug"), "{q}");
    let sent: Value = serde_json::from_str(b["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"user_name": "al", "items": [1, 2], "source": "gateway", "version": 2}));
}

/// The upstream side of the request transformer, seen without a response transformer.
#[tokio::test]
async fn request_transformer_headers() {
    let up = Upstream::start(Behavior::Echo("legacy")).await;
    let rest = format!(
        "plugins:
  - plugin: key-auth
  - plugin: request-transformer
    config:
      remove: {{ headers: [x-remove-me] }}
      rename: {{ headers: {{ x-old: x-new }} }}
      replace: {{ headers: {{ x-mode: replaced, x-absent: never }} }}
      add: {{ headers: {{ x-user: \"$(consumer.username)\", x-order: \"order-$(params.id)\", x-mode: not-added }} }}
      append: {{ headers: {{ x-tag: \"from-$(headers.x-client)\" }} }}
{}",
        consumers()
    );
    let yaml = format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/orders/{{id}}\"]\n{rest}",
        up.authority()
    );
    let gw = gateway(&yaml).await;
    let (s, _, b) = send(
        client()
            .get(format!("{}/orders/77", gw.url("main")))
            .header("x-api-key", "alice-secret-key")
            .header("x-remove-me", "1")
            .header("x-old", "o")
            .header("x-mode", "original")
            .header("x-tag", "first")
            .header("x-client", "ios"),
    )
    .await;
    assert_eq!(s, 200);
    let h = &b["headers"];
    assert!(h.get("x-remove-me").is_none());
    assert!(h.get("x-old").is_none());
    assert_eq!(h["x-new"], "o");
    assert_eq!(h["x-mode"], "replaced");
    assert!(h.get("x-absent").is_none(), "replace only touches present headers");
    assert_eq!(h["x-user"], "alice");
    assert_eq!(h["x-order"], "order-77");
    assert_eq!(h["x-tag"], "first, from-ios");
}

/// Plugin configuration errors name the file position and the key.
#[tokio::test]
async fn plugin_config_errors() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&with_route(&up, "")).await;
    for (cfg, needle) in [
        ("plugins:\n  - plugin: key-auth\n    config: { key_nmes: [a] }\n", "key_nmes"),
        ("plugins:\n  - plugin: jwt\n    config: { jwks: { url: \"http://x\", algorithms: [HS256] } }\n", "algorithms"),
        ("plugins:\n  - plugin: ip-restriction\n    config: { allow: [10.0.0.0/33] }\n", "allow"),
        ("plugins:\n  - plugin: cors\n    config: { origins: [\"~([\"] }\n", "origins"),
        ("plugins:\n  - plugin: request-transformer\n    config: { add: { headers: { a: \"$(nope.x)\" } } }\n", "nope"),
        ("plugins:\n  - plugin: key-auth\n    consumer: alice\nconsumers:\n  - username: alice\n", "consumer"),
    ] {
        let err = gw.reload(&base(&with_route(&up, cfg)), &[]).await.unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(err.contains(':'), "{err}");
    }
}

/// Consumer keys of every asymmetric family (PS256 with an RSA key, ES384, EdDSA), tokens from a
/// cookie and a query parameter (removed before proxying), required claims and the longest
/// allowed lifetime.
#[tokio::test]
async fn jwt_algorithms_sources_and_claims() {
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let up = Upstream::start(Behavior::Echo("a")).await;
    let cred = |user: &str, alg: &str, pem: &str| {
        format!(
            "  - username: {user}\n    credentials:\n      - type: jwt\n        key: {user}\n        algorithm: {alg}\n        public_key: |\n{}",
            indent(pem, 10)
        )
    };
    let rest = format!(
        "plugins:\n  - plugin: jwt\n    config: {{ cookie_names: [session], query_param_names: [jwt], required_claims: [exp, sub], maximum_expiration: 1h }}\nconsumers:\n{}{}{}",
        cred("ps-user", "PS256", &rsa.public_key_pem()),
        cred("es-user", "ES384", &p384.public_key_pem()),
        cred("ed-user", "EdDSA", &ed.public_key_pem())
    );
    let gw = gateway(&with_route(&up, &rest)).await;
    let url = gw.url("main");
    let c = client();
    let claims = |iss: &str, life: u64| json!({"iss": iss, "sub": "s1", "exp": now() + life});
    let sign = |alg: Algorithm, key: EncodingKey, claims: Value| {
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    };
    let ps = sign(
        Algorithm::PS256,
        EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
        claims("ps-user", 600),
    );
    let es = sign(
        Algorithm::ES384,
        EncodingKey::from_ec_pem(p384.serialize_pem().as_bytes()).unwrap(),
        claims("es-user", 600),
    );
    let ed_tok = sign(
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        claims("ed-user", 600),
    );

    // Authorization header (the default), a cookie, a query parameter.
    let (s, _, b) = send(c.get(&url).bearer_auth(&ps)).await;
    assert_eq!((s, b["headers"]["x-consumer-username"].as_str()), (200, Some("ps-user")), "{b}");
    let (s, _, b) = send(c.get(&url).header("cookie", format!("theme=dark; session={es}"))).await;
    assert_eq!((s, b["headers"]["x-consumer-username"].as_str()), (200, Some("es-user")), "{b}");
    assert_eq!(b["headers"]["cookie"], "theme=dark", "the token cookie is removed, the others kept");
    let (s, _, b) = send(c.get(format!("{url}/x?page=2&jwt={ed_tok}"))).await;
    assert_eq!((s, b["headers"]["x-consumer-username"].as_str()), (200, Some("ed-user")), "{b}");
    assert_eq!(b["query"], "page=2");

    // A token signed by the ES384 key but claiming to be the EdDSA consumer; a missing `sub`;
    // a lifetime over maximum_expiration.
    let forged = sign(
        Algorithm::ES384,
        EncodingKey::from_ec_pem(p384.serialize_pem().as_bytes()).unwrap(),
        claims("ed-user", 600),
    );
    assert_eq!(send(c.get(&url).bearer_auth(forged)).await.0, 401);
    let no_sub = sign(
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        json!({"iss": "ed-user", "exp": now() + 600}),
    );
    assert_eq!(send(c.get(&url).bearer_auth(no_sub)).await.0, 401);
    let long = sign(
        Algorithm::PS256,
        EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
        claims("ps-user", 7200),
    );
    assert_eq!(send(c.get(&url).bearer_auth(long)).await.0, 401);
    assert_eq!(up.hits(), 3);
}
