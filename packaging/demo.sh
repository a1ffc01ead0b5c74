#!/usr/bin/env bash
# The demo: prepare the host, build ucri, start the daemon rootless as an
# ordinary user, talk CRI to it, then stop it and clean up.
# As root it runs everything as the user ucri-demo (created if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Preparing the host (packages, /dev/fuse, /dev/net/tun, subordinate ids)"
if [ "$(id -u)" -eq 0 ]; then
  packaging/setup-host.sh --user ucri-demo
  DEMO_USER=ucri-demo
else
  packaging/setup-host.sh
  DEMO_USER=$(id -un)
fi
# The build needs protoc for the CRI definitions.
dpkg-query -W protobuf-compiler >/dev/null 2>&1 || packaging/setup-host.sh --test

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
as_user "${UCRI[@]}" ctl info | head -n 40

say "Inside the daemon's user namespace, $DEMO_USER is root (ucri nsenter)"
as_user "${UCRI[@]}" nsenter -- sh -c 'echo "id -u: $(id -u)"; echo "uid_map:"; cat /proc/self/uid_map'

say "Stopping the daemon (SIGTERM drains in-flight RPCs) and resetting"
kill -TERM "$DAEMON"
wait "$DAEMON" && echo "daemon exited cleanly"
as_user "${UCRI[@]}" system reset --force
trap - EXIT
rm -rf "$BIN_DIR" "$LOG"
say "Done"
