#!/usr/bin/env bash
# bench/run.sh — Gatehouse beside nginx on loopback. Prints the tables recorded in
# docs/benchmarks.md. Only 127.0.0.1 is ever targeted and every load run is bounded.
#
#   bench/run.sh            # everything (about 10 minutes on 2 cores)
#   bench/run.sh http1      # wrk, HTTP/1.1 keep-alive: gateway vs nginx vs haproxy (peer-bench.sh)
#   bench/run.sh http2      # h2load, HTTP/2 (h2c prior knowledge): gateway vs nginx
#   bench/run.sh routes     # 10 vs 10,000 routes
#   bench/run.sh memory     # idle RSS, and RSS with 10,000 idle client connections
#   bench/run.sh plugins    # plain proxy vs key-auth + acl + access log (file)
#   bench/run.sh ratelimit  # plain proxy vs rate limiting, local and on Redis
#   bench/run.sh tracing    # plain proxy vs OpenTelemetry tracing at ratio 1.0 and 0.01
#   bench/run.sh aggregate  # one proxied call vs an aggregate of three; latency vs three sequential calls
#   bench/run.sh tracing-instructions  # the same three, instructions per request (callgrind;
#                                      # real-time-sized export batches, CG_REALTIME=0: 1 s interval)
#   bench/run.sh cache      # cache hits: Gatehouse proxy-cache vs nginx proxy_cache, 99 B and 64 KiB
#   bench/run.sh cache-instructions  # instructions per cache hit, 99 B and 64 KiB (callgrind)
#   bench/run.sh admin      # route changes through the Admin API on 10,000 routes, under load (vs reads)
#   bench/run.sh grpc       # h2load: gRPC pass-through vs gRPC-Web (binary, text) vs transcoded REST, one upstream
#   bench/run.sh instructions  # user-space instructions per proxied request (callgrind; repeatable)
#   GATEHOUSE_BIN=path bench/run.sh instructions  # the same for a binary built from another commit
#
# Layout (2 CPUs): load generator and upstream on CPU 0, the proxy alone on CPU 1.
# Knobs: DURATION (s, default 10), REPEATS (default 5), CONNS (default 50), NO_BUILD=1 (use the
# binary already built), BUILD=pgo (default: the profile-guided release build of
# scripts/build-pgo.sh, target/pgo/gatehouse, about 25 minutes to build on 2 cores; the build
# release binaries are made with) or BUILD=release (plain `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-5}
CONNS=${CONNS:-50}
PEER=${PEER_BENCH:-$ROOT/../shared/bench/peer-bench.sh}
WHAT=${1:-all}
log() { printf '[bench] %s\n' "$*" >&2; }

need=()
for t in nginx wrk h2load curl taskset haproxy valgrind; do command -v $t >/dev/null || need+=($t); done
if ((${#need[@]})); then
  log "installing: ${need[*]}"
  pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^h2load$/nghttp2-client/; s/^taskset$/util-linux/; s/^nginx$/nginx-light/')
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
PATH=$PATH:/usr/sbin:/sbin

BUILD=${BUILD:-pgo}
case $BUILD in
  release) BIN=$ROOT/target/release/gatehouse ;;
  pgo) BIN=$ROOT/target/pgo/gatehouse ;;
  *) log "unknown BUILD=$BUILD (release|pgo)"; exit 2 ;;
esac
# GATEHOUSE_BIN=path measures a binary built elsewhere (another commit, for before/after counts).
if [[ -n ${GATEHOUSE_BIN:-} ]]; then BIN=$GATEHOUSE_BIN; NO_BUILD=1; fi
if [[ ${NO_BUILD:-0} != 1 || ! -x $BIN ]]; then
  log "building the $BUILD binary"
  if [[ $BUILD == pgo ]]; then scripts/build-pgo.sh; else cargo build --release -q -p gatehouse; fi
fi
log "gateway binary: $BIN ($BUILD build)"

