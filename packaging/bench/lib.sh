#!/usr/bin/env bash
# Shared set-up of the benchmark scripts: a work dir with the release
# binaries, the test images, a docker-registry on 127.0.0.1, and a rootless
# daemon (as ucri-test when run as root). Source it, then call bench_init.
# Sets WORK, IMAGES, PORT, AS (command prefix to act as the daemon's user).

bench_init() { # BINARY...
  WORK=$(mktemp -d /tmp/ucri-bench.XXXXXX)
  chmod 0755 "$WORK"
  install -m 0755 "$@" "$WORK/"
  IMAGES=/var/tmp/ucri-bench-images
  [ -f "$IMAGES/images.json" ] || packaging/test-images/build.sh "$IMAGES" >/dev/null
  bench_user
  trap bench_cleanup EXIT
  bench_registry
}

bench_user() {
  mkdir -p "$WORK/home" "$WORK/run"
  chmod 700 "$WORK/run"
  if [ "$(id -u)" -eq 0 ]; then
    chown ucri-test: "$WORK/home" "$WORK/run"
    AS=(setpriv --reuid=ucri-test --regid=ucri-test --init-groups env -i HOME="$WORK/home"
      PATH=/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$WORK/run")
  else
    AS=(env HOME="$WORK/home" XDG_RUNTIME_DIR="$WORK/run")
  fi
}

# A TCP port no socket uses, outside the ephemeral range (iproute2's ss; no python needed).
free_port() {
  local p low
  # Below the kernel's ephemeral range, so that no outgoing connection can
  # take the port between this check and the bind (a port some connection
  # used as its source once made the e2e daemon's metrics bind fail), and
  # used by no socket now, listening or not.
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || low=32768
  [ "${low:-0}" -gt 10001 ] || low=32768
  while :; do
    p=$(shuf -i "10000-$((low - 1))" -n 1)
    ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

bench_registry() {
  PORT=$(free_port)
  mkdir -p "$WORK/registry"
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
    "$WORK/registry" "$PORT" >"$WORK/registry.yml"
  env -i /usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REGISTRY=$!
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench: the registry did not start" >&2
  return 1
}

bench_push() { # LAYOUT TAG REPO:TAG
  skopeo copy -q --all --preserve-digests --insecure-policy --dest-tls-verify=false \
    "oci:$IMAGES/$1:$2" "docker://127.0.0.1:$PORT/$3"
}

bench_daemon() {
  "${AS[@]}" "$WORK/ucri" --log-level warn daemon >"$WORK/daemon.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 100); do "${AS[@]}" "$WORK/ucri" ctl version >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench: the daemon did not start:" >&2
  cat "$WORK/daemon.log" >&2
  return 1
}

bench_cleanup() {
  kill "${DAEMON:-0}" 2>/dev/null && wait "${DAEMON}" 2>/dev/null || true
  "${AS[@]}" "$WORK/ucri" system reset --force >/dev/null 2>&1 || true
  kill "${REGISTRY:-0}" 2>/dev/null || true
  rm -rf "$WORK"
}
