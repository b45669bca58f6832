"""Many concurrent unary gRPC calls through the gateway to grpc_echo.py's /test.Echo/Unary.

  grpc_load.py many HOST:PORT CALLS CHANNELS
      grpcio (aio): CALLS concurrent calls spread over CHANNELS channels, each its own HTTP/2
      connection. Prints one JSON line: {"ok": n, "failed": n, "errors": {code: count}}.

  grpc_load.py held HOST PORT STREAMS CONNECTIONS [MESSAGES]
      A client that reads slowly, on the `h2` library: CONNECTIONS connections, each announcing
      SETTINGS_INITIAL_WINDOW_SIZE 0 (the gateway may send no response body yet) and opening
      STREAMS calls: /test.Echo/Unary, or with MESSAGES /test.Echo/Stream asking for that many
      messages. Once every call's response headers arrived it prints {"held": n} and waits for
      a line on stdin; then it opens its windows, reads every answer and prints one JSON line:
      {"ok": n, "failed": n, "statuses": {...}}. A call is ok when its messages are the expected
      ones (the echo of its request; msg-0, msg-1, ...) and its grpc-status is 0.
"""
import asyncio
import json
import socket
import struct
import sys
from collections import Counter

TIMEOUT = 30


def many(target, calls, channels):
    import grpc

    async def run():
        chans = [
            # A local subchannel pool: each channel opens its own connection.
            grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        methods = [c.unary_unary("/test.Echo/Unary") for c in chans]

        async def one(i):
            body = f"call-{i}".encode()
            try:
                r = await methods[i % channels](body, timeout=TIMEOUT)
                return "OK" if r == b"echo:" + body else f"wrong answer {r!r}"
            except grpc.aio.AioRpcError as e:
                return f"{e.code().name}: {e.details()}"

        results = await asyncio.gather(*(one(i) for i in range(calls)))
        for c in chans:
            await c.close()
        return results

    results = asyncio.run(run())
    errors = Counter(r for r in results if r != "OK")
    print(json.dumps({"ok": results.count("OK"), "failed": len(results) - results.count("OK"), "errors": errors}))


def framed(msg):
    return b"\x00" + struct.pack("!I", len(msg)) + msg


def held(host, port, streams, connections, messages=0):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    conns = []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        c.initiate_connection()
        sock.sendall(c.data_to_send())
        calls = {}
        for i in range(streams):
            sid = c.get_next_available_stream_id()
            if messages:
                body = str(messages).encode()
                expect = b"".join(framed(f"msg-{k}".encode()) for k in range(messages))
            else:
                body = f"held-{len(conns)}-{i}".encode()
                expect = framed(b"echo:" + body)
            c.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":authority", f"{host}:{port}"),
                    (":path", "/test.Echo/Stream" if messages else "/test.Echo/Unary"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            c.send_data(sid, framed(body), end_stream=True)
            calls[sid] = {"expect": expect, "data": b"", "headers": None, "trailers": None}
        sock.sendall(c.data_to_send())
        conns.append((sock, c, calls))

    def pump(sock, c, calls, until):
        while not until():
            data = sock.recv(65536)
            if not data:
                raise SystemExit("the gateway closed the connection")
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    calls[ev.stream_id]["headers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    calls[ev.stream_id]["data"] += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    calls[ev.stream_id]["trailers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamReset):
                    calls[ev.stream_id]["trailers"] = {"reset": str(ev.error_code)}
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise SystemExit(f"the gateway sent GOAWAY {ev.error_code}")
            out = c.data_to_send()
            if out:
                sock.sendall(out)

    for sock, c, calls in conns:
        pump(sock, c, calls, lambda: all(v["headers"] is not None or v["trailers"] is not None for v in calls.values()))
    print(json.dumps({"held": sum(len(calls) for _, _, calls in conns)}), flush=True)
    sys.stdin.readline()
    for sock, c, calls in conns:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        sock.sendall(c.data_to_send())
        pump(sock, c, calls, lambda: all(v["trailers"] is not None for v in calls.values()))
    statuses = Counter()
    ok = 0
    for _, _, calls in conns:
        for v in calls.values():
            status = (v["headers"] or {}).get("grpc-status") or v["trailers"].get("grpc-status") or json.dumps(v["trailers"])
            statuses[status] += 1
            if status == "0" and v["data"] == v["expect"]:
                ok += 1
    total = sum(len(calls) for _, _, calls in conns)
    print(json.dumps({"ok": ok, "failed": total - ok, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "many":
        many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        held(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), *map(int, sys.argv[6:7]))
