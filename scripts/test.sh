#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need (Debian packages,
# Python packages for third-party test clients), makes sure PostgreSQL and Redis are running
# (cluster features are tested against the real servers), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[test] %s\n' "$*" >&2; }
SUDO=; [[ $(id -u) -ne 0 ]] && SUDO=sudo

need=()
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v npm >/dev/null || need+=(nodejs npm)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
# The dashboard's browser test: headless Chromium (driven by playwright-core from gateway/tests/js).
command -v chromium >/dev/null || need+=(chromium chromium-driver)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! python3 -c 'import websockets, grpc, grpc_tools, schemathesis, h2, prometheus_client, opentelemetry.proto' 2>/dev/null; then
  log "installing Python test clients"
  python3 -m pip install -q --disable-pip-version-check -r gateway/tests/python/requirements.txt
fi

# Node test clients (the grpc-web library, playwright-core for the dashboard test), pinned by
# the committed package-lock.json; installed again when the lock file is newer.
if command -v npm >/dev/null && { [[ ! -d gateway/tests/js/node_modules ]] \
  || [[ gateway/tests/js/package-lock.json -nt gateway/tests/js/node_modules/.package-lock.json ]]; }; then
  log "installing Node test clients"
  (cd gateway/tests/js && npm ci --no-audit --no-fund --silent)
fi

# Services used by cluster tests (rate limiting on Redis, config store on PostgreSQL).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:5432"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break; sleep 0.2; done
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
cargo test --workspace --doc -q
