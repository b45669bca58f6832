#!/usr/bin/env python3
"""Latency of an aggregate vs the same three calls made one after another by the client.

Three loopback backends answer JSON after 20, 40 and 60 ms. One gateway (the binary given)
serves /agg (an aggregate of the three, in parallel) and /b1, /b2, /b3 (each backend proxied).
At concurrency 1, over one kept-alive connection each, it times N aggregate requests and N
rounds of three sequential requests, and prints median and p99 (ms). The aggregate should take
about the slowest backend (60 ms) plus a small overhead; the sequential client about the sum
(120 ms). Only 127.0.0.1 is used; the loop is bounded by N.

    bench/aggregate_latency.py path/to/gatehouse [N]
"""

import asyncio
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

DELAYS_MS = [20, 40, 60]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def backend(port, delay_ms):
    body = b'{"ok":true,"delay_ms":%d}' % delay_ms

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                await asyncio.sleep(delay_ms / 1000)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def run_backends(ports):
    loop = asyncio.new_event_loop()
    for port, d in zip(ports, DELAYS_MS):
        loop.create_task(backend(port, d))
    threading.Thread(target=loop.run_forever, daemon=True).start()


def config(gw_port, ports):
    services = "".join(f"  - name: b{i + 1}\n    url: http://127.0.0.1:{p}\n" for i, p in enumerate(ports))
    calls = "".join(
        f"        - {{ name: c{i + 1}, service: b{i + 1}, path: /x, group: c{i + 1} }}\n" for i in range(3)
    )
    routes = "".join(f"  - name: b{i + 1}\n    service: b{i + 1}\n    paths: [/b{i + 1}]\n" for i in range(3))
    return (
        'gateway:\n  status_listener: "off"\n  access_log: { enabled: false }\n'
        f"listeners:\n  - name: main\n    address: 127.0.0.1:{gw_port}\n"
        f"services:\n{services}  - name: agg\n    type: aggregate\n    aggregate:\n      calls:\n{calls}"
        f"routes:\n{routes}  - name: agg\n    service: agg\n    paths: [/agg]\n"
    )


def timed(conn, paths):
    t = time.perf_counter()
    for p in paths:
        conn.request("GET", p)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"{p}: {r.status}")
    return (time.perf_counter() - t) * 1000


def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    ports = [free_port() for _ in DELAYS_MS]
    run_backends(ports)
    gw_port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "gw.yaml")
        with open(cfg, "w") as f:
            f.write(config(gw_port, ports))
        gw = subprocess.Popen([binary, "run", "--no-watch", "--config", cfg], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", gw_port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            agg = http.client.HTTPConnection("127.0.0.1", gw_port)
            seq = http.client.HTTPConnection("127.0.0.1", gw_port)
            for _ in range(5):
                timed(agg, ["/agg"])
                timed(seq, ["/b1", "/b2", "/b3"])
            a = [timed(agg, ["/agg"]) for _ in range(n)]
            s = [timed(seq, ["/b1", "/b2", "/b3"]) for _ in range(n)]
        finally:
            gw.terminate()
            gw.wait()
    am, ap = summary(a)
    sm, sp = summary(s)
    print(f"\nAggregate vs three sequential client calls (backends {DELAYS_MS} ms, concurrency 1, {n} each)")
    print(f"aggregate (parallel)     median {am:7.2f} ms   p99 {ap:7.2f} ms   p99 over the slowest backend: {ap - max(DELAYS_MS):.2f} ms")
    print(f"3 sequential calls       median {sm:7.2f} ms   p99 {sp:7.2f} ms")


if __name__ == "__main__":
    main()
