"""A WebSocket over HTTP/2 client (RFC 8441) on the `h2` library: prior-knowledge HTTP/2 (h2c),
waits for the server's SETTINGS_ENABLE_CONNECT_PROTOCOL, opens an extended CONNECT stream
(`:protocol: websocket`), then speaks RFC 6455 frames (masked, as a client must) on that stream.

  ws_h2_client.py HOST PORT PATH

Prints one JSON line: the server's ENABLE_CONNECT_PROTOCOL setting, the CONNECT's response
status and headers (and body, when it is not 200), the echoes of a text frame and of a 70000-byte binary frame (lengths and
whether they match), and the close code the server answered a close with. Exits 1 with a
message on stderr when something did not happen (a timeout, a reset, a refused CONNECT).
"""
import json
import os
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

TIMEOUT = 10


def frame(opcode, payload):
    """A masked client frame, FIN set."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def parse_frames(buf):
    """Complete (opcode, payload) frames at the start of buf, and the rest."""
    out = []
    while len(buf) >= 2:
        op = buf[0] & 0x0F
        masked = buf[1] & 0x80
        n = buf[1] & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            i = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            i = 10
        if masked:
            i += 4
        if len(buf) < i + n:
            break
        payload = buf[i:i + n]
        if masked:
            key = buf[i - 4:i]
            payload = bytes(b ^ key[j % 4] for j, b in enumerate(payload))
        out.append((op, payload))
        buf = buf[i + n:]
    return out, buf


def fail(msg):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    state = {"settings": None, "status": None, "headers": {}, "data": b"", "ended": False, "reset": None}
    stream = None

    def pump():
        data = sock.recv(65536)
        if not data:
            fail("connection closed by the gateway")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                s = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                if s is not None:
                    state["settings"] = s.new_value
                elif state["settings"] is None:
                    state["settings"] = 0
            elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == stream:
                hs = dict(ev.headers)
                state["status"] = int(hs.pop(":status"))
                state["headers"] = hs
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == stream:
                state["data"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == stream:
                state["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == stream:
                state["reset"] = ev.error_code
        out = conn.data_to_send()
        if out:
            sock.sendall(out)

    while state["settings"] is None:
        pump()
    if state["settings"] != 1:
        fail(f"the server does not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL={state['settings']})")

    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{host}:{port}"),
        ("sec-websocket-version", "13"),
        ("origin", "http://example.test"),
    ])
    sock.sendall(conn.data_to_send())
    while state["status"] is None:
        if state["reset"] is not None or state["ended"]:
            fail(f"the CONNECT stream ended before a response (reset {state['reset']})")
        pump()
    result = {"settings_enable_connect_protocol": state["settings"], "status": state["status"],
              "headers": state["headers"]}
    if state["status"] != 200:
        # A refusal: its body, to its end.
        while not state["ended"] and state["reset"] is None:
            pump()
        result["body"] = state["data"].decode(errors="replace")
        print(json.dumps(result), flush=True)
        return

    def send(data):
        # Respect flow control: send in pieces the window allows.
        while data:
            window = conn.local_flow_control_window(stream)
            n = min(len(data), window, conn.max_outbound_frame_size)
            if n == 0:
                pump()
                continue
            conn.send_data(stream, data[:n])
            sock.sendall(conn.data_to_send())
            data = data[n:]

    def receive():
        while True:
            frames, _ = parse_frames(state["data"])
            if frames:
                # The first frame; what follows it stays for the next call.
                state["data"] = state["data"][header_and_payload_len(state["data"]):]
                return frames[0]
            if state["reset"] is not None or state["ended"]:
                fail(f"the tunnel ended before a frame (reset {state['reset']})")
            pump()

    send(frame(0x1, b"hello over h2"))
    op, payload = receive()
    result["text"] = {"opcode": op, "payload": payload.decode()}
    big = os.urandom(70000)
    send(frame(0x2, big))
    op, payload = receive()
    result["binary"] = {"opcode": op, "len": len(payload), "same": payload == big}
    send(frame(0x8, struct.pack("!H", 1000)))
    op, payload = receive()
    result["close"] = {"opcode": op, "code": struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None}
    print(json.dumps(result), flush=True)
    conn.end_stream(stream)
    sock.sendall(conn.data_to_send())
    sock.close()


def header_and_payload_len(buf):
    """The length of the first complete frame in buf."""
    n = buf[1] & 0x7F
    i = 2
    if n == 126:
        n = struct.unpack("!H", buf[2:4])[0]
        i = 4
    elif n == 127:
        n = struct.unpack("!Q", buf[2:10])[0]
        i = 10
    if buf[1] & 0x80:
        i += 4
    return i + n


if __name__ == "__main__":
    socket.setdefaulttimeout(TIMEOUT)
    try:
        main()
    except socket.timeout:
        fail("timed out")
