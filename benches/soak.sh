#!/usr/bin/env bash
# Soak: `triage run` (default settings) under a steady OTLP/gRPC load from
# `triage loadgen` for a long time, sampling its memory, to show whether it
# levels off. Not part of any test run: it takes SOAK_SECONDS (30 minutes by
# default) of two busy processes. docs/RELIABILITY.md ("Soak") and
# docs/PERFORMANCE.md have the figures.
#
#   benches/soak.sh
#
# Every SAMPLE seconds it prints and keeps: RSS (VmRSS), anonymous memory
# (smaps_rollup), and triage's own gauges from /metrics: series, histogram
# bytes, detection state bytes, span analysis bytes, pairing and trace
# buffer entries. At the end: RSS at 5, 10, 20 and 30 minutes (the samples
# nearest), the peak (VmHWM), and the least-squares slope of RSS over the
# last 10 minutes (MiB/min).
#
# Settings (environment): BIN (default: build with `cargo build --release`
# once and use its triage), RATE=100000 spans/s, SOAK_SECONDS=1800, SAMPLE=30,
# CONNECTIONS=4, LOADGEN_ARGS (default mix: 20 services x 50 operations),
# CONFIG_EXTRA (YAML lines appended to triage's config), WRAP (a command
# prefix for triage, e.g. "heaptrack -o /tmp/soak"; the samples follow the
# triage process under it), ENV_EXTRA (e.g. "MALLOC_ARENA_MAX=2"), KEEP (a
# directory to copy the samples and the server log into).
#
# Everything listens on free loopback ports, state goes to a temporary
# directory. The load average is printed with every sample: the load
# generator and triage share the machine's cores.
set -euo pipefail

RATE=${RATE:-100000}
SECONDS_TOTAL=${SOAK_SECONDS:-1800}
SAMPLE=${SAMPLE:-30}
CONNECTIONS=${CONNECTIONS:-4}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
CONFIG_EXTRA=${CONFIG_EXTRA:-}
WRAP=${WRAP:-}
ENV_EXTRA=${ENV_EXTRA:-}

cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin triage >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/triage
fi
[ -x "$BIN" ] || { echo "no executable $BIN" >&2; exit 2; }
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
SERVER_PID=
PID=
LOAD_PID=
cleanup() {
  if [ -n "$LOAD_PID" ]; then kill "$LOAD_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.txt "$WORK"/server.log "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
status_mib() { awk -v key="$2:" '$1 == key { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
anon_mib() { awk '$1 == "Anonymous:" { printf "%.1f", $2 / 1024 }' "/proc/$1/smaps_rollup"; }

# The triage process: the one started, or the one WRAP started (found by
# its configuration file, which is unique to this run).
triage_pid() {
  local pid name
  name=$(basename "$BIN" | cut -c1-15)
  for pid in $1 $(pgrep -f -- "--config $WORK/triage.yaml" || true); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then echo "$pid"; return; fi
  done
  echo "no triage process for $WORK/triage.yaml" >&2
  exit 1
}

mkdir -p "$WORK/state"
cat >"$WORK/triage.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:0" }
    http: { endpoint: "127.0.0.1:0" }
admin: { endpoint: "127.0.0.1:0" }
api: { endpoint: "127.0.0.1:0" }
storage: { data_dir: "$WORK/state" }
$CONFIG_EXTRA
EOF
# shellcheck disable=SC2086 # WRAP and ENV_EXTRA are lists of words
env $ENV_EXTRA $WRAP "$BIN" run --log-format json --config "$WORK/triage.yaml" 2>"$WORK/server.log" >/dev/null &
SERVER_PID=$!
for _ in $(seq 600); do
  grep -q "triage is ready" "$WORK/server.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "triage is ready" "$WORK/server.log" || { echo "triage did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
PID=$(triage_pid "$SERVER_PID")
ADDRESS=$(grep -o '"grpc":"[^"]*"' "$WORK/server.log" | head -n 1 | cut -d'"' -f4)
ADMIN=$(grep -o '"admin":"[^"]*"' "$WORK/server.log" | head -n 1 | cut -d'"' -f4)

# Sums of triage's own gauges, from /metrics.
gauges() {
  curl -s --max-time 5 "http://$ADMIN/metrics" | awk '
    function sum(name, value) { totals[name] += value }
    /^triage_store_series[ {]/ { sum("series", $NF) }
    /^triage_store_histogram_bytes[ {]/ { sum("hist", $NF) }
    /^triage_detect_state_bytes[ {]/ { sum("detect", $NF) }
    /^triage_span_analysis_bytes[ {]/ { sum("spans", $NF) }
    /^triage_pairing_buffer_spans[ {]/ { sum("pairing", $NF) }
    /^triage_span_analysis_buffered_spans[ {]/ { sum("buffered", $NF) }
    END {
      printf "%d %.1f %.1f %.1f %d %d", totals["series"], totals["hist"] / 1048576,
        totals["detect"] / 1048576, totals["spans"] / 1048576, totals["pairing"], totals["buffered"]
    }'
}

echo "soak: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (modified)')"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
echo "load: $RATE spans/s for $SECONDS_TOTAL s over $CONNECTIONS connections, mix: ${LOADGEN_ARGS:-defaults (20 services x 50 operations)}${ENV_EXTRA:+, env $ENV_EXTRA}${WRAP:+, under $WRAP}"
echo "idle: RSS $(status_mib "$PID" VmRSS) MiB, load average $(loadavg)"

# shellcheck disable=SC2086 # LOADGEN_ARGS is a list of arguments
"$BIN" loadgen --endpoint "http://$ADDRESS" --connections "$CONNECTIONS" --rate "$RATE" \
  --duration "${SECONDS_TOTAL}s" $LOADGEN_ARGS >"$WORK/load.txt" &
LOAD_PID=$!
started=$(date +%s)
: >"$WORK/samples.txt"
printf '%7s %8s %8s %7s %8s %8s %8s %8s %8s  %s\n' seconds "RSS MiB" "anon" series "hist" "detect" "spans" pairing buffered "load average"
while kill -0 "$LOAD_PID" 2>/dev/null; do
  sleep "$SAMPLE"
  kill -0 "$PID" 2>/dev/null || { echo "triage exited" >&2; tail "$WORK/server.log" >&2; exit 1; }
  now=$(($(date +%s) - started))
  rss=$(status_mib "$PID" VmRSS)
  anon=$(anon_mib "$PID")
  read -r series hist detect spans pairing buffered <<<"$(gauges)"
  echo "$now $rss $anon $series $hist $detect $spans $pairing $buffered" >>"$WORK/samples.txt"
  printf '%7s %8s %8s %7s %8s %8s %8s %8s %8s  %s\n' "$now" "$rss" "$anon" "$series" "$hist" "$detect" "$spans" "$pairing" "$buffered" "$(loadavg)"
done
wait "$LOAD_PID" || true
LOAD_PID=
echo "peak RSS (VmHWM) $(status_mib "$PID" VmHWM) MiB"
sed -n 's/^\(sent\|export\|errors\|result\)/loadgen: \1/p' "$WORK/load.txt"
kill "$PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
PID=
awk -v total="$SECONDS_TOTAL" '
  { t[NR] = $1; r[NR] = $2; n = NR }
  function nearest(at,   i, best) {
    best = 0
    for (i = 1; i <= n; i++) if (best == 0 || (t[i] - at) ^ 2 < (t[best] - at) ^ 2) best = i
    return best
  }
  END {
    if (n < 2) { print "too few samples"; exit }
    for (m = 5; m * 60 <= total; m = (m < 10 ? m + 5 : m + 10)) {
      i = nearest(m * 60)
      printf "RSS at %2d min: %.1f MiB (sample at %d s)\n", m, r[i], t[i]
    }
    from = t[n] - 600
    for (i = 1; i <= n; i++) if (t[i] >= from) { k++; sx += t[i]; sy += r[i]; sxx += t[i] ^ 2; sxy += t[i] * r[i] }
    if (k >= 2) printf "slope over the last 10 min (%d samples): %+.2f MiB/min\n", k, (k * sxy - sx * sy) / (k * sxx - sx * sx) * 60
  }' "$WORK/samples.txt"