TMP=$(mktemp -d -t gw-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

UP_PORT=18180 NG_PORT=18181 GW_PORT=18182
BODY='0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz\n'
nginx_conf() { # nginx_conf NAME SERVER_BLOCK
  cat <<NGX
worker_processes 1; daemon off; pid $TMP/$1.pid; error_log $TMP/$1.err warn;
events { worker_connections 16384; }
http { access_log off; keepalive_timeout 65; keepalive_requests 100000000;
  client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f; uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 100000000; }
  $2 }
NGX
}
start_upstream() {
  # One upstream for every section of a run.
  curl -s -o /dev/null "http://127.0.0.1:$UP_PORT/" && return 0
  nginx_conf up "server { listen 127.0.0.1:$UP_PORT backlog=4096; location / { default_type text/plain; return 200 \"$BODY\"; } }" >"$TMP/up.conf"
  taskset -c 0 nginx -p "$TMP" -c "$TMP/up.conf" & PIDS+=($!)
  wait_port $UP_PORT
}
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; log "port $1 not ready"; exit 1; }
start_gateway() { # start_gateway CONFIG -> sets GW_PID
  GATEWAY_ADDR=127.0.0.1:$GW_PORT UPSTREAM_ADDR=127.0.0.1:$UP_PORT taskset -c 1 "$BIN" run --no-watch --config "$1" >/dev/null 2>"$TMP/gw.err" &
  GW_PID=$!; PIDS+=($GW_PID)
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/" && return 0; sleep 0.1; done
  log "gateway did not start:"; cat "$TMP/gw.err" >&2; exit 1
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

http1() {
  log "HTTP/1.1: peer-bench.sh (wrk -c$CONNS, ${DURATION}s x $REPEATS)"
  DURATION=$DURATION REPEATS=$REPEATS CONNS=$CONNS \
    GATEWAY_CMD="$BIN run --no-watch --config $ROOT/bench/gateway-plain.yaml" GATEWAY_PORT=18090 "$PEER"
}

http2() {
  log "HTTP/2: h2load -c$CONNS -m10 (h2c prior knowledge), ${DURATION}s x $REPEATS"
  start_upstream
  nginx_conf ng "server { listen 127.0.0.1:$NG_PORT http2 backlog=4096; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" >"$TMP/ng.conf"
  taskset -c 1 nginx -p "$TMP" -c "$TMP/ng.conf" & NG_PID=$!; PIDS+=($NG_PID)
  start_gateway "$ROOT/bench/gateway-plain.yaml"
  for port in $NG_PORT $GW_PORT; do taskset -c 0 h2load -c $CONNS -m 10 -D 2 "http://127.0.0.1:$port/" >/dev/null 2>&1; done
  : >"$TMP/h2.csv"
  for r in $(seq "$REPEATS"); do
    for t in nginx gateway; do
      port=$([[ $t == nginx ]] && echo $NG_PORT || echo $GW_PORT)
      out=$(taskset -c 0 h2load -c $CONNS -m 10 -D "$DURATION" "http://127.0.0.1:$port/" 2>&1)
      rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
      mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
      fail=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
      echo "$t,$rps,$mean,$fail" >>"$TMP/h2.csv"
      log "run $r $t: $rps req/s, mean $mean, failed $fail"
    done
  done
  n=$(grep '^nginx' "$TMP/h2.csv" | cut -d, -f2 | median)
  g=$(grep '^gateway' "$TMP/h2.csv" | cut -d, -f2 | median)
  printf '\nHTTP/2 (h2load -c%s -m10, %ss x %s, median req/s)\nnginx    %10.0f\ngateway  %10.0f\nratio gateway/nginx: %.2f\n' \
    "$CONNS" "$DURATION" "$REPEATS" "$n" "$g" "$(echo "$g / $n" | bc -l)"
  stop_pid "$GW_PID"; stop_pid "$NG_PID"
}

routes() {
  log "routes: 10 vs 10,000 (wrk -c$CONNS, ${DURATION}s x $REPEATS, alternating)"
  start_upstream
  python3 bench/gen_routes.py 10 >"$TMP/r10.yaml"
  python3 bench/gen_routes.py 10000 >"$TMP/r10000.yaml"
  : >"$TMP/routes.csv"
  for r in $(seq "$REPEATS"); do
    for n in 10 10000; do
      start_gateway "$TMP/r$n.yaml"
      path="/svc$((n / 2))/items/42"
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT$path")
      [[ $code == 200 ]] || { log "route table $n: $path answered $code"; exit 1; }
      taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$GW_PORT$path" >/dev/null
      rps=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$GW_PORT$path" | awk '/Requests\/sec/ {print $2}')
      echo "$n,$rps" >>"$TMP/routes.csv"; log "run $r: $n routes: $rps req/s"
      stop_pid "$GW_PID"
    done
  done
  a=$(grep '^10,' "$TMP/routes.csv" | cut -d, -f2 | median)
  b=$(grep '^10000,' "$TMP/routes.csv" | cut -d, -f2 | median)
  printf '\nRoute table size (median req/s)\n10 routes      %10.0f\n10,000 routes  %10.0f\nratio 10,000/10: %.3f\n' "$a" "$b" "$(echo "$b / $a" | bc -l)"
}

# Instructions per proxied request in user space, counted by callgrind: unlike req/s on a shared
# VM, the same binary gives the same count within a fraction of a percent, so code changes are
# compared with it. 2,000 warm-up requests, then counting starts (callgrind_control -z), 20,000
# requests through h2load --h1 -c10, a dump, and the total divided by the request count.
# INSTR_UP_PORT and INSTR_PATH: another upstream and path (cache-instructions).
instructions() {
  local n=${REQUESTS:-20000} up=${INSTR_UP_PORT:-$UP_PORT} url="http://127.0.0.1:$GW_PORT${INSTR_PATH:-/}"
  log "instructions: callgrind, $n requests (h2load --h1 -c10); the gateway runs about 50x slower under valgrind"
  [[ -n ${INSTR_UP_PORT:-} ]] || start_upstream
  GATEWAY_ADDR=127.0.0.1:$GW_PORT UPSTREAM_ADDR=127.0.0.1:$up valgrind --tool=callgrind ${CG_ARGS:-} \
    --callgrind-out-file="$TMP/cg.out" "$BIN" run --no-watch --config "${INSTR_CONFIG:-$ROOT/bench/gateway-plain.yaml}" \
    >/dev/null 2>"$TMP/gw.err" &
  GW_PID=$!; PIDS+=($GW_PID)
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/" && break; sleep 0.1; done
  h2load --h1 -c10 -n2000 "$url" >/dev/null
  # INSTR_SETTLE=s: idle that long after the warm-up and after the measured requests (what
  # the warm-up queued for export goes before the count starts, what the measured requests
  # queued goes before it ends).
  sleep "${INSTR_SETTLE:-0}"
  callgrind_control -z "$GW_PID" >/dev/null
  local out; out=$(h2load --h1 -c10 -n"$n" "$url")
  grep -q "$n succeeded" <<<"$out" || { log "not every request succeeded: $(grep -E '^(requests|status codes):' <<<"$out")"; exit 1; }
  sleep "${INSTR_SETTLE:-0}"
  callgrind_control -d "$GW_PID" >/dev/null
  sleep 1
  kill -9 "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true
  local f total=0 t
  rm -f "$TMP"/cg.out
  # One profile, or one per thread with CG_ARGS=--separate-threads=yes: their sum.
  for f in "$TMP"/cg.out.*; do
    t=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    t=${t//[^0-9]/}
    total=$((total + ${t:-0}))
    # CG_KEEP=path keeps the callgrind profile (for `callgrind_annotate` per function); per
    # thread, path.<thread>.
    if [[ -n ${CG_KEEP:-} ]]; then
      case $f in *-[0-9]*) cp "$f" "$CG_KEEP.${f##*-}" ;; *) cp "$f" "$CG_KEEP" ;; esac
    fi
    rm -f "$f"
  done
  printf '
Instructions per proxied request (callgrind, user space, %s requests, %s%s)
%d
' "$n" "$(basename "${INSTR_CONFIG:-gateway-plain.yaml}")" "${INSTR_PATH:+ $INSTR_PATH}" "$((total / n))"
}

