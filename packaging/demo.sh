#!/usr/bin/env bash
# The demo: prepare the host, build ucri, start the daemon rootless as an
# ordinary user, talk CRI to it, then stop it and clean up.
# As root it runs everything as the user ucri-demo (created if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Preparing the host (packages, /dev/fuse, /dev/net/tun, subordinate ids)"
# --build: protoc for the CRI definitions, and busybox-static for the demo image.
if [ "$(id -u)" -eq 0 ]; then
  packaging/setup-host.sh --build --user ucri-demo
  DEMO_USER=ucri-demo
else
  packaging/setup-host.sh --build
  DEMO_USER=$(id -un)
fi

say "Building ucri"
cargo build --release --locked
BIN_DIR=$(mktemp -d /tmp/ucri-demo-bin.XXXXXX)
install -m 0755 target/release/ucri "$BIN_DIR/ucri"
chmod 0755 "$BIN_DIR"

DEMO_UID=$(id -u "$DEMO_USER")
# A command prefix that runs as the demo user (empty when we already are it),
# used with exec semantics so that $! is the daemon itself.
AS_USER=()
if [ "$(id -u)" -eq 0 ]; then
  AS_USER=(setpriv --reuid="$DEMO_UID" --regid="$(id -g "$DEMO_USER")" --init-groups
    env -i HOME="$(getent passwd "$DEMO_USER" | cut -d: -f6)" USER="$DEMO_USER"
    PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="/run/user/$DEMO_UID")
fi
as_user() { "${AS_USER[@]}" "$@"; }
UCRI=("$BIN_DIR/ucri")

say "ucri info: is this host ready for a rootless runtime? (as $DEMO_USER)"
as_user "${UCRI[@]}" info || true

say "Starting the daemon as $DEMO_USER (no root: it enters its own user namespace)"
LOG=$(mktemp /tmp/ucri-demo-log.XXXXXX)
chmod 0666 "$LOG"
"${AS_USER[@]}" "${UCRI[@]}" daemon >"$LOG" 2>&1 &
DAEMON=$!
stop() {
  kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  as_user "${UCRI[@]}" system reset --force >/dev/null 2>&1 || true
  rm -rf "$BIN_DIR" "$LOG"
}
trap stop EXIT
for _ in $(seq 1 100); do
  as_user "${UCRI[@]}" ctl version >/dev/null 2>&1 && break
  sleep 0.1
done
sed 's/^/  daemon| /' "$LOG"

say "ucri ctl version (the CRI Version RPC over the unix socket)"
as_user "${UCRI[@]}" ctl version

say "ucri ctl info (the CRI Status RPC: conditions and effective configuration)"
as_user "${UCRI[@]}" ctl info | sed -n 1,40p

say "Inside the daemon's user namespace, $DEMO_USER is root (ucri nsenter)"
as_user "${UCRI[@]}" nsenter -- sh -c 'echo "id -u: $(id -u)"; echo "uid_map:"; cat /proc/self/uid_map'

say "An image for offline use: busybox-static as an OCI layout, imported (ucri ctl import)"
packaging/demo-image.sh "$BIN_DIR/image" >/dev/null
chmod -R a+rX "$BIN_DIR/image"
as_user "${UCRI[@]}" ctl import "$BIN_DIR/image"
as_user "${UCRI[@]}" ctl images

say "ucri play: a Kubernetes Pod manifest with a web server (published on a hostPort) and a client that fetches from it over the pod's network"
HOST_PORT=18080
sed "s/HOST_PORT/$HOST_PORT/" packaging/demo-pod.yaml >"$BIN_DIR/demo-pod.yaml"
chmod a+r "$BIN_DIR/demo-pod.yaml"
cat "$BIN_DIR/demo-pod.yaml"
"${AS_USER[@]}" "${UCRI[@]}" play "$BIN_DIR/demo-pod.yaml" >"$BIN_DIR/play.log" 2>&1 &
PLAY=$!
for _ in $(seq 100); do grep -q "^\[client\] hello" "$BIN_DIR/play.log" 2>/dev/null && break; sleep 0.1; done
echo "ucri play's output so far (logs prefixed with the container name):"
sed 's/^/  /' "$BIN_DIR/play.log"
echo "from the host, through the hostPort forwarder (curl http://127.0.0.1:$HOST_PORT/):"
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$HOST_PORT/" 2>/dev/null | sed 's/^/  /' && break; sleep 0.1; done
as_user "${UCRI[@]}" ctl ps
SERVER=$(as_user "${UCRI[@]}" ctl ps | awk '/ server / { print $1 }')
echo "its address (CNI bridge in the uplink namespace): $(as_user "${UCRI[@]}" ctl inspectp "$(as_user "${UCRI[@]}" ctl pods -q | head -n 1)" | sed -n 's/.*"ip": "\([0-9.]*\)".*/\1/p' | head -n 1)"
echo "inside the server, root (ucri ctl exec):"
as_user "${UCRI[@]}" ctl exec "$SERVER" id | sed 's/^/  /'
PID=$(as_user "${UCRI[@]}" ctl inspect "$SERVER" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -n 1)
echo "the same process seen from the host (an ordinary user):"
ps -o user:16=,pid=,args= -p "$PID" | sed 's/^/  /'
echo "stopping ucri play (SIGTERM, as Ctrl-C would): it stops and removes the pod"
kill -TERM "$PLAY"
wait "$PLAY" || true
tail -n 3 "$BIN_DIR/play.log" | sed 's/^/  /'

say "Stopping the daemon (SIGTERM drains in-flight RPCs) and resetting"
kill -TERM "$DAEMON"
wait "$DAEMON" && echo "daemon exited cleanly"
as_user "${UCRI[@]}" system reset --force
trap - EXIT
rm -rf "$BIN_DIR" "$LOG"
say "Done"
