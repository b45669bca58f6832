"""A real OTLP trace receiver for the tracing tests: OTLP/gRPC (grpcio) and OTLP/HTTP with
protobuf bodies, decoded with the official OpenTelemetry protobuf definitions
(`opentelemetry-proto`).

Prints "<grpc port> <http port>" on its first line. On the HTTP port:
  POST /v1/traces   an ExportTraceServiceRequest (application/x-protobuf)
  GET  /spans       every span received so far, as JSON (a list, in arrival order)
  GET  /exports     how many export requests arrived, per transport (`failed_<transport>`: how
                    many of them were answered with an injected failure)
  POST /faults      {"fail": N, "retryable": true|false, "reject": K}: the next N exports fail
                    (gRPC UNAVAILABLE or INVALID_ARGUMENT; HTTP 503 or 400) and are not
                    recorded; the next export taken reports K of its spans rejected
                    (`partial_success`) and records the rest. With "exhausted": true the
                    failures are gRPC RESOURCE_EXHAUSTED (HTTP 429); with "retry_after": S
                    they ask for S seconds before the next try (gRPC: a google.rpc.RetryInfo
                    in `grpc-status-details-bin`; HTTP: `Retry-After`, whole seconds)
  GET  /exports also gives `times_<transport>`: when each export attempt arrived (seconds,
                    monotonic clock), failed ones included
Runs until stdin closes (the test that started it ends) or it is killed.

With --tls CERT KEY both ports take TLS only (gRPC over TLS, HTTPS), with that certificate.
GET /exports also reports the `x-*`, `user-agent` and encoding headers (gRPC metadata) of the
last export per transport (gzip bodies are taken on both ports),
under `headers_<transport>`.

With --discard (the benchmark's collector), gRPC exports are taken as raw bytes and only
counted (requests and bytes in GET /exports): no decoding, so the collector costs little CPU.
"""

import collections
import gzip
import json
import ssl
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()
SPANS = []
EXPORTS = {"grpc": 0, "http": 0, "failed_grpc": 0, "failed_http": 0}
FAULTS = {"fail": 0, "retryable": True, "reject": 0, "exhausted": False, "retry_after": None}


def _varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | 0x80 if n else b])
        if not n:
            return out


def _field(tag, data):
    return _varint(tag << 3 | 2) + _varint(len(data)) + data


def status_details(code, message, retry_after):
    """A google.rpc.Status holding a google.rpc.RetryInfo, encoded by hand (the field numbers of
    google/rpc/status.proto, error_details.proto and protobuf's Duration)."""
    secs, nanos = int(retry_after), int(round((retry_after % 1) * 1e9))
    duration = (_varint(1 << 3) + _varint(secs) if secs else b"") + (_varint(2 << 3) + _varint(nanos) if nanos else b"")
    any_ = _field(1, b"type.googleapis.com/google.rpc.RetryInfo") + _field(2, _field(1, duration))
    return _varint(1 << 3) + _varint(code) + _field(2, message.encode()) + _field(3, any_)


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def fault(via):
    """The injected outcome of the next export: ("fail", retryable), ("reject", k) or None."""
    with LOCK:
        EXPORTS.setdefault("times_" + via, []).append(time.monotonic())
        if FAULTS["fail"] > 0:
            FAULTS["fail"] -= 1
            EXPORTS["failed_" + via] += 1
            return ("fail", FAULTS["retryable"])
        if FAULTS["reject"] > 0:
            k, FAULTS["reject"] = FAULTS["reject"], 0
            return ("reject", k)
    return None


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def record(req, via, reject=0):
    out = []
    for rs in req.resource_spans:
        resource = {a.key: any_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    {
                        "via": via,
                        "service": resource.get("service.name"),
                        "scope": ss.scope.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "trace_state": s.trace_state,
                        "name": s.name,
                        "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "status": trace_pb2.Status.StatusCode.Name(s.status.code),
                        "status_message": s.status.message,
                        "attributes": {a.key: any_value(a.value) for a in s.attributes},
                    }
                )
    with LOCK:
        SPANS.extend(out[reject:])
        EXPORTS[via] += 1


def response(reject):
    resp = trace_service_pb2.ExportTraceServiceResponse()
    if reject:
        resp.partial_success.rejected_spans = reject
        resp.partial_success.error_message = "rejected by the test"
    return resp


def keep_headers(via, pairs):
    with LOCK:
        EXPORTS["headers_" + via] = {
            k.lower(): v
            for k, v in pairs
            if k.lower().startswith("x-") or k.lower() in ("user-agent", "content-encoding", "grpc-encoding")
        }


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        keep_headers("grpc", context.invocation_metadata())
        f = fault("grpc")
        if f and f[0] == "fail":
            code = grpc.StatusCode.UNAVAILABLE if f[1] else grpc.StatusCode.INVALID_ARGUMENT
            if FAULTS["exhausted"]:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
            if FAULTS["retry_after"] is not None:
                details = status_details(code.value[0], "injected by the test", FAULTS["retry_after"])
                context.abort_with_status(
                    _Status(code, "injected by the test", (("grpc-status-details-bin", details),))
                )
            context.abort(code, "injected by the test")
        reject = f[1] if f else 0
        record(request, "grpc", reject)
        return response(reject)


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype, extra=None):
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        if self.path == "/faults":
            with LOCK:
                FAULTS.update(json.loads(body))
            return self.reply(204, b"", "text/plain")
        if self.path != "/v1/traces":
            return self.reply(404, b"", "text/plain")
        if self.headers.get("content-type") != "application/x-protobuf":
            return self.reply(415, b"", "text/plain")
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        keep_headers("http", self.headers.items())
        f = fault("http")
        if f and f[0] == "fail":
            status = 429 if FAULTS["exhausted"] else 503 if f[1] else 400
            after = FAULTS["retry_after"]
            extra = {"retry-after": str(int(after))} if after is not None else {}
            return self.reply(status, b"injected by the test", "text/plain", extra)
        reject = f[1] if f else 0
        record(req, "http", reject)
        self.reply(200, response(reject).SerializeToString(), "application/x-protobuf")

    def do_GET(self):
        with LOCK:
            if self.path == "/spans":
                body = json.dumps(SPANS).encode()
            elif self.path == "/exports":
                body = json.dumps(EXPORTS).encode()
            else:
                return self.reply(404, b"", "text/plain")
        self.reply(200, body, "application/json")


def discard(request, context):
    with LOCK:
        EXPORTS["grpc"] += 1
        EXPORTS["bytes"] = EXPORTS.get("bytes", 0) + len(request)
    return b""


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if "--discard" in sys.argv:
        handler = grpc.unary_unary_rpc_method_handler(discard)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),)
        )
    else:
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    tls = None
    if "--tls" in sys.argv:
        i = sys.argv.index("--tls")
        tls = (sys.argv[i + 1], sys.argv[i + 2])
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        grpc_port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        http.socket = ctx.wrap_socket(http.socket, server_side=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"{grpc_port} {http.server_address[1]}", flush=True)
    # Until the test that started us goes away (or, detached from stdin, until killed).
    if "--discard" in sys.argv:
        threading.Event().wait()
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
