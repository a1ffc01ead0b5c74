#!/usr/bin/env bash
# Runs the whole test suite, set-up included: host packages, devices and the
# test users (packaging/setup-host.sh --test), the lint gates, then every test.
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
echo "== cargo test"
cargo test --workspace --locked "$@"
