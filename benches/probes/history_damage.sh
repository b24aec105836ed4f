#!/usr/bin/env bash
# Damaged history database: what a restart does with it.
#
#   benches/probes/history_damage.sh [BINARY]     default: target/debug/triage
#   TIMEOUT=30 WORK=/tmp/damage benches/probes/history_damage.sh old/triage
#
# 1. Runs BINARY briefly with its history in WORK/seed, sends it 35 s of
#    simulated traffic (live, so that windows close and series get
#    baselines) and 100 change events, and stops it gracefully, so that
#    triage.db holds a snapshot of baselines and the changes.
# 2. Copies that database and damages each copy one way: truncated to half
#    its size; 64 KiB of text written over the middle of the file; emptied
#    to 0 bytes; replaced by a file that is not SQLite.
# 3. Starts BINARY on each copy and reports whether it became ready (and how
#    long it took), how it exited otherwise, what it logged about the
#    history, what was moved aside, the history metrics after a snapshot
#    interval, and whether a change posted now is still there after another
#    restart (the new history works).
#
# Everything listens on 127.0.0.1 with ports the kernel picks; every wait is
# bounded by TIMEOUT seconds. Logs stay in WORK (kept unless it was made
# here).
set -euo pipefail

BINARY=${1:-target/debug/triage}
TIMEOUT=${TIMEOUT:-20}
[ -x "$BINARY" ] || { echo "no executable $BINARY (cargo build first)" >&2; exit 2; }
BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

PID=
ADMIN=
GRPC=

# Writes a config for data directory $1 to $1.yaml.
config() {
  cat > "$1.yaml" <<EOF
receivers:
  otlp:
    grpc:
      endpoint: "127.0.0.1:0"
    http:
      endpoint: "127.0.0.1:0"
admin:
  endpoint: "127.0.0.1:0"
api:
  endpoint: "127.0.0.1:0"
storage:
  data_dir: "$1"
  snapshot_interval: 1s
EOF
}

# Starts the collector on data directory $1, logging to $1.log (appended),
# and waits until it says it is ready or exits. Sets PID, ADMIN, GRPC and
# READY_MS ("" when it did not become ready) and EXIT (its status if it
# exited).
start() {
  local dir=$1 started now line
  config "$dir"
  : > "$dir.run.log"
  started=$(date +%s%N)
  NO_COLOR=1 "$BINARY" run --config "$dir.yaml" --log-level info 2> "$dir.run.log" > /dev/null &
  PID=$!
  READY_MS= EXIT= ADMIN= GRPC=
  while :; do
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$dir.run.log" | grep -m1 'triage is ready' || true)
    now=$(date +%s%N)
    if [ -n "$line" ]; then
      READY_MS=$(( (now - started) / 1000000 ))
      ADMIN=$(sed -n 's/.*admin=\([0-9.:]*\).*/\1/p' <<< "$line")
      GRPC=$(sed -n 's/.*grpc=\([0-9.:]*\).*/\1/p' <<< "$line")
      break
    fi
    if ! kill -0 "$PID" 2> /dev/null; then
      EXIT=0
      wait "$PID" || EXIT=$?
      PID=
      break
    fi
    if [ $(( (now - started) / 1000000000 )) -ge "$TIMEOUT" ]; then
      break
    fi
    sleep 0.05
  done
  cat "$dir.run.log" >> "$dir.log"
}

# Stops the collector gracefully (bounded), if it runs.
stop() {
  [ -n "$PID" ] || return 0
  kill -TERM "$PID" 2> /dev/null || true
  for _ in $(seq $(( TIMEOUT * 10 ))); do
    kill -0 "$PID" 2> /dev/null || break
    sleep 0.1
  done
  kill -KILL "$PID" 2> /dev/null || true
  wait "$PID" 2> /dev/null || true
  PID=
}
trap 'stop' INT TERM

post_change() {
  curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST "http://$ADMIN/api/v1/changes" \
    -H 'Content-Type: application/json' -d "$1"
}

