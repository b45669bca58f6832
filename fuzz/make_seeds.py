#!/usr/bin/env python3
"""Writes the hand-made seed corpus (fuzz/corpus/<target>/<name>); run from fuzz/. Each seed is
one meaningful case; the file name says which."""
import os, re, pathlib

def write(target, name, data):
    d = pathlib.Path("corpus") / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

# === request_head ===
R = {
    "get_minimal": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "post_content_length": b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_gzip_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te_chunked_twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "cl_list_agreeing": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
    "cl_disagreeing": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "http10_keep_alive": b"GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    "http10_chunked": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "upgrade_websocket": b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "expect_continue_te_trailers": b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\nTE: gzip, trailers\r\n\r\nabc",
    "absolute_form": b"GET http://example.com:8080/a?b=c HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    "authority_form_connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "asterisk_form": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: a\nX-Empty:\n\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "control_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "obs_text_value": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "connection_close_pipelined": b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http_version_2": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "many_fields": b"GET / HTTP/1.1\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(101)) + b"\r\n",
    "long_target": b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading_empty_line": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
}
for k, v in R.items():
    write("request_head", k, v)

# === response_head ===
S = {
    "ok_length": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n",
    "until_close": b"HTTP/1.1 200 OK\r\nServer: up\r\n\r\nbody...",
    "http10_keep_alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
    "http10_chunked": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "no_content_with_length": b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
    "not_modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 100\r\n\r\n",
    "interim_then_final": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    "switching_protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "cl_list": b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_conflict": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "connection_names_fields": b"HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\nX-Secret: s\r\nX-Kept: k\r\nKeep-Alive: timeout=5\r\nContent-Length: 2, 2\r\n\r\nok",
    "hop_by_hop_all": b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: x\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
    "odd_whitespace": b"HTTP/1.1 200 OK\r\nX-Sp: \t v \t\r\nX-Empty:\r\nX-Tight:v\r\nContent-Length: 0\r\n\r\n",
    "bare_lf": b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 0\n\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
    "status_999": b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n",
    "no_reason": b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    "many_fields": b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(101)) + b"\r\n",
}
for k, v in S.items():
    write("response_head", k, v)

# === chunked ===
C = {
    "empty_body": b"0\r\n\r\n",
    "one_chunk": b"5\r\nhello\r\n0\r\n\r\n",
    "chunks_then_next_message": b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "uppercase_hex_padded": b"000A\r\n0123456789\r\n00\r\n\r\n",
    "extensions": b"5;name=value;q=\"a \\\" b\" ; flag\r\nhello\r\n0;last\r\n\r\n",
    "trailers": b"4\r\nRust\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: ok\r\n\r\n",
    "data_not_followed_by_crlf": b"5\r\nhelloXX0\r\n\r\n",
    "size_line_bare_lf": b"5\nhello\r\n0\r\n\r\n",
    "space_in_size": b"5 \r\nhello\r\n0\r\n\r\n",
    "seventeen_digits": b"11111111111111111\r\nx\r\n0\r\n\r\n",
    "trailer_framing_fields": b"0\r\nContent-Length: 50\r\nHost: evil\r\nTransfer-Encoding: gzip\r\n\r\n",
    "incomplete": b"a\r\n0123",
    "control_in_extension": b"1;a\x00\r\nx\r\n0\r\n\r\n",
}
for k, v in C.items():
    write("chunked", k, v)

# === request_connection ===
Q = {
    "two_gets": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "post_length_then_get": b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    "post_chunked_then_get": b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunked_with_trailers": b"POST /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
    "http10_then_more": b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "connection_close_then_more": b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "expect_continue": b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "head_request": b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n",
    "skip_buffered_body": b"POST /skip HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    "skip_partial_body": b"POST /skip HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\nhello",
    "refused_after_good": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "partial_body_waits": b"POST /w HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345",
    "partial_head_waits": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo",
    "upgrade_with_body": b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "upgrade_101_tunnel": b"GET /ws101 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\nfirst tunnel bytes",
    "upgrade_101_after_request": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /up101 HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nGET /not-a-request HTTP/1.1\r\n\r\n",
    "pipelined_mixed": b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiPOST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyo\r\n0\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
}
for k, v in Q.items():
    write("request_connection", k, v)

# === config ===
write("config", "quickstart.yaml", pathlib.Path("../examples/quickstart.yaml").read_bytes())
for doc in sorted(pathlib.Path("../docs").glob("*.md")):
    n = 0
    for m in re.finditer(r"```yaml\n(.*?)```", doc.read_text(), re.S):
        n += 1
        write("config", f"docs_{doc.stem}_{n}.yaml", m.group(1))
CFG = {
    "minimal_proxy.yaml": "listeners:\n  - name: l\n    address: 127.0.0.1:${PORT}\nservices:\n  - name: s\n    url: http://${HOST}:9001\nroutes:\n  - name: r\n    service: s\n    paths: [/api/*]\n",
    "unknown_key.yaml": "services:\n  - name: a\n    url: http://127.0.0.1:1\n    colour: blue\n",
    "unknown_service.yaml": "services:\n  - name: a\n    url: http://127.0.0.1:1\nroutes:\n  - name: r\n    service: nope\n    paths: [/x]\n",
    "upstream_targets.yaml": "upstreams:\n  - name: u\n    algorithm: consistent-hashing\n    hash_on: header:x-user\n    targets:\n      - target: 127.0.0.1:9001\n        weight: 3\n      - target: 127.0.0.1:9002\nservices:\n  - name: s\n    upstream: u\n    retries:\n      attempts: 3\nroutes:\n  - name: r\n    service: s\n    hosts: [\"*.example.com\"]\n    paths: [\"/u/{id}\"]\n    methods: [GET, POST]\n",
    "plugins_consumers.yaml": "services:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n    paths: [/]\nconsumers:\n  - username: alice\n    credentials:\n      - type: key-auth\n        key: \"${SECRET}\"\nplugins:\n  - plugin: key-auth\n    route: r\n  - plugin: rate-limiting\n    config:\n      minute: 10\n      policy: local\n",
    "anchors_aliases.yaml": "x: &svc\n  type: echo\nservices:\n  - name: a\n    <<: *svc\n  - name: b\n    <<: *svc\n",
    "env_unset.yaml": "services:\n  - name: a\n    url: http://127.0.0.1:${NOT_SET}\n",
    "tabs_and_crlf.yaml": "services:\r\n\t- name: a\r\n",
}
for k, v in CFG.items():
    write("config", k, v)
