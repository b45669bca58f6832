#!/usr/bin/env python3
"""Open N keep-alive connections to HOST:PORT, make one request on each, then hold them idle
until killed. Prints 'holding N' once all are open. Loopback only."""
import asyncio
import resource
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
assert host in ("127.0.0.1", "::1", "localhost"), "loopback only"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))


async def one(i):
    r, w = await asyncio.open_connection(host, port)
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    await r.readexactly(length)
    return r, w


async def main():
    conns = []
    for start in range(0, n, 500):
        conns += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 500))))
    print(f"holding {len(conns)}", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
