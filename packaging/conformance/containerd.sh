# Rootless containerd 1.6 for the side-by-side `critest -benchmark`, set up
# as rootless Kubernetes users run it (containerd-rootless.sh's way):
# rootlesskit with slirp4netns, runc, the overlayfs snapshotter, the bridge
# CNI plugin, cgroups off. It pulls critest's images from the stage's
# loopback registry (10.0.2.2 is the host's loopback seen from inside
# rootlesskit's namespace), with the same upstream-name mapping as ucri.
# Sourced by conformance.sh after lib.sh's `setup` (WORK, AS, RUN_USER, PORT).
# Needs Debian's containerd and rootlesskit (setup-host.sh --test).

containerd_missing() {
  local tool
  for tool in containerd rootlesskit runc slirp4netns; do
    command -v "$tool" >/dev/null || { echo "$tool"; return 0; }
  done
  return 1
}

containerd_configure() {
  CTD=$WORK/containerd
  local home=$CTD/home run=$CTD/run host
  mkdir -p "$home/.config/containerd/certs.d" "$home/.config/cni/net.d" "$run"
  chmod 0700 "$run"
  for host in gcr.io registry.k8s.io k8s.gcr.io docker.io public.ecr.aws quay.io; do
    mkdir -p "$home/.config/containerd/certs.d/$host"
    printf 'server = "http://10.0.2.2:%s/v2/%s"\n[host."http://10.0.2.2:%s/v2/%s"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n' \
      "$PORT" "$host" "$PORT" "$host" >"$home/.config/containerd/certs.d/$host/hosts.toml"
  done
  cat >"$home/.config/cni/net.d/10-containerd-net.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "containerd-net", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.89.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat >"$home/.config/containerd/config.toml" <<TOML
version = 2
root = "$home/.local/share/containerd"
state = "$run/containerd"
[grpc]
  address = "$run/containerd/containerd.sock"
[ttrpc]
  address = "$run/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  # Not /run/netns: rootlesskit's copy-up of /run keeps the host's
  # root-owned one (present once anything ran `ip netns`) read-only.
  netns_mounts_under_state_dir = true
  sandbox_image = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$( [ -d /usr/lib/cni ] && echo /usr/lib/cni || echo /opt/cni/bin )"
    conf_dir = "$home/.config/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$home/.config/containerd/certs.d"
TOML
  [ "$(id -u)" -ne 0 ] || chown -R "$RUN_USER:" "$CTD"
  CTD_SOCK=$run/containerd/containerd.sock
  CTD_AS=("${AS[@]}")
  # The same user, with containerd's own home and runtime dir.
  local i
  for i in "${!CTD_AS[@]}"; do
    case "${CTD_AS[$i]}" in
      HOME=*) CTD_AS[$i]=HOME=$home ;;
      XDG_RUNTIME_DIR=*) CTD_AS[$i]=XDG_RUNTIME_DIR=$run ;;
    esac
  done
  [ "$(id -u)" -eq 0 ] || CTD_AS=(env HOME="$home" XDG_RUNTIME_DIR="$run")
}

containerd_start() {
  containerd_configure
  local home=$CTD/home run=$CTD/run
  "${CTD_AS[@]}" rootlesskit --state-dir="$run/rootlesskit" --net=slirp4netns --mtu=65520 \
    --slirp4netns-sandbox=auto --slirp4netns-seccomp=auto --port-driver=builtin \
    --copy-up=/etc --copy-up=/run --copy-up=/var/lib --propagation=rslave \
    sh -c "rm -f /run/containerd /run/xtables.lock; exec containerd -c $home/.config/containerd/config.toml" \
    >"$OUT/containerd.log" 2>&1 &
  CTD_PID=$!
  local _
  for _ in $(seq 100); do
    [ -S "$CTD_SOCK" ] && grep -q 'containerd successfully booted' "$OUT/containerd.log" && return 0
    kill -0 "$CTD_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$OUT/containerd.log" >&2
  die "rootless containerd did not start; see $OUT/containerd.log"
}

# Ends rootlesskit (its namespaces, and containerd with them) and the shims
# critest's removals left, if any.
containerd_stop() {
  [ -n "${CTD_PID:-}" ] || return 0
  local child
  child=$(cat "$CTD/run/rootlesskit/child_pid" 2>/dev/null || true)
  kill -TERM "$CTD_PID" 2>/dev/null || true
  wait "$CTD_PID" 2>/dev/null || true
  if [ -n "$child" ]; then kill -KILL "$child" 2>/dev/null || true; fi
  pkill -KILL -u "$RUN_USER" -f containerd-shim 2>/dev/null || true
  # Snapshots hold files of the user's subordinate ids: only root, or the
  # user's full id map, can remove them.
  if [ "$(id -u)" -ne 0 ]; then
    unshare --map-auto --map-root-user rm -rf "$CTD" 2>/dev/null || true
  fi
  CTD_PID=
}
