#!/usr/bin/env bash
# scripts/build-pgo.sh — the profile-guided (PGO) release build of gatehouse: target/pgo/gatehouse.
# Release binaries are built this way; `cargo build --release` gives the same program without
# the profile.
#
#   scripts/build-pgo.sh                 # instrumented build, training run, optimized build (~25 min on 2 cores)
#   TRAIN_ONLY=1 scripts/build-pgo.sh    # reuse the instrumented binary, redo the training and the final build
#
# Why: the request path is a few thousand instructions spread over many functions (the
# pipeline's async state machines, httparse, header maps, tokio). Without a profile the compiler
# lays hot and cold blocks side by side, and the proxy spends much of its user time on
# instruction-cache misses. With a profile it moves error paths out of line and packs the hot
# code together. docs/benchmarks.md has the measurements.
#
# Steps:
#   1. `cargo build --release` with `-Cprofile-generate` (target dir target/pgo-gen);
#   2. a bounded training run on 127.0.0.1 only, driven by h2load: the instrumented gateway with
#      the plain proxy config, key-auth + acl + a file access log, local rate limiting, and TLS;
#      HTTP/1.1 keep-alive and one-request connections, bodies, HTTP/2, HTTP/2 over TLS. The
#      upstream is a second gateway answering with a static service (its profile is discarded);
#   3. `llvm-profdata merge` (rustup component llvm-tools, installed when missing);
#   4. `cargo build --release` with `-Cprofile-use` (target dir target/pgo-use), copied to
#      target/pgo/gatehouse.
# The source is the working tree: a profile applies only to the code it was recorded on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PATH=$PATH:/usr/sbin:/sbin
log() { printf '[pgo] %s\n' "$*" >&2; }

need=()
for t in h2load curl openssl; do command -v $t >/dev/null || need+=($t); done
if ((${#need[@]})); then
  log "installing: ${need[*]}"
  pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^h2load$/nghttp2-client/')
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
SYSROOT=$(rustc --print sysroot)
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata
if [[ ! -x $PROFDATA ]]; then
  log "installing the rustup component llvm-tools (llvm-profdata)"
  rustup component add llvm-tools >/dev/null
fi

DATA=$ROOT/target/pgo-data
GEN_BIN=$ROOT/target/pgo-gen/release/gatehouse
if [[ ${TRAIN_ONLY:-0} != 1 || ! -x $GEN_BIN ]]; then
  log "1/4 instrumented build (target/pgo-gen)"
  RUSTFLAGS="-Cprofile-generate=$DATA" cargo build --release -q -p gatehouse --target-dir "$ROOT/target/pgo-gen"
fi
rm -rf "$DATA"; mkdir -p "$DATA"

TMP=$(mktemp -d -t gw-pgo.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

UP_PORT=18280 GW_PORT=18281 TLS_PORT=18282
cat >"$TMP/up.yaml" <<YAML
gateway: { status_listener: "off", access_log: { enabled: false }, limits: { max_body_bytes: 0 } }
listeners: [{ name: up, address: "127.0.0.1:$UP_PORT" }]
services:
  - name: body
    type: static
    response: { status: 200, body: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz\\n" }
routes: [{ name: all, service: body, paths: ["/*"] }]
YAML
LLVM_PROFILE_FILE="$TMP/discarded-%p.profraw" "$GEN_BIN" run --no-watch --config "$TMP/up.yaml" >/dev/null 2>"$TMP/up.err" &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$UP_PORT/" && break; sleep 0.1; done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat >"$TMP/tls.yaml" <<YAML
gateway: { status_listener: "off", access_log: { enabled: false } }
listeners:
  - { name: plain, address: "127.0.0.1:$GW_PORT" }
  - { name: tls, address: "127.0.0.1:$TLS_PORT", tls: {} }
certificates:
  - { name: local, cert_file: "$TMP/cert.pem", key_file: "$TMP/key.pem" }
services:
  - { name: up, url: "http://127.0.0.1:$UP_PORT" }
routes:
  - { name: all, service: up, paths: ["/*"] }
YAML
head -c 16384 /dev/urandom >"$TMP/body"

# train CONFIG LOADS... — runs the instrumented gateway on CONFIG, each load in turn, then
# stops it with SIGTERM so that it writes its profile. Every request of a load must succeed,
# except in loads marked "refused:" (answered with a 4xx, which h2load counts as failed).
train() {
  local config=$1; shift
  ACCESS_LOG=$TMP/access.log GATEWAY_ADDR=127.0.0.1:$GW_PORT UPSTREAM_ADDR=127.0.0.1:$UP_PORT \
    LLVM_PROFILE_FILE="$DATA/gw-%p-%m.profraw" "$GEN_BIN" run --no-watch --config "$config" >/dev/null 2>"$TMP/gw.err" &
  local pid=$!
  PIDS+=($pid)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/" && break; sleep 0.1; done
  local load want out
  for load in "$@"; do
    want=' 0 failed, 0 errored, 0 timeout'
    [[ $load == refused:* ]] && { load=${load#refused:}; want=' 0 errored, 0 timeout'; }
    log "   $(basename "$config"): $load"
    out=$(eval "$load" 2>&1) || { log "load failed: $out"; exit 1; }
    grep -q "$want" <<<"$out" || { log "requests failed: $(grep '^requests:' <<<"$out")"; cat "$TMP/gw.err" >&2; exit 1; }
  done
  kill -TERM "$pid"; wait "$pid" || true
}

G=http://127.0.0.1:$GW_PORT
log "2/4 training run (loopback only, bounded request counts)"
train "$ROOT/bench/gateway-plain.yaml" \
  "h2load --h1 -c50 -n300000 $G/" \
  "h2load --h1 -c20 -n20000 -d $TMP/body $G/upload" \
  "h2load --h1 -c200 -n200 $G/new-connection" \
  "h2load -c20 -m10 -n100000 $G/" \
  "h2load -c10 -m10 -n10000 -d $TMP/body $G/upload"
train "$ROOT/bench/gateway-auth.yaml" \
  "h2load --h1 -c20 -n50000 -H 'apikey: bench-api-key-0001' $G/" \
  "refused:h2load --h1 -c10 -n2000 $G/refused" \
  "h2load -c10 -m10 -n20000 -H 'apikey: bench-api-key-0001' $G/"
train "$ROOT/bench/gateway-ratelimit-local.yaml" \
  "h2load --h1 -c20 -n50000 $G/"
train "$TMP/tls.yaml" \
  "h2load --h1 -c20 -n30000 https://127.0.0.1:$TLS_PORT/" \
  "h2load -c10 -m10 -n30000 https://127.0.0.1:$TLS_PORT/" \
  "h2load --h1 -c100 -n100 https://127.0.0.1:$TLS_PORT/"

log "3/4 merging $(ls "$DATA" | wc -l) profiles"
"$PROFDATA" merge -o "$DATA/merged.profdata" "$DATA"/*.profraw

log "4/4 optimized build (target/pgo-use)"
RUSTFLAGS="-Cprofile-use=$DATA/merged.profdata" cargo build --release -q -p gatehouse --target-dir "$ROOT/target/pgo-use"
mkdir -p "$ROOT/target/pgo"
cp "$ROOT/target/pgo-use/release/gatehouse" "$ROOT/target/pgo/gatehouse"
log "done: target/pgo/gatehouse"
