#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 45), one after
# the other; exits non-zero if any target found a crash, a hang or an OOM
# (the input that did it is left in fuzz/artifacts/<target>/). CI runs this
# with a small number; a long run is the same script with a bigger one:
#
#   fuzz/run.sh            # CI: 45 s per target
#   fuzz/run.sh 900        # 15 min per target
#   TARGETS="protobuf" fuzz/run.sh 3600
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: what
# a run finds goes to $CARGO_TARGET_DIR/corpus/<target>/ (default
# fuzz/target/corpus/), which later runs start from as well.
#
# cargo-fuzz needs nightly compiler flags. With a nightly toolchain
# installed it is used; otherwise stable is told to accept them
# (RUSTC_BOOTSTRAP=1), since a fresh CI machine may have no way to fetch
# nightly. No sanitizer: the crate forbids unsafe code, and AddressSanitizer
# would double the build time and slow every run; debug assertions and
# overflow checks stay on, so an overflow on input is a crash.
set -euo pipefail

seconds="${1:-45}"
cd "$(dirname "$0")"

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
fi
if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
flags=(--sanitizer none)
read -r -a targets <<<"${TARGETS:-protobuf metrics_protobuf otlp_json config changes}"

started=$SECONDS
"${cargo[@]}" fuzz build "${flags[@]}"
echo "fuzz: built in $((SECONDS - started)) s"

failed=()
for target in "${targets[@]}"; do
    found="$CARGO_TARGET_DIR/corpus/$target"
    mkdir -p "$found" "artifacts/$target"
    echo "fuzz: $target for ${seconds} s"
    # -timeout: an input that takes longer than 10 s is a hang.
    # -rss_limit_mb: more than 2 GiB is an OOM (libFuzzer's default, said).
    if ! "${cargo[@]}" fuzz run "${flags[@]}" "$target" "$found" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$CARGO_TARGET_DIR/fuzz-$target.log"; then
        tail -n 60 "$CARGO_TARGET_DIR/fuzz-$target.log"
        failed+=("$target")
        continue
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done' \
        "$CARGO_TARGET_DIR/fuzz-$target.log" || true
done

echo "fuzz: done in $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}; reproduce with" \
        "\`cargo fuzz run ${flags[*]} <target> fuzz/artifacts/<target>/<file>\`" >&2
    exit 1
fi
