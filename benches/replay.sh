#!/usr/bin/env bash
# Replay speed: times `triage replay` on the simulated healthy run, in the
# four inputs docs/PERFORMANCE.md reports (JSON lines and length-delimited
# protobuf, all signals and traces only), and prints the median and best
# wall time and CPU time (user + system) of RUNS runs per binary.
#
#   benches/replay.sh [BINARY...]        default: target/release/triage
#   RUNS=9 DATA=/tmp/triage-bench benches/replay.sh old/triage target/release/triage
#
# With several binaries the runs alternate between them, so a change in the
# machine's load hits every binary alike. The inputs (about 1.9 GB) are
# written once with the first binary and kept in DATA.
set -euo pipefail

RUNS=${RUNS:-9}
DATA=${DATA:-/tmp/triage-bench}
if [ "$#" -eq 0 ]; then
  set -- target/release/triage
fi
for binary in "$@"; do
  [ -x "$binary" ] || { echo "no executable $binary (cargo build --release first)" >&2; exit 2; }
done

mkdir -p "$DATA"
first=$1
[ -s "$DATA/all.jsonl" ] || "$first" simulate healthy --out "$DATA/all.jsonl"
[ -s "$DATA/all.binpb" ] || "$first" simulate healthy --out "$DATA/all.binpb"
[ -s "$DATA/traces.jsonl" ] || "$first" simulate healthy --signals traces --out "$DATA/traces.jsonl"
[ -s "$DATA/traces.binpb" ] || "$first" simulate healthy --signals traces --out "$DATA/traces.binpb"

spans=$("$first" replay "$DATA/traces.binpb" --out /dev/null 2>&1 |
  sed -n 's/.* \([0-9][0-9]*\) spans.*/\1/p' | tail -n 1)
echo "input: triage simulate healthy ($spans spans), $RUNS runs per binary"

# median and minimum of the numbers on standard input
stats() {
  sort -n | awk '{ v[NR] = $1 } END { printf "median %.2f s, best %.2f s", v[int((NR + 1) / 2)], v[1] }'
}

for input in all.jsonl all.binpb traces.jsonl traces.binpb; do
  results=$(mktemp -d)
  for _ in $(seq "$RUNS"); do
    index=0
    for binary in "$@"; do
      index=$((index + 1))
      /usr/bin/time -f "%e %U %S" -a -o "$results/$index" \
        "$binary" replay "$DATA/$input" --out /dev/null 2>/dev/null
    done
  done
  index=0
  for binary in "$@"; do
    index=$((index + 1))
    wall=$(awk '{ print $1 }' "$results/$index" | stats)
    cpu=$(awk '{ print $2 + $3 }' "$results/$index" | stats)
    median=$(awk '{ print $1 }' "$results/$index" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    rate=$(awk -v s="$spans" -v t="$median" 'BEGIN { printf "%.0f", s / t / 1000 }')
    printf '%-14s %-40s wall %s (%sk spans/s at the median) | cpu %s\n' \
      "$input" "$binary" "$wall" "$rate" "$cpu"
  done
  rm -r "$results"
done
