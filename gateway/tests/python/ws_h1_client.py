"""A WebSocket client over HTTP/1.1 (the `websockets` library): echoes a text message, a
70,000-byte binary message and a close through URL.

  ws_h1_client.py URL

Prints one JSON line: the handshake's response headers, the echoes (text; binary length and
whether it matches) and the close code the server answered. On a refused handshake it prints
{"refused": STATUS}.
"""
import asyncio
import json
import os
import sys

import websockets


async def main(url):
    try:
        ws = await websockets.connect(url, open_timeout=10, max_size=None)
    except websockets.exceptions.InvalidStatus as e:
        print(json.dumps({"refused": e.response.status_code}), flush=True)
        return
    result = {"headers": {k.lower(): v for k, v in ws.response.headers.raw_items()}}
    await ws.send("hello over h1")
    result["text"] = await asyncio.wait_for(ws.recv(), 10)
    big = os.urandom(70000)
    await ws.send(big)
    got = await asyncio.wait_for(ws.recv(), 10)
    result["binary"] = {"len": len(got), "same": got == big}
    await ws.close(1000)
    result["close"] = ws.close_code
    print(json.dumps(result), flush=True)


asyncio.run(main(sys.argv[1]))
