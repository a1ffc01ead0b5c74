#!/usr/bin/env bash
# Runs the whole test suite, set-up included: host packages, devices and the
# test users (packaging/setup-host.sh --test), the lint gates, then every test,
# then the unit-test tier once more as the unprivileged user ucri-test.
# Tests start the daemon as the unprivileged user ucri-test, so this runs as
# root; from an ordinary account it re-runs itself through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  exec sudo env "PATH=$PATH" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
    "CARGO_TARGET_DIR=$PWD/target/as-root" "$0" "$@"
fi

packaging/setup-host.sh --test
cleanup() { rm -rf /tmp/ucri-it-bin-* /tmp/ucri-it; }
trap cleanup EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the README's demo (packaging/demo.sh)"
packaging/demo.sh
echo "== the benchmark suite, tiny (packaging/bench/run.sh 3)"
packaging/bench/run.sh 3
echo "== cargo test"
log=$(mktemp)
set +e
# --no-fail-fast: a failing test binary must not hide the ones after it.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for every test binary together.
awk '/^test result:/ {
  for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i }
} END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
echo "== the unit tests again, as the unprivileged user ucri-test (packaging/unit-as-user.sh)"
unit_status=0
packaging/unit-as-user.sh ucri-test || unit_status=$?
[ "$status" -ne 0 ] || status=$unit_status
exit "$status"
