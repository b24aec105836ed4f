#!/usr/bin/env bash
# Side by side, from outside: `triage run` (default settings) against a
# decode-and-drop OTLP/gRPC reference server, both fed by `triage loadgen`
# over loopback. docs/PERFORMANCE.md has the figures.
#
#   benches/e2e.sh [pairs] [rates] [memory]     default: pairs rates
#
#   pairs   reference -> triage, PAIRS times (same load each): accepted
#           spans/s, the ratio triage / reference, server CPU seconds per
#           million spans (utime + stime from /proc/PID/stat), peak RSS
#           (VmHWM).
#   rates   each of RATES spans/s for RATE_DURATION: the server's CPU share
#           of one core, triage and then the reference.
#   memory  triage at MEMORY_RATE spans/s for MEMORY_DURATION, RSS sampled
#           every SAMPLE seconds; the plateau and slope (MiB/min) after the
#           5-minute ring (store.windows x store.window) has filled.
#
# Settings (environment): BIN (default: build with `cargo build --release`
# once and use its triage), DURATION=15s, PAIRS=2, CONNECTIONS=4,
# RATES="10000 50000", RATE_DURATION=60s, MEMORY_RATE=100000,
# MEMORY_SECONDS=600, SAMPLE=10, FILLED=330 (seconds after which the ring
# counts as filled: 300 s of windows plus lateness and one window), and
# LOADGEN_ARGS for the mix (default 20 services x 50 operations).
#
# Everything listens on free loopback ports (port 0), and triage keeps its
# state in a temporary directory. The machine's load average is printed at
# each step: the load generator and the server share the machine's cores,
# so read the figures next to it.
set -euo pipefail

DURATION=${DURATION:-15s}
PAIRS=${PAIRS:-2}
CONNECTIONS=${CONNECTIONS:-4}
RATES=${RATES:-10000 50000}
RATE_DURATION=${RATE_DURATION:-60s}
MEMORY_RATE=${MEMORY_RATE:-100000}
MEMORY_SECONDS=${MEMORY_SECONDS:-600}
SAMPLE=${SAMPLE:-10}
FILLED=${FILLED:-330}
LOADGEN_ARGS=${LOADGEN_ARGS:-}

cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin triage >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/triage
fi
[ -x "$BIN" ] || { echo "no executable $BIN" >&2; exit 2; }
modes=${*:-pairs rates}

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
TICK=$(getconf CLK_TCK)

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# CPU seconds (user + system) of a process so far.
cpu_seconds() { awk -v tick="$TICK" '{ printf "%.2f", ($14 + $15) / tick }' "/proc/$1/stat"; }
# A /proc/PID/status field in MiB.
status_mib() { awk -v key="$2:" '$1 == key { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# The value of key=... on loadgen's `result` line.
result() { sed -n "s/^result .*\b$2=\([^ ]*\).*/\1/p" "$1"; }

wait_for() { # file pattern
  for _ in $(seq 300); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  exit 1
}

# Starts a server; sets SERVER_PID, ADDRESS (gRPC) and ADMIN (triage only).
start() {
  local kind=$1
  rm -rf "$WORK/state" && mkdir -p "$WORK/state"
  ADMIN=
  if [ "$kind" = triage ]; then
    cat >"$WORK/triage.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:0" }
    http: { endpoint: "127.0.0.1:0" }
admin: { endpoint: "127.0.0.1:0" }
api: { endpoint: "127.0.0.1:0" }
storage: { data_dir: "$WORK/state" }
EOF
    "$BIN" run --log-format json --config "$WORK/triage.yaml" 2>"$WORK/server.log" >/dev/null &
    SERVER_PID=$!
    wait_for "$WORK/server.log" "triage is ready"
    ADDRESS=$(grep -o '"grpc":"[^"]*"' "$WORK/server.log" | head -n 1 | cut -d'"' -f4)
    ADMIN=$(grep -o '"admin":"[^"]*"' "$WORK/server.log" | head -n 1 | cut -d'"' -f4)
  else
    "$BIN" loadgen --reference-server 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/server.log" "listening on"
    ADDRESS=$(sed -n 's/.*listening on //p' "$WORK/server.log" | head -n 1)
  fi
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

loadgen() { # output-file loadgen-arguments...
  local out=$1
  shift
  # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of arguments
  "$BIN" loadgen --endpoint "http://$ADDRESS" --connections "$CONNECTIONS" $LOADGEN_ARGS "$@" >"$out"
}

gauges() { # series and histogram MiB, from triage's /metrics
  [ -n "$ADMIN" ] || { echo "- -"; return; }
  curl -s "http://$ADMIN/metrics" | awk '
    /^triage_store_series[ {]/ { series += $NF }
    /^triage_store_histogram_bytes[ {]/ { histograms += $NF }
    END { printf "%d %.1f", series, histograms / 1048576 }'
}

echo "e2e: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (modified)')"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
echo "binary: $BIN; load generator: $CONNECTIONS connections, mix: ${LOADGEN_ARGS:-defaults (20 services x 50 operations, 512 spans a request)}"

run_pairs() {
  echo
  echo "== throughput: as fast as possible for $DURATION, $PAIRS pairs, reference -> triage =="
  printf '%-9s %13s %14s %13s %9s %8s  %s\n' server "spans/s" "cpu s/M spans" "peak RSS MiB" "p99 ms" errors "load average"
  for pair in $(seq "$PAIRS"); do
    local reference_rate=
    for kind in reference triage; do
      start "$kind"
      sleep 1
      local before after
      before=$(cpu_seconds "$SERVER_PID")
      loadgen "$WORK/load.txt" --duration "$DURATION"
      after=$(cpu_seconds "$SERVER_PID")
      local hwm rate spans
      hwm=$(status_mib "$SERVER_PID" VmHWM)
      stop
      rate=$(result "$WORK/load.txt" accepted_per_s)
      spans=$(result "$WORK/load.txt" accepted_spans)
      printf '%-9s %13s %14s %13s %9s %8s  %s\n' "$kind" "$rate" \
        "$(awk -v b="$before" -v a="$after" -v n="$spans" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n * 1e6; else print "-" }')" \
        "$hwm" "$(result "$WORK/load.txt" p99_ms)" "$(result "$WORK/load.txt" errors)" "$(loadavg)"
      if [ "$kind" = reference ]; then
        reference_rate=$rate
      else
        echo "pair $pair: triage / reference = $(awk -v t="$rate" -v r="$reference_rate" 'BEGIN { printf "%.2f", t / r }')"
      fi
    done
  done
}

run_rates() {
  echo
  echo "== fixed rates, $RATE_DURATION each: the server's CPU share of one core =="
  printf '%-9s %10s %13s %12s %14s %13s  %s\n' server "target/s" "accepted/s" "CPU % core" "cpu s/M spans" "peak RSS MiB" "load average"
  for rate in $RATES; do
    for kind in triage reference; do
      start "$kind"
      sleep 1
      local before after started ended
      started=$(date +%s.%N)
      before=$(cpu_seconds "$SERVER_PID")
      loadgen "$WORK/load.txt" --rate "$rate" --duration "$RATE_DURATION"
      after=$(cpu_seconds "$SERVER_PID")
      ended=$(date +%s.%N)
      local hwm spans
      hwm=$(status_mib "$SERVER_PID" VmHWM)
      stop
      spans=$(result "$WORK/load.txt" accepted_spans)
      printf '%-9s %10s %13s %12s %14s %13s  %s\n' "$kind" "$rate" "$(result "$WORK/load.txt" accepted_per_s)" \
        "$(awk -v b="$before" -v a="$after" -v s="$started" -v e="$ended" 'BEGIN { printf "%.1f", (a - b) / (e - s) * 100 }')" \
        "$(awk -v b="$before" -v a="$after" -v n="$spans" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n * 1e6; else print "-" }')" \
        "$hwm" "$(loadavg)"
    done
  done
}

run_memory() {
  echo
  echo "== memory: triage at $MEMORY_RATE spans/s for $MEMORY_SECONDS s, RSS every $SAMPLE s =="
  start triage
  sleep 1
  echo "idle: RSS $(status_mib "$SERVER_PID" VmRSS) MiB, load average $(loadavg)"
  local before started
  before=$(cpu_seconds "$SERVER_PID")
  started=$(date +%s)
  loadgen "$WORK/load.txt" --rate "$MEMORY_RATE" --duration "${MEMORY_SECONDS}s" &
  local load_pid=$!
  : >"$WORK/rss.txt"
  printf '%8s %9s %8s %15s  %s\n' "seconds" "RSS MiB" series "histograms MiB" "load average"
  while kill -0 "$load_pid" 2>/dev/null; do
    sleep "$SAMPLE"
    local now rss
    now=$(($(date +%s) - started))
    rss=$(status_mib "$SERVER_PID" VmRSS)
    echo "$now $rss" >>"$WORK/rss.txt"
    local series histograms
    read -r series histograms <<<"$(gauges)"
    printf '%8s %9s %8s %15s  %s\n' "$now" "$rss" "$series" "$histograms" "$(loadavg)"
  done
  wait "$load_pid"
  local after
  after=$(cpu_seconds "$SERVER_PID")
  echo "peak RSS (VmHWM) $(status_mib "$SERVER_PID" VmHWM) MiB; CPU $(awk -v b="$before" -v a="$after" -v s="$MEMORY_SECONDS" 'BEGIN { printf "%.1f", (a - b) / s * 100 }')% of a core"
  stop
  sed -n 's/^\(sent\|export\|errors\)/loadgen: \1/p' "$WORK/load.txt"
  awk -v from="$FILLED" '
    $1 >= from { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2; if ($2 > max) max = $2 }
    END {
      if (n < 2) { print "too few samples after the ring filled"; exit }
      slope = (n * sxy - sx * sy) / (n * sxx - sx * sx) * 60
      printf "after %d s (%d samples): plateau mean %.1f MiB, max %.1f MiB, slope %+.2f MiB/min\n", from, n, sy / n, max, slope
    }' "$WORK/rss.txt"
}

for mode in $modes; do
  case $mode in
  pairs) run_pairs ;;
  rates) run_rates ;;
  memory) run_memory ;;
  *) echo "unknown mode $mode (pairs, rates, memory)" >&2; exit 2 ;;
  esac
done
