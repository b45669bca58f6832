#!/usr/bin/env python3
"""Print a gateway config with N routes: exact, template and prefix paths, half of them on no
host (the tier a request for Host 127.0.0.1 searches) and half spread over 50 hosts. The
benchmark requests /svc<N/2>/items/42, a template route in the middle of the table."""
import sys

n = int(sys.argv[1])
out = [
    "gateway:",
    "  status_listener: \"off\"",
    "  access_log: { enabled: false }",
    "  limits: { max_connections: 20000 }",
    "listeners:",
    "  - name: bench",
    "    address: ${GATEWAY_ADDR}",
    "services:",
    "  - name: up",
    "    url: http://${UPSTREAM_ADDR}",
    "routes:",
]
for i in range(n):
    kind = 1 if i == n // 2 else i % 3
    path = {0: f"/svc{i}/items", 1: f"/svc{i}/items/{{id}}", 2: f"/svc{i}/*"}[kind]
    out += [f"  - name: r{i}", "    service: up", f"    paths: [\"{path}\"]"]
    if i % 2 == 1 and i != n // 2:
        out.append(f"    hosts: [\"h{i % 50}.bench\"]")
print("\n".join(out))
