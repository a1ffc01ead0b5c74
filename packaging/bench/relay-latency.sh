#!/usr/bin/env bash
# Request/reply latency through ucri's TCP relays, all in one run: 64-byte
# exchanges on one connection (packaging/bench/rtt.py, N each), through
#   the hostPort forwarder: host 127.0.0.1:HOSTPORT -> a pod's echo server;
#   the node's host-loopback relay ([node] host_loopback_ports): the node
#     namespace's 127.0.0.1:PORT -> the host's echo server (how kubelet
#     reaches an API server on the host);
#   reference: host -> host over loopback, no relay.
# Throughput hides what this shows: a relay that holds short writes back.
#
#   packaging/bench/relay-latency.sh [N]     (default 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
cargo build --release --locked -q
. packaging/bench/lib.sh
bench_init target/release/ucri
install -m 0755 packaging/bench/rtt.py "$WORK/"

HOST_ECHO=$(free_port)
HOST_PORT=$(free_port)
python3 "$WORK/rtt.py" serve "$HOST_ECHO" &
ECHO=$!
trap 'kill $ECHO ${POD_ECHO:-} 2>/dev/null || true; bench_cleanup' EXIT
mkdir -p "$WORK/home/.config/ucri"
printf '[node]\nhost_loopback_ports = [%s]\n' "$HOST_ECHO" >"$WORK/home/.config/ucri/ucri.toml"
[ "$(id -u)" -ne 0 ] || chown -R ucri-test: "$WORK/home/.config"
bench_daemon

ucri() { "${AS[@]}" "$WORK/ucri" "$@"; }
cat >"$WORK/pod.json" <<JSON
{"metadata": {"name": "rtt", "namespace": "bench", "uid": "rtt"},
 "port_mappings": [{"protocol": 0, "container_port": 7000, "host_port": $HOST_PORT}]}
JSON
chmod 0644 "$WORK/pod.json"
POD=$(ucri ctl runp "$WORK/pod.json")
ucri nsenter -- nsenter --net="$WORK/run/ucri/pods/$POD/ns/net" -- python3 "$WORK/rtt.py" serve 7000 &
POD_ECHO=$!
sleep 1

read -r HP_MEAN HP_P50 HP_P99 < <(python3 "$WORK/rtt.py" ping 127.0.0.1 "$HOST_PORT" "$N")
read -r LO_MEAN LO_P50 LO_P99 < <(ucri nsenter -- python3 "$WORK/rtt.py" ping 127.0.0.1 "$HOST_ECHO" "$N")
read -r REF_MEAN REF_P50 REF_P99 < <(python3 "$WORK/rtt.py" ping 127.0.0.1 "$HOST_ECHO" "$N")

echo "| path ($N 64-byte request/replies, one connection) | mean µs | p50 µs | p99 µs |"
echo "|---|---|---|---|"
echo "| host -> pod through the hostPort forwarder | $HP_MEAN | $HP_P50 | $HP_P99 |"
echo "| node namespace -> host loopback through the relay | $LO_MEAN | $LO_P50 | $LO_P99 |"
echo "| reference: host -> host over loopback | $REF_MEAN | $REF_P50 | $REF_P99 |"
