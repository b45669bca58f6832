//! Core proxying: forwarding headers, hop-by-hop removal, request ids, path handling, HTTP/2.

use crate::support::*;

/// A request reaches the upstream with forwarding headers, a request id, and without
/// hop-by-hop headers; the response carries the same request id.
#[tokio::test]
async fn forwards_with_proxy_headers() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/*\"]\n",
        up.authority()
    ))
    .await;
    let r = client()
        .get(format!("{}/hello?x=1&y=2", gw.url("main")))
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "drop-me")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-consumer-username", "spoofed")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 32);
    let v: serde_json::Value = r.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "x=1&y=2");
    assert_eq!(h["x-request-id"], rid.as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "an untrusted client cannot forge X-Forwarded-For");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "127.0.0.1");
    assert!(h["forwarded"].as_str().unwrap().starts_with("for=127.0.0.1;proto=http"));
    assert_eq!(h["x-custom"], "kept");
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "x-consumer-username"] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    assert_eq!(h["host"], up.authority().as_str(), "Host is the target unless preserve_host");
}

/// A client request id is kept end to end.
#[tokio::test]
async fn keeps_client_request_id() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let r = client().get(gw.url("main")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-request-id"], "trace-abc-123");
}

/// With a trusted proxy in front, the client IP comes from X-Forwarded-For and the chain grows.
#[tokio::test]
async fn trusted_proxies_extend_the_chain() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = "gateway:\n  status_listener: \"off\"\n  access_log: { enabled: false }\n  trusted_proxies: [127.0.0.0/8]\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n".to_string();
    let gw = TestGateway::start(&yaml, &[]).await;
    let _ = up;
    let v: serde_json::Value = client()
        .get(gw.url("main"))
        .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // 10.0.0.1 is not trusted here (only 127/8), so it is the client.
    assert_eq!(v["client_ip"], "10.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.7, 10.0.0.1, 127.0.0.1");
}

/// strip_path, rewrite with parameters, a service path prefix and preserve_host.
#[tokio::test]
async fn path_handling() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let a = up.authority();
    let gw = gateway(&format!(
        "services:
  - name: plain
    url: http://{a}
  - name: based
    url: http://{a}/base
routes:
  - name: strip
    service: plain
    paths: [\"/strip/*\"]
    strip_path: true
  - name: rewrite
    service: plain
    paths: [\"/users/{{id}}/avatar\"]
    rewrite: /v2/avatars/{{id}}.png
  - name: prefixed
    service: based
    paths: [\"/p/*\"]
    strip_path: true
  - name: host
    service: plain
    paths: [\"/host\"]
    preserve_host: true
"
    ))
    .await;
    let base = gw.url("main");
    let path = |p: &str| {
        let u = format!("{base}{p}");
        async move { get_json(&u).await.2["path"].as_str().unwrap_or_default().to_string() }
    };
    assert_eq!(path("/strip/a/b").await, "/a/b");
    assert_eq!(path("/strip").await, "/");
    assert_eq!(path("/users/42/avatar").await, "/v2/avatars/42.png");
    assert_eq!(path("/p/x").await, "/base/x");
    assert_eq!(path("/p").await, "/base");
    let v = client().get(format!("{base}/host")).header("host", "api.example.test").send().await.unwrap();
    let v: serde_json::Value = v.json().await.unwrap();
    assert_eq!(v["headers"]["host"], "api.example.test");
}

/// Routing by host, method and header; the most specific route wins.
#[tokio::test]
async fn routes_by_host_method_and_header() {
    let gw = gateway(
        "services:
  - name: s
    type: echo
routes:
  - name: any
    service: s
    paths: [\"/*\"]
  - name: api-host
    service: s
    hosts: [\"api.test\"]
    paths: [\"/*\"]
  - name: wild
    service: s
    hosts: [\"*.apps.test\"]
  - name: post
    service: s
    paths: [\"/items\"]
    methods: [POST]
  - name: v2
    service: s
    paths: [\"/items\"]
    headers: { x-version: \"~v2(\\\\.[0-9]+)?\" }
",
    )
    .await;
    let base = gw.url("main");
    let route = |host: &'static str, method: reqwest::Method, path: &'static str, ver: Option<&'static str>| {
        let base = base.clone();
        async move {
            let mut b = client().request(method, format!("{base}{path}")).header("host", host);
            if let Some(v) = ver {
                b = b.header("x-version", v);
            }
            let v: serde_json::Value = b.send().await.unwrap().json().await.unwrap();
            v["route"].as_str().unwrap_or_default().to_string()
        }
    };
    use reqwest::Method;
    assert_eq!(route("other.test", Method::GET, "/x", None).await, "any");
    assert_eq!(route("api.test", Method::GET, "/x", None).await, "api-host");
    assert_eq!(route("a.apps.test:8080", Method::GET, "/x", None).await, "wild");
    assert_eq!(route("other.test", Method::POST, "/items", None).await, "post");
    assert_eq!(route("other.test", Method::GET, "/items", Some("v2.1")).await, "v2");
    assert_eq!(route("other.test", Method::GET, "/items", Some("v3")).await, "any");
}

/// An HTTP/2 (h2c prior knowledge) client is proxied to an HTTP/1.1 upstream.
#[tokio::test]
async fn h2c_downstream() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = c.get(format!("{}/h2", gw.url("main"))).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["path"], "/h2");
}

/// An h2c service speaks HTTP/2 to its upstream.
#[tokio::test]
async fn h2c_upstream() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: h2c://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let (status, _, v) = get_json(&format!("{}/x", gw.url("main"))).await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], "HTTP/2.0");
}

/// The static and echo services answer without an upstream.
#[tokio::test]
async fn builtin_services() {
    let gw = gateway(
        "services:
  - name: hello
    type: static
    response: { status: 201, body: hi, headers: { x-a: b } }
routes:
  - name: r
    service: hello
",
    )
    .await;
    let r = client().get(gw.url("main")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-a"], "b");
    assert_eq!(r.text().await.unwrap(), "hi");
}

/// A reload can add and remove listeners; the others keep their sockets.
#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let yaml = |extra: &str| {
        format!(
            "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{extra}services:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n"
        )
    };
    let gw = TestGateway::start(&yaml(""), &[]).await;
    let main = gw.addr("main");
    gw.reload(&yaml("  - name: second\n    address: 127.0.0.1:0\n"), &[]).await.unwrap();
    let second = gw.addr("second");
    assert_eq!(gw.addr("main"), main, "an unchanged listener keeps its socket");
    for a in [main, second] {
        assert_eq!(client().get(format!("http://{a}/")).send().await.unwrap().status(), 200);
    }
    gw.reload(&yaml(""), &[]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(gw.gw.listener_addr("second").is_none());
    let r = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("http://{second}/")).send().await;
    assert!(r.is_err(), "the removed listener no longer accepts");
}

/// Read one HTTP/1.1 response with a Content-Length body from a keep-alive connection.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .expect("a Content-Length");
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            return (head, body);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The forwarding headers follow the Host of each request, also when requests for different
/// hosts share one keep-alive connection (the gateway keeps the values of the last host seen
/// per connection); a client's own `Forwarded` never passes from an untrusted peer.
#[tokio::test]
async fn forwarding_headers_follow_each_requests_host_on_one_connection() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/*\"]\n",
        up.authority()
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let mut buf = Vec::new();
    for host in ["a.example", "b.example:8080", "a.example", "A.Example", "c.example"] {
        let req = format!("GET /h HTTP/1.1\r\nHost: {host}\r\nForwarded: for=6.6.6.6\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let h = &v["headers"];
        let want = host.split(':').next().unwrap().to_ascii_lowercase();
        assert_eq!(h["x-forwarded-host"], want.as_str(), "{host}");
        assert_eq!(h["forwarded"], format!("for=127.0.0.1;proto=http;host=\"{want}\"").as_str(), "{host}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }
    assert_eq!(up.hits(), 5);
}
