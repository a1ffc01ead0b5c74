#!/usr/bin/env bash
# A throw-away Kubernetes control plane (etcd + kube-apiserver, no
# controller-manager, no scheduler) on 127.0.0.1, for end-to-end tests of a
# kubelet running against ucri. Sourceable library:
#
#   . packaging/e2e/control-plane.sh
#   trap cp_stop EXIT
#   cp_start TOOLS_DIR DIR NODE_NAME OWNER    # TOOLS_DIR: etcd kube-apiserver kubectl
#   cp_kubectl get --raw /readyz
#   cp_stop                                   # idempotent; fine after a partial start
#
# or a quick self check, as root:  bash packaging/e2e/control-plane.sh selftest TOOLS_DIR
#
# cp_start makes DIR/pki (openssl, EC P-256 certs + RSA service-account key,
# valid 2 days), starts etcd and kube-apiserver on free loopback ports (logs
# DIR/etcd.log, DIR/apiserver.log), writes DIR/admin.kubeconfig (system:masters)
# and DIR/kubelet.kubeconfig (system:node:NODE_NAME; it, its cert/key and ca.crt
# are readable by the unprivileged user OWNER, who runs the kubelet; DIR is made
# mode 0711, its parents must already be traversable by OWNER), then creates
# what kube-controller-manager would: ServiceAccount default/default and
# ConfigMap default/kube-root-ca.crt. It exports CP_DIR CP_TOOLS CP_KUBECONFIG
# CP_KUBELET_KUBECONFIG CP_APISERVER_PORT CP_ETCD_PORT CP_ETCD_PID
# CP_APISERVER_PID and the function cp_kubectl. On failure it prints what failed
# with the relevant log tail, stops whatever it started and returns 1.
# Extra apiserver flags: CP_APISERVER_EXTRA_ARGS (word-split).
# Safe under `set -euo pipefail`; every wait is bounded.

_cp_log() { printf 'control-plane: %s\n' "$*" >&2; }

# _cp_fail MSG [LOG]: report MSG (and LOG's tail), stop what was started.
_cp_fail() {
  _cp_log "error: $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    _cp_log "--- last lines of $2 ---"; tail -n 30 "$2" >&2 || true
  fi
  cp_stop
}

# cp_free_ports N: N distinct free TCP ports on 127.0.0.1, one a line.
cp_free_ports() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'EOF' && return 0
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
for s in socks: print(s.getsockname()[1])
EOF
  fi
  local n=0 p seen=" "       # fallback: random high ports that `ss` shows unused
  while [ "$n" -lt "$1" ]; do
    p=$((20000 + RANDOM % 40000))
    case $seen in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then echo "$p"; seen="$seen$p "; n=$((n + 1)); fi
  done
}

