#!/usr/bin/env bash
# Renders what a rootless kubelet on ucri needs (docs/kubelet.md), as the
# end-to-end stage (packaging/e2e.sh) uses it:
#
#   packaging/kubelet/render.sh kubelet-config [OPTIONS] > kubelet-config.yaml
#   packaging/kubelet/render.sh ucri-node [OPTIONS] >> ~/.config/ucri/ucri.toml
#
# Options (defaults in brackets):
#   --socket PATH      ucri's CRI socket [$XDG_RUNTIME_DIR/ucri/ucri.sock]
#   --port N           kubelet's port, published on the host by ucri [10250]
#   --api-port N       the API server's port on the host's 127.0.0.1, reachable
#                      inside the node namespace; 0 for a standalone kubelet [6443]
#   --client-ca FILE   CA of the clients kubelet accepts (the API server's);
#                      none for a standalone kubelet
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:?usage: render.sh kubelet-config|ucri-node [OPTIONS]}
shift
socket=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/ucri/ucri.sock port=10250 api_port=6443 client_ca=""
while [ $# -gt 0 ]; do
  case $1 in
    --socket) socket=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --api-port) api_port=$2; shift 2 ;;
    --client-ca) client_ca=$2; shift 2 ;;
    *) echo "render.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

case $what in
  kubelet-config)
    # cgroup v1 hosts need failCgroupV1: false (kubelet refuses v1 otherwise).
    fail_v1=true
    [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || fail_v1=false
    if [ -n "$client_ca" ]; then
      auth="authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $client_ca}
authorization:
  mode: Webhook"
    else
      auth="authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow"
    fi
    sed -e "s|@SOCKET@|$socket|g" -e "s|@PORT@|$port|g" -e "s|@FAIL_CGROUP_V1@|$fail_v1|g" \
      "$here/kubelet-config.yaml.in"
    printf '%s\n' "$auth"
    ;;
  ucri-node)
    loopback="[]"
    [ "$api_port" = 0 ] || loopback="[$api_port]"
    cat <<TOML
[node]
# kubelet's directories, writable in ucri's mount namespace (backed by
# ~/.local/share/ucri/node/...).
writable = ["/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/etc/kubernetes"]
# kubelet's port, published on the host: the API server dials it at the
# node's InternalIP (address, the host's own by default).
ports = [$port]
# The API server on the host's 127.0.0.1, reachable at 127.0.0.1 inside.
host_loopback_ports = $loopback
TOML
    ;;
  *) echo "render.sh: unknown output $what (kubelet-config or ucri-node)" >&2; exit 2 ;;
esac
