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
  local pid
  pid=$(cat "$WORK/kubelet.pid" 2>/dev/null || true)
  [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null && return 0
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

# ---- exec, attach, port-forward through the API server -------------------

check_exec_attach_port_forward() {
  pod_yaml streams 'mkdir -p /www && echo served-by-httpd > /www/index.html && httpd -p 8080 -h /www; while read line; do echo "got:$line"; done' \
    '' '    stdin: true' | apply
  wait_phase streams Running 60 || return 1
  local out status
  out=$(K exec streams -- sh -c 'echo out; echo err >&2; exit 7' 2>&1) && status=0 || status=$?
  [ "$status" -eq 7 ] || { log "kubectl exec exit status $status, not 7: $out"; return 1; }
  echo "$out" | grep -qx out && echo "$out" | grep -qx err || { log "exec output: $out"; return 1; }
  # -it through a pseudo-terminal (script gives kubectl one).
  out=$(timeout 60 python3 packaging/e2e/in-pty.py "$CP_TOOLS/kubectl" --kubeconfig "$CP_KUBECONFIG" \
    exec -it streams -- sh -c 'tty; exit 3') && status=0 || status=$?
  [ "$status" -eq 3 ] || { log "kubectl exec -it exit status $status, not 3: $out"; return 1; }
  echo "$out" | grep -q '^/dev/pts/' || { log "exec -it had no terminal: $out"; return 1; }
  out=$( (echo attached-line; sleep 3) | timeout 15 "$CP_TOOLS/kubectl" --kubeconfig "$CP_KUBECONFIG" attach -i streams -c main 2>&1 || true)
  echo "$out" | grep -qx 'got:attached-line' || { log "attach output: $out"; return 1; }
  local port pf
  port=$(free_port)
  "$CP_TOOLS/kubectl" --kubeconfig "$CP_KUBECONFIG" port-forward pod/streams "$port:8080" >"$WORK/pf.log" 2>&1 &
  pf=$!
  wait_for 20 "port-forward to listen" curl -fsS "http://127.0.0.1:$port/"
  out=$(curl -fsS "http://127.0.0.1:$port/" || true)
  kill "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
  [ "$out" = served-by-httpd ] || { log "port-forward answered: $out"; cat "$WORK/pf.log" >&2; return 1; }
}

# ---- restart policies ------------------------------------------------------

restart_count() { pod_field "$1" '{.status.containerStatuses[0].restartCount}'; }
waiting_reason_is() { [ "$(pod_field "$1" '{.status.containerStatuses[0].state.waiting.reason}')" = "$2" ]; }
restarted() { [ "$(restart_count "$1")" -ge "$2" ] 2>/dev/null; }

check_restart_policies() {
  pod_yaml never-fails 'exit 3' '  restartPolicy: Never' | apply
  pod_yaml onfailure-ok 'exit 0' '  restartPolicy: OnFailure' | apply
  pod_yaml onfailure-fails 'sleep 1; exit 1' '  restartPolicy: OnFailure' | apply
  pod_yaml always-crashes 'exit 1' '  restartPolicy: Always' | apply
  wait_phase never-fails Failed 60 || return 1
  local code
  code=$(pod_field never-fails '{.status.containerStatuses[0].state.terminated.exitCode}')
  [ "$code" = 3 ] || { log "never-fails exit code $code, not 3"; return 1; }
  [ "$(restart_count never-fails)" = 0 ] || { log "a Never pod restarted"; return 1; }
  wait_phase onfailure-ok Succeeded 60 || return 1
  wait_for 60 "onfailure-fails to restart" restarted onfailure-fails 1 || { describe_pod onfailure-fails; return 1; }
  wait_for 90 "always-crashes to be in CrashLoopBackOff" waiting_reason_is always-crashes CrashLoopBackOff \
    || { describe_pod always-crashes; return 1; }
  code=$(pod_field always-crashes '{.status.containerStatuses[0].lastState.terminated.exitCode}')
  [ "$code" = 1 ] || { log "always-crashes last exit code $code, not 1"; return 1; }
  for p in never-fails onfailure-ok onfailure-fails always-crashes; do delete_pod "$p"; done
}

# ---- probes ----------------------------------------------------------------

WEB='mkdir -p /www && echo ok > /www/index.html && touch /tmp/started && exec httpd -f -p 8080 -h /www'

probes_yaml() { # NAME HOST_NETWORK PORT
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  nodeName: $NODE
  hostNetwork: $2
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: $BUSYBOX
    command: ["sh", "-c", "${WEB//8080/$3}"]
    ports: [{containerPort: $3}]
    startupProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 30}
    readinessProbe: {httpGet: {path: /, port: $3}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: $3}, periodSeconds: 2}
