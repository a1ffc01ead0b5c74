#!/usr/bin/env bash
# The benchmark suite: builds ucri and ucri-bench (release), starts a
# docker-registry on 127.0.0.1 with the test images and a rootless daemon
# (as ucri-test when run as root), then runs ucri-bench against it:
# lifecycle latency with the crun floor, batch starts, ExecSync, memory and
# list latency with running pods, and pull throughput against skopeo.
# Prints markdown; writes JSON to $BENCH_JSON (default target/bench/results.json).
#
#   packaging/bench/run.sh [N]     N pods in the sequential run (default 100);
#                                  below 10, every section shrinks (CI runs N=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
OUT_JSON=${BENCH_JSON:-$PWD/target/bench/results.json}

cargo build --release --locked -q -p ucri -p ucri-bench
. packaging/bench/lib.sh
bench_init target/release/ucri target/release/ucri-bench
bench_push busybox latest bench/busybox:latest
bench_push big latest bench/big:latest
bench_daemon
IMAGE="127.0.0.1:$PORT/bench/busybox:latest"
"${AS[@]}" "$WORK/ucri" ctl pull "$IMAGE" >/dev/null
mkdir -p "$WORK/scratch" "$WORK/home/logs"
[ "$(id -u)" -eq 0 ] && chown ucri-test: "$WORK/scratch" "$WORK/home/logs"

SIZES=()
if [ "$N" -lt 10 ]; then
  SIZES=(--batches "$N" --scale "$N" --execs $((N * 10)) --pull-rounds 1)
fi
"${AS[@]}" "$WORK/ucri-bench" --socket "$WORK/run/ucri/ucri.sock" --runtime-dir "$WORK/run/ucri" \
  --ucri "$WORK/ucri" --image "$IMAGE" --pull-image "127.0.0.1:$PORT/bench/big:latest" \
  --log-dir "$WORK/home/logs" --scratch "$WORK/scratch" -n "$N" "${SIZES[@]}" --json "$WORK/scratch/results.json"
mkdir -p "$(dirname "$OUT_JSON")"
cp "$WORK/scratch/results.json" "$OUT_JSON"
echo "results: $OUT_JSON" >&2
