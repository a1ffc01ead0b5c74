#!/usr/bin/env bash
# The CRI conformance stage: critest (cri-tools' validation suite) against a
# rootless ucri, offline.
#
#   packaging/conformance.sh TOOLS_DIR          validation specs, then critest -benchmark
#   packaging/conformance.sh TOOLS_DIR --validation-only | --benchmark-only
#   CRITEST_FOCUS=REGEX packaging/conformance.sh TOOLS_DIR --validation-only
#   CRITEST_BENCH_N=20 packaging/conformance.sh TOOLS_DIR --benchmark-only   (default 100)
#
# TOOLS_DIR holds `critest` (cri-tools v1.36.0), or the packed tools with
# install.sh (../shared/tools in CI). What it does:
#   - builds ucri (release) and the stand-in images critest pulls
#     (packaging/conformance/images.sh), pushes them under their upstream
#     names to a docker-registry on 127.0.0.1, and maps the upstream hosts to
#     it with a registries.conf;
#   - starts the daemon rootless as the test user ucri-critest (created by
#     setup-host.sh --test, with subordinate ids and a delegated cgroup
#     subtree), or as the calling user when not root;
#   - runs critest in the node's network namespace (`ucri nsenter`), where
#     pod IPs answer and host-network pods live, as the daemon's user;
#   - compares the JUnit report with packaging/conformance/expected-failures.txt:
#     any other failure fails the stage; a listed spec that passes is named.
# Output: target/conformance/{junit.xml,critest.log,benchmark.log,daemon.log}.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD

TOOLS=${1:?usage: conformance.sh TOOLS_DIR [--validation-only|--benchmark-only]}
MODE=${2:-all}
TOOLS=$(cd "$TOOLS" && pwd)
STAGE=conformance
OUT=$TOP/target/conformance
mkdir -p "$OUT"

# shellcheck source=conformance/lib.sh
. packaging/conformance/lib.sh
# shellcheck source=conformance/containerd.sh
. packaging/conformance/containerd.sh

# critest as the daemon's user, in the node namespace.
critest() {
  "${AS[@]}" "$WORK/ucri" nsenter -- "$WORK/critest" \
    --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@"
}

validation() {
  local focus=${CRITEST_FOCUS:-} args=()
  [ -z "$focus" ] || args+=("-ginkgo.focus=$focus")
  log "critest: the validation specs"
  mkdir -p "$WORK/report"
  [ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/report"
  rm -f "$OUT/junit.xml"
  set +e
  critest -ginkgo.junit-report "$WORK/report/junit.xml" -ginkgo.no-color -ginkgo.timeout 40m \
    "${args[@]}" >"$OUT/critest.log" 2>&1
  local status=$?
  set -e
  cp "$WORK/report/junit.xml" "$OUT/junit.xml" 2>/dev/null || true
  tail -n 40 "$OUT/critest.log" >&2
  [ -f "$OUT/junit.xml" ] || die "critest wrote no report (exit $status); see $OUT/critest.log"
  python3 packaging/conformance/verdict.py "$OUT/junit.xml" packaging/conformance/expected-failures.txt
}

benchmark() {
  log "critest -benchmark"
  mkdir -p "$WORK/bench"
  [ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/bench"
  local n=${CRITEST_BENCH_N:-100}
  printf 'containersNumber: %s\ncontainersNumberParallel: 1\npodsNumber: %s\npodsNumberParallel: 1\nimagesNumber: %s\nimagesNumberParallel: 1\n' \
    "$n" "$n" "$n" >"$WORK/bench-params.yaml"
  chmod 0644 "$WORK/bench-params.yaml"
  # A fixed seed: ginkgo shuffles the benchmarks' order otherwise, and the
  # image benchmark measures whole pulls when it runs first, but pulls of
  # layers already stored when the container benchmark ran before it.
  if ! critest -benchmark -ginkgo.no-color -ginkgo.seed="${CRITEST_BENCH_SEED:-1}" \
    -benchmarking-output-dir "$WORK/bench" \
    -benchmarking-params-file "$WORK/bench-params.yaml" >"$OUT/benchmark.log" 2>&1; then
    tail -n 60 "$OUT/benchmark.log" >&2
    die "critest -benchmark failed; see $OUT/benchmark.log"
  fi
  cp -r "$WORK/bench/." "$OUT/benchmark/" 2>/dev/null || { mkdir -p "$OUT/benchmark"; cp -r "$WORK/bench/." "$OUT/benchmark/"; }
  python3 packaging/conformance/bench-summary.py "$OUT/benchmark" | tee "$OUT/benchmark.md"
  benchmark_containerd
}

# The same benchmark against rootless containerd in the same run (the
# comparison of issue 19), when containerd and rootlesskit are installed;
# CRITEST_BENCH_CONTAINERD=0 skips it.
benchmark_containerd() {
  [ "${CRITEST_BENCH_CONTAINERD:-1}" != 0 ] || return 0
  local missing
  if missing=$(containerd_missing); then
    log "critest -benchmark against rootless containerd: skipped, $missing is not installed (packaging/setup-host.sh --test installs it)"
    return 0
  fi
  log "critest -benchmark against rootless containerd (the same parameters)"
  containerd_start
  mkdir -p "$WORK/bench-containerd"
  [ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/bench-containerd"
  if ! "${CTD_AS[@]}" "$WORK/critest" --runtime-endpoint "unix://$CTD_SOCK" --image-endpoint "unix://$CTD_SOCK" \
    -benchmark -ginkgo.no-color -ginkgo.seed="${CRITEST_BENCH_SEED:-1}" \
    -benchmarking-output-dir "$WORK/bench-containerd" \
    -benchmarking-params-file "$WORK/bench-params.yaml" >"$OUT/benchmark-containerd.log" 2>&1; then
    tail -n 40 "$OUT/benchmark-containerd.log" >&2
    containerd_stop
    die "critest -benchmark against rootless containerd failed; see $OUT/benchmark-containerd.log"
  fi
  containerd_stop
  rm -rf "$OUT/benchmark-containerd"
  cp -r "$WORK/bench-containerd" "$OUT/benchmark-containerd"
  python3 packaging/conformance/bench-compare.py "$OUT/benchmark" "$OUT/benchmark-containerd" |
    tee "$OUT/benchmark-compare.md"
}

stage_cleanup() {
  containerd_stop
}

CRITEST=$(tool_binary critest)
setup "$CRITEST"
case "$MODE" in
  all) validation; benchmark ;;
  --validation-only) validation ;;
  --benchmark-only) benchmark ;;
  *) die "unknown mode $MODE" ;;
esac
