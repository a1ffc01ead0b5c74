#!/usr/bin/env bash
# The end-to-end stage: a real kubelet (Kubernetes v1.36.2) on a rootless
# ucri node, registered with etcd + kube-apiserver on 127.0.0.1, driven by
# kubectl. Offline; every address dialled is on this machine.
#
#   packaging/e2e.sh TOOLS_DIR                 every check (packaging/e2e/checks.sh)
#   E2E_FOCUS=REGEX packaging/e2e.sh TOOLS_DIR only the checks whose name matches
#   E2E_KUBELET_VERBOSITY=N                    kubelet's -v (default 2: pod lifecycle steps)
#
# TOOLS_DIR holds kubelet, kube-apiserver, kubectl and etcd, or the packed
# tools with install.sh (../shared/tools in CI). What it does, as
# docs/kubelet.md tells a user to:
#   - the conformance stage's set-up (packaging/conformance/lib.sh): ucri
#     (release), the stand-in images in a docker-registry on 127.0.0.1, the
#     test user ucri-critest (subordinate ids, delegated cgroups);
#   - a control plane on 127.0.0.1 (packaging/e2e/control-plane.sh: certs by
#     openssl, etcd, kube-apiserver; no scheduler or controller-manager, so
#     pods carry nodeName and the test creates what controllers would);
#   - ucri with a [node] section: kubelet's directories writable, kubelet's
#     port published on the host, the API server's port reachable inside;
#   - kubelet as the test user through `ucri nsenter`, with --node-ip
#     "$UCRI_NODE_IP" (the host's own address, assigned inside the node
#     namespace), then the checks.
# Output: target/e2e/{e2e.log,kubelet.log,daemon.log,apiserver.log,...}.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD

TOOLS=${1:?usage: e2e.sh TOOLS_DIR}
TOOLS=$(cd "$TOOLS" && pwd)
STAGE=e2e
OUT=$TOP/target/e2e
rm -rf "$OUT"
mkdir -p "$OUT"
NODE=ucri-e2e

# shellcheck source=conformance/lib.sh
. packaging/conformance/lib.sh
# shellcheck source=e2e/control-plane.sh
. packaging/e2e/control-plane.sh

stage_cleanup() {
  stop_kubelet
  DAEMON=$(cat "$WORK/daemon.pid" 2>/dev/null || echo "${DAEMON:-}")
  cp_stop
  for f in apiserver.log etcd.log; do cp "$WORK/cp/$f" "$OUT/" 2>/dev/null || true; done
}

control_plane() {
  mkdir -p "$WORK/cp"
  cp_start "$TOOLS_BIN" "$WORK/cp" "$NODE" "$RUN_USER" || die "the control plane did not start"
  KUBELET_PORT=$(free_port)
  METRICS_PORT=$(free_port)
}

# The ucri configuration the guide gives a node (docs/kubelet.md), with the
# stage's metrics endpoint.
node_config() {
  packaging/kubelet/render.sh ucri-node --port "$KUBELET_PORT" --api-port "$CP_APISERVER_PORT"
  printf '\n[metrics]\nenabled = true\naddress = "127.0.0.1:%s"\n' "$METRICS_PORT"
}

# kubelet's configuration as the guide renders it, then what only a test
# wants: faster syncs, a machine's nearly full disk tolerated.
kubelet_config() {
  packaging/kubelet/render.sh kubelet-config --socket "$SOCK" --port "$KUBELET_PORT" \
    --client-ca "$CP_DIR/pki/ca.crt" >"$WORK/kubelet-config.yaml"
  cat >>"$WORK/kubelet-config.yaml" <<EOF
# the e2e stage's additions
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
EOF
  chmod 0644 "$WORK/kubelet-config.yaml"
}

# start_kubelet [standalone]: registered with the API server, or with static
# pods only (no kubeconfig, no client CA), as the guide's steps 3b and 3a.
start_kubelet() {
  local registered=(--kubeconfig "$CP_KUBELET_KUBECONFIG")
  if [ "${1:-}" = standalone ]; then
    packaging/kubelet/render.sh kubelet-config --socket "$SOCK" --port "$KUBELET_PORT" \
      >"$WORK/kubelet-config.yaml"
    chmod 0644 "$WORK/kubelet-config.yaml"
    registered=()
  else
    kubelet_config
  fi
  # shellcheck disable=SC2016 # expanded inside the node namespace
  "${AS[@]}" "$WORK/ucri" nsenter -- sh -c 'exec "$0" --node-ip="$UCRI_NODE_IP" "$@"' \
    "$WORK/kubelet" --config "$WORK/kubelet-config.yaml" -v="${E2E_KUBELET_VERBOSITY:-2}" \
    "${registered[@]}" --hostname-override "$NODE" \
    >>"$OUT/kubelet.log" 2>&1 &
  KUBELET=$!
  echo "$KUBELET" >"$WORK/kubelet.pid"
}

# kubelet is stopped with lib.sh's stop_process: the checks run in
# subshells, so it need not be this shell's child.
stop_kubelet() {
  KUBELET=$(cat "$WORK/kubelet.pid" 2>/dev/null || true)
  stop_process "$KUBELET" 10
  rm -f "$WORK/kubelet.pid"
  KUBELET=
}

# A ucri restart keeps pods and containers (the holder keeps the namespaces,
# conmon the containers).
restart_daemon() {
  DAEMON=$(cat "$WORK/daemon.pid")
  stop_process "$DAEMON" 30
  mv "$OUT/daemon.log" "$OUT/daemon.before-restart.log"
  daemon
  echo "$DAEMON" >"$WORK/daemon.pid"
}

TOOLS_BIN=$(dirname "$(tool_binary kubelet)")
for tool in kube-apiserver kubectl etcd; do tool_binary "$tool" >/dev/null; done
# The daemon starts after the control plane: its [node] section names the
# API server's port.
STAGE_DEFER_DAEMON=1
setup "$TOOLS_BIN/kubelet" "$TOOLS_BIN/kubectl"
control_plane
STAGE_CONFIG=$(node_config)
printf '%s\n' "$STAGE_CONFIG" >"$WORK/home/.config/ucri/ucri.toml"
[ "$(id -u)" -ne 0 ] || chown "$RUN_USER:" "$WORK/home/.config/ucri/ucri.toml"
daemon
echo "$DAEMON" >"$WORK/daemon.pid"
start_kubelet

# shellcheck source=e2e/checks.sh
. packaging/e2e/checks.sh
run_checks "${E2E_FOCUS:-}"