EOF
}

check_probes() {
  probes_yaml probed false 8080 | apply
  local host_port
  host_port=$(free_port)
  probes_yaml probed-hostnet true "$host_port" | apply
  cat <<EOF | apply
apiVersion: v1
kind: Pod
metadata: {name: failing-probes}
spec:
  nodeName: $NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX
    command: ["sh", "-c", "$WEB"]
    readinessProbe: {httpGet: {path: /, port: 9999}, periodSeconds: 1}
    livenessProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 2}
EOF
  wait_ready probed 60 || return 1
  wait_ready probed-hostnet 60 || return 1
  local ip
  ip=$(pod_field probed-hostnet '{.status.podIP}')
  [ "$ip" = "$(K get node "$NODE" -o 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}')" ] \
    || { log "host-network pod IP $ip is not the node's"; return 1; }
  wait_for 60 "the failing liveness probe to restart the container" restarted failing-probes 1 \
    || { describe_pod failing-probes; return 1; }
  ! ready failing-probes || { log "a pod whose readiness probe fails is Ready"; return 1; }
  wait_for 30 "a 'Readiness probe failed' event" probe_event failing-probes 'Readiness probe failed' || return 1
  # Still Ready (no restart) after some probe rounds.
  sleep 5
  ready probed && ready probed-hostnet || { log "a healthy pod lost readiness"; return 1; }
  [ "$(restart_count probed)" = 0 ] && [ "$(restart_count probed-hostnet)" = 0 ] \
    || { log "a healthy pod was restarted by its liveness probe"; return 1; }
  for p in probed probed-hostnet failing-probes; do delete_pod "$p"; done
}

probe_event() { K get events --field-selector "involvedObject.name=$1" -o 'jsonpath={.items[*].message}' | grep -q "$2"; }

# ---- volumes ---------------------------------------------------------------

exec_out() { K exec "$1" -- sh -c "$2"; }
file_shows() { [ "$(exec_out "$1" "cat $2")" = "$3" ]; }

