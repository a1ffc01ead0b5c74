#!/usr/bin/env bash
# Shared by the stages that run real clients against a rootless ucri
# (conformance.sh: critest; e2e.sh: kubelet and a control plane). Source it
# after setting STAGE (a name for logs and the work dir), TOP, TOOLS and OUT.
# `setup BINARY...` builds ucri (release), builds and pushes the stand-in
# images to a docker-registry on 127.0.0.1 under their upstream names, maps
# the upstream hosts to it (registries.conf), and starts the daemon as the
# test user ucri-critest (or the calling user when not root); it sets WORK,
# AS (command prefix acting as that user), RUN_USER, SOCK, PORT, DAEMON.
# A stage may define stage_cleanup, run at exit before the daemon stops, and
# set STAGE_DEFER_DAEMON to start the daemon itself (`daemon`) later.
# shellcheck source=../bench/lib.sh
. "$TOP/packaging/bench/lib.sh"

log() { printf '%s: %s\n' "$STAGE" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# tool_binary NAME: TOOLS/NAME, or NAME unpacked from the packed tools.
tool_binary() {
  if [ -x "$TOOLS/$1" ]; then
    echo "$TOOLS/$1"
  elif [ -x "$TOOLS/install.sh" ]; then
    local dir=$TOP/target/tools
    [ -x "$dir/$1" ] || "$TOOLS/install.sh" "$dir" >&2 || die "unpacking the tools in $TOOLS"
    echo "$dir/$1"
  else
    die "no $1 in $TOOLS (and no install.sh to unpack one)"
  fi
}

# setup BINARY...: the work dir with ucri and BINARY..., the images in a
# registry, the user, its configuration (STAGE_CONFIG: ucri.toml) and the daemon.
setup() {
  command -v docker-registry >/dev/null || die "docker-registry is missing (setup-host.sh --test)"
  command -v skopeo >/dev/null || die "skopeo is missing (setup-host.sh --test)"
  log "building ucri (release)"
  cargo build --release --locked -p ucri
  WORK=$(mktemp -d "/tmp/ucri-$STAGE.XXXXXX")
  chmod 0755 "$WORK"
  install -m 0755 target/release/ucri "$@" "$WORK/"
  trap cleanup EXIT
  images
  registry
  user
  configure
  [ -n "${STAGE_DEFER_DAEMON:-}" ] || daemon
}

# The stand-in images, built once per version of the builder.
images() {
  local key
  key=$(cat packaging/conformance/images.sh packaging/conformance/src/* 2>/dev/null | sha256sum | cut -c1-16)
  IMAGES=/var/tmp/ucri-critest-images/$key
  if [ ! -f "$IMAGES/.done" ]; then
    log "building the stand-in images into $IMAGES"
    rm -rf "$IMAGES"
    mkdir -p "$IMAGES"
    packaging/conformance/images.sh "$IMAGES" >&2
    touch "$IMAGES/.done"
  fi
}

registry() {
  bench_registry # packaging/bench/lib.sh: a docker-registry on 127.0.0.1:$PORT
  REGISTRY_PID=$REGISTRY
  log "pushing the stand-in images to 127.0.0.1:$PORT"
  packaging/conformance/push.sh "$IMAGES" "127.0.0.1:$PORT" >&2
}

user() {
  mkdir -p "$WORK/home" "$WORK/run"
  chmod 0700 "$WORK/run"
  if [ "$(id -u)" -eq 0 ]; then
    RUN_USER=ucri-critest
    id -u "$RUN_USER" >/dev/null 2>&1 || die "user $RUN_USER is missing (packaging/setup-host.sh --test)"
    chown -R "$RUN_USER:" "$WORK/home" "$WORK/run"
    AS=(setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups env -i HOME="$WORK/home"
      USER="$RUN_USER" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$WORK/run")
  else
    RUN_USER=$(id -un)
    AS=(env HOME="$WORK/home" XDG_RUNTIME_DIR="$WORK/run")
  fi
  SOCK=$WORK/run/ucri/ucri.sock
}

configure() {
  local conf=$WORK/home/.config/containers
  mkdir -p "$conf" "$WORK/home/.config/ucri"
  packaging/conformance/registries-conf.sh "127.0.0.1:$PORT" >"$conf/registries.conf"
  printf '%s' "${STAGE_CONFIG:-}" >"$WORK/home/.config/ucri/ucri.toml"
  [ "$(id -u)" -ne 0 ] || chown -R "$RUN_USER:" "$WORK/home"
}

daemon() {
  "${AS[@]}" "$WORK/ucri" --log-level "${UCRI_STAGE_LOG_LEVEL:-info}" daemon >"$OUT/daemon.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 200); do
    "${AS[@]}" "$WORK/ucri" ctl version >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.1
  done
  cat "$OUT/daemon.log" >&2
  die "the daemon did not start"
}

# Whether PID runs (a zombie, exited and not yet reaped, does not).
process_running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ "${state#Z}" = "$state" ]
}

# stop_process PID SECONDS: TERM, up to SECONDS for it to end, then KILL.
stop_process() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq $(($2 * 10))); do process_running "$1" || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  for _ in $(seq 50); do process_running "$1" || return 0; sleep 0.1; done
}

# Processes that still name the stage's work dir after the reset (a holder
# running its binary, the slirp4netns serving its uplink): named on
# stderr, then killed, so no stage outlives its work dir.
kill_leftovers() {
  local pids
  pids=$(pgrep -f "$WORK/" || true)
  [ -n "$pids" ] || return 0
  echo "$STAGE: processes left after the reset, killed:" >&2
  ps -o pid=,args= -p "$(echo "$pids" | paste -sd,)" >&2 || true
  echo "$pids" | xargs kill -KILL 2>/dev/null || true
}

cleanup() {
  local status=$?
  stage_cleanup 2>/dev/null || true
  if [ -n "${DAEMON:-}" ]; then
    # Not `wait`: after a restart in a check's subshell, the daemon is not
    # this shell's child, and `wait` returns at once.
    stop_process "$DAEMON" 30
    wait "$DAEMON" 2>/dev/null || true
    "${AS[@]}" "$WORK/ucri" system reset --force >"$OUT/reset.log" 2>&1 ||
      echo "$STAGE: ucri system reset failed (target/$STAGE/reset.log):" "$(tail -n 3 "$OUT/reset.log")" >&2
  fi
  if [ -n "${REGISTRY_PID:-}" ]; then
    kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null || true
  fi
  kill_leftovers
  rm -rf "$WORK"
  exit "$status"
}

