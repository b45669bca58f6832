//! Protocol translation logic (gw-grpc) against real servers nobody here wrote the protocol
//! stack of: the bookstore on grpcio (HTTP/2 with hyper's client, framing and status by
//! gw-grpc), and a SOAP-style upstream on Python's http.server. The plugins that put this logic
//! in the pipeline come with the streaming body seam; these tests pin the logic they will use.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use gw_grpc::frame::{Frame, FrameDecoder, encode_message};
use gw_grpc::status::{Code, Status};
use gw_grpc::transcode::{Options, StreamMode, Transcoder};
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub(crate) fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run a Python script with `args` to its end (60 s at most); it must succeed: the JSON of its
/// last line.
pub(crate) async fn python_json(args: &[&str]) -> serde_json::Value {
    let run = Command::new("python3").args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the script finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

pub(crate) fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/proto")
}

pub(crate) async fn python_server(args: &[&str]) -> (tokio::process::Child, u16) {
    let mut child = Command::new("python3")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("server started")
        .unwrap()
        .expect("a port line")
        .trim()
        .parse()
        .unwrap();
    (child, port)
}

/// What a gRPC call returned: messages, then the status (from trailers, or from the headers
/// of a trailers-only response), and the header/trailer fields.
struct Call {
    messages: Vec<Bytes>,
    status: Status,
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
}

async fn grpc_call(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    port: u16,
    path: &str,
    message: Bytes,
    timeout: Option<Duration>,
) -> Call {
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-echo", "hello");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", gw_grpc::status::format_timeout(t));
    }
    let body = http_body_util::Full::new(encode_message(&message, false).unwrap());
    let resp = send.send_request(req.body(body).unwrap()).await.unwrap();
    let (parts, mut body) = resp.into_parts();
    assert_eq!(parts.status, 200, "gRPC answers 200");
    let mut dec = FrameDecoder::new(gw_grpc::frame::DEFAULT_MAX_MESSAGE);
    let mut messages = Vec::new();
    let mut trailers = http::HeaderMap::new();
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if let Some(d) = f.data_ref() {
            dec.push(d);
            while let Some(fr) = dec.next_frame().unwrap() {
                let Frame::Message { data, .. } = fr else { panic!("trailer frame on plain gRPC") };
                messages.push(data);
            }
        } else if let Ok(t) = f.into_trailers() {
            trailers = t;
        }
    }
    dec.finish().unwrap();
    let status =
        Status::from_headers(&trailers).or_else(|| Status::from_headers(&parts.headers)).expect("a grpc-status");
    Call { messages, status, headers: parts.headers, trailers }
}

