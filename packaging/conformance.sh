#!/usr/bin/env bash
# The CRI conformance stage: critest (cri-tools' validation suite) against a
# rootless ucri, offline.
#
#   packaging/conformance.sh TOOLS_DIR          validation specs, then critest -benchmark
#   packaging/conformance.sh TOOLS_DIR --validation-only | --benchmark-only
#   CRITEST_FOCUS=REGEX packaging/conformance.sh TOOLS_DIR --validation-only
#   CRITEST_BENCH_N=100 packaging/conformance.sh TOOLS_DIR --benchmark-only   (default 20)
#
# TOOLS_DIR holds `critest` (cri-tools v1.36.0), or the packed tools with
# install.sh (../shared/tools in CI). What it does:
#   - builds ucri (release) and the stand-in images critest pulls
#     (packaging/conformance/images.sh), pushes them under their upstream
#     names to a docker-registry on 127.0.0.1, and maps the upstream hosts to
#     it with a registries.conf;
#   - starts the daemon rootless as the test user ucri-critest (created by
#     setup-host.sh --test, with subordinate ids and a delegated cgroup
#     subtree), or as the calling user when not root;
#   - runs critest in the node's network namespace (`ucri nsenter`), where
#     pod IPs answer and host-network pods live, as the daemon's user;
#   - compares the JUnit report with packaging/conformance/expected-failures.txt:
#     any other failure fails the stage; a listed spec that passes is named.
# Output: target/conformance/{junit.xml,critest.log,benchmark.log,daemon.log}.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD

TOOLS=${1:?usage: conformance.sh TOOLS_DIR [--validation-only|--benchmark-only]}
MODE=${2:-all}
TOOLS=$(cd "$TOOLS" && pwd)
# shellcheck source=bench/lib.sh
. packaging/bench/lib.sh
OUT=$TOP/target/conformance
mkdir -p "$OUT"

log() { printf 'conformance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

critest_binary() {
  if [ -x "$TOOLS/critest" ]; then
    echo "$TOOLS/critest"
  elif [ -x "$TOOLS/install.sh" ]; then
    local dir=$TOP/target/tools
    "$TOOLS/install.sh" "$dir" >&2 || die "unpacking the tools in $TOOLS"
    echo "$dir/critest"
  else
    die "no critest in $TOOLS (and no install.sh to unpack one)"
  fi
}

setup() {
  CRITEST=$(critest_binary)
  command -v docker-registry >/dev/null || die "docker-registry is missing (setup-host.sh --test)"
  command -v skopeo >/dev/null || die "skopeo is missing (setup-host.sh --test)"
  log "building ucri (release)"
  cargo build --release --locked -p ucri
  WORK=$(mktemp -d /tmp/ucri-critest.XXXXXX)
  chmod 0755 "$WORK"
  install -m 0755 target/release/ucri "$CRITEST" "$WORK/"
  trap cleanup EXIT
  images
  registry
  user
  configure
  daemon
}

# The stand-in images, built once per version of the builder.
images() {
  local key
  key=$(cat packaging/conformance/*.sh packaging/conformance/src/* 2>/dev/null | sha256sum | cut -c1-16)
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
  [ "$(id -u)" -ne 0 ] || chown -R "$RUN_USER:" "$WORK/home"
}

daemon() {
  "${AS[@]}" "$WORK/ucri" --log-level info daemon >"$OUT/daemon.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 200); do
    "${AS[@]}" "$WORK/ucri" ctl version >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.1
  done
  cat "$OUT/daemon.log" >&2
  die "the daemon did not start"
}

cleanup() {
  local status=$?
  if [ -n "${DAEMON:-}" ]; then
    kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    "${AS[@]}" "$WORK/ucri" system reset --force >/dev/null 2>&1 || true
  fi
  [ -z "${REGISTRY_PID:-}" ] || kill "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$status"
}

# critest as the daemon's user, in the node namespace.
critest() {
  "${AS[@]}" "$WORK/ucri" nsenter -- "$WORK/critest" \
    --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@"
}

validation() {
  local focus=${CRITEST_FOCUS:-} args=()
  [ -z "$focus" ] || args+=("-ginkgo.focus=$focus")
  log "critest: the validation specs"
  mkdir -p "$WORK/report"
  [ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/report"
  rm -f "$OUT/junit.xml"
  set +e
  critest -ginkgo.junit-report "$WORK/report/junit.xml" -ginkgo.no-color -ginkgo.timeout 40m \
    "${args[@]}" >"$OUT/critest.log" 2>&1
  local status=$?
  set -e
  cp "$WORK/report/junit.xml" "$OUT/junit.xml" 2>/dev/null || true
  tail -n 40 "$OUT/critest.log" >&2
  [ -f "$OUT/junit.xml" ] || die "critest wrote no report (exit $status); see $OUT/critest.log"
  python3 packaging/conformance/verdict.py "$OUT/junit.xml" packaging/conformance/expected-failures.txt
}

benchmark() {
  log "critest -benchmark"
  mkdir -p "$WORK/bench"
  [ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/bench"
  local n=${CRITEST_BENCH_N:-20}
  printf 'containersNumber: %s\ncontainersNumberParallel: 1\npodsNumber: %s\npodsNumberParallel: 1\nimagesNumber: %s\nimagesNumberParallel: 1\n' \
    "$n" "$n" "$n" >"$WORK/bench-params.yaml"
  chmod 0644 "$WORK/bench-params.yaml"
  if ! critest -benchmark -ginkgo.no-color -benchmarking-output-dir "$WORK/bench" \
    -benchmarking-params-file "$WORK/bench-params.yaml" >"$OUT/benchmark.log" 2>&1; then
    tail -n 60 "$OUT/benchmark.log" >&2
    die "critest -benchmark failed; see $OUT/benchmark.log"
  fi
  cp -r "$WORK/bench/." "$OUT/benchmark/" 2>/dev/null || { mkdir -p "$OUT/benchmark"; cp -r "$WORK/bench/." "$OUT/benchmark/"; }
  python3 packaging/conformance/bench-summary.py "$OUT/benchmark" | tee "$OUT/benchmark.md"
}

setup
case "$MODE" in
  all) validation; benchmark ;;
  --validation-only) validation ;;
  --benchmark-only) benchmark ;;
  *) die "unknown mode $MODE" ;;
esac