memory() {
  log "memory: idle RSS, then 10,000 idle keep-alive connections"
  start_upstream
  start_gateway "$ROOT/bench/gateway-plain.yaml"
  sleep 1
  idle=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
  python3 bench/idle_conns.py 127.0.0.1 $GW_PORT 10000 >"$TMP/idle.out" 2>&1 &
  HOLD=$!; PIDS+=($HOLD)
  for _ in $(seq 600); do grep -q holding "$TMP/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  held=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
  conns=$(ls /proc/$GW_PID/fd | wc -l)
  stop_pid "$HOLD"; sleep 2
  after=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
  fds_after=$(ls /proc/$GW_PID/fd | wc -l)
  # A second round: memory freed by the first is reused, so the peak does not grow.
  python3 bench/idle_conns.py 127.0.0.1 $GW_PORT 10000 >"$TMP/idle2.out" 2>&1 &
  HOLD=$!; PIDS+=($HOLD)
  for _ in $(seq 600); do grep -q holding "$TMP/idle2.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  held2=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
  stop_pid "$HOLD"
  printf '\nMemory (RSS, %s build, 1 worker)\nidle after start:                  %6.1f MiB\nwith 10,000 idle connections:      %6.1f MiB (%s open fds; %.1f KiB per connection)\nafter they closed:                 %6.1f MiB (%s open fds; freed memory stays mapped for reuse)\nwith 10,000 again (second round):  %6.1f MiB\n' \
    "$BUILD" "$(echo "$idle/1024" | bc -l)" "$(echo "$held/1024" | bc -l)" "$conns" "$(echo "($held-$idle)/10000" | bc -l)" \
    "$(echo "$after/1024" | bc -l)" "$fds_after" "$(echo "$held2/1024" | bc -l)"
  stop_pid "$GW_PID"
}