# The history metrics, one line each, without the HELP/TYPE lines.
history_metrics() {
  curl -sS --max-time 5 "http://$ADMIN/metrics" | grep '^triage_history' || echo "(none)"
}

# --- 1. a database as a collector leaves it -------------------------------
seed=$WORK/seed
rm -rf "$seed" "$seed".*
start "$seed"
[ -n "$READY_MS" ] || { echo "the seed run did not become ready; see $seed.log" >&2; exit 1; }
"$BINARY" simulate --otlp-endpoint "http://$GRPC" --realtime --duration 35s --rate 10 \
  > /dev/null 2>> "$seed.log" || true
padding=$(printf 'x%.0s' $(seq 300))
for i in $(seq 100); do
  post_change "{\"service\": \"payment\", \"kind\": \"deploy\", \"version\": \"v$i\",
    \"description\": \"payment v$i rolled out by pipeline $i $padding\"}" > /dev/null
done
sleep 2 # a snapshot
stop
db=$seed/triage.db
echo "binary: $BINARY"
echo "seed database: $(stat -c %s "$db") bytes, $(( $(stat -c %s "$db") / 4096 )) pages of 4 KiB"
if command -v sqlite3 > /dev/null; then
  echo "  $(sqlite3 -readonly "$db" "SELECT COUNT(*) || ' changes, ' ||
    (SELECT COUNT(*) FROM snapshots) || ' snapshots of ' ||
    (SELECT MAX(n_series) FROM snapshots) || ' series' FROM changes")"
fi
echo

# --- 2 and 3. damage a copy, restart, look ----------------------------------
damage() {
  local how=$1 file=$2 size
  size=$(stat -c %s "$file")
  case $how in
    truncated) truncate -s $(( size / 2 )) "$file" ;;
    garbage)
      # Page-aligned, in the middle: pages holding rows, indexes or
      # baselines, whichever they are.
      (yes 'garbage written over the history' || true) | head -c 65536 |
        dd of="$file" bs=4096 seek=$(( size / 4096 / 2 )) conv=notrunc status=none ;;
    empty) : > "$file" ;;
    not_sqlite) printf 'storage:\n  data_dir: /var/lib/triage\n%.0s' $(seq 20) > "$file" ;;
  esac
}

for how in truncated garbage empty not_sqlite; do
  dir=$WORK/$how
  rm -rf "$dir" "$dir".*
  cp -r "$seed" "$dir"
  damage "$how" "$dir/triage.db"
  echo "== $how: triage.db is now $(stat -c %s "$dir/triage.db") bytes"
  start "$dir"
  if [ -n "$READY_MS" ]; then
    echo "ready: yes, in $READY_MS ms"
  elif [ -n "$EXIT" ]; then
    echo "ready: no, exited with status $EXIT"
  else
    echo "ready: no, not within ${TIMEOUT}s"
  fi
  grep -iE 'histor|database|snapshot|baseline' "$dir.run.log" | grep -vi 'triage is ready' |
    sed -E 's/^[^ ]+ +//; s/\x1b\[[0-9;]*m//g; s/^/  log: /' | head -n 8 || true
  aside=$(cd "$dir" && ls -d triage.db.corrupt-* 2> /dev/null | tr '\n' ' ' || true)
  echo "moved aside: ${aside:-nothing}"
  if [ -n "$READY_MS" ]; then
    code=$(post_change '{"service": "cart", "kind": "config", "key": "probe", "value": "after"}')
    sleep 2.5 # two snapshot intervals
    echo "posted a change: HTTP $code; metrics after two snapshot intervals:"
    history_metrics | sed 's/^/  /'
    stop
    start "$dir"
    if [ -n "$READY_MS" ]; then
      kept=$(curl -sS --max-time 5 "http://$ADMIN/api/v1/changes?service=cart" | grep -c '"probe"' || true)
      echo "after another restart: ready in $READY_MS ms; the change posted after the damage is $( [ "$kept" -gt 0 ] && echo back || echo missing)"
      stop
    else
      echo "after another restart: not ready (exit ${EXIT:-none})"
    fi
  fi
  echo
done
