#!/usr/bin/env bash
# Root filesystem drivers: create+mount and unmount+remove of a rootfs over
# the first 5 layers of the test image `big` (106 MB, from a registry on
# 127.0.0.1), and untar of a 50 MB tree (2,500 files of 20 kB) inside the
# rootfs, for overlay, fuse-overlayfs and vfs, interleaved in one run inside
# the daemon's namespaces.
#
#   packaging/bench/rootfs.sh [ROUNDS]      (default 5; as root it runs the
#   daemon as ucri-test, otherwise as the calling user)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}

cargo build --release --locked -q
cargo build --release --locked -q -p ucri-storage --example rootfs_bench
WORK=$(mktemp -d /tmp/ucri-bench.XXXXXX)
chmod 0755 "$WORK"
install -m 0755 target/release/ucri target/release/examples/rootfs_bench "$WORK/"

IMAGES=/var/tmp/ucri-bench-images
[ -f "$IMAGES/images.json" ] || packaging/test-images/build.sh "$IMAGES" >/dev/null
LAYERS=$(jq -r '.layouts.big.latest.layers[:5][].diffId' "$IMAGES/images.json" | python3 -c '
import sys, hashlib
chain = []
for d in sys.stdin.read().split():
    chain.append(d if not chain else "sha256:" + hashlib.sha256((chain[-1] + " " + d).encode()).hexdigest())
print(",".join(c[7:] for c in chain))')

# The 50 MB tree, packed once.
mkdir -p "$WORK/tree"
for d in $(seq 50); do
  mkdir -p "$WORK/tree/d$d"
  for f in $(seq 50); do head -c 20000 /dev/urandom >"$WORK/tree/d$d/f$f"; done
done
tar -C "$WORK/tree" -cf "$WORK/tree.tar" . && rm -rf "$WORK/tree" && chmod 0644 "$WORK/tree.tar"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/registry"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
  "$WORK/registry" "$PORT" >"$WORK/registry.yml"
env -i /usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY=$!
if [ "$(id -u)" -eq 0 ]; then
  U=ucri-test
  AS=(setpriv --reuid=$U --regid=$U --init-groups env -i HOME="$WORK/home" PATH=/usr/bin:/bin:/usr/sbin:/sbin
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
"${AS[@]}" "$WORK/ucri" ctl pull "127.0.0.1:$PORT/bench/big:latest" >/dev/null
"${AS[@]}" "$WORK/ucri" nsenter -- "$WORK/rootfs_bench" "$WORK/home/.local/share/ucri/storage" "$LAYERS" "$ROUNDS" "$WORK/tree.tar"