check_volumes() {
  K create configmap e2e-config --from-literal=greeting=hello-configmap >/dev/null
  K create secret generic e2e-secret --from-literal=password=first-secret >/dev/null
  rm -rf /tmp/ucri-e2e-hostpath
  cat <<EOF | apply
apiVersion: v1
kind: Pod
metadata: {name: volumes}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX
    command: ["sh", "-c", "echo from-the-pod > /host/file; sleep 3600"]
    volumeMounts:
    - {name: disk, mountPath: /disk}
    - {name: memory, mountPath: /memory}
    - {name: host, mountPath: /host}
    - {name: config, mountPath: /config}
    - {name: secret, mountPath: /secret}
  volumes:
  - {name: disk, emptyDir: {}}
  - {name: memory, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - {name: host, hostPath: {path: /tmp/ucri-e2e-hostpath, type: DirectoryOrCreate}}
  - {name: config, configMap: {name: e2e-config}}
  - {name: secret, secret: {secretName: e2e-secret}}
EOF
  wait_phase volumes Running 90 || return 1
  exec_out volumes 'echo x > /disk/f && echo y > /memory/f' || { log "emptyDirs are not writable"; return 1; }
  exec_out volumes 'grep " /memory " /proc/mounts' | grep -q tmpfs || { log "the memory emptyDir is no tmpfs"; return 1; }
  file_shows volumes /config/greeting hello-configmap || { log "configMap volume content"; return 1; }
  file_shows volumes /secret/password first-secret || { log "secret volume content"; return 1; }
  exec_out volumes 'grep " /secret " /proc/mounts' | grep -q tmpfs || { log "the secret volume is no tmpfs"; return 1; }
  wait_for 10 "the hostPath file on the node" test -f /tmp/ucri-e2e-hostpath/file || return 1
  [ "$(cat /tmp/ucri-e2e-hostpath/file)" = from-the-pod ] || { log "hostPath content"; return 1; }
  # The service-account token (projected: token, ca.crt, namespace).
  local token
  token=$(exec_out volumes 'cat /var/run/secrets/kubernetes.io/serviceaccount/token') \
    || { log "no projected service-account token"; return 1; }
  [ "$(printf '%s' "$token" | tr -cd . | wc -c)" = 2 ] || { log "the token is no JWT: $token"; return 1; }
  exec_out volumes 'cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt' | cmp -s - "$CP_DIR/pki/ca.crt" \
    || { log "the projected ca.crt is not the cluster's"; return 1; }
  file_shows volumes /var/run/secrets/kubernetes.io/serviceaccount/namespace default || { log "projected namespace"; return 1; }
  # A secret update reaches the running container.
  K create secret generic e2e-secret --from-literal=password=second-secret --dry-run=client -o yaml | K apply -f - >/dev/null
  wait_for 120 "the updated secret in the container" file_shows volumes /secret/password second-secret || return 1
  # Kept for the restart check.
}

# ---- graceful deletion -----------------------------------------------------

check_graceful_deletion() {
  pod_yaml polite 'trap "echo bye; exit 0" TERM; while :; do sleep 0.2; done' '  terminationGracePeriodSeconds: 30' | apply
  pod_yaml stubborn 'trap "" TERM; while :; do sleep 0.2; done' '  terminationGracePeriodSeconds: 30' | apply
  wait_phase polite Running 60 && wait_phase stubborn Running 60 || return 1
  local t0 took
  t0=$(date +%s)
  delete_pod polite 20
  took=$(($(date +%s) - t0))
  [ "$took" -le 10 ] || { log "a pod that exits on SIGTERM took ${took}s to delete"; return 1; }
  t0=$(date +%s)
  delete_pod stubborn 4
  took=$(($(date +%s) - t0))
  [ "$took" -ge 4 ] && [ "$took" -le 20 ] \
    || { log "a pod ignoring SIGTERM with a 4s grace period took ${took}s to delete"; return 1; }
}

# ---- hostPort --------------------------------------------------------------

check_host_port() {
  local port
  port=$(free_port)
  pod_yaml hostport "$WEB" '' "    ports: [{containerPort: 8080, hostPort: $port}]" | apply
  wait_phase hostport Running 60 || return 1
  wait_for 30 "hostPort $port on 127.0.0.1" curl -fsS "http://127.0.0.1:$port/" || return 1
  delete_pod hostport
  ! curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 || { log "the hostPort stayed open"; return 1; }
}

# ---- resources: limits and OOMKilled (needs a delegated subtree) -----------

# cgroup_value CONTAINER_ID FILE...: the first FILE found in the container's cgroup on the node.
cgroup_value() {
  local id=$1 file
  shift
  file=$(for f in "$@"; do find /sys/fs/cgroup -maxdepth 7 -path "*/$id/$f" 2>/dev/null; done | head -n 1)
  [ -n "$file" ] && cat "$file"
}

check_limits_and_oom() {
  K get node "$NODE" >/dev/null
  "${AS[@]}" "$WORK/ucri" ctl info 2>/dev/null | grep -q CgroupsNotDelegated \
    && { log "the test user has no delegated cgroup subtree (setup-host.sh --delegate-cgroups)"; return 1; }
  pod_yaml limited 'sleep 3600' '' '    resources: {limits: {cpu: 200m, memory: 64Mi}}' | apply
  # tail buffers /dev/zero looking for a newline: the memory limit ends it
  # (ulimit -v bounds it should the limit not apply).
  pod_yaml oom 'ulimit -v 524288; tail /dev/zero' '  restartPolicy: Never' \
    '    resources: {limits: {memory: 32Mi}}' | apply
  wait_phase limited Running 60 || return 1
  # The limits as the node's cgroups hold them (v1: cpu and memory hierarchies; v2: one dir).
  local id quota limit
  id=$(pod_field limited '{.status.containerStatuses[0].containerID}')
  id=${id#*://}
  quota=$(cgroup_value "$id" cpu.cfs_quota_us cpu.max | cut -d' ' -f1)
  [ "$quota" = 20000 ] || { log "CPU quota of container $id: ${quota:-none}, not 20000"; return 1; }
  limit=$(cgroup_value "$id" memory.limit_in_bytes memory.max)
  [ "$limit" = $((64 << 20)) ] || { log "memory limit of the container: $limit"; return 1; }
  wait_phase oom Failed 60 || return 1
  local reason
  reason=$(pod_field oom '{.status.containerStatuses[0].state.terminated.reason}')
  [ "$reason" = OOMKilled ] || { log "the memory hog ended with $reason, not OOMKilled"; return 1; }
  delete_pod limited
  delete_pod oom
}

# ---- /stats/summary ----------------------------------------------------------

check_stats_summary() {
  pod_yaml stats-busy 'while :; do :; done' '' '    resources: {limits: {cpu: 100m}}' | apply
  wait_phase stats-busy Running 60 || return 1
  sleep 12 # two stats rounds
  K get --raw "/api/v1/nodes/$NODE/proxy/stats/summary" >"$OUT/stats-summary.json" || return 1
  python3 - "$OUT/stats-summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
pods = {p["podRef"]["name"]: p for p in s["pods"]}
p = pods.get("stats-busy")
assert p, f"no stats-busy in {sorted(pods)}"
assert p["cpu"]["usageCoreNanoSeconds"] > 0, p["cpu"]
assert p["memory"]["workingSetBytes"] > 0, p["memory"]
assert "rxBytes" in p.get("network", {}), p.get("network")
c = p["containers"][0]
assert c["cpu"]["usageCoreNanoSeconds"] > 0 and c["memory"]["workingSetBytes"] > 0, c
assert s["node"]["cpu"]["usageCoreNanoSeconds"] > 0, s["node"]["cpu"]
PY
  delete_pod stats-busy
}

# ---- static pods -------------------------------------------------------------

check_static_pod() {
  pod_yaml static-web "$WEB" | sed "/nodeName:/d" >"$WORK/static-web.yaml"
  chmod 0644 "$WORK/static-web.yaml"
  "${AS[@]}" "$WORK/ucri" nsenter -- sh -c "mkdir -p /etc/kubernetes/manifests && cp $WORK/static-web.yaml /etc/kubernetes/manifests/"
  wait_phase "static-web-$NODE" Running 90 || return 1
}

# ---- restarts of ucri and kubelet, then every pod deleted cleanly ----------

# The long-running pods' containers (pods that restart by design left out).
container_ids() {
  K get pods -o 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID}{"\n"}{end}' \
    | grep -E "^(hello|streams|volumes|survivor|static-web-$NODE) " | sort
}

check_restarts_then_clean_deletion() {
  pod_yaml survivor 'sleep 3600' | apply
  wait_phase survivor Running 60 || return 1
  local before after
  before=$(container_ids)
  log "restarting ucri"
  restart_daemon
  sleep 5
  log "restarting kubelet"
  stop_kubelet
  start_kubelet
  wait_for 90 "node $NODE to be Ready again" node_ready || return 1
  sleep 10
  after=$(container_ids)
  [ "$before" = "$after" ] || { log "containers changed across the restarts:"; diff <(echo "$before") <(echo "$after") >&2; return 1; }
  [ "$(echo "$before" | wc -l)" -ge 2 ] || { log "too few pods to judge the restarts: $before"; return 1; }
  # The secret update still reaches a volume kubelet mounted before the restarts.
  if K get pod volumes >/dev/null 2>&1; then
    K create secret generic e2e-secret --from-literal=password=third-secret --dry-run=client -o yaml | K apply -f - >/dev/null
    wait_for 120 "the secret update after the restarts" file_shows volumes /secret/password third-secret || return 1
  fi
  "${AS[@]}" "$WORK/ucri" nsenter -- rm -f /etc/kubernetes/manifests/static-web.yaml
  K delete pods --all --grace-period=2 --wait=true --timeout=120s >/dev/null \
    || { log "pods were not deleted"; K get pods >&2; grep -E 'TearDown failed|device or resource busy' "$OUT/kubelet.log" | tail -5 >&2; return 1; }
  wait_for 60 "the static pod's containers to go" static_gone || return 1
  wait_for 60 "kubelet's pod directories to go" pod_dirs_gone || return 1
}

static_gone() { [ -z "$("${AS[@]}" "$WORK/ucri" ctl ps -q 2>/dev/null)" ]; }
pod_dirs_gone() { [ -z "$("${AS[@]}" "$WORK/ucri" nsenter -- ls /var/lib/kubelet/pods 2>/dev/null)" ]; }

# ---- 30 pods at once ---------------------------------------------------------

PODS_AT_ONCE=${E2E_PODS:-30}

all_running() {
  [ "$(K get pods -l e2e=burst -o 'jsonpath={range .items[*]}{.status.phase}{"\n"}{end}' | grep -cx Running)" -eq "$PODS_AT_ONCE" ]
}

check_pods_at_once() {
  local i t0 took
  # The image is there first: the figure is pod start-up, not pulls (which
  # kubelet also throttles, registryPullQPS).
  "${AS[@]}" "$WORK/ucri" ctl pull "$BUSYBOX" >/dev/null
  for i in $(seq "$PODS_AT_ONCE"); do
    pod_yaml "burst-$i" 'sleep 3600' | sed "s/metadata: {name: burst-$i}/metadata: {name: burst-$i, labels: {e2e: burst}}/"
    echo ---
  done >"$WORK/burst.yaml"
  t0=$(date +%s.%N)
  K apply -f "$WORK/burst.yaml" >/dev/null
  wait_for 240 "$PODS_AT_ONCE pods to be Running" all_running || { K get pods -l e2e=burst >&2; return 1; }
  took=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$t0")
  K get --raw "/api/v1/nodes/$NODE/proxy/metrics" >"$OUT/kubelet-metrics.txt"
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$OUT/ucri-metrics.txt" || true
  python3 - "$OUT/kubelet.log" "$PODS_AT_ONCE" "$took" <<'PY' | tee "$OUT/pod-start.md" >&2
# kubelet logs each pod's kubelet_pod_start_sli_duration_seconds sample
# ("Observed pod startup duration", podStartSLOduration: creation to Running
# as kubelet's watch sees it, image pulls excluded).
import re, statistics, sys
log, n, took = open(sys.argv[1], errors="replace").read(), int(sys.argv[2]), float(sys.argv[3])
sli = {}
for pod, value in re.findall(r'"Observed pod startup duration" pod="default/(burst-\d+)" podStartSLOduration=([0-9.]+)', log):
    sli[pod] = float(value)
# kubelet logs a pod only when its tracker saw the whole start (one of 30
# is sometimes missed); the figures say of how many.
assert len(sli) >= n * 0.8, f"kubelet logged the start-up of only {len(sli)} of the {n} pods"
v = sorted(sli.values())
pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]
print(f"{n} pods created at once (kubectl apply), all Running after {took:.1f} s")
print(f"pod start SLI (kubelet_pod_start_sli_duration_seconds) of the {len(v)} kubelet logged: "
      f"mean {statistics.mean(v):.2f} s, p50 {pick(0.5):.2f} s, p90 {pick(0.9):.2f} s, max {v[-1]:.2f} s")
PY
  K delete pods -l e2e=burst --grace-period=1 --wait=true --timeout=180s >/dev/null \
    || { stuck_pods_report e2e=burst; return 1; }
}

