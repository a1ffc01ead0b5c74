#!/usr/bin/env bash
# The end-to-end checks, sourced by packaging/e2e.sh once kubelet runs.
# Each check_NAME function drives the node with kubectl and returns non-zero
# (after saying why) when the node misbehaves. run_checks runs them in order
# and ends with "e2e: N passed, N failed".

K() { cp_kubectl "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every second.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kubelet_alive || return 1
    sleep 1
  done
  log "timed out after ${seconds}s waiting for $what"
  return 1
}

kubelet_alive() {
  [ -z "${KUBELET:-}" ] || kill -0 "$KUBELET" 2>/dev/null && return 0
  log "kubelet exited; the end of its log:"
  tail -n 20 "$OUT/kubelet.log" >&2
  return 1
}

# pod_field POD JSONPATH
pod_field() { K get pod "$1" -o "jsonpath=$2" 2>/dev/null; }

phase_is() { [ "$(pod_field "$1" '{.status.phase}')" = "$2" ]; }
ready() { [ "$(pod_field "$1" '{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

# wait_phase POD PHASE [SECONDS]
wait_phase() {
  wait_for "${3:-60}" "pod $1 to be $2" phase_is "$1" "$2" || { describe_pod "$1"; return 1; }
}

wait_ready() {
  wait_for "${2:-60}" "pod $1 to be Ready" ready "$1" || { describe_pod "$1"; return 1; }
}

describe_pod() { K describe pod "$1" 2>&1 | tail -n 30 >&2 || true; }

# apply: a manifest on stdin; pods get the node and this stage's image.
apply() { K apply -f - >/dev/null; }

# delete_pod POD [GRACE]: deletes and waits until it is gone.
delete_pod() {
  K delete pod "$1" --grace-period="${2:-1}" --wait=true --timeout=90s >/dev/null
}

BUSYBOX=registry.k8s.io/e2e-test-images/busybox:1.29-2

# pod_yaml NAME COMMAND [EXTRA_SPEC] [EXTRA_CONTAINER]: a one-container busybox pod.
pod_yaml() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  nodeName: $NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
${3:-}
  containers:
  - name: main
    image: $BUSYBOX
    command: ["sh", "-c", $(printf '%s' "$2" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')]
${4:-}
EOF
}

node_ready() {
  [ "$(K get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# logs_show POD LINE [ARGS]: the pod's log has LINE.
logs_show() { K logs "$1" ${3:-} | grep -qx "$2"; }

check_node_ready() {
  wait_for 120 "node $NODE to register" K get node "$NODE" || return 1
  wait_for 120 "node $NODE to be Ready" node_ready || {
    K describe node "$NODE" >&2 || true
    return 1
  }
  local ip
  ip=$(K get node "$NODE" -o 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}')
  [ -n "$ip" ] || { log "the node reports no InternalIP"; return 1; }
  case $ip in 10.0.2.*) log "InternalIP $ip is the uplink's, unreachable from the host"; return 1 ;; esac
  log "node Ready, InternalIP $ip"
}

check_pod_runs_and_logs() {
  pod_yaml hello 'echo hello from ucri; sleep 3600' | apply
  wait_phase hello Running 90 || return 1
  wait_for 20 "the log of hello" logs_show hello 'hello from ucri'
}

# Every check, in order (later ones use what earlier ones started).
CHECKS=(
  node_ready
  pod_runs_and_logs
)

run_checks() {
  local focus=$1 passed=0 failed=0 name started
  for name in "${CHECKS[@]}"; do
    if [ -n "$focus" ] && ! [[ $name =~ $focus ]]; then continue; fi
    started=$(date +%s)
    if ( set -e; "check_$name" ); then
      passed=$((passed + 1))
      log "PASS $name ($(($(date +%s) - started))s)"
    else
      failed=$((failed + 1))
      log "FAIL $name ($(($(date +%s) - started))s)"
    fi
  done
  echo "e2e: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
