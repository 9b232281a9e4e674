#!/usr/bin/env bash
# L4 benchmark: direct vs HAProxy (tcp mode, 1 thread, with and without
# splice) vs nodeway (1 worker thread), in one run.
#
#   bench/l4/run.sh [seconds]        # default 10 s per measurement
#
# Server side (proxy + backend) is pinned to CPU $SERVER_CPU, load
# generators to CPU $LOAD_CPU. Prints throughput, connection rate, ratios
# and server CPU microseconds per connection (from /proc/<pid>/stat, the
# steadiest figure on a noisy machine). Not run by tests or CI.
# Needs: iperf3, wrk, haproxy (installed with apt-get when missing) and a
# release build of nodeway (NODEWAY=path, default target/release/nodeway).
set -euo pipefail

DUR=${1:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODEWAY=${NODEWAY:-$ROOT/target/release/nodeway}
WRK_CONNS=${WRK_CONNS:-32}

need() {
  local missing=()
  for p in "$@"; do command -v "$p" >/dev/null || missing+=("$p"); done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
need iperf3 wrk haproxy python3
[ -x "$NODEWAY" ] || (cd "$ROOT" && cargo build --release --bin nodeway)

# Addresses: backend .1, haproxy .2, haproxy+splice .3, nodeway .4.
BE=127.0.90.1 HA=127.0.90.2 HS=127.0.90.3 NW=127.0.90.4
IPERF_PORT=5201 HTTP_PORT=8081
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

pin() { taskset -c "$SERVER_CPU" "$@"; }
load() { taskset -c "$LOAD_CPU" "$@"; }

# Backends: iperf3 and an HTTP echo (nodeway echo answers GET /hostname).
pin iperf3 -s -B $BE -p $IPERF_PORT >/dev/null 2>&1 & PIDS+=($!); IPERF_PID=$!
pin "$NODEWAY" echo --listen $BE:$HTTP_PORT --name be >/dev/null 2>&1 & PIDS+=($!); ECHO_PID=$!

haproxy_cfg() { # $1 addr, $2 extra option
  cat <<CFG
global
  nbthread 1
  maxconn 100000
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  $2
listen iperf
  bind $1:$IPERF_PORT
  server be $BE:$IPERF_PORT
listen http
  bind $1:$HTTP_PORT
  server be $BE:$HTTP_PORT
CFG
}
haproxy_cfg $HA "" >"$WORK/ha.cfg"
haproxy_cfg $HS "option splice-auto" >"$WORK/hs.cfg"
pin haproxy -f "$WORK/ha.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HA_PID=$!
pin haproxy -f "$WORK/hs.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HS_PID=$!

mkdir -p "$WORK/cfg"
cat >"$WORK/cfg/bench.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: $NW
  ports:
  - {name: iperf, port: $IPERF_PORT, targetPort: $IPERF_PORT}
  - {name: http, port: $HTTP_PORT, targetPort: $HTTP_PORT}
---
apiVersion: v1
kind: Endpoints
metadata: {name: bench, namespace: default}
subsets:
- addresses: [{ip: $BE}]
  ports: [{name: iperf, port: $IPERF_PORT}, {name: http, port: $HTTP_PORT}]
YAML
NODEWAY_LOG=warn pin "$NODEWAY" run --config "$WORK/cfg" --threads 1 \
  --dns-listen 127.0.90.4:1053 --http-listen 127.0.90.4:18080 --https-listen 127.0.90.4:18443 \
  --admin-listen 127.0.90.4:19090 >"$WORK/nodeway.log" 2>&1 & PIDS+=($!); NW_PID=$!

for i in $(seq 100); do
  if curl -fs http://127.0.90.4:19090/readyz >/dev/null 2>&1 &&
     (echo >/dev/tcp/$HA/$HTTP_PORT) 2>/dev/null && (echo >/dev/tcp/$HS/$HTTP_PORT) 2>/dev/null &&
     (echo >/dev/tcp/$BE/$IPERF_PORT) 2>/dev/null; then break; fi
  sleep 0.1
  [ "$i" = 100 ] && { echo "servers did not come up"; cat "$WORK/nodeway.log"; exit 1; }
done

cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t
}
HZ=$(getconf CLK_TCK)

gbps() { # $1 addr
  load iperf3 -c "$1" -p $IPERF_PORT -t "$DUR" -J | python3 -c \
    'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
rate() { # $1 addr, $2.. pids whose CPU counts as "server"; prints "req/s us_per_conn"
  local addr=$1; shift
  local before; before=$(cpu_ticks "$@")
  local out; out=$(load wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" -H "Connection: close" "http://$addr:$HTTP_PORT/hostname")
  local after; after=$(cpu_ticks "$@")
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  python3 -c "print('%.0f %.1f' % ($rps, ($after-$before)/$HZ*1e6/max($reqs,1)))"
}

declare -A G R C
for name in direct:$BE haproxy:$HA haproxy-splice:$HS nodeway:$NW; do
  n=${name%%:*} a=${name#*:}
  case $n in
    direct) pids="$ECHO_PID" ;;
    haproxy) pids="$ECHO_PID $HA_PID" ;;
    haproxy-splice) pids="$ECHO_PID $HS_PID" ;;
    nodeway) pids="$ECHO_PID $NW_PID" ;;
  esac
  G[$n]=$(gbps "$a")
  read -r R[$n] C[$n] < <(rate "$a" $pids)
  echo "measured $n: ${G[$n]} Gbit/s, ${R[$n]} conn/s, ${C[$n]} us server CPU/conn" >&2
done

echo
echo "L4 benchmark, $(date -u +%F), ${DUR}s per run, server CPU $SERVER_CPU, load CPU $LOAD_CPU, wrk -c$WRK_CONNS"
printf '| %-15s | %9s | %9s | %22s |\n' path "Gbit/s" "conn/s" "server CPU us/conn"
printf '|%s|%s|%s|%s|\n' -----------------  -----------  -----------  ------------------------
for n in direct haproxy haproxy-splice nodeway; do
  printf '| %-15s | %9s | %9s | %22s |\n' "$n" "${G[$n]}" "${R[$n]}" "${C[$n]}"
done
python3 - "${G[nodeway]}" "${G[haproxy-splice]}" "${R[nodeway]}" "${R[haproxy]}" "${C[nodeway]}" "${C[haproxy]}" "${C[direct]}" <<'PY'
import sys
g, gs, r, rh, c, ch, cd = map(float, sys.argv[1:])
print(f"\nbulk: nodeway / haproxy-splice = {g/gs:.2f}x (target >= 1.3x)")
print(f"conn rate: nodeway / haproxy = {r/rh:.2f}x (target >= 1.1x)")
print(f"added server CPU per connection: nodeway {c-cd:+.1f} us, haproxy {ch-cd:+.1f} us")
PY