# _cp_pki DIR/pki NODE_NAME: the CA and every cert/key the control plane uses.
_cp_pki() {
  local d=$1 node=$2 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  mkdir -p "$d" && chmod 0711 "$d" || return 1
  openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=ucri-e2e-ca" -keyout "$d/ca.key" -out "$d/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
  # _cp_leaf NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  _cp_leaf() {
    openssl req -new "${ec[@]}" -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" || return 1
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s' \
      "$3" "${4:+subjectAltName=$4}" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -CAserial "$d/ca.srl" -days 2 -extfile "$d/$1.ext" -out "$d/$1.crt" || return 1
    rm -f "$d/$1.csr" "$d/$1.ext"
  }
  _cp_leaf apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1" || return 1
  _cp_leaf admin "/O=system:masters/CN=admin" clientAuth || return 1
  _cp_leaf kubelet "/O=system:nodes/CN=system:node:$node" clientAuth || return 1
  _cp_leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth || return 1
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key" || return 1
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" || return 1
  chmod 0600 "$d"/*.key && chmod 0644 "$d"/*.crt "$d/sa.pub"
}

# _cp_kubeconfig FILE USER PREFIX: a kubeconfig with embedded CA and client cert/key.
_cp_kubeconfig() {
  local p=$CP_DIR/pki
  (umask 077; cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ucri-e2e
  cluster:
    server: https://127.0.0.1:$CP_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$p/$3.crt")
    client-key-data: $(base64 -w0 "$p/$3.key")
contexts:
- name: ucri-e2e
  context: {cluster: ucri-e2e, user: $2}
current-context: ucri-e2e
EOF
  )
}

# _cp_wait SECONDS PID LOG WHAT CMD...: poll CMD once a second until it succeeds;
# fail early if PID dies.
_cp_wait() {
  local secs=$1 pid=$2 log=$3 what=$4 i; shift 4
  for ((i = 0; i < secs; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { _cp_fail "$what: process $pid exited" "$log"; return 1; }
    sleep 1
  done
  _cp_fail "$what: not ready after ${secs}s" "$log"; return 1
}

cp_kubectl() { "$CP_TOOLS/kubectl" --kubeconfig "$CP_KUBECONFIG" "$@"; }

cp_start() {
  local tools=${1:?cp_start TOOLS DIR NODE_NAME OWNER} dir=${2:?DIR} node=${3:?NODE_NAME} owner=${4:?OWNER}
  local b ports peer curl_admin t0=$SECONDS
  for b in etcd kube-apiserver kubectl; do
    [ -x "$tools/$b" ] || { _cp_log "error: $tools/$b: missing or not executable"; return 1; }
  done
  id -u "$owner" >/dev/null 2>&1 || { _cp_log "error: OWNER $owner: no such user"; return 1; }
  [ -z "${CP_ETCD_PID:-}${CP_APISERVER_PID:-}" ] ||
    { _cp_log "error: a control plane is already started here (CP_DIR=${CP_DIR:-}); cp_stop first"; return 1; }
  mkdir -p "$dir" && chmod 0711 "$dir" || { _cp_log "error: cannot create $dir"; return 1; }
  export CP_DIR CP_TOOLS CP_KUBECONFIG CP_KUBELET_KUBECONFIG CP_APISERVER_PORT CP_ETCD_PORT
  CP_DIR=$(cd "$dir" && pwd) CP_TOOLS=$(cd "$tools" && pwd)
  CP_KUBECONFIG=$CP_DIR/admin.kubeconfig CP_KUBELET_KUBECONFIG=$CP_DIR/kubelet.kubeconfig
  export -f cp_kubectl
  local p=$CP_DIR/pki
  _cp_pki "$p" "$node" >"$CP_DIR/openssl.log" 2>&1 || { _cp_fail "making certificates in $p" "$CP_DIR/openssl.log"; return 1; }

  ports=$(cp_free_ports 3) || { _cp_fail "finding free ports"; return 1; }
  { read -r CP_ETCD_PORT; read -r peer; read -r CP_APISERVER_PORT; } <<<"$ports"

  # Kubeconfigs first: a DIR that OWNER cannot reach fails before anything runs.
  _cp_kubeconfig "$CP_KUBECONFIG" admin admin || { _cp_fail "writing $CP_KUBECONFIG"; return 1; }
  _cp_kubeconfig "$CP_KUBELET_KUBECONFIG" "system:node:$node" kubelet || { _cp_fail "writing $CP_KUBELET_KUBECONFIG"; return 1; }
  if [ "$(id -un)" != "$owner" ]; then
    chown "$owner:" "$CP_KUBELET_KUBECONFIG" "$p/kubelet.crt" "$p/kubelet.key" ||
      { _cp_fail "chown of the kubelet kubeconfig/cert/key to $owner"; return 1; }
    if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1 &&
       ! runuser -u "$owner" -- test -r "$CP_KUBELET_KUBECONFIG" -a -r "$p/ca.crt" -a -r "$p/kubelet.key"; then
      _cp_fail "$owner cannot read $CP_KUBELET_KUBECONFIG (is every parent of $CP_DIR traversable?)"; return 1
    fi
  fi

  # etcd: loopback only, no fsync (throw-away data).
  mkdir -p "$CP_DIR/etcd" && chmod 0700 "$CP_DIR/etcd" || { _cp_fail "creating $CP_DIR/etcd"; return 1; }
  local eu=http://127.0.0.1:$CP_ETCD_PORT pu=http://127.0.0.1:$peer
  "$CP_TOOLS/etcd" --name default --data-dir "$CP_DIR/etcd/data" \
    --listen-client-urls "$eu" --advertise-client-urls "$eu" \
    --listen-peer-urls "$pu" --initial-advertise-peer-urls "$pu" --initial-cluster "default=$pu" \
    --unsafe-no-fsync --snapshot-count 10000 \
    </dev/null >"$CP_DIR/etcd.log" 2>&1 &
  export CP_ETCD_PID=$!
  _cp_wait 60 "$CP_ETCD_PID" "$CP_DIR/etcd.log" "etcd on $eu" \
    sh -c "curl -fsS --max-time 2 $eu/health | grep -q '\"health\":\"true\"'" || return 1

  # kube-apiserver: secure port on loopback; the kubelet's serving cert is
  # self-signed, so no --kubelet-certificate-authority.
  # shellcheck disable=SC2086  # CP_APISERVER_EXTRA_ARGS is word-split on purpose
  "$CP_TOOLS/kube-apiserver" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$CP_APISERVER_PORT" --etcd-servers="$eu" \
    --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=Node,RBAC \
    --client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc --api-audiences=https://kubernetes.default.svc \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --allow-privileged=true --enable-priority-and-fairness=false --profiling=false \
    ${CP_APISERVER_EXTRA_ARGS:-} </dev/null >"$CP_DIR/apiserver.log" 2>&1 &
  export CP_APISERVER_PID=$!
  curl_admin=(curl -fsS --max-time 5 --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key")
  _cp_wait 90 "$CP_APISERVER_PID" "$CP_DIR/apiserver.log" "kube-apiserver on 127.0.0.1:$CP_APISERVER_PORT /readyz" \
    "${curl_admin[@]}" "https://127.0.0.1:$CP_APISERVER_PORT/readyz" || return 1

  # What kube-controller-manager would create: default/default ServiceAccount and
  # the kube-root-ca.crt ConfigMap (projected service-account volumes need it).
  local klog=$CP_DIR/kubectl.log
  _cp_wait 30 "$CP_APISERVER_PID" "$CP_DIR/apiserver.log" "namespace default" cp_kubectl get namespace default || return 1
  {
    cp_kubectl -n default create serviceaccount default --dry-run=client -o yaml | cp_kubectl apply -f - &&
    cp_kubectl -n default create configmap kube-root-ca.crt --from-file=ca.crt="$p/ca.crt" --dry-run=client -o yaml |
      cp_kubectl apply -f - &&
    # This kube-apiserver is built from the openshift/kubernetes tree: its
    # service-account admission projects openshift-service-ca.crt too, which
    # OpenShift's service-ca operator would publish.
    cp_kubectl -n default create configmap openshift-service-ca.crt --from-file=service-ca.crt="$p/ca.crt" \
      --dry-run=client -o yaml | cp_kubectl apply -f -
  } >"$klog" 2>&1 || { _cp_fail "creating ServiceAccount default / ConfigMap kube-root-ca.crt" "$klog"; return 1; }
  _cp_log "up in $((SECONDS - t0))s: apiserver https://127.0.0.1:$CP_APISERVER_PORT (pid $CP_APISERVER_PID), etcd $eu (pid $CP_ETCD_PID), dir $CP_DIR"
}

# _cp_kill PID NAME: TERM, up to 20 s, then KILL; only if PID still runs NAME.
_cp_kill() {
  local pid=$1 name=$2 i
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
    sleep 0.5
  done
  if [ "$i" -ge 40 ]; then
    _cp_log "$name (pid $pid) ignored SIGTERM for 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
  fi
  wait "$pid" 2>/dev/null || true
}

# cp_stop: kube-apiserver, then etcd. Idempotent, never fails.
cp_stop() {
  _cp_kill "${CP_APISERVER_PID:-}" kube-apiserver
  CP_APISERVER_PID=
  _cp_kill "${CP_ETCD_PID:-}" etcd
  CP_ETCD_PID=
  return 0
}

# selftest TOOLS_DIR: start, probe (as admin and as OWNER via the kubelet kubeconfig), stop.
_cp_selftest() {
  set -euo pipefail
  local tools=${1:?selftest TOOLS_DIR} owner=nobody dir e a
  id ucri-test >/dev/null 2>&1 && owner=ucri-test
  dir=$(mktemp -d /tmp/ucri-cp.XXXXXX) && _CP_SELFTEST_DIR=$dir
  trap 'cp_stop; rm -rf "$_CP_SELFTEST_DIR"' EXIT
  trap '_cp_log "selftest failed at line $LINENO: $BASH_COMMAND"' ERR
  cp_start "$tools" "$dir" selftest-node "$owner"
  cp_kubectl get --raw /readyz; echo
  cp_kubectl -n default get serviceaccount default
  cp_kubectl -n default get configmap kube-root-ca.crt -o jsonpath='{.data.ca\.crt}' | cmp - "$CP_DIR/pki/ca.crt"
  [ "$(cp_kubectl auth can-i '*' '*')" = yes ]
  local k=("$CP_TOOLS/kubectl" --kubeconfig "$CP_KUBELET_KUBECONFIG" --cache-dir "$dir/cache-$owner")
  runuser -u "$owner" -- "${k[@]}" get --raw /api; echo
  runuser -u "$owner" -- "${k[@]}" auth whoami
  # Node authorizer: its own Node object only, no listing of secrets.
  [ "$(runuser -u "$owner" -- "${k[@]}" auth can-i get node/selftest-node 2>/dev/null)" = yes ]
  [[ "$(runuser -u "$owner" -- "${k[@]}" auth can-i get node/other-node 2>/dev/null || true)" = "no - "* ]]
  [[ "$(runuser -u "$owner" -- "${k[@]}" auth can-i list secrets -A || true)" = "no - "* ]]
  e=$CP_ETCD_PID a=$CP_APISERVER_PID
  cp_stop; cp_stop
  ! kill -0 "$e" 2>/dev/null && ! kill -0 "$a" 2>/dev/null || { _cp_log "error: etcd/apiserver still running"; return 1; }
  [ -z "$(ss -Htln "( sport = :$CP_APISERVER_PORT or sport = :$CP_ETCD_PORT )")" ] || { _cp_log "error: ports still listening"; return 1; }
  _cp_log "selftest passed (OWNER $owner)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case ${1:-} in
    selftest) shift; _cp_selftest "$@" ;;
    *) echo "usage: bash ${0##*/} selftest TOOLS_DIR   (or source it and call cp_start/cp_stop)" >&2; exit 2 ;;
  esac
fi
