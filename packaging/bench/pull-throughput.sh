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
WORK=$(mktemp -d /tmp/ucri-bench.XXXXXX)
chmod 0755 "$WORK"
install -m 0755 target/release/ucri "$WORK/ucri"

IMAGES=/var/tmp/ucri-bench-images
[ -f "$IMAGES/images.json" ] || packaging/test-images/build.sh "$IMAGES" >/dev/null
SIZE=$(jq '.layouts.big.latest.compressedSize + .layouts.big.latest.configSize' "$IMAGES/images.json")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
env -i /usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY=$!
AS=()
if [ "$(id -u)" -eq 0 ]; then
  U=ucri-test; UID_=$(id -u $U)
  AS=(setpriv --reuid=$U --regid=$U --init-groups env -i HOME="$WORK/home" PATH=/usr/bin:/bin
    XDG_RUNTIME_DIR="$WORK/run")
  mkdir -p "$WORK/home" "$WORK/run"; chown $U: "$WORK/home" "$WORK/run"; chmod 700 "$WORK/run"
else
  AS=(env HOME="$WORK/home" XDG_RUNTIME_DIR="$WORK/run"); mkdir -p "$WORK/home" "$WORK/run"; chmod 700 "$WORK/run"
fi
cleanup() {
  kill "${DAEMON:-0}" 2>/dev/null && wait "${DAEMON}" 2>/dev/null || true
  "${AS[@]}" "$WORK/ucri" system reset --force >/dev/null 2>&1 || true
  kill "$REGISTRY" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy -q --all --preserve-digests --insecure-policy --dest-tls-verify=false \
  "oci:$IMAGES/big:latest" "docker://127.0.0.1:$PORT/bench/big:latest"

"${AS[@]}" "$WORK/ucri" --log-level warn daemon >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do "${AS[@]}" "$WORK/ucri" ctl version >/dev/null 2>&1 && break; sleep 0.1; done

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
