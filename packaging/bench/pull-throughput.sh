#!/usr/bin/env bash
# Pull throughput: `ucri ctl pull` of the ~100 MB, 6-layer test image `big`
# from a docker-registry on 127.0.0.1 into a cold store, against `skopeo copy`
# of the same image to a local OCI directory, interleaved in one run.
#
#   packaging/bench/pull-throughput.sh [ROUNDS]      (default 5; as root it
#   runs the daemon as ucri-test, otherwise as the calling user)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}

cargo build --release --locked -q
. packaging/bench/lib.sh
bench_init target/release/ucri
SIZE=$(jq '.layouts.big.latest.compressedSize + .layouts.big.latest.configSize' "$IMAGES/images.json")
bench_push big latest bench/big:latest
bench_daemon

now() { date +%s.%N; }
mbps() { awk -v b="$SIZE" -v t="$1" 'BEGIN { printf "%.1f", b / t / 1e6 }'; }
IMAGE="127.0.0.1:$PORT/bench/big:latest"
ucri_times=(); skopeo_times=()
# CPU seconds (user+sys) of the serving daemon, from /proc.
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
CHILD=$(cat "$WORK/run/ucri/daemon.pid")
cpu0=$(cpu_of "$CHILD"); skopeo_cpu=0
for r in $(seq "$ROUNDS"); do
  t0=$(now); "${AS[@]}" "$WORK/ucri" ctl pull "$IMAGE" >/dev/null; t1=$(now)
  "${AS[@]}" "$WORK/ucri" ctl rmi "$IMAGE" >/dev/null
  ucri_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  rm -rf "$WORK/oci"
  t0=$(now)
  c=$( { /usr/bin/time -f '%U %S' skopeo copy -q --insecure-policy --src-tls-verify=false "docker://$IMAGE" "oci:$WORK/oci:latest"; } 2>&1 | awk '{ print $1 + $2 }')
  t1=$(now); skopeo_cpu=$(awk -v a="$skopeo_cpu" -v b="$c" 'BEGIN { print a + b }')
  skopeo_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
done
cpu1=$(cpu_of "$CHILD")
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mu=$(median "${ucri_times[@]}"); ms=$(median "${skopeo_times[@]}")
echo "| tool | rounds | median s | MB/s | all runs (s) |"
echo "|---|---|---|---|---|"
echo "| ucri ctl pull (download + verify + unpack) | $ROUNDS | $mu | $(mbps "$mu") | ${ucri_times[*]} |"
echo "| skopeo copy to oci: dir (download + verify) | $ROUNDS | $ms | $(mbps "$ms") | ${skopeo_times[*]} |"
awk -v a="$mu" -v b="$ms" 'BEGIN { printf "ucri/skopeo throughput ratio: %.2f (image: %d bytes)\n", b / a, 0 }' | sed "s/0 bytes/$SIZE bytes/"
awk -v d="$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" -v s="$skopeo_cpu" -v r="$ROUNDS" \
  'BEGIN { printf "CPU per operation: ucri daemon %.3f s (pull + rmi), skopeo %.3f s\n", d / r, s / r }'
