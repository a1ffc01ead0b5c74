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
. packaging/bench/lib.sh
bench_init target/release/ucri target/release/examples/rootfs_bench
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

bench_push big latest bench/big:latest
bench_daemon
"${AS[@]}" "$WORK/ucri" ctl pull "127.0.0.1:$PORT/bench/big:latest" >/dev/null
"${AS[@]}" "$WORK/ucri" nsenter -- "$WORK/rootfs_bench" "$WORK/home/.local/share/ucri/storage" "$LAYERS" "$ROUNDS" "$WORK/tree.tar"
