#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, nightly) of the HTTP/1.1 request-head and
# response-head parsers, the chunked decoder, the HTTP/1.1 server connection and the config
# loader, each for a bounded time. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]      # default: 60 s, every target
#
# Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz --locked
#
# New inputs go to fuzz/work/corpus/<target> (not committed; the committed seeds in
# fuzz/corpus/<target> are read, never written), crashes to fuzz/artifacts/<target>. Prints
# executions, corpus size and findings per target; exits non-zero if any target crashed (or
# broke its oracle, timed out or ran out of memory).
#
# Environment: FUZZ_SANITIZER=address|none (default address), FUZZ_KEEP_GOING=1 (libFuzzer's
# fork mode: keep fuzzing after a finding and collect them all), FUZZ_JOBS=N (with
# FUZZ_KEEP_GOING, N worker processes; default 1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ALL=(request_head response_head chunked request_connection config)
SECS=${1:-60}
[[ $# -gt 0 ]] && shift
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
SANITIZER=${FUZZ_SANITIZER:-address}
HOST=$(rustc -vV | sed -n 's/^host: //p')

log() { printf '[fuzz] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

[[ $SECS =~ ^[0-9]+$ ]] || die "seconds must be a number: $SECS"
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || die "unknown target $t (targets: ${ALL[*]})"
done
rustup run nightly rustc --version >/dev/null 2>&1 || die "no nightly toolchain: rustup toolchain install nightly --profile minimal"
cargo fuzz --version >/dev/null 2>&1 || die "no cargo-fuzz: cargo install cargo-fuzz --locked"

# Largest input per target: past the limit each one enforces (head sizes, trailer section).
max_len() {
  case $1 in
    request_head) echo 40000 ;;        # the default 32 KiB head limit and beyond
    response_head) echo 70000 ;;       # the 64 KiB response-head limit
    chunked) echo 20000 ;;             # the 16 KiB trailer-section limit
    request_connection) echo 20000 ;;  # the server's 8 KiB head limit in this target
    config) echo 16384 ;;
  esac
}
dict() {
  case $1 in
    config) echo dict/config.dict ;;
    *) echo dict/http.dict ;;
  esac
}

log "building (${SANITIZER} sanitizer)"
cargo +nightly fuzz build --sanitizer "$SANITIZER" >&2

mkdir -p logs
failed=0
rows=()
for t in "${TARGETS[@]}"; do
  mkdir -p "work/corpus/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  args=(-max_total_time="$SECS" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048
    -dict="$(dict "$t")" -artifact_prefix="artifacts/$t/" -print_final_stats=1)
  if [[ ${FUZZ_KEEP_GOING:-} == 1 ]]; then
    args+=(-fork="${FUZZ_JOBS:-1}" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  log "$t: ${SECS}s"
  status=0
  cargo +nightly fuzz run --sanitizer "$SANITIZER" "$t" "work/corpus/$t" "corpus/$t" -- "${args[@]}" \
    >"logs/$t.log" 2>&1 || status=$?
  # Executions: the final stats (plain mode) or the last status line (fork mode).
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
  [[ -n $execs ]] || execs=$(grep -o '^#[0-9]*' "logs/$t.log" | tail -1 | tr -d '#' || true)
  corpus=$(grep -o 'corp: [0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
  after=$(find "artifacts/$t" -type f | wc -l)
  findings=$((after - before))
  if ((status != 0 || findings > 0)); then
    failed=1
    log "$t: FAILED (exit $status, $findings new artifacts in fuzz/artifacts/$t); log: fuzz/logs/$t.log"
    # What the oracle said about the newest few (each artifact run once by the target binary).
    find "artifacts/$t" -type f -printf '%T@ %p\n' | sort -rn | head -3 | while read -r _ a; do
      log "  $a:"
      "target/$HOST/release/$t" "$a" 2>&1 | grep -A1 -m1 'panicked at' | tail -1 | cut -c1-400 >&2 || true
    done
  fi
  rows+=("$(printf '| %s | %s | %s | %s | %s |' "$t" "$SECS" "${execs:-?}" "${corpus:-?}" "$findings")")
done

echo "| target | seconds | executions | corpus | findings |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $failed
