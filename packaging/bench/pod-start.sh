#!/usr/bin/env bash
# Pod start latency: RunPodSandbox -> CreateContainer -> StartContainer of a
# busybox container running `true`, over N pods (default 50), against the
# floor: a bare `crun run` of the same container (its generated config.json
# and root filesystem, namespaces made fresh by crun) inside the daemon's
# namespaces, N times, in the same run.
#
#   packaging/bench/pod-start.sh [N]     (as root the daemon runs as ucri-test)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50}

cargo build --release --locked -q
cargo build --release --locked -q --example pod_start
. packaging/bench/lib.sh
bench_init target/release/ucri target/release/examples/pod_start
bench_push busybox latest bench/busybox:latest
bench_daemon
IMAGE="127.0.0.1:$PORT/bench/busybox:latest"
"${AS[@]}" "$WORK/ucri" ctl pull "$IMAGE" >/dev/null

RESULT=$("${AS[@]}" "$WORK/pod_start" "$WORK/run/ucri/ucri.sock" "$IMAGE" "$N" "$WORK/home/logs")
KEPT=$(awk '$1 == "kept" { print $2 }' <<<"$RESULT")

# The floor: the kept container's own config.json and root filesystem,
# with fresh namespaces instead of the pod's, run directly by crun.
BUNDLE="$WORK/run/ucri/floor"
"${AS[@]}" "$WORK/ucri" nsenter -- sh -c "mkdir -p $BUNDLE && jq '.linux.namespaces |= map(del(.path))' \
  $WORK/run/ucri/containers/$KEPT/config.json > $BUNDLE/config.json"
FLOOR=$("${AS[@]}" "$WORK/ucri" nsenter -- sh -c "for i in \$(seq $N); do
    s=\$(date +%s%N); crun --root $WORK/run/ucri/floor-root run --bundle $BUNDLE floor-\$i >/dev/null; e=\$(date +%s%N)
    echo \$(( (e - s) / 1000 )); done")
read -r F50 F99 < <(sort -n <<<"$FLOOR" | awk '{ a[NR] = $1 } END {
  i50 = int(NR * 0.50 + 0.999); i99 = int(NR * 0.99 + 0.999); printf "%.1f %.1f\n", a[i50] / 1000, a[i99] / 1000 }')

echo "| step (N=$N, sequential) | p50 ms | p99 ms | p50 / crun floor |"
echo "|---|---|---|---|"
awk -F'\t' -v f="$F50" '$1 != "kept" { printf "| %s | %.1f | %.1f | %.1fx |\n", $1, $2, $3, $2 / f }' <<<"$RESULT"
echo "| bare crun run of the same container (floor) | $F50 | $F99 | 1.0x |"
