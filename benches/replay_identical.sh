#!/usr/bin/env bash
# Replay equivalence: proves that two builds of triage print byte-identical
# `triage replay` output on the simulator's scenarios, from JSON lines and
# from length-delimited protobuf input. Written for the structure refactor of
# src/ (issue 11): build the code before and after, then compare the two.
#
#   benches/replay_identical.sh OLD_BINARY NEW_BINARY
#   SEEDS="1 2 3" benches/replay_identical.sh /work/bin/triage-before target/debug/triage
#   CASES="cascade-slow down-ends" benches/replay_identical.sh OLD NEW   # a subset
#
# Works from any directory and with debug builds: the 20 default cases take
# 5 to 7 minutes on 2 cores with two debug builds.
#
# What it checks, per case (scenario x seed x input format):
#   - the inputs are written once, by OLD_BINARY's simulator (`triage
#     simulate ... --out FILE.jsonl` and `--out FILE.binpb`), into a temporary
#     directory that is removed on exit;
#   - both binaries replay the same file with the same arguments (`triage
#     replay FILE`, embedded default settings: TRIAGE_CONFIG is unset) from
#     the same directory, side by side;
#   - their standard output (every incident event as a JSON line) is compared
#     with cmp, and so is their standard error (the "replayed FILE (size,
#     format)" line and the line/span/point/log/event counts) once the
#     wall-clock part of the last line ("; 6.1 s (37258 spans/s)") is cut;
#   - a case that prints no incident event fails too: two empty outputs
#     being equal proves nothing.
# One line per case: `same` or `DIFFERENT`, the number of events (opened,
# updated, resolved). Exit 0 when every case is the same and has events, 1
# otherwise, 2 on bad usage.
#
# Cases: each fault opens incidents within the short run (debug builds replay
# one input in about 5-10 s):
#   cascade-slow   rca-cascade-slow     slow:inventory:250 from 10 min, 16 min
#   cascade-errors rca-cascade-errors   errors:currency from 10 min, 16 min
#   bad-deploy     rca-bad-deploy       bad-deploy:payment from 10 min, 16 min
#   two-faults     rca-two-faults       pool-exhaustion:user + errors:recommendation
#   down-ends      down:inventory from 8 min for 5 min, 20 min (incidents resolve)
set -euo pipefail

usage() {
  echo "usage: $0 OLD_BINARY NEW_BINARY" >&2
  exit 2
}
[ "$#" -eq 2 ] || usage

# Absolute paths, so both binaries run from the temporary directory whatever
# the caller's working directory and whether a name was given or a path.
resolve() {
  local found
  found=$(command -v -- "$1" 2>/dev/null) || { echo "no executable $1" >&2; exit 2; }
  [ -x "$found" ] && [ -f "$found" ] || { echo "no executable $1" >&2; exit 2; }
  readlink -f -- "$found"
}
case "$1" in */*) old=$(resolve "$1") ;; *) old=$(resolve "./$1" 2>/dev/null || resolve "$1") ;; esac
case "$2" in */*) new=$(resolve "$2") ;; *) new=$(resolve "./$2" 2>/dev/null || resolve "$2") ;; esac

SEEDS=${SEEDS:-"1 2"}
CASES=${CASES:-}
unset TRIAGE_CONFIG

work=$(mktemp -d "${TMPDIR:-/tmp}/replay-identical.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# name|simulate arguments (no spaces inside an argument)
cases=(
  "cascade-slow|rca-cascade-slow"
  "cascade-errors|rca-cascade-errors"
  "bad-deploy|rca-bad-deploy"
  "two-faults|rca-two-faults"
  "down-ends|--fault down:inventory --fault-at 8m --fault-for 5m --duration 20m"
)

# Drops the wall-clock time and rate from replay's closing summary line.
normalize() {
  sed -E 's/; [0-9.]+ s \([^)]*spans\/s\)$//' "$1"
}

count() { # PATTERN FILE: lines matching, 0 when none
  grep -c -- "$1" "$2" || true
}

echo "old: $old"
echo "new: $new"
echo "seeds: $SEEDS"
started=$SECONDS
failed=0
total=0
for spec in "${cases[@]}"; do
  name=${spec%%|*}
  if [ -n "$CASES" ] && [[ " $CASES " != *" $name "* ]]; then
    continue
  fi
  read -r -a args <<<"${spec#*|}"
  for seed in $SEEDS; do
    for format in jsonl binpb; do
      input="$name-s$seed.$format"
      if ! "$old" simulate "${args[@]}" --seed "$seed" --out "$input" 2>sim.log; then
        echo "simulate ${args[*]} --seed $seed --out $input failed:" >&2
        cat sim.log >&2
        exit 1
      fi
      # Both binaries at once (they share nothing but the input file).
      "$old" replay "$input" >old.out 2>old.err &
      old_pid=$!
      "$new" replay "$input" >new.out 2>new.err &
      new_pid=$!
      old_status=0
      new_status=0
      wait "$old_pid" || old_status=$?
      wait "$new_pid" || new_status=$?
      rm -f "$input"
      total=$((total + 1))

      events=$(wc -l <old.out)
      kinds="$(count '^{"event":"opened"' old.out) opened, $(count '^{"event":"updated"' old.out) updated, $(count '^{"event":"resolved"' old.out) resolved"
      verdict=same
      why=""
      if [ "$old_status" -ne 0 ] || [ "$new_status" -ne 0 ]; then
        verdict=DIFFERENT
        why="replay exited $old_status (old) / $new_status (new)"
      elif ! cmp -s old.out new.out; then
        verdict=DIFFERENT
        why="incident events differ (new: $(wc -l <new.out) events)"
      elif ! cmp -s <(normalize old.err) <(normalize new.err); then
        verdict=DIFFERENT
        why="standard error differs"
      elif [ "$events" -eq 0 ]; then
        verdict=EMPTY
        why="no incident events: the comparison proves nothing"
      fi
      printf '%-9s %-15s seed %-3s %-6s %5d events (%s)%s\n' \
        "$verdict" "$name" "$seed" "$format" "$events" "$kinds" "${why:+  -- $why}"
      if [ "$verdict" != same ]; then
        failed=$((failed + 1))
        if [ "$verdict" = DIFFERENT ]; then
          # The first differences, cut to a readable width.
          { diff old.out new.out || true; diff <(normalize old.err) <(normalize new.err) || true; } |
            head -n 8 | cut -c 1-240 | sed 's/^/    /'
          [ "$old_status" -eq 0 ] || sed 's/^/    old stderr: /' old.err | tail -n 5
          [ "$new_status" -eq 0 ] || sed 's/^/    new stderr: /' new.err | tail -n 5
        fi
      fi
    done
  done
done

if [ "$total" -eq 0 ]; then
  echo "no case matches CASES=$CASES" >&2
  exit 2
fi
echo "$total cases, $failed failed, $((SECONDS - started)) s"
[ "$failed" -eq 0 ]