# stuck_pods_report SELECTOR: what kubelet and ucri say of pods that did not go.
stuck_pods_report() {
  log "pods still there after deletion:"
  K get pods -l "$1" -o wide >&2 || true
  K get pods -l "$1" -o yaml >"$OUT/stuck-pods.yaml" 2>&1 || true
  "${AS[@]}" "$WORK/ucri" ctl pods >&2 || true
  "${AS[@]}" "$WORK/ucri" ctl ps -a >&2 || true
  log "details in $OUT/stuck-pods.yaml and $OUT/kubelet.log"
}

# ---- standalone: static pods without an API server (last: it replaces kubelet) ----

# ucri_ready_pod NAME: the id of the ready pod sandbox NAME, from ucri's side.
ucri_ready_pod() {
  "${AS[@]}" "$WORK/ucri" ctl pods -o json | python3 -c '
import json, sys
items = json.load(sys.stdin).get("items") or []
print("\n".join(p["id"] for p in items if p["metadata"]["name"] == sys.argv[1] and p.get("state", 0) == 0))' "$1"
}

alone_running() {
  local id
  id=$(ucri_ready_pod "alone-$NODE")
  [ -n "$id" ] && [ -n "$("${AS[@]}" "$WORK/ucri" ctl ps -q --pod "$id")" ]
}