# compare TITLE "NAME CONFIG [wrk header]" ... : alternating wrk runs of several gateway
# configurations against the same upstream; prints the median req/s, p99 and the ratio of each
# to the first.
compare() {
  local title=$1; shift
  start_upstream
  : >"$TMP/cmp.csv"
  for r in $(seq "$REPEATS"); do
    for spec in "$@"; do
      read -r name cfg hdr <<<"$spec"
      ACCESS_LOG=$TMP/access.log start_gateway "$cfg"
      args=(-t1 -c"$CONNS" --latency)
      [[ -n ${hdr:-} ]] && args+=(-H "$hdr")
      code=$(curl -s -o /dev/null -w '%{http_code}' ${hdr:+-H "$hdr"} "http://127.0.0.1:$GW_PORT/")
      [[ $code == 200 ]] || { log "$name answered $code"; cat "$TMP/gw.err" >&2; exit 1; }
      taskset -c 0 wrk "${args[@]}" -d2s "http://127.0.0.1:$GW_PORT/" >/dev/null
      out=$(taskset -c 0 wrk "${args[@]}" -d"${DURATION}s" "http://127.0.0.1:$GW_PORT/")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
      echo "$name,$rps,$p99,${non2xx:-0}" >>"$TMP/cmp.csv"
      log "run $r $name: $rps req/s, p99 $p99, non-2xx ${non2xx:-0}"
      stop_pid "$GW_PID"; rm -f "$TMP/access.log"
    done
  done
  printf '\n%s (wrk -c%s, %ss x %s, alternating, median)\n' "$title" "$CONNS" "$DURATION" "$REPEATS"
  local base=""
  for spec in "$@"; do
    read -r name _ <<<"$spec"
    m=$(grep "^$name," "$TMP/cmp.csv" | cut -d, -f2 | median)
    p=$(grep "^$name," "$TMP/cmp.csv" | cut -d, -f3 | tr '\n' ' ')
    [[ -z $base ]] && base=$m
    printf '%-22s %10.0f req/s  ratio %.3f  p99s: %s\n' "$name" "$m" "$(echo "$m / $base" | bc -l)" "$p"
  done
}

plugins() {
  log "plugins: plain vs key-auth + acl + access log"
  compare "Plain proxy vs key-auth + acl + JSON access log to a file" \
    "plain $ROOT/bench/gateway-plain.yaml" \
    "key-auth+acl+log $ROOT/bench/gateway-auth.yaml x-api-key: bench-api-key-0001"
}

start_collector() {
  # The collector: the tests' OTLP receiver, counting what it gets without decoding, on CPU 0
  # with the load generator (the gateway's export work stays on its own CPU).
  [[ -n ${OTLP_ADDR:-} ]] && return 0
  taskset -c 0 python3 gateway/tests/python/otlp_receiver.py --discard >"$TMP/otlp.ports" </dev/null & PIDS+=($!)
  for _ in $(seq 100); do [[ -s $TMP/otlp.ports ]] && break; sleep 0.1; done
  read -r grpc_port http_port <"$TMP/otlp.ports"
  export OTLP_ADDR=127.0.0.1:$grpc_port OTLP_HTTP_PORT=$http_port
}

