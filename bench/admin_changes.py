#!/usr/bin/env python3
"""Route changes through the Admin API during a load run: N `PUT /routes/<prefix>N` on one
keep-alive connection, spaced evenly over the run, each followed by a request for the new route
on the proxy (it must be served at once). Prints one line per change: status, PUT latency (ms),
proxy status. With CONTROL=1 the same requests are made but the PUT is a read (`GET /status`)
and nothing changes: the cost of the harness itself. Only 127.0.0.1 is contacted; the loop is
bounded by N."""
import http.client
import json
import os
import sys
import time

admin_port, proxy_port, token, prefix, n, spacing = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
admin = http.client.HTTPConnection("127.0.0.1", admin_port)
proxy = http.client.HTTPConnection("127.0.0.1", proxy_port)
headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
for i in range(1, n + 1):
    body = json.dumps({"service": "up", "paths": [f"/{prefix}{i}"]})
    t = time.perf_counter()
    if os.environ.get("CONTROL") == "1":
        admin.request("GET", "/status", headers=headers)
    else:
        admin.request("PUT", f"/routes/{prefix}{i}", body=body, headers=headers)
    r = admin.getresponse()
    r.read()
    ms = (time.perf_counter() - t) * 1000
    proxy.request("GET", f"/{prefix}{i}")
    p = proxy.getresponse()
    p.read()
    print(f"{r.status} {ms:.2f} {p.status}", flush=True)
    time.sleep(spacing)
