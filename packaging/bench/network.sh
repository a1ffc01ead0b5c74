#!/usr/bin/env bash
# Pod network throughput, one bulk TCP stream (iperf3, SECONDS s each), all in
# one run:
#   pod -> outside through slirp4netns, then through pasta (the "outside" is
#     an iperf3 server in a network namespace this script makes, joined to
#     the host by a veth pair);
#   a container -> outside through the socket bypass, and the same with the
#     bypass turned off for its pod (annotation), both TCP directions and UDP:
#     iperf3 runs inside the container (the host's binary, bind-mounted), as
#     only container processes have the seccomp listener;
#   host -> pod through ucri's hostPort forwarder (127.0.0.1:PORT, spliced
#     into a socket opened in the uplink namespace);
#   references: host -> outside directly, and host -> host over loopback.
# iperf3 runs from the host's binaries inside the pod's network namespace
# (ucri nsenter + nsenter --net), so only the network path is measured.
#
#   packaging/bench/network.sh [SECONDS]     (root: it makes the outside netns)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-5}
[ "$(id -u)" -eq 0 ] || { echo "network.sh: run as root (it creates a network namespace)" >&2; exit 1; }
command -v iperf3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null; }

cargo build --release --locked -q
. packaging/bench/lib.sh
bench_init target/release/ucri

OUT=ucri-bench-out
OUT_ADDR=10.231.0.2
net_cleanup() {
  kill "${OUT_SERVER:-0}" 2>/dev/null || true
  ip netns del "$OUT" 2>/dev/null || true
  bench_cleanup
}
trap net_cleanup EXIT
ip netns del "$OUT" 2>/dev/null || true
ip netns add "$OUT"
ip link add ubo-h type veth peer name ubo-n
ip link set ubo-n netns "$OUT"
ip addr add 10.231.0.1/30 dev ubo-h && ip link set ubo-h up
ip -n "$OUT" addr add "$OUT_ADDR/30" dev ubo-n
ip -n "$OUT" link set ubo-n up && ip -n "$OUT" link set lo up
ip netns exec "$OUT" iperf3 -s -p 5201 >/dev/null 2>&1 &
OUT_SERVER=$!
sleep 0.5