# Instructions per request (callgrind) of the plain proxy with tracing off, at ratio 0.01 and
# at ratio 1.0: the repeatable measure of what tracing costs (wrk figures on a shared VM vary
# by more than the difference being measured). Export work is included (same process).
#
# Real-time batches: the gateway runs about 50x slower under callgrind, so with the default
# 1 s export interval a batch at ratio 0.01 holds about 15 spans there, against the full 512
# it holds at wrk's rate (30,000-40,000 req/s x 1% x 2 spans: the batch fills in under a
# second). By default (CG_REALTIME=1) the export interval is stretched to 30 s under
# callgrind (TRACING_EXPORT_INTERVAL), which gives batches of a few hundred spans as in real
# time, and each run idles 35 s after the warm-up and after the measured requests
# (INSTR_SETTLE), so that every span of the measured requests is exported inside the count
# and none of the warm-up's. The tracing-off run idles alike. CG_REALTIME=0: the 1 s
# interval and no idling (the method of the figures recorded before 2026-12-05's fifth
# session).
tracing_instructions() {
  start_collector
  if [[ ${CG_REALTIME:-1} == 1 ]]; then
    export TRACING_EXPORT_INTERVAL=${TRACING_EXPORT_INTERVAL:-30s} INSTR_SETTLE=${INSTR_SETTLE:-35}
  fi
  for c in ${TRACING_CONFIGS:-gateway-plain.yaml gateway-tracing-001.yaml gateway-tracing-1.yaml}; do
    INSTR_CONFIG=$ROOT/bench/$c instructions
    log "collector so far: $(curl -s "http://127.0.0.1:$OTLP_HTTP_PORT/exports")"
  done
  log "collector received: $(curl -s "http://127.0.0.1:$OTLP_HTTP_PORT/exports")"
}

tracing() {
  log "tracing: plain vs OpenTelemetry tracing at ratio 1.0 and 0.01 (OTLP/gRPC receiver running)"
  start_collector
  compare "Plain proxy vs OpenTelemetry tracing (OTLP/gRPC)" \
    "plain $ROOT/bench/gateway-plain.yaml" \
    "tracing-ratio-1.0 $ROOT/bench/gateway-tracing-1.yaml" \
    "tracing-ratio-0.01 $ROOT/bench/gateway-tracing-001.yaml"
  log "collector received: $(curl -s "http://127.0.0.1:$OTLP_HTTP_PORT/exports")"
}

aggregate() {
  log "aggregate: one proxied request vs an aggregate of three backend calls; latency vs sequential calls"
  local port=18185
  nginx_conf json "server { listen 127.0.0.1:$port backlog=4096; location / { default_type application/json; return 200 '{\"id\":42,\"name\":\"Ann\",\"items\":[1,2,3]}'; } }" >"$TMP/json.conf"
  taskset -c 0 nginx -p "$TMP" -c "$TMP/json.conf" & PIDS+=($!)
  wait_port $port
  export JSON_ADDR=127.0.0.1:$port
  # The gateway saturates its CPU in both runs: its CPU per request is 1 / (req/s).
  compare "One proxied request vs an aggregate of three backend calls (JSON, merged)" \
    "proxy-1-call $ROOT/bench/gateway-aggregate-single.yaml" \
    "aggregate-3-calls $ROOT/bench/gateway-aggregate.yaml"
  python3 bench/aggregate_latency.py "$BIN" 200
}

ratelimit() {
  log "rate limiting: plain vs local vs redis"
  compare "Plain proxy vs rate-limiting (sliding window, one key)" \
    "plain $ROOT/bench/gateway-plain.yaml" \
    "rate-limit-local $ROOT/bench/gateway-ratelimit-local.yaml" \
    "rate-limit-redis $ROOT/bench/gateway-ratelimit-redis.yaml" \
    "rate-limit-redis-batched $ROOT/bench/gateway-ratelimit-redis-batched.yaml"
}

# Cache hits, HTTP/1.1 keep-alive: Gatehouse proxy-cache vs nginx proxy_cache (memory-backed
# keys zone, files in the page cache), each alone on CPU 1, on the same 99-byte body and a
# 64 KiB one that the upstream marks `Cache-Control: max-age=3600`. wrk -t1 on CPU 0; the
# upstream (on CPU 0) is asked once per size and proxy; alternating runs, median req/s and p99.
CUP=18183
start_cache_upstream() { # the cache benchmarks' upstream on $CUP: /small (99 B), /big (64 KiB)
  head -c 65536 /dev/zero | tr '\0' 'x' >"$TMP/big.txt"
  chmod 755 "$TMP" # nginx workers run unprivileged: they read the body file
  nginx_conf cup "server { listen 127.0.0.1:$CUP backlog=4096; root $TMP; location = /small { default_type text/plain; add_header Cache-Control \"max-age=3600\"; return 200 \"$BODY\"; } location = /big { default_type text/plain; add_header Cache-Control \"max-age=3600\"; try_files /big.txt =404; } }" >"$TMP/cup.conf"
  taskset -c 0 nginx -p "$TMP" -c "$TMP/cup.conf" & PIDS+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$CUP/small" && break; sleep 0.1; done
}