alone_stopped() { [ -z "$(ucri_ready_pod "alone-$NODE")" ]; }

check_standalone_static_pod() {
  stop_kubelet
  start_kubelet standalone
  pod_yaml alone 'echo standalone; sleep 3600' | sed "/nodeName:/d" >"$WORK/alone.yaml"
  chmod 0644 "$WORK/alone.yaml"
  "${AS[@]}" "$WORK/ucri" nsenter -- sh -c "mkdir -p /etc/kubernetes/manifests && cp $WORK/alone.yaml /etc/kubernetes/manifests/"
  wait_for 90 "the standalone kubelet's static pod to run" alone_running \
    || { "${AS[@]}" "$WORK/ucri" ctl pods >&2; return 1; }
  "${AS[@]}" "$WORK/ucri" nsenter -- rm -f /etc/kubernetes/manifests/alone.yaml
  wait_for 60 "the static pod to stop once its manifest is gone" alone_stopped || return 1
  stop_kubelet
}

# Every check, in order (later ones use what earlier ones started).
CHECKS=(
  node_ready
  pod_runs_and_logs
  exec_attach_port_forward
  restart_policies
  probes
  volumes
  graceful_deletion
  host_port
  limits_and_oom
  stats_summary
  static_pod
  restarts_then_clean_deletion
  pods_at_once
  standalone_static_pod
)

run_checks() {
  local focus=$1 passed=0 failed=0 name started
  for name in "${CHECKS[@]}"; do
    if [ -n "$focus" ] && ! [[ $name =~ $focus ]]; then continue; fi
    started=$(date +%s)
    # Not in an `if`: there bash ignores errexit, even in a subshell, and a
    # failed assertion inside a check would pass unseen.
    set +e
    (
      set -e
      "check_$name"
    )
    local status=$?
    set -e
    if [ "$status" -eq 0 ]; then
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