ucri() { "${AS[@]}" "$WORK/ucri" "$@"; }
gbps() { jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100'; }
in_pod() { # POD CMD... : run a host binary in the pod's network namespace
  local pod=$1; shift
  ucri nsenter -- nsenter --net="$WORK/run/ucri/pods/$pod/ns/net" -- "$@"
}

HOST_PORT=$(free_port)
pod_with_port() { # NAME
  cat >"$WORK/$1.json" <<EOF
{"metadata": {"name": "$1", "namespace": "bench", "uid": "$1"},
 "port_mappings": [{"protocol": 0, "container_port": 5201, "host_port": $HOST_PORT}]}
EOF
  chmod 0644 "$WORK/$1.json"
  ucri ctl runp "$WORK/$1.json"
}

measure_uplink() { # KIND -> "pod->outside" "host->pod" "outside->pod" (Gbit/s)
  local pod up down remote
  pod=$(pod_with_port "bench-$1")
  up=$(in_pod "$pod" iperf3 -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -J | gbps)
  in_pod "$pod" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  sleep 0.5
  down=$(iperf3 -c 127.0.0.1 -p "$HOST_PORT" -t "$SECONDS_EACH" -J | gbps)
  wait || true
  # From another machine (the outside namespace, to the host's veth
  # address): the forwarder connects from the client's own address.
  in_pod "$pod" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  sleep 0.5
  remote=$(ip netns exec "$OUT" iperf3 -c 10.231.0.1 -p "$HOST_PORT" -t "$SECONDS_EACH" -J | gbps)
  wait || true
  ucri ctl stopp "$pod" >/dev/null
  ucri ctl rmp "$pod" >/dev/null
  echo "$up $down $remote"
}

IMAGE=127.0.0.1:$PORT/bench/busybox:latest
bench_push busybox latest bench/busybox:latest
LIBS=/host/usr/lib/x86_64-linux-gnu
IPERF=("$LIBS/ld-linux-x86-64.so.2" --library-path "$LIBS" /host/usr/bin/iperf3)
udp_gbps() { jq -r '.end.sum.bits_per_second / 1e9 | . * 100 | round / 100'; }
measure_container() { # NAME BYPASS(true|false) -> "up down udp"
  local pod cid up down udp
  cat >"$WORK/$1.json" <<EOF
{"metadata": {"name": "$1", "namespace": "bench", "uid": "$1"},
 "annotations": {"ucri.io/socket-bypass": "$2"}}
EOF
  cat >"$WORK/$1-ctr.json" <<EOF
{"metadata": {"name": "iperf"}, "image": {"image": "$IMAGE"},
 "command": ["sleep", "3600"],
 "mounts": [{"container_path": "/host/usr", "host_path": "/usr", "readonly": true}]}
EOF
  chmod 0644 "$WORK/$1.json" "$WORK/$1-ctr.json"
  pod=$(ucri ctl runp "$WORK/$1.json")
  cid=$(ucri ctl create "$pod" "$WORK/$1-ctr.json" "$WORK/$1.json")
  ucri ctl start "$cid" >/dev/null
  up=$(ucri ctl exec --sync "$cid" "${IPERF[@]}" -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -J | gbps)
  down=$(ucri ctl exec --sync "$cid" "${IPERF[@]}" -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -R -J | gbps)
  udp=$(ucri ctl exec --sync "$cid" "${IPERF[@]}" -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -u -b 0 -l 1400 -J | udp_gbps)
  ucri ctl inspectp "$pod" | jq -c '.info.socketBypass' >&2
  ucri ctl stopp "$pod" >/dev/null
  ucri ctl rmp "$pod" >/dev/null
  echo "$up $down $udp"
}

bench_daemon
ucri ctl pull "$IMAGE" >/dev/null
read -r BYPASS_UP BYPASS_DOWN BYPASS_UDP < <(measure_container bench-bypass true)
read -r NOBYPASS_UP NOBYPASS_DOWN NOBYPASS_UDP < <(measure_container bench-no-bypass false)
read -r SLIRP_UP SLIRP_DOWN SLIRP_REMOTE < <(measure_uplink slirp4netns)
kill "$DAEMON" && wait "$DAEMON" 2>/dev/null || true
ucri system reset --force >/dev/null
mkdir -p "$WORK/home/.config/ucri"
printf '[network]\nuplink = "pasta"\n' >"$WORK/home/.config/ucri/ucri.toml"
[ "$(id -u)" -eq 0 ] && chown -R ucri-test: "$WORK/home/.config"
bench_daemon
read -r PASTA_UP PASTA_DOWN PASTA_REMOTE < <(measure_uplink pasta)

DIRECT=$(iperf3 -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -J | gbps)
DIRECT_DOWN=$(iperf3 -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -R -J | gbps)
DIRECT_UDP=$(iperf3 -c "$OUT_ADDR" -p 5201 -t "$SECONDS_EACH" -u -b 0 -l 1400 -J | udp_gbps)
iperf3 -s -1 -p 5202 >/dev/null 2>&1 &
sleep 0.5
LOOP=$(iperf3 -c 127.0.0.1 -p 5202 -t "$SECONDS_EACH" -J | gbps)

echo "| path (one TCP stream, ${SECONDS_EACH} s, iperf3) | Gbit/s |"
echo "|---|---|"
echo "| container -> outside through the socket bypass | $BYPASS_UP |"
echo "| outside -> container through the socket bypass (-R) | $BYPASS_DOWN |"
echo "| container -> outside through the socket bypass, UDP (-u -b 0 -l 1400) | $BYPASS_UDP |"
echo "| container -> outside, bypass off (slirp4netns) | $NOBYPASS_UP |"
echo "| outside -> container, bypass off (slirp4netns, -R) | $NOBYPASS_DOWN |"
echo "| container -> outside, bypass off (slirp4netns), UDP | $NOBYPASS_UDP |"
echo "| pod -> outside through slirp4netns | $SLIRP_UP |"
echo "| pod -> outside through pasta | $PASTA_UP |"
echo "| host -> pod through the hostPort forwarder (slirp4netns uplink) | $SLIRP_DOWN |"
echo "| host -> pod through the hostPort forwarder (pasta uplink) | $PASTA_DOWN |"
echo "| outside -> pod through the hostPort forwarder, from the client's own address (slirp4netns uplink) | $SLIRP_REMOTE |"
echo "| outside -> pod through the hostPort forwarder, from the client's own address (pasta uplink) | $PASTA_REMOTE |"
echo "| reference: host -> outside directly (veth) | $DIRECT |"
echo "| reference: outside -> host directly (veth, -R) | $DIRECT_DOWN |"
echo "| reference: host -> outside directly (veth), UDP | $DIRECT_UDP |"
echo "| reference: host -> host over loopback | $LOOP |"
