"""A WebSocket echo server that accepts WebSockets over HTTP/2 (RFC 8441): a tiny ASGI app on
Hypercorn, which announces SETTINGS_ENABLE_CONNECT_PROTOCOL on its HTTP/2 connections (h2c by
prior knowledge, or TLS with ALPN h2 when given a certificate and key; HTTP/1.1 upgrades too).
Listens on an ephemeral loopback port, prints the port, serves until killed.

  ws_h2_echo_server.py [CERT_FILE KEY_FILE]

  /ws     echoes every message; its accept carries `x-http-version` (the version the
          WebSocket came over: "2" for an extended CONNECT) and `x-upstream: hypercorn`
  /seen   plain HTTP: how many WebSocket handshakes (any path) reached the server, as text
  other   a WebSocket is refused (403); plain HTTP gets 404
"""
import asyncio
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

SEEN = 0


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        global SEEN
        SEEN += 1
        await receive()  # websocket.connect
        if scope["path"] != "/ws":
            await send({"type": "websocket.close", "code": 1008})
            return
        version = scope.get("http_version", "?").encode()
        await send(
            {"type": "websocket.accept", "headers": [(b"x-http-version", version), (b"x-upstream", b"hypercorn")]}
        )
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
            else:
                await send({"type": "websocket.send", "text": msg.get("text") or ""})
    elif scope["path"] == "/seen":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(SEEN).encode()})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"no such path"})


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    if len(sys.argv) == 3:
        config.certfile, config.keyfile = sys.argv[1], sys.argv[2]
    print(sock.getsockname()[1], flush=True)
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