/// REST requests transcoded by gw-grpc reach the grpcio bookstore and its answers render as
/// JSON: list, get, create with body, delete, nested path variables, query parameters,
/// `response_body`, server streaming (array and NDJSON, with a failure at the end), errors with
/// their message, metadata and details, and a deadline. The descriptor set written by
/// grpcio-tools' protoc gives the same bindings as the `.proto` compiled by protox.
#[tokio::test]
async fn transcoding_against_the_grpcio_bookstore() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("bookstore.pb");
    let (_server, port) =
        python_server(&[&script("bookstore_server.py"), "--descriptor-out", pb.to_str().unwrap()]).await;

    // The same rules from protoc's descriptor set and from protox.
    let from_set = gw_grpc::descriptor::from_descriptor_set_file(&pb).unwrap();
    let compiled =
        gw_grpc::descriptor::compile(&[PathBuf::from("bookstore/v1/bookstore.proto")], &[proto_dir()]).unwrap();
    let shape = |t: &Transcoder| -> Vec<String> {
        t.bindings()
            .iter()
            .map(|b| format!("{} {} -> {} ({})", b.http_method, b.template, b.grpc_path(), b.source))
            .collect()
    };
    let t = Transcoder::new(from_set, Options::default()).unwrap();
    assert_eq!(shape(&t), shape(&Transcoder::new(compiled, Options::default()).unwrap()));
    assert_eq!(t.bindings().len(), 14);

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);

    // One REST call: (status, JSON body) as a transcoding gateway would answer.
    async fn rest(
        t: &Transcoder,
        send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
        port: u16,
        method: http::Method,
        target: &str,
        body: &str,
    ) -> (u16, serde_json::Value, Call) {
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        let m = t.route(&method, path).unwrap_or_else(|| panic!("no rule for {method} {path}"));
        let msg = t.request(&m, query, body.as_bytes()).unwrap();
        let call = grpc_call(send, port, &m.binding.grpc_path(), msg, None).await;
        if call.status.code() != Code::Ok {
            let (code, body) = t.error_response(&call.status);
            return (code, serde_json::from_slice(&body).unwrap(), call);
        }
        assert_eq!(call.messages.len(), 1);
        let json = t.response_json(m.binding, &call.messages[0]).unwrap();
        (200, serde_json::from_slice(&json).unwrap(), call)
    }

    use http::Method as M;
    let (s, j, call) = rest(&t, &mut send, port, M::GET, "/v1/shelves", "").await;
    assert_eq!(s, 200);
    assert_eq!(j, serde_json::json!({"shelves": [{"id": "1", "theme": "Fiction"}, {"id": "2", "theme": "History"}]}));
    assert_eq!(call.headers["x-echo"], "hello", "request metadata reached the server");

    let (s, j, _) = rest(&t, &mut send, port, M::GET, "/v1/shelves/1", "").await;
    assert_eq!((s, j), (200, serde_json::json!({"id": "1", "theme": "Fiction", "bookCount": 2})));

    let (s, j, _) = rest(&t, &mut send, port, M::POST, "/v1/shelves", r#"{"theme": "Poetry"}"#).await;
    assert_eq!((s, j), (200, serde_json::json!({"id": "3", "theme": "Poetry"})));
    let (s, j, _) = rest(&t, &mut send, port, M::DELETE, "/v1/shelves/3", "").await;
    assert_eq!((s, j), (200, serde_json::json!({})));
    let (s, j, _) = rest(&t, &mut send, port, M::DELETE, "/v1/shelves/3", "").await;
    assert_eq!((s, j), (404, serde_json::json!({"code": 5, "message": "shelf 3 not found"})));

    let (s, j, _) = rest(&t, &mut send, port, M::GET, "/v1/shelves/1/books/1", "").await;
    assert_eq!(s, 200);
    assert_eq!(j["title"], "Dune");
    assert_eq!(j["pageCount"], "412");
    assert_eq!(j["genre"], "FICTION");
    let (s, j2, _) = rest(&t, &mut send, port, M::GET, "/v1/books/shelves/1/books/1", "").await;
    assert_eq!((s, &j2), (200, &j), "additional binding");
    let (s, _, _) = rest(&t, &mut send, port, M::GET, "/v1/shelves/9/books/1", "").await;
    assert_eq!(s, 404);

    let (s, j, _) = rest(
        &t,
        &mut send,
        port,
        M::GET,
        "/v1/shelves/1/books?filter.author=Ursula+K.+Le+Guin&filter.genres=FICTION&page_size=5",
        "",
    )
    .await;
    assert_eq!(s, 200);
    let titles: Vec<&str> =
        j.as_array().expect("response_body: books").iter().map(|b| b["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["The Dispossessed"]);

    let (s, j, _) = rest(
        &t,
        &mut send,
        port,
        M::POST,
        "/v1/shelves/2/books",
        r#"{"title": "SPQR", "genre": "HISTORY", "pageCount": 608, "published": "2015-10-20T00:00:00Z", "rating": 5}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        j,
        serde_json::json!({"name": "shelves/2/books/1", "title": "SPQR", "genre": "HISTORY", "pageCount": "608",
            "published": "2015-10-20T00:00:00Z", "rating": 5})
    );
    let (s, j, _) = rest(
        &t,
        &mut send,
        port,
        M::PATCH,
        "/v1/shelves/2/books/1?update_mask=author",
        r#"{"author": "Mary Beard", "title": "not updated"}"#,
    )
    .await;
    assert_eq!((s, j["author"].as_str(), j["title"].as_str()), (200, Some("Mary Beard"), Some("SPQR")), "{j}");
    let (s, j, _) = rest(&t, &mut send, port, M::POST, "/v1/shelves/2/books/1:move", r#"{"otherShelfId": "1"}"#).await;
    assert_eq!((s, j["name"].as_str()), (200, Some("shelves/1/books/3")));

    // Errors: code mapped to HTTP, message, details decoded from grpc-status-details-bin,
    // trailing metadata kept.
    let (s, j, call) = rest(&t, &mut send, port, M::POST, "/v1/fail", r#"{"code": 9, "message": "no: 100% ✗"}"#).await;
    assert_eq!(s, 400);
    assert_eq!(call.trailers["x-fail-reason"], "asked");
    assert_eq!(
        j,
        serde_json::json!({"code": 9, "message": "no: 100% ✗", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "code", "description": "asked to fail"}]},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ASKED", "domain": "bookstore.test", "metadata": {"code": "9"}}
        ]})
    );
    for (code, http) in [(3, 400), (7, 403), (8, 429), (12, 501), (14, 503), (16, 401)] {
        let (s, _, _) =
            rest(&t, &mut send, port, M::POST, "/v1/fail", &format!(r#"{{"code": {code}, "message": "x"}}"#)).await;
        assert_eq!(s, http, "grpc-status {code}");
    }

    // A deadline: the server gives up with DEADLINE_EXCEEDED (or the client library's status).
    let m = t.route(&M::GET, "/v1/sleep/2000").unwrap();
    let msg = t.request(&m, None, b"").unwrap();
    let started = std::time::Instant::now();
    let call = grpc_call(&mut send, port, &m.binding.grpc_path(), msg, Some(Duration::from_millis(200))).await;
    assert_eq!(call.status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(t.error_response(&call.status).0, 504);

    // Server streaming, element by element, as an array and as NDJSON, ending with an error.
    for mode in [StreamMode::Array, StreamMode::Ndjson] {
        let opts = Options { stream: mode, ..Options::default() };
        let ts = Transcoder::new(gw_grpc::descriptor::from_descriptor_set_file(&pb).unwrap(), opts).unwrap();
        let m = ts.route(&M::GET, "/v1/shelves/1/books:stream").unwrap();
        let msg = ts.request(&m, Some("interval_ms=10&fail_code=13"), b"").unwrap();
        let call = grpc_call(&mut send, port, &m.binding.grpc_path(), msg, None).await;
        assert_eq!(call.messages.len(), 3);
        assert_eq!(call.status.code(), Code::Internal);
        let mut enc = ts.stream_encoder();
        let mut out = Vec::new();
        for raw in &call.messages {
            out.extend_from_slice(&enc.message(&ts.response_json(m.binding, raw).unwrap()));
        }
        let err = call.status.to_json(|a| ts.any_to_json(a));
        out.extend_from_slice(&enc.end(Some(&err)));
        let text = String::from_utf8(out).unwrap();
        let items: Vec<serde_json::Value> = match mode {
            StreamMode::Array => serde_json::from_str(&text).unwrap(),
            StreamMode::Ndjson => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        };
        assert_eq!(items.len(), 4, "{text}");
        assert_eq!(items[0]["title"], "Dune");
        assert_eq!(items[3], serde_json::json!({"error": {"code": 13, "message": "stream failed as asked"}}));
    }
}

/// JSON to a SOAP envelope by template, to a real SOAP-style upstream, and its answer back to
/// JSON: both SOAP versions, attributes, repeated elements, client and server faults with
/// their HTTP status, and malformed XML from the upstream as a clear error.
#[tokio::test]
async fn soap_adaptation_against_a_python_soap_server() {
    use gw_grpc::xml::{SoapResponse, SoapVersion, Template, XmlOptions, soap_envelope, soap_response};
    let (_server, port) = python_server(&[&script("soap_server.py")]).await;
    let client = reqwest::Client::new();
    let get_price =
        Template::parse("<m:GetPrice xmlns:m=\"urn:example:shop\"><m:Item>{{body.item}}</m:Item></m:GetPrice>")
            .unwrap();
    let call = |version: SoapVersion, body: String| {
        let (env, ct) = soap_envelope(version, &body);
        let ct = match version {
            SoapVersion::V11 => ct.to_string(),
            SoapVersion::V12 => format!("{ct}; action=\"urn:GetPrice\""),
        };
        let req = client
            .post(format!("http://127.0.0.1:{port}/"))
            .header("content-type", ct)
            .header("soapaction", "\"urn:GetPrice\"")
            .body(env);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap())
        }
    };
    let opts = XmlOptions { always_array: vec!["Item".into()], ..XmlOptions::default() };
    for v in [SoapVersion::V11, SoapVersion::V12] {
        let body = get_price.render(&serde_json::json!({"body": {"item": "fig"}})).unwrap();
        let (status, xml) = call(v, body).await;
        assert_eq!(status, 200);
        let SoapResponse::Body(j) = soap_response(&xml, &XmlOptions::default()).unwrap() else { panic!("fault") };
        assert_eq!(j["GetPriceResponse"]["Item"], "fig");
        assert_eq!(j["GetPriceResponse"]["Price"], serde_json::json!({"@currency": "EUR", "#text": "3.10"}));

        let (status, xml) = call(v, "<m:ListItems xmlns:m=\"urn:example:shop\"/>".into()).await;
        assert_eq!(status, 200);
        let SoapResponse::Body(j) = soap_response(&xml, &opts).unwrap() else { panic!("fault") };
        assert_eq!(j["ListItemsResponse"]["Item"].as_array().unwrap().len(), 3);
        assert_eq!(j["ListItemsResponse"]["Item"][0], serde_json::json!({"@sku": "apple", "#text": "1.20"}));

        // A value with markup is escaped by the template and reaches the server as text.
        let body = get_price.render(&serde_json::json!({"body": {"item": "<pear>&"}})).unwrap();
        let (status, xml) = call(v, body).await;
        assert_eq!(status, 500);
        let SoapResponse::Fault(f) = soap_response(&xml, &XmlOptions::default()).unwrap() else { panic!("no fault") };
        assert!(f.is_client_fault());
        assert_eq!(f.http_status(400, 502), 400);
        assert_eq!(f.reason, "Unknown item <pear>&");
        assert_eq!(f.to_json()["fault"]["detail"], serde_json::json!({"Code": "E404", "Item": "<pear>&"}));

        let (_, xml) = call(v, "<m:Crash xmlns:m=\"urn:example:shop\"/>".into()).await;
        let SoapResponse::Fault(f) = soap_response(&xml, &XmlOptions::default()).unwrap() else { panic!("no fault") };
        assert_eq!((f.http_status(400, 502), f.reason.as_str()), (502, "Backend exploded"));

        let (_, xml) = call(v, "<m:Garbage xmlns:m=\"urn:example:shop\"/>".into()).await;
        let e = soap_response(&xml, &XmlOptions::default()).unwrap_err();
        assert!(e.to_string().contains("malformed XML") || e.to_string().contains("prefix"), "{e}");
    }
    // A missing required value is a request error before anything is sent.
    assert_eq!(get_price.render(&serde_json::json!({"body": {}})).unwrap_err().0, "missing field body.item");
}
