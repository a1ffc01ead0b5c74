#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for rootless ucri. Idempotent; uses sudo when
# not run as root.
#
#   packaging/setup-host.sh                 run-time packages, devices, ranges for $SUDO_USER/$USER
#   packaging/setup-host.sh --user NAME     also create NAME (if missing) with subuid/subgid ranges
#                                           (9 x 65536 ids: the daemon's containers and 8 pods
#                                           with a user namespace of their own)
#   packaging/setup-host.sh --build         also what building ucri and the demo need
#   packaging/setup-host.sh --delegate-cgroups NAME
#                                           give NAME a cgroup subtree (ucri-NAME in every
#                                           cgroup v1 hierarchy; on cgroup v2, systemd delegation)
#                                           so that container limits apply; v1 subtrees are
#                                           in memory: run it again after a reboot
#   packaging/setup-host.sh --test          also test/build packages and the test users
#                                           ucri-test (with ranges), ucri-nosubid (without),
#                                           ucri-cgroup and ucri-critest (with ranges and
#                                           delegated cgroups), grpcio in the
#                                           virtualenv /opt/ucri-test-venv, and containerd
#                                           + rootlesskit for the benchmark beside containerd
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

RUNTIME_PACKAGES=(uidmap fuse-overlayfs fuse3 slirp4netns passt crun runc conmon
  containernetworking-plugins iptables catatonit util-linux procps iproute2)
BUILD_PACKAGES=(protobuf-compiler gcc ca-certificates busybox-static curl)
TEST_PACKAGES=(docker-registry skopeo busybox-static jq protobuf-compiler gcc libc6-dev
  ca-certificates curl apache2-utils zstd openssl xz-utils python3 python3-venv bsdutils)
RANGE_SIZE=65536
# The daemon's own containers take 65,536 ids, and so does each pod with a
# user namespace of its own (kubelet's hostUsers: false): 8 such pods.
USERNS_RANGE_SIZE=$((65536 * 9))
# gRPC Python for the test of clients that send the socket path as
# :authority (tests/authority.rs), in a virtualenv of its own.
TEST_VENV=/opt/ucri-test-venv
GRPCIO_VERSION=1.85.3