# Instructions per cache hit (callgrind, user space; see instructions), 99 B and 64 KiB bodies.
cache_instructions() {
  start_cache_upstream
  for path in ${CACHE_PATHS:-/small /big}; do
    INSTR_UP_PORT=$CUP INSTR_PATH=$path INSTR_CONFIG=$ROOT/bench/gateway-cache.yaml instructions
  done
}

cache() {
  log "cache: proxy-cache vs nginx proxy_cache, hits (wrk -c$CONNS, ${DURATION}s x $REPEATS)"
  local cup=$CUP
  start_cache_upstream
  # nginx workers run unprivileged: they read the body file and write the cache files.
  mkdir -p "$TMP/ngcache"; chmod 755 "$TMP"; chmod 777 "$TMP/ngcache"
  nginx_conf ngc "proxy_cache_path $TMP/ngcache levels=1:2 keys_zone=c:10m max_size=256m inactive=60m use_temp_path=off;
    upstream cacheup { server 127.0.0.1:$cup; keepalive 64; }
    server { listen 127.0.0.1:$NG_PORT backlog=4096; location / { proxy_pass http://cacheup; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache c; add_header X-Cache-Status \$upstream_cache_status; } }" >"$TMP/ngc.conf"
  taskset -c 1 nginx -p "$TMP" -c "$TMP/ngc.conf" & NG_PID=$!; PIDS+=($NG_PID)
  wait_port $NG_PORT
  GATEWAY_ADDR=127.0.0.1:$GW_PORT UPSTREAM_ADDR=127.0.0.1:$cup taskset -c 1 "$BIN" run --no-watch --config "$ROOT/bench/gateway-cache.yaml" >/dev/null 2>"$TMP/gw.err" &
  GW_PID=$!; PIDS+=($GW_PID)
  wait_port $GW_PORT
  : >"$TMP/cache.csv"
  for path in /small /big; do
    for port in $NG_PORT $GW_PORT; do
      curl -s -o /dev/null "http://127.0.0.1:$port$path"
      st=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port$path" | awk 'tolower($1)=="x-cache-status:" {print $2}' | tr -d '\r')
      [[ $st == HIT ]] || { log "port $port $path: second request not a hit ($st)"; curl -si "http://127.0.0.1:$port$path" | head -12 >&2; cat "$TMP"/*.err >&2; exit 1; }
      taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port$path" >/dev/null
    done
  done
  for r in $(seq "$REPEATS"); do
    for path in /small /big; do
      for t in nginx gateway; do
        port=$([[ $t == nginx ]] && echo $NG_PORT || echo $GW_PORT)
        out=$(taskset -c 0 wrk -t1 -c"$CONNS" --latency -d"${DURATION}s" "http://127.0.0.1:$port$path")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
        non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
        echo "$t,$path,$rps,$p99,${non2xx:-0}" >>"$TMP/cache.csv"
        log "run $r $t $path: $rps req/s, p99 ${p99} ms, non-2xx ${non2xx:-0}"
      done
    done
  done
  printf '\nCache hits, HTTP/1.1 keep-alive (wrk -c%s, %ss x %s, alternating, median)\n' "$CONNS" "$DURATION" "$REPEATS"
  for path in /small /big; do
    n=$(grep "^nginx,$path," "$TMP/cache.csv" | cut -d, -f3 | median)
    g=$(grep "^gateway,$path," "$TMP/cache.csv" | cut -d, -f3 | median)
    np=$(grep "^nginx,$path," "$TMP/cache.csv" | cut -d, -f4 | median)
    gp=$(grep "^gateway,$path," "$TMP/cache.csv" | cut -d, -f4 | median)
    printf '%-6s nginx proxy_cache %9.0f req/s p99 %6.2f ms | gatehouse proxy-cache %9.0f req/s p99 %6.2f ms | ratio %.3f\n' \
      "$path" "$n" "$np" "$g" "$gp" "$(echo "$g / $n" | bc -l)"
  done
  stop_pid "$GW_PID"; stop_pid "$NG_PID"
}

admin() {
  log "admin: route changes applied to a gateway with 10,000 routes (embedded store), under load"
  start_upstream
  local token=bench-admin-token-0123456789 port=18190
  local hash
  hash=$(printf '%s' "$token" | "$BIN" hash-key)
  python3 bench/gen_routes.py 10000 | sed "s|^gateway:|gateway:\n  admin: { listen: 127.0.0.1:$port, tokens: [{ name: bench, token_hash: \"$hash\" }] }|" >"$TMP/admin-seed.yaml"
  GATEWAY_ADDR=127.0.0.1:$GW_PORT UPSTREAM_ADDR=127.0.0.1:$UP_PORT taskset -c 1 "$BIN" run --store "embedded:$TMP/admin-data" --config "$TMP/admin-seed.yaml" >/dev/null 2>"$TMP/gw.err" &
  GW_PID=$!; PIDS+=($GW_PID)
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/" && break; sleep 0.1; done
  local path=/svc5000/items/42 changes=20
  local spacing
  spacing=$(echo "$DURATION / ($changes + 5)" | bc -l)
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$GW_PORT$path" >/dev/null
  : >"$TMP/put.times"; : >"$TMP/ratios"; : >"$TMP/control"; : >"$TMP/pairwise"
  # Alternate three runs: no admin traffic; the same admin traffic without changes (reads,
  # CONTROL=1: the harness's own cost); route changes. The admin client is one keep-alive
  # connection (no process start per change on the load generator's core).
  for r in $(seq 1 "$REPEATS"); do
    base=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$GW_PORT$path" | awk '/Requests\/sec/ {print $2}')
    local out
    local order="control changes"
    ((r % 2 == 0)) && order="changes control" # alternate which comes first
    for mode in $order; do
      taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$GW_PORT$path" >"$TMP/wrk-$mode.out" &
      local wrk_pid=$!
      sleep 0.5
      out=/dev/null; [[ $mode == changes ]] && out="$TMP/put.times"
      CONTROL=$([[ $mode == control ]] && echo 1 || echo 0) taskset -c 0 python3 bench/admin_changes.py "$port" "$GW_PORT" "$token" "new${r}x" "$changes" "$spacing" >>"$out"
      wait $wrk_pid
    done
    control=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk-control.out")
    during=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk-changes.out")
    printf '  run %s: no admin traffic %s req/s; %s admin reads %s (%.3f); %s route changes %s (%.3f)\n' "$r" "$base" "$changes" "$control" "$(echo "$control / $base" | bc -l)" "$changes" "$during" "$(echo "$during / $base" | bc -l)"
    echo "$during / $base" | bc -l >>"$TMP/ratios"
    echo "$control / $base" | bc -l >>"$TMP/control"
    echo "$during / $control" | bc -l >>"$TMP/pairwise"
  done
  local total ok med max
  total=$(wc -l <"$TMP/put.times")
  ok=$(awk '$1==201 && $3==200' "$TMP/put.times" | wc -l)
  med=$(awk '{print $2}' "$TMP/put.times" | median)
  max=$(awk '{print $2}' "$TMP/put.times" | sort -g | tail -1)
  printf '\nAdmin API: route change on 10,000 routes (embedded store), %s changes per %ss wrk run\n' "$changes" "$DURATION"
  printf 'PUT /routes/x -> served: %s/%s applied and answered at once; latency median %.1f ms, max %.1f ms\n' "$ok" "$total" "$med" "$max"
  printf 'throughput / throughput without admin traffic, median of %s alternating runs: with route changes %.3f; with the same number of admin reads (harness cost) %.3f\n' "$REPEATS" "$(median <"$TMP/ratios")" "$(median <"$TMP/control")"
  printf 'route changes / admin reads in the same repeat (the cost of the changes themselves), median: %.3f\n' "$(median <"$TMP/pairwise")"
  grep "configuration changed" "$TMP/gw.err" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
  stop_pid "$GW_PID"
}

# gRPC translation: the same unary call (GetShelf) as plain gRPC through the gateway, as
# gRPC-Web (binary and text) through `grpc-web`, and as REST/JSON (GET /v1/shelves/1) through
# `grpc-transcode`, all over h2c from h2load, against one fast upstream
# (crates/gw-test-util/src/bin/grpc-bench-upstream.rs: hyper, one thread, on CPU 0 with the
# load generator). Alternating runs; median req/s and the ratio of each to the pass-through.
grpc() {
  local up_port=18183 upbin
  upbin=$(dirname "$BIN")/grpc-bench-upstream
  [[ -x $upbin ]] || upbin=$ROOT/target/release/grpc-bench-upstream
  if [[ ! -x $upbin ]]; then
    log "building grpc-bench-upstream"
    cargo build --release -q -p gw-test-util --bin grpc-bench-upstream
  fi
  log "gRPC: h2load -c$CONNS -m10 (h2c), ${DURATION}s x $REPEATS, alternating; upstream $upbin"
  taskset -c 0 "$upbin" 127.0.0.1:$up_port >"$TMP/grpc-up.out" & PIDS+=($!)
  for _ in $(seq 100); do [[ -s $TMP/grpc-up.out ]] && break; sleep 0.1; done
  # GetShelfRequest { shelf: 1 }, framed; and its base64 for grpc-web-text.
  printf '\x00\x00\x00\x00\x02\x08\x01' >"$TMP/get-shelf.bin"
  base64 -w0 "$TMP/get-shelf.bin" >"$TMP/get-shelf.b64"
  local path=/bookstore.v1.Bookstore/GetShelf
  # name config method target data headers...
  local specs=(
    "grpc gateway-grpc.yaml $path $TMP/get-shelf.bin content-type:application/grpc te:trailers"
    "grpc-web gateway-grpc-web.yaml $path $TMP/get-shelf.bin content-type:application/grpc-web+proto x-grpc-web:1"
    "grpc-web-text gateway-grpc-web.yaml $path $TMP/get-shelf.b64 content-type:application/grpc-web-text x-grpc-web:1"
    "rest gateway-grpc-transcode.yaml /v1/shelves/1 - accept:application/json"
  )
  : >"$TMP/grpc.csv"
  for r in $(seq "$REPEATS"); do
    for spec in "${specs[@]}"; do
      read -r name cfg target data hdrs <<<"$spec"
      GRPC_UPSTREAM_ADDR=127.0.0.1:$up_port start_gateway "$ROOT/bench/$cfg"
      local args=(-c "$CONNS" -m 10)
      for h in $hdrs; do args+=(-H "${h%%:*}: ${h#*:}"); done
      [[ $data != - ]] && args+=(-d "$data")
      if [[ $r == 1 ]]; then
        # What the client gets, once per kind (a wrong answer is not a benchmark).
        local curl_args=(-s --http2-prior-knowledge -o "$TMP/answer" -w '%{http_code}')
        for h in $hdrs; do curl_args+=(-H "${h%%:*}: ${h#*:}"); done
        [[ $data != - ]] && curl_args+=(--data-binary "@$data")
        code=$(curl "${curl_args[@]}" "http://127.0.0.1:$GW_PORT$target")
        log "$name answers $code: $(head -c 120 "$TMP/answer" | od -An -c | tr -s ' \n' ' ' | head -c 160)"
        [[ $code == 200 ]] || { cat "$TMP/gw.err" >&2; exit 1; }
      fi
      taskset -c 0 h2load "${args[@]}" -D 2 "http://127.0.0.1:$GW_PORT$target" >/dev/null 2>&1
      out=$(taskset -c 0 h2load "${args[@]}" -D "$DURATION" "http://127.0.0.1:$GW_PORT$target" 2>&1)
      rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
      ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
      fail=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
      mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
      echo "$name,$rps,$mean,$fail,$ok" >>"$TMP/grpc.csv"
      log "run $r $name: $rps req/s, mean $mean, failed $fail, 2xx $ok"
      stop_pid "$GW_PID"
    done
  done
  printf '\ngRPC translation (h2load -c%s -m10 h2c, %ss x %s, alternating, median req/s; ratio to pass-through)\n' "$CONNS" "$DURATION" "$REPEATS"
  local base=""
  for spec in "${specs[@]}"; do
    read -r name _ <<<"$spec"
    m=$(grep "^$name," "$TMP/grpc.csv" | cut -d, -f2 | median)
    all=$(grep "^$name," "$TMP/grpc.csv" | cut -d, -f2 | tr '\n' ' ')
    [[ -z $base ]] && base=$m
    printf '%-14s %10.0f req/s  ratio %.3f  runs: %s\n' "$name" "$m" "$(echo "$m / $base" | bc -l)" "$all"
  done
}

case $WHAT in
  http1) http1 ;;
  http2) http2 ;;
  routes) routes ;;
  memory) memory ;;
  plugins) plugins ;;
  tracing) tracing ;;
  aggregate) aggregate ;;
  tracing-instructions) tracing_instructions ;;
  ratelimit) ratelimit ;;
  admin) admin ;;
  cache) cache ;;
  cache-instructions) cache_instructions ;;
  instructions) instructions ;;
  grpc) grpc ;;
  all) http1; http2; routes; memory; plugins; tracing; aggregate; ratelimit; admin ;;
  *) echo "unknown: $WHAT" >&2; exit 2 ;;
esac
