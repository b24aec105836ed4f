#!/usr/bin/env bash
# Installs what `cargo test --all-targets` needs beyond the Rust toolchain,
# so that the README's test command passes on a fresh Debian or Ubuntu
# machine:
#
#   scripts/test-deps.sh && cargo test --all-targets
#
# - Debian packages, each installed only when its command is missing:
#   prometheus-alertmanager (`prometheus-alertmanager` and `amtool`, driven
#   by tests/it/alertmanager.rs and tests/it/deploy.rs), util-linux
#   (`prlimit`, tests/it/listeners.rs), python3 and python3-venv.
# - A Python virtualenv in .venv with .ci/requirements.txt (the
#   OpenTelemetry SDK and grpcio that tests/it/python_sdk.rs and
#   tests/it/query_api.rs drive). The tests use .venv/bin/python unless
#   TRIAGE_TEST_PYTHON names another interpreter.
#
# Safe to run again: it installs nothing that is already there. apt needs
# root; as another user it goes through sudo. A test whose tool is still
# missing fails and names this script.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian package -> a command it provides.
packages=()
need() {
    local command=$1 package=$2
    if ! command -v "$command" >/dev/null 2>&1; then
        packages+=("$package")
    fi
}
need prometheus-alertmanager prometheus-alertmanager
need amtool prometheus-alertmanager
need prlimit util-linux
# `python3 -m venv` needs ensurepip, which Debian ships apart as python3-venv.
if ! command -v python3 >/dev/null 2>&1; then
    packages+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=(python3-venv)
fi

if [ "${#packages[@]}" -gt 0 ]; then
    # Deduplicated, in a stable order.
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
    echo "test-deps: installing ${packages[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh image may have no package lists yet; update only if needed.
    "${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}" \
        || { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"; }
fi

if [ ! -x .venv/bin/python ]; then
    echo "test-deps: creating .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r .ci/requirements.txt

echo "test-deps: $(prometheus-alertmanager --version 2>&1 | sed -n 1p)"
echo "test-deps: $(.venv/bin/python --version) in .venv"
