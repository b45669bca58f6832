"""gRPC over the gateway with the real grpcio stack, without generated code (raw-bytes methods).

  grpc_echo.py server [FILE]   -> prints its port, serves until killed; with FILE, writes there
                                  how many /test.Echo/Stream calls have sent all their messages
  grpc_echo.py client HOST:PORT -> runs the checks, prints 'ok'

Methods: /test.Echo/Unary (echo + trailing metadata), /test.Echo/Fail (NOT_FOUND with details),
/test.Echo/Stream (server streaming of N messages)."""
import os
import sys
import threading
from concurrent import futures

import grpc

IDENT = lambda b: b


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    return b"echo:" + request


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


STREAMED = {"file": None, "count": 0, "lock": threading.Lock()}


def stream(request, context):
    n = int(request.decode())
    for i in range(n):
        yield f"msg-{i}".encode()
    # Asked for the next message, so the last one was handed to the transport.
    if STREAMED["file"]:
        with STREAMED["lock"]:
            STREAMED["count"] += 1
            tmp = STREAMED["file"] + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(STREAMED["count"]))
            os.replace(tmp, STREAMED["file"])


def server():
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, IDENT, IDENT),
            "Fail": grpc.unary_unary_rpc_method_handler(fail, IDENT, IDENT),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, IDENT, IDENT),
        },
    )
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((handler,))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    print(port, flush=True)
    s.wait_for_termination()


def client(target):
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary("/test.Echo/Unary", IDENT, IDENT)
        resp, c = call.with_call(b"hello", timeout=10)
        assert resp == b"echo:hello", resp
        assert ("x-trailer", "kept") in c.trailing_metadata(), c.trailing_metadata()
        try:
            ch.unary_unary("/test.Echo/Fail", IDENT, IDENT)(b"x", timeout=10)
            raise AssertionError("expected NOT_FOUND")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
            assert e.details() == "no such thing", e.details()
        msgs = list(ch.unary_stream("/test.Echo/Stream", IDENT, IDENT)(b"100", timeout=10))
        assert msgs == [f"msg-{i}".encode() for i in range(100)], len(msgs)
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        STREAMED["file"] = sys.argv[2] if len(sys.argv) > 2 else None
        server()
    else:
        client(sys.argv[2])
