//! The protocol translation plugins in the pipeline, through the gateway, with clients and
//! servers nobody here wrote the protocol stack of: `grpc-web` with the `grpc-web` npm client
//! under Node (and hyper's HTTP/2 client) against the grpcio bookstore, `grpc-transcode` with
//! reqwest against the same server, `soap` against the Python SOAP server, and WebSocket over
//! HTTP/2 (RFC 8441) with Python's `h2` against the `websockets` echo server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use gw_grpc::frame::{Frame, FrameDecoder, encode_message};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::support::*;
use crate::translation::{proto_dir, python_json, python_server, script};

/// Run `grpc_web_client.js` (the `grpc-web` npm package under Node): its JSON line.
async fn grpc_web_node(base: &str, mode: &str, check: &str) -> Value {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .args(["grpc_web_client.js", base, mode, check])
            .current_dir(&js)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the node client finished")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpc-web {mode} {check} failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A route for the bookstore's gRPC paths with `grpc-web` and `cors`.
fn grpc_web_config(port: u16, web: &str) -> String {
    base(&format!(
        "services:\n  - name: bookstore\n    url: grpc://127.0.0.1:{port}\nroutes:\n  - name: web\n    service: bookstore\n    paths: [\"/bookstore.v1.Bookstore/*\"]\n\
         plugins:\n  - plugin: grpc-web\n    route: web\n    config: {web}\n\
         \x20 - plugin: cors\n    route: web\n    config:\n      origins: [\"http://app.example\"]\n      methods: [POST]\n      headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout, x-echo]\n      exposed_headers: [grpc-status, grpc-message, x-echo, x-fail-reason]\n"
    ))
}

/// gRPC-Web clients through the gateway to grpcio: the `grpc-web` library (text and binary,
/// over HTTP/1.1) for unary, server streaming, an error with its message and metadata, and a
/// deadline; hyper's HTTP/2 client for the text form frame by frame; CORS preflight and the
/// exposed gRPC fields; a malformed text body refused with 400; `text: false` refusing text.
#[tokio::test]
async fn grpc_web_through_the_gateway() {
    let (_server, port) = python_server(&[&script("bookstore_server.py")]).await;
    let gw = gateway_from(&grpc_web_config(port, "{}")).await;
    let url = gw.url("main");

    // The grpc-web library, text and binary.
    for mode in ["text", "binary"] {
        let r = grpc_web_node(&url, mode, "unary").await;
        assert_eq!(r["shelf"], json!({"id": "1", "theme": "Fiction", "bookCount": 2}), "{mode}: {r}");
        assert_eq!(r["headers"]["x-echo"], "hello", "{mode}: request and response metadata pass: {r}");
        let r = grpc_web_node(&url, mode, "error").await;
        assert_eq!((r["code"].as_i64(), r["message"].as_str()), (Some(5), Some("no: 100% ✗")), "{r}");
        assert_eq!(r["metadata"]["x-fail-reason"], "asked", "{r}");
    }
    let r = grpc_web_node(&url, "text", "stream").await;
    let books = r["books"].as_array().unwrap();
    let titles: Vec<&str> = books.iter().map(|b| b["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Dune", "The Dispossessed"]);
    // (Under Node, xhr2 hands the library the body at its end: the timing of a stream is
    // checked with the HTTP/1.1 and HTTP/2 clients below.)
    let r = grpc_web_node(&url, "text", "deadline").await;
    assert_eq!(r["code"], 4, "{r}");
    assert!(r["elapsed_ms"].as_i64().unwrap() < 2500, "the deadline cut the 3 s call: {r}");

    // HTTP/2 client, text encoding, server streaming 300 ms apart: messages arrive as they are
    // written, and the status is the trailer frame in the body (no HTTP trailers).
    let tcp = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // StreamBooksRequest { shelf: 1, interval_ms: 300 }
    let msg = encode_message(&[0x08, 0x01, 0x10, 0xac, 0x02], false).unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(&msg);
    let req = http::Request::post(format!("{url}/bookstore.v1.Bookstore/StreamBooks"))
        .header("content-type", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let started = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["content-type"], "application/grpc-web-text+proto");
    let mut body = resp.into_body();
    let mut b64 = gw_grpc::web::Base64Decoder::new();
    let mut dec = FrameDecoder::grpc_web(1 << 20);
    let mut arrivals = Vec::new();
    let mut trailer_frame = None;
    let mut http_trailers = false;
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if let Some(d) = f.data_ref() {
            dec.push(&b64.push(d).unwrap());
            while let Some(fr) = dec.next_frame().unwrap() {
                match fr {
                    Frame::Message { .. } => arrivals.push(started.elapsed()),
                    Frame::Trailers(t) => trailer_frame = Some(t),
                }
            }
        } else {
            http_trailers = true;
        }
    }
    let ended = started.elapsed();
    assert_eq!(arrivals.len(), 2);
    assert!(ended - arrivals[0] >= Duration::from_millis(250), "first message at {arrivals:?}, end at {ended:?}");
    let t = gw_grpc::web::decode_trailer_block(&trailer_frame.expect("a trailer frame")).unwrap();
    assert_eq!(t["grpc-status"], "0");
    assert!(!http_trailers, "the trailers are in the body");

    // HTTP/1.1, text, server streaming 300 ms apart: chunks arrive as the messages are written.
    let started = Instant::now();
    let mut r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/StreamBooks"))
        .header("content-type", "application/grpc-web-text")
        .body(base64::engine::general_purpose::STANDARD.encode(&msg))
        .send()
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        chunks.push((started.elapsed(), c.len()));
    }
    assert!(chunks.last().unwrap().0 - chunks[0].0 >= Duration::from_millis(250), "{chunks:?}");

    // HTTP/1.1, binary, with reqwest: the trailer frame ends the chunked body.
    let r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("content-type", "application/grpc-web+proto")
        .body(encode_message(&[0x08, 0x02], false).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    let bytes = r.bytes().await.unwrap();
    let mut dec = FrameDecoder::grpc_web(1 << 20);
    dec.push(&bytes);
    let Some(Frame::Message { data, .. }) = dec.next_frame().unwrap() else { panic!("a message") };
    assert_eq!(&data[..4], &[0x08, 0x02, 0x12, 0x07], "Shelf {{ id: 2, theme: \"History\" }}");
    let Some(Frame::Trailers(t)) = dec.next_frame().unwrap() else { panic!("a trailer frame") };
    assert_eq!(gw_grpc::web::decode_trailer_block(&t).unwrap()["grpc-status"], "0");

    // CORS: the preflight is answered at the gateway; answers expose the gRPC fields.
    let r = client()
        .request(reqwest::Method::OPTIONS, format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web,x-user-agent,grpc-timeout")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "http://app.example");
    let allowed = r.headers()["access-control-allow-headers"].to_str().unwrap().to_string();
    assert!(allowed.contains("x-grpc-web") && allowed.contains("grpc-timeout"), "{allowed}");
    let r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("origin", "http://app.example")
        .header("content-type", "application/grpc-web-text")
        .body(base64::engine::general_purpose::STANDARD.encode(encode_message(&[0x08, 0x09], false).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_string();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "{exposed}");
    // Shelf 9 does not exist: grpcio answers trailers-only, passed as it is.
    assert_eq!(r.headers()["grpc-status"], "5");
    assert_eq!(r.headers()["grpc-message"], "shelf 9 not found");

    // A text body that is not base64: 400, never a call.
    let r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("content-type", "application/grpc-web-text")
        .body("AAAA!!!!")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let j: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{j}");
    assert!(j["detail"].as_str().unwrap_or("").contains("invalid base64"), "{j}");

    // text: false refuses the text form with 415; binary still works.
    gw.reload(&grpc_web_config(port, "{ text: false }"), &[]).await.unwrap();
    let r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("content-type", "application/grpc-web-text")
        .body(base64::engine::general_purpose::STANDARD.encode(encode_message(&[0x08, 0x01], false).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = grpc_web_node(&url, "binary", "unary").await;
    assert_eq!(r["shelf"]["theme"], "Fiction");
}

async fn gateway_from(yaml: &str) -> TestGateway {
    TestGateway::start(yaml, &[]).await
}

/// A transcoding route over the bookstore: `extra` adds config lines (6 spaces in).
fn transcode_config(port: u16, descriptors: &str, extra: &str) -> String {
    base(&format!(
        "services:\n  - name: bookstore\n    url: grpc://127.0.0.1:{port}\nroutes:\n  - name: rest\n    service: bookstore\n    paths: [\"/v1/*\"]\n\
         plugins:\n  - plugin: grpc-transcode\n    route: rest\n    config:\n{descriptors}{extra}"
    ))
}

fn proto_files() -> String {
    let dir = proto_dir();
    format!(
        "      proto_files: [\"{}\"]\n      include_paths: [\"{}\"]\n",
        dir.join("bookstore/v1/bookstore.proto").display(),
        dir.display()
    )
}

async fn call(method: reqwest::Method, url: &str, body: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = client().request(method, url);
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text:?}"));
    (status, headers, v)
}

/// REST/JSON clients through the gateway to the grpcio bookstore, by the `.proto`'s
/// annotations compiled at load: list, get, create with a body field, delete, nested path
/// variables and an additional binding, query parameters to nested and repeated fields,
/// `response_body`, a custom verb with `body: "*"`, `PATCH` with a field mask, the proto3 JSON
/// mapping (int64 as strings, enums by name, well-known types), unknown fields refused naming
/// them, errors as `google.rpc.Status` with Google's HTTP mapping, a deadline, 404/405 for
/// paths no rule matches, and server streaming as a JSON array written message by message.
#[tokio::test]
async fn grpc_transcode_through_the_gateway() {
    let (_server, port) = python_server(&[&script("bookstore_server.py")]).await;
    let gw = gateway_from(&transcode_config(port, &proto_files(), "")).await;
    let url = gw.url("main");
    use reqwest::Method as M;

    let (s, h, j) = call(M::GET, &format!("{url}/v1/shelves"), None).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    assert!(!h.contains_key("grpc-status"));
    assert_eq!(j, json!({"shelves": [{"id": "1", "theme": "Fiction"}, {"id": "2", "theme": "History"}]}));
    let (s, _, j) = call(M::GET, &format!("{url}/v1/shelves/1"), None).await;
    assert_eq!((s, j), (200, json!({"id": "1", "theme": "Fiction", "bookCount": 2})));
    let (s, _, j) = call(M::POST, &format!("{url}/v1/shelves"), Some(r#"{"theme": "Poetry"}"#)).await;
    assert_eq!((s, j), (200, json!({"id": "3", "theme": "Poetry"})));
    let (s, _, j) = call(M::DELETE, &format!("{url}/v1/shelves/3"), None).await;
    assert_eq!((s, j), (200, json!({})));
    let (s, _, j) = call(M::DELETE, &format!("{url}/v1/shelves/3"), None).await;
    assert_eq!((s, j), (404, json!({"code": 5, "message": "shelf 3 not found"})));

    // Nested path variables, an additional binding.
    let (s, _, j) = call(M::GET, &format!("{url}/v1/shelves/1/books/1"), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (j["title"].as_str(), j["pageCount"].as_str(), j["genre"].as_str()),
        (Some("Dune"), Some("412"), Some("FICTION"))
    );
    let (s, _, j2) = call(M::GET, &format!("{url}/v1/books/shelves/1/books/1"), None).await;
    assert_eq!((s, &j2), (200, &j));
    // Query parameters to nested and repeated fields; response_body.
    let (s, _, j) = call(
        M::GET,
        &format!("{url}/v1/shelves/1/books?filter.author=Ursula+K.+Le+Guin&filter.genres=FICTION&pageSize=5"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(j.as_array().map(|a| a.len()), Some(1), "response_body: books: {j}");
    assert_eq!(j[0]["title"], "The Dispossessed");
    // Create with body "book": well-known types in and out.
    let (s, _, j) = call(
        M::POST,
        &format!("{url}/v1/shelves/2/books"),
        Some(r#"{"title": "SPQR", "genre": "HISTORY", "pageCount": 608, "published": "2015-10-20T00:00:00Z", "rating": 5}"#),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        j,
        json!({"name": "shelves/2/books/1", "title": "SPQR", "genre": "HISTORY", "pageCount": "608",
            "published": "2015-10-20T00:00:00Z", "rating": 5})
    );
    let (s, _, j) = call(
        M::PATCH,
        &format!("{url}/v1/shelves/2/books/1?update_mask=author"),
        Some(r#"{"author": "Mary Beard", "title": "not updated"}"#),
    )
    .await;
    assert_eq!((s, j["author"].as_str(), j["title"].as_str()), (200, Some("Mary Beard"), Some("SPQR")), "{j}");
    let (s, _, j) = call(M::POST, &format!("{url}/v1/shelves/2/books/1:move"), Some(r#"{"otherShelfId": "1"}"#)).await;
    assert_eq!((s, j["name"].as_str()), (200, Some("shelves/1/books/3")), "{j}");
    // Every kind of field through Echo.
    let kinds = json!({"i32": -5, "i64": "-9007199254740993", "u64": "18446744073709551615", "dbl": 1.5, "flag": true,
        "raw": "AAEC", "genre": "SCIENCE", "many": ["1", "2"], "counts": {"a": 1}, "at": "2024-02-29T12:00:00.500Z",
        "maybe": "7", "nested": {"title": "x"}, "text": "t", "snakeCaseName": "s"});
    let (s, _, j) = call(M::POST, &format!("{url}/v1/echo"), Some(&kinds.to_string())).await;
    assert_eq!((s, &j), (200, &kinds));

    // Bad requests: an unknown field named, a bad value, an unknown query parameter.
    let (s, _, j) = call(M::POST, &format!("{url}/v1/shelves"), Some(r#"{"theme": "x", "colour": "red"}"#)).await;
    assert_eq!((s, j["code"].as_i64()), (400, Some(3)));
    assert!(j["message"].as_str().unwrap().contains("colour"), "{j}");
    let (s, _, j) = call(M::GET, &format!("{url}/v1/shelves/abc"), None).await;
    assert_eq!(s, 400, "{j}");
    let (s, _, j) = call(M::GET, &format!("{url}/v1/shelves?nope=1"), None).await;
    assert!(s == 400 && j["message"].as_str().unwrap().contains("nope"), "{s} {j}");
    // No rule: 404; another method's rule: 405 with Allow.
    let (s, _, j) = call(M::GET, &format!("{url}/v1/nothing"), None).await;
    assert_eq!((s, j["code"].as_i64()), (404, Some(5)));
    let (s, h, _) = call(M::PUT, &format!("{url}/v1/shelves"), Some("{}")).await;
    assert_eq!(s, 405);
    assert!(h["allow"].to_str().unwrap().contains("GET"), "{h:?}");

    // Errors: Google's mapping, message, details decoded, trailing metadata as header fields.
    let (s, h, j) = call(M::POST, &format!("{url}/v1/fail"), Some(r#"{"code": 9, "message": "no: 100% ✗"}"#)).await;
    assert_eq!(s, 400);
    assert_eq!(h["x-fail-reason"], "asked");
    assert_eq!(
        j,
        json!({"code": 9, "message": "no: 100% ✗", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "code", "description": "asked to fail"}]},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ASKED", "domain": "bookstore.test", "metadata": {"code": "9"}}
        ]})
    );
    for (code, http) in [(3, 400), (7, 403), (8, 429), (12, 501), (14, 503), (16, 401)] {
        let (s, _, _) =
            call(M::POST, &format!("{url}/v1/fail"), Some(&format!(r#"{{"code": {code}, "message": "x"}}"#))).await;
        assert_eq!(s, http, "grpc-status {code}");
    }
    // A deadline (grpc-timeout from the client) cuts a 3 s call: 504 DEADLINE_EXCEEDED.
    let started = Instant::now();
    let r = client().get(format!("{url}/v1/sleep/3000")).header("grpc-timeout", "300m").send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 4);

    // Server streaming as one JSON array, element by element (300 ms apart), then its error.
    let started = Instant::now();
    let mut r =
        client().get(format!("{url}/v1/shelves/1/books:stream?intervalMs=300&failCode=13")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut text = Vec::new();
    let mut first_chunk = None;
    while let Some(c) = r.chunk().await.unwrap() {
        first_chunk.get_or_insert(started.elapsed());
        text.extend_from_slice(&c);
    }
    let ended = started.elapsed();
    assert!(ended - first_chunk.unwrap() >= Duration::from_millis(250), "{first_chunk:?} {ended:?}");
    let items: Value = serde_json::from_slice(&text).unwrap();
    // Shelf 1 holds 3 books now (one was moved there above), then the error element.
    assert_eq!(items.as_array().unwrap().len(), 4, "{items}");
    assert_eq!(items[0]["title"], "Dune");
    assert_eq!(items[3], json!({"error": {"code": 13, "message": "stream failed as asked"}}));
    // A stream that fails before any message is a plain error.
    let (s, _, j) = call(M::GET, &format!("{url}/v1/shelves/7/books:stream?failCode=7"), None).await;
    assert_eq!((s, j), (403, json!({"code": 7, "message": "stream failed as asked"})));
}

/// The same bookstore by a descriptor set written by grpcio-tools' protoc, with options:
/// NDJSON streaming, `.proto` field names, emitted defaults, enums as numbers, and a rule from
/// the configuration replacing an annotation (with an additional binding).
#[tokio::test]
async fn grpc_transcode_descriptor_set_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("bookstore.pb");
    let (_server, port) =
        python_server(&[&script("bookstore_server.py"), "--descriptor-out", pb.to_str().unwrap()]).await;
    let extra = "      streaming: ndjson\n      preserving_proto_field_name: true\n      emit_unpopulated: true\n      enums_as_numbers: true\n      rules:\n        - selector: bookstore.v1.Bookstore.GetShelf\n          get: /v1/shelf/{shelf}\n          additional_bindings:\n            - get: /v1/s/{shelf}\n";
    let gw =
        gateway_from(&transcode_config(port, &format!("      descriptor_set: \"{}\"\n", pb.display()), extra)).await;
    let url = gw.url("main");
    let (s, _, j) = call(reqwest::Method::GET, &format!("{url}/v1/shelf/2"), None).await;
    assert_eq!((s, j), (200, json!({"id": "2", "theme": "History", "book_count": 0})));
    let (s, _, _) = call(reqwest::Method::GET, &format!("{url}/v1/s/2"), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(reqwest::Method::GET, &format!("{url}/v1/shelves/2"), None).await;
    // The configured rule replaced the annotation: only DELETE has that path now.
    assert_eq!(s, 405, "the configured rule replaces the annotation");
    let (s, _, j) = call(reqwest::Method::GET, &format!("{url}/v1/shelves/1/books/1"), None).await;
    assert_eq!((s, &j["genre"], &j["page_count"]), (200, &json!(1), &json!("412")), "{j}");

    let r = client().get(format!("{url}/v1/shelves/1/books:stream?interval_ms=10")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1]["title"], "The Dispossessed");
}

/// Invalid descriptors and rules are configuration errors at load, naming the file, the line,
/// the key and the method; so is a gRPC plugin on a route without an HTTP/2 upstream.
#[test]
fn grpc_transcode_config_errors_name_file_and_method() {
    let yaml = transcode_config(
        1,
        &proto_files(),
        "      rules:\n        - selector: bookstore.v1.Bookstore.GetShelf\n          get: /v1/{nope}\n",
    );
    let e = gw_test_util::try_config(&yaml, &[]).unwrap_err();
    assert!(e.contains("plugins[0].config.rules[0]"), "{e}");
    assert!(
        e.contains("bookstore.proto") && e.contains("bookstore.v1.Bookstore.GetShelf") && e.contains("nope"),
        "{e}"
    );
    assert!(e.contains("test.yaml:"), "the file and line: {e}");
    let yaml = transcode_config(1, "      proto_files: [\"/nonexistent/x.proto\"]\n", "");
    let e = gw_test_util::try_config(&yaml, &[]).unwrap_err();
    assert!(e.contains("plugins[0].config.proto_files[0]") && e.contains("x.proto"), "{e}");
    let yaml = transcode_config(1, "      descriptor_set: \"/nonexistent/b.pb\"\n", "");
    let e = gw_test_util::try_config(&yaml, &[]).unwrap_err();
    assert!(e.contains("plugins[0].config.descriptor_set") && e.contains("b.pb"), "{e}");
    // gRPC plugins on a route whose service speaks HTTP/1.1 to its upstream: refused.
    let yaml = transcode_config(1, &proto_files(), "").replace("grpc://", "http://");
    let e = gw_test_util::try_config(&yaml, &[]).unwrap_err();
    assert!(e.contains("plugins[0].route") && e.contains("HTTP/2"), "{e}");
    let e = gw_test_util::try_config(&grpc_web_config(1, "{}").replace("grpc://", "http://"), &[]).unwrap_err();
    assert!(e.contains("plugins[0].route") && e.contains("grpc-web needs"), "{e}");
}

/// The `soap` plugin through the gateway to the Python SOAP server: JSON in, a SOAP envelope
/// out by the template (values escaped), the XML answer back as JSON (attributes, repeated
/// elements), client and server faults as 400/502 JSON, malformed XML as a 502 saying so,
/// invalid JSON and a missing template field as 400 before anything is sent; SOAP 1.2.
#[tokio::test]
async fn soap_through_the_gateway() {
    let (_server, port) = python_server(&[&script("soap_server.py")]).await;
    let route = |name: &str, path: &str| {
        format!("  - name: {name}\n    service: soap\n    paths: [\"{path}\"]\n    strip_path: true\n")
    };
    let plugin = |route: &str, version: &str, template: &str, extra: &str| {
        format!(
            "  - plugin: soap\n    route: {route}\n    config:\n      version: \"{version}\"\n      action: urn:example:shop#Op\n      request_template: '{template}'\n{extra}"
        )
    };
    let yaml = base(&format!(
        "services:\n  - name: soap\n    url: http://127.0.0.1:{port}\nroutes:\n{}{}{}{}{}plugins:\n{}{}{}{}{}",
        route("price", "/price"),
        route("price12", "/price12"),
        route("items", "/items"),
        route("crash", "/crash"),
        route("garbage", "/garbage"),
        plugin(
            "price",
            "1.1",
            "<m:GetPrice xmlns:m=\"urn:example:shop\"><m:Item>{{body.item}}</m:Item></m:GetPrice>",
            ""
        ),
        plugin(
            "price12",
            "1.2",
            "<m:GetPrice xmlns:m=\"urn:example:shop\"><m:Item>{{body.item}}</m:Item></m:GetPrice>",
            ""
        ),
        plugin("items", "1.1", "<m:ListItems xmlns:m=\"urn:example:shop\"/>", "      always_array: [Item]\n"),
        plugin("crash", "1.1", "<m:Crash xmlns:m=\"urn:example:shop\"/>", ""),
        plugin("garbage", "1.1", "<m:Garbage xmlns:m=\"urn:example:shop\"/>", ""),
    ));
    let gw = gateway_from(&yaml).await;
    let url = gw.url("main");
    use reqwest::Method as M;

    let (s, h, j) = call(M::POST, &format!("{url}/price"), Some(r#"{"item": "fig"}"#)).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(j["GetPriceResponse"]["Item"], "fig");
    assert_eq!(j["GetPriceResponse"]["Price"], json!({"@currency": "EUR", "#text": "3.10"}));
    assert_eq!(j["GetPriceResponse"]["Action"], "urn:example:shop#Op", "SOAPAction sent");
    let (s, _, j) = call(M::POST, &format!("{url}/price12"), Some(r#"{"item": "apple"}"#)).await;
    assert_eq!((s, &j["GetPriceResponse"]["Price"]["#text"]), (200, &json!("1.20")), "{j}");
    assert!(j["GetPriceResponse"]["Action"].as_str().unwrap().contains("action=\"urn:example:shop#Op\""), "{j}");
    let (s, _, j) = call(M::POST, &format!("{url}/items"), None).await;
    assert_eq!(s, 200);
    assert_eq!(j["ListItemsResponse"]["Item"].as_array().unwrap().len(), 3);
    assert_eq!(j["ListItemsResponse"]["Item"][0], json!({"@sku": "apple", "#text": "1.20"}));

    // Faults: a client fault is a 400, a server fault a 502, both with the fault as JSON.
    let (s, _, j) = call(M::POST, &format!("{url}/price"), Some(r#"{"item": "<pear>&"}"#)).await;
    assert_eq!(s, 400);
    assert_eq!(j["error"], "soap_fault");
    assert_eq!(j["message"], "Unknown item <pear>&");
    assert_eq!(j["fault"]["detail"], json!({"Code": "E404", "Item": "<pear>&"}));
    let (s, _, j) = call(M::POST, &format!("{url}/crash"), None).await;
    assert_eq!((s, j["message"].as_str()), (502, Some("Backend exploded")));
    // Malformed XML from the upstream: 502 with the reason.
    let (s, _, j) = call(M::POST, &format!("{url}/garbage"), None).await;
    assert_eq!(s, 502, "{j}");
    assert!(j["detail"].as_str().unwrap().contains("malformed XML"), "{j}");
    // Client errors before anything is sent.
    let (s, _, j) = call(M::POST, &format!("{url}/price"), Some("{not json")).await;
    assert_eq!((s, j["error"].as_str()), (400, Some("invalid_json_body")));
    let (s, _, j) = call(M::POST, &format!("{url}/price"), Some("{}")).await;
    assert_eq!((s, j["message"].as_str()), (400, Some("missing field body.item")));
}

/// WebSocket over HTTP/2 (RFC 8441): Python's `h2` sees SETTINGS_ENABLE_CONNECT_PROTOCOL,
/// opens an extended CONNECT, gets 200, and WebSocket frames (text, 70000 bytes binary, close)
/// go through the gateway to the `websockets` echo server over HTTP/1.1 and back.
#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let (_server, port) = python_server(&[&script("ws_echo_server.py")]).await;
    let gw = gateway(&format!(
        "services:\n  - name: ws\n    url: http://127.0.0.1:{port}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\"]\n"
    ))
    .await;
    let addr = gw.addr("main");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script("ws_h2_client.py"))
            .args(["127.0.0.1", &addr.port().to_string(), "/ws"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(r["settings_enable_connect_protocol"], 1, "{r}");
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["headers"].get("sec-websocket-accept").is_none() && r["headers"].get("upgrade").is_none(), "{r}");
    assert_eq!(r["text"], json!({"opcode": 1, "payload": "hello over h2"}));
    assert_eq!(r["binary"], json!({"opcode": 2, "len": 70000, "same": true}));
    assert_eq!(r["close"], json!({"opcode": 8, "code": 1000}));

    // A path with no WebSocket behind it: the upstream's refusal is relayed, not a tunnel.
    let out = tokio::process::Command::new("python3")
        .arg(script("ws_h2_client.py"))
        .args(["127.0.0.1", &addr.port().to_string(), "/nowhere"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(r["status"], 404, "{stdout}");
}

/// Run `ws_h2_client.py` (Python `h2`, RFC 8441) against `path` on the gateway: its JSON line.
async fn ws_h2_client(addr: std::net::SocketAddr, path: &str) -> Value {
    python_json(&[&script("ws_h2_client.py"), "127.0.0.1", &addr.port().to_string(), path]).await
}

/// Run `ws_h1_client.py` (the `websockets` library over HTTP/1.1): its JSON line.
async fn ws_h1_client(url: &str) -> Value {
    python_json(&[&script("ws_h1_client.py"), url]).await
}

/// RFC 8441 to an HTTP/1.1 upstream: the gateway sends a `Sec-WebSocket-Key` of its own, so it
/// checks the upstream's `Sec-WebSocket-Accept` (RFC 6455 §4.1). A `101` with a wrong accept,
/// or none, is a 502 with a JSON body to the HTTP/2 client, and nothing is bridged (the bytes
/// the upstream wrote after its `101` never reach the client).
#[tokio::test]
async fn websocket_over_http2_checks_the_upstreams_accept() {
    let up = crate::upstream_h1::Scripted::start(|_, req| {
        let first = req.lines().next().unwrap_or("");
        // The right accept for the gateway's key.
        let key =
            req.lines().find_map(|l| l.strip_prefix("sec-websocket-key: ").or(l.strip_prefix("Sec-WebSocket-Key: ")));
        let right = key.map_or_else(String::new, |k| {
            let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
            h.update(k.trim().as_bytes());
            h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            base64::engine::general_purpose::STANDARD.encode(h.finish().as_ref())
        });
        let right = format!("Sec-WebSocket-Accept: {right}\r\n");
        let (upgrade, connection, accept) = match first.split(' ').nth(1).unwrap_or("") {
            "/wrong" => (
                "Upgrade: websocket\r\n",
                "Connection: Upgrade\r\n",
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n".to_string(),
            ),
            "/missing" => ("Upgrade: websocket\r\n", "Connection: Upgrade\r\n", String::new()),
            "/twice" => ("Upgrade: websocket\r\n", "Connection: Upgrade\r\n", format!("{right}{right}")),
            "/no-upgrade" => ("", "Connection: Upgrade\r\n", right),
            "/other-upgrade" => ("Upgrade: h2c\r\n", "Connection: Upgrade\r\n", right),
            "/no-connection" => ("Upgrade: websocket\r\n", "", right),
            _ => ("Upgrade: WebSocket\r\n", "Connection: keep-alive, Upgrade\r\n", right),
        };
        crate::upstream_h1::keep(
            format!("HTTP/1.1 101 Switching Protocols\r\n{upgrade}{connection}{accept}\r\nTUNNELLED").as_bytes(),
        )
    })
    .await;
    let gw = gateway(&format!(
        "services:\n  - name: ws\n    url: http://{}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: ws\n    service: ws\n",
        up.addr
    ))
    .await;
    let cases = [
        ("/wrong", "Sec-WebSocket-Accept"),
        ("/missing", "Sec-WebSocket-Accept"),
        ("/twice", "more than one Sec-WebSocket-Accept"),
        // Refused by the HTTP/1.1 client already (a malformed 101), without a detail.
        ("/no-upgrade", ""),
        ("/other-upgrade", "Upgrade: websocket"),
        ("/no-connection", "Connection: upgrade"),
    ];
    for (i, (path, detail)) in cases.into_iter().enumerate() {
        let r = ws_h2_client(gw.addr("main"), path).await;
        assert_eq!(r["status"], 502, "{path}: {r}");
        assert!(!r["body"].as_str().unwrap_or("").contains("TUNNELLED"), "{path}: {r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {r}"));
        assert_eq!(body["error"], "upstream_protocol_error", "{path}: {body}");
        assert!(detail.is_empty() || body["detail"].as_str().is_some_and(|m| m.contains(detail)), "{path}: {body}");
        // The upstream got a key of the gateway's (HTTP/2 has none), new for each upgrade.
        let sent = up.request(i).to_ascii_lowercase();
        assert!(sent.contains("\r\nsec-websocket-key: ") && !sent.contains("dghlihnhbxbszsbub25jzq=="), "{sent}");
    }
}

/// WebSocket to an HTTP/2 upstream that supports RFC 8441 (Hypercorn, h2c): sent as an
/// extended CONNECT, from an HTTP/2 client (Python `h2`, extended CONNECT) and from an
/// HTTP/1.1 client (`websockets`, Upgrade; the gateway answers `101` with the accept of the
/// client's key, which the library checks). Text, a 70,000-byte binary message and a close are
/// echoed; Hypercorn says the WebSocket came over HTTP/2. A refusal (403) is relayed; an
/// upstream without SETTINGS_ENABLE_CONNECT_PROTOCOL (hyper's default server) is a 502 naming it.
#[tokio::test]
async fn websocket_to_an_http2_upstream_by_extended_connect() {
    let (_server, port) = python_server(&[&script("ws_h2_echo_server.py")]).await;
    let plain = Upstream::start(Behavior::Echo("plain-h2")).await;
    let gw = gateway(&format!(
        "services:\n  - name: ws\n    url: h2c://127.0.0.1:{port}\n  - name: plain\n    url: h2c://{}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\", \"/refused\"]\n  - name: plain\n    service: plain\n    paths: [\"/plain\"]\n",
        plain.addr
    ))
    .await;
    let addr = gw.addr("main");

    let r = ws_h2_client(addr, "/ws").await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["headers"]["x-http-version"], "2", "{r}");
    assert_eq!(r["headers"]["x-upstream"], "hypercorn", "{r}");
    assert_eq!(r["text"], json!({"opcode": 1, "payload": "hello over h2"}));
    assert_eq!(r["binary"], json!({"opcode": 2, "len": 70000, "same": true}));
    assert_eq!(r["close"], json!({"opcode": 8, "code": 1000}));

    let r = ws_h1_client(&format!("ws://{addr}/ws")).await;
    assert_eq!(r["headers"]["x-http-version"], "2", "{r}");
    assert_eq!(r["headers"]["upgrade"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("websocket"), "{r}");
    assert_eq!(r["text"], "hello over h1");
    assert_eq!(r["binary"], json!({"len": 70000, "same": true}));
    assert_eq!(r["close"], 1000);

    // Refused by the upstream: relayed.
    assert_eq!(ws_h2_client(addr, "/refused").await["status"], 403);
    assert_eq!(ws_h1_client(&format!("ws://{addr}/refused")).await, json!({"refused": 403}));

    // An HTTP/2 upstream that does not announce extended CONNECT.
    let r = ws_h2_client(addr, "/plain").await;
    assert_eq!(r["status"], 502, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(body["error"], "upstream_protocol_error", "{body}");
    assert!(body["detail"].as_str().is_some_and(|m| m.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL")), "{body}");
    assert_eq!(ws_h1_client(&format!("ws://{addr}/plain")).await, json!({"refused": 502}));
    assert_eq!(plain.hits(), 0);
}

/// A raw HTTP/1.1 request on a new connection: the status, the head (lower case) and the body
/// (by Content-Length; none for a `101`).
async fn raw_h1(addr: std::net::SocketAddr, req: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if n == 0 || text.len() >= end + 4 + len || head.starts_with("http/1.1 101") {
                    let status = head[9..12].parse().unwrap();
                    return (status, head, text[end + 4..].to_string());
                }
            }
            assert!(n > 0, "closed early: {text}");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("answer")
}

/// An HTTP/1.1 client's WebSocket bridged to an HTTP/2 upstream (Hypercorn) is answered by the
/// gateway, so the gateway checks its handshake (RFC 6455 §4.2.1): a key that is not base64 of
/// 16 bytes, none, two, a version other than 13, or an `Upgrade` that is not exactly
/// `websocket` is a JSON 400 and no handshake reaches the upstream. A good one gets `101` with
/// the accept of its key (RFC 6455 §1.3's example).
#[tokio::test]
async fn websocket_bridge_to_http2_checks_the_clients_handshake() {
    let (_server, port) = python_server(&[&script("ws_h2_echo_server.py")]).await;
    let gw = gateway(&format!(
        "services:\n  - name: ws\n    url: h2c://127.0.0.1:{port}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\"]\n"
    ))
    .await;
    let addr = gw.addr("main");
    let req = |upgrade: &str, fields: &str| {
        format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n{fields}\r\n")
    };
    let good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let v13 = "Sec-WebSocket-Version: 13\r\n";
    let bad = [
        req("websocket", &format!("Sec-WebSocket-Key: c2hvcnQ=\r\n{v13}")),
        req("websocket", &format!("Sec-WebSocket-Key: not base64 at all!!!!!!=\r\n{v13}")),
        req("websocket", &format!("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n{v13}")),
        req("websocket", v13),
        req("websocket", &format!("{good_key}{good_key}{v13}")),
        req("websocket", &format!("{good_key}Sec-WebSocket-Version: 8\r\n")),
        req("websocket", good_key),
        req("websocket, foo", &format!("{good_key}{v13}")),
        req("foo", &format!("{good_key}{v13}")),
    ];
    for r in &bad {
        let (status, head, body) = raw_h1(addr, r).await;
        assert_eq!(status, 400, "{r}\n{head}\n{body}");
        assert!(head.contains("content-type: application/json"), "{r}\n{head}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(body["error"], "bad_request", "{r}\n{body}");
    }
    let seen = || async { reqwest::get(format!("http://127.0.0.1:{port}/seen")).await.unwrap().text().await.unwrap() };
    assert_eq!(seen().await, "0", "a refused handshake reached the upstream");

    let (status, head, _) = raw_h1(addr, &req("WebSocket", &format!("{good_key}{v13}"))).await;
    assert_eq!(status, 101, "{head}");
    assert!(head.lines().any(|l| l == "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert_eq!(seen().await, "1");
}

/// The same over TLS: Hypercorn with a certificate of a test CA, ALPN `h2`; the service is
/// `h2://` with that CA. An HTTP/2 client's and an HTTP/1.1 client's WebSocket both reach it
/// as an extended CONNECT over HTTP/2.
#[tokio::test]
async fn websocket_to_an_http2_upstream_over_tls() {
    let (_dir, cert, key, ca_file) = localhost_tls_files("ws-ca");
    let (_server, port) =
        python_server(&[&script("ws_h2_echo_server.py"), cert.to_str().unwrap(), key.to_str().unwrap()]).await;
    let gw = gateway(&format!(
        "services:\n  - name: ws\n    url: h2://localhost:{port}\n    tls: {{ ca_file: \"{}\" }}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\"]\n",
        ca_file.display()
    ))
    .await;
    let addr = gw.addr("main");
    let r = ws_h2_client(addr, "/ws").await;
    assert_eq!((r["status"].clone(), r["headers"]["x-http-version"].clone()), (json!(200), json!("2")), "{r}");
    assert_eq!(r["binary"], json!({"opcode": 2, "len": 70000, "same": true}));
    assert_eq!(r["close"], json!({"opcode": 8, "code": 1000}));
    let r = ws_h1_client(&format!("ws://{addr}/ws")).await;
    assert_eq!(r["headers"]["x-http-version"], "2", "{r}");
    assert_eq!(r["text"], "hello over h1");
    assert_eq!(r["binary"], json!({"len": 70000, "same": true}));
}

/// An upstream that answers without gRPC (HTTP 503, no `grpc-status`): a gRPC-Web client gets
/// a trailers-only answer with UNAVAILABLE (gRPC's HTTP mapping), a REST client the JSON
/// `google.rpc.Status` with 503; neither gets the upstream's body.
#[tokio::test]
async fn translation_of_an_upstream_that_is_not_grpc() {
    let up = Upstream::start(Behavior::Status(503)).await;
    let gw = gateway(&format!(
        "services:\n  - name: h2\n    url: grpc://{}\nroutes:\n  - name: web\n    service: h2\n    paths: [\"/bookstore.v1.Bookstore/*\"]\n  - name: rest\n    service: h2\n    paths: [\"/v1/*\"]\n\
         plugins:\n  - plugin: grpc-web\n    route: web\n  - plugin: grpc-transcode\n    route: rest\n    config:\n{}",
        up.addr,
        proto_files()
    ))
    .await;
    let url = gw.url("main");
    let r = client()
        .post(format!("{url}/bookstore.v1.Bookstore/GetShelf"))
        .header("content-type", "application/grpc-web+proto")
        .body(encode_message(&[0x08, 0x01], false).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert_eq!(r.headers()["grpc-status"], "14");
    assert_eq!(r.headers()["grpc-message"], "upstream answered HTTP 503");
    assert!(r.bytes().await.unwrap().is_empty());
    let (s, _, j) = call(reqwest::Method::GET, &format!("{url}/v1/shelves/1"), None).await;
    assert_eq!((s, j), (503, json!({"code": 14, "message": "upstream answered HTTP 503"})));
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::Relaxed), 2);
}
