"""HTTP/2 clients (python `h2`, over h2c prior knowledge) for the rapid-reset tests.

Usage: h2_resets.py HOST PORT MODE COUNT PATH

MODE `paced`: one HEADERS + RST_STREAM(CANCEL) per write, 2-5 ms apart, COUNT streams at most,
stopping early when the server sends GOAWAY or closes the connection.
MODE `normal`: COUNT requests, at most 10 in flight, every 25th cancelled right after its
HEADERS; the others must complete.

Prints one JSON line: streams opened, responses by status, the GOAWAY error code (or null), the
stream at which it came, and whether the server then closed the connection.
"""

import json
import random
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def main():
    host, port, mode, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", f"{host}:{port}")]
    out = {"opened": 0, "statuses": {}, "goaway": None, "goaway_after": None, "closed": False, "ended": 0}
    in_flight = set()

    def pump(wait):
        """Read what the server sent within `wait` seconds; False once the connection ended."""
        r, _, _ = select.select([sock], [], [], wait)
        if not r:
            return True
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            out["closed"] = True
            return False
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            out["closed"] = True
            return False
        for e in events:
            if isinstance(e, h2.events.ResponseReceived):
                status = dict(e.headers).get(":status", "?")
                out["statuses"][status] = out["statuses"].get(status, 0) + 1
            elif isinstance(e, h2.events.DataReceived):
                conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                out["ended"] += 1
                in_flight.discard(e.stream_id)
            elif isinstance(e, h2.events.StreamReset):
                in_flight.discard(e.stream_id)
            elif isinstance(e, h2.events.ConnectionTerminated):
                out["goaway"] = int(e.error_code)
                out["goaway_after"] = out["opened"]
        pending = conn.data_to_send()
        if pending:
            try:
                sock.sendall(pending)
            except OSError:
                out["closed"] = True
                return False
        return out["goaway"] is None

    deadline = time.monotonic() + 60
    try:
        if mode == "paced":
            for _ in range(count):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers, end_stream=True)
                conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
                sock.sendall(conn.data_to_send())
                out["opened"] += 1
                if not pump(random.uniform(0.002, 0.005)) or time.monotonic() > deadline:
                    break
        else:
            sent = 0
            while (sent < count or in_flight) and time.monotonic() < deadline:
                while sent < count and len(in_flight) < 10:
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, headers, end_stream=True)
                    sent += 1
                    out["opened"] += 1
                    if sent % 25 == 0:
                        conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
                    else:
                        in_flight.add(sid)
                    sock.sendall(conn.data_to_send())
                if not pump(1.0):
                    break
        # Whatever the server still says (a GOAWAY after the last stream), and whether it then
        # closes the connection (within 3 s).
        end = time.monotonic() + 1.0
        while out["goaway"] is None and not out["closed"] and time.monotonic() < end:
            if not pump(0.1):
                break
        if out["goaway"] is not None:
            end = time.monotonic() + 3.0
            while not out["closed"] and time.monotonic() < end:
                r, _, _ = select.select([sock], [], [], 0.1)
                if r:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        out["closed"] = True
    except (BrokenPipeError, ConnectionResetError):
        out["closed"] = True
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