log() { printf 'setup-host: %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Debian's containerd and rootlesskit: the conformance stage runs critest's
# benchmark against rootless containerd beside ucri. Installing containerd
# on a systemd host starts a root containerd service; when this script
# installed it, the service is stopped and disabled again (the benchmark
# runs its own rootless one).
install_benchmark_peer() {
  local had=0
  dpkg-query -W -f='${Status}' containerd 2>/dev/null | grep -q "install ok installed" && had=1
  install_packages containerd rootlesskit
  if [ "$had" -eq 0 ] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now containerd.service >/dev/null 2>&1 || true
    log "containerd: the root service the package started is stopped and disabled"
  fi
}

open_devices() {
  # Distributions ship these 0666; minimal images sometimes do not.
  for dev in /dev/fuse /dev/net/tun; do
    if [ -e "$dev" ]; then
      $SUDO chmod 0666 "$dev"
    else
      log "warning: $dev does not exist on this host"
    fi
  done
}

# First id after every range already handed out in FILE (at least 100000).
next_free_start() {
  awk -F: 'BEGIN { m = 100000 } NF >= 3 && $2 + $3 > m { m = $2 + $3 } END { print m }' "$1" 2>/dev/null || echo 100000
}

has_range() { # FILE NAME UID
  grep -qE "^($2|$3):" "$1" 2>/dev/null
}

grant_ranges() { # NAME [SIZE]
  local name=$1 size=${2:-$RANGE_SIZE} uid
  uid=$(id -u "$name")
  $SUDO touch /etc/subuid /etc/subgid
  if ! has_range /etc/subuid "$name" "$uid"; then
    local s; s=$(next_free_start /etc/subuid)
    $SUDO usermod --add-subuids "$s-$((s + size - 1))" "$name"
    log "granted subuids $s-$((s + size - 1)) to $name"
  fi
  if ! has_range /etc/subgid "$name" "$uid"; then
    local s; s=$(next_free_start /etc/subgid)
    $SUDO usermod --add-subgids "$s-$((s + size - 1))" "$name"
    log "granted subgids $s-$((s + size - 1)) to $name"
  fi
}

range_size() { # FILE NAME UID
  awk -F: -v n="$2" -v u="$3" '($1 == n || $1 == u) { t += $3 } END { print t + 0 }' "$1" 2>/dev/null
}

# A range of at least SIZE ids: a smaller one is replaced (for test users,
# whose files come and go with each run).
grant_ranges_at_least() { # NAME SIZE
  local name=$1 size=$2 uid
  uid=$(id -u "$name")
  if [ "$(range_size /etc/subuid "$name" "$uid")" -lt "$size" ] ||
    [ "$(range_size /etc/subgid "$name" "$uid")" -lt "$size" ]; then
    revoke_ranges "$name"
  fi
  grant_ranges "$name" "$size"
}

install_test_venv() {
  if [ ! -x "$TEST_VENV/bin/python" ]; then
    $SUDO /usr/bin/python3 -m venv "$TEST_VENV"
    log "created $TEST_VENV"
  fi
  if ! "$TEST_VENV/bin/python" -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
    log "installing grpcio==$GRPCIO_VERSION into $TEST_VENV"
    $SUDO "$TEST_VENV/bin/pip" install --quiet --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
  fi
}

revoke_ranges() { # NAME
  local name=$1 uid
  uid=$(id -u "$name")
  for f in /etc/subuid /etc/subgid; do
    [ -f "$f" ] && $SUDO sed -i -E "/^($name|$uid):/d" "$f"
  done
}

ensure_user() { # NAME
  local name=$1
  if ! id -u "$name" >/dev/null 2>&1; then
    $SUDO useradd --create-home --shell /bin/bash "$name"
    log "created user $name"
  fi
  local uid; uid=$(id -u "$name")
  $SUDO mkdir -p "/run/user/$uid"
  $SUDO chown "$name:$(id -gn "$name")" "/run/user/$uid"
  $SUDO chmod 0700 "/run/user/$uid"
}

delegate_cgroups() { # NAME
  local name=$1 h d
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    # cgroup v2: systemd hands user sessions their subtree.
    $SUDO mkdir -p /etc/systemd/system/user@.service.d
    printf '[Service]\nDelegate=cpu cpuset io memory pids\n' |
      $SUDO tee /etc/systemd/system/user@.service.d/delegate.conf >/dev/null
    $SUDO systemctl daemon-reload 2>/dev/null || true
    log "cgroup v2: delegation enabled for user sessions (log in again); run ucri as a user service"
    return 0
  fi
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -f "$h/cgroup.procs" ] && [ "${h##*/}" != unified ] || continue
    d="$h/ucri-$name"
    $SUDO mkdir -p "$d"
    if [ "${h##*/}" = cpuset ]; then
      $SUDO cp "$h/cpuset.cpus" "$d/cpuset.cpus"
      $SUDO cp "$h/cpuset.mems" "$d/cpuset.mems"
    fi
    $SUDO chown -R "$name:$(id -gn "$name")" "$d"
  done
  log "cgroup v1: delegated ucri-$name in every hierarchy to $name"
}

main() {
  local users=() delegate=() test=0 build=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --user) users+=("$2"); shift 2 ;;
      --delegate-cgroups) delegate+=("$2"); shift 2 ;;
      --test) test=1; shift ;;
      --build) build=1; shift ;;
      -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
      *) log "unknown argument: $1"; exit 2 ;;
    esac
  done
  install_packages "${RUNTIME_PACKAGES[@]}"
  [ "$build" -eq 1 ] && install_packages "${BUILD_PACKAGES[@]}"
  [ "$test" -eq 1 ] && install_packages "${TEST_PACKAGES[@]}"
  # kubectl (Debian's client-go, SPDY) for the streaming interop test,
  # unless one is installed already (another package owns /usr/bin/kubectl).
  if [ "$test" -eq 1 ] && ! command -v kubectl >/dev/null; then
    install_packages kubernetes-client
  fi
  [ "$test" -eq 1 ] && install_benchmark_peer
  [ "$test" -eq 1 ] && install_test_venv
  open_devices
  local invoking="${SUDO_USER:-$(id -un)}"
  [ "$invoking" != root ] && users+=("$invoking")
  for u in "${users[@]}"; do
    ensure_user "$u"
    # Room for the daemon's containers and 8 pods with their own user
    # namespace (a user that already has a range keeps it).
    grant_ranges "$u" "$USERNS_RANGE_SIZE"
  done
  if [ "$test" -eq 1 ]; then
    ensure_user ucri-test
    grant_ranges ucri-test
    ensure_user ucri-nosubid
    revoke_ranges ucri-nosubid
    ensure_user ucri-cgroup
    grant_ranges ucri-cgroup
    delegate+=(ucri-cgroup)
    # The conformance stage's daemon (packaging/conformance.sh).
    ensure_user ucri-critest
    grant_ranges_at_least ucri-critest "$USERNS_RANGE_SIZE"
    delegate+=(ucri-critest)
  fi
  for u in "${delegate[@]}"; do
    delegate_cgroups "$u"
  done
  log "done"
}

main "$@"
