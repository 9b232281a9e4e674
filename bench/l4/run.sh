#!/usr/bin/env bash
# L4 benchmark, in one run:
#  TCP: bulk throughput (iperf3) and short-connection rate (wrk, one request
#       per connection, `Connection: close`) direct to the backend, through
#       HAProxy (tcp mode, 1 thread, without and with splice), nginx stream
#       (1 worker) and nodeway (1 worker thread);
#  UDP: DNS through a Service to NSD (dnsperf) direct, through nginx's UDP
#       stream proxy (1 worker) and through nodeway's UDP ClusterIP.
#
#   bench/l4/run.sh [seconds per measurement, default 10] [rounds, default 1]
#   PARTS=udp bench/l4/run.sh 10 3     # only the UDP part (or PARTS=tcp)
#
# Server side (proxy + backend) is pinned to CPU $SERVER_CPU, load
# generators to CPU $LOAD_CPU. Prints Gbit/s, connections/s, DNS qps, server
# CPU milliseconds per GB / microseconds per connection / per query (user+
# sys of proxy and backend process trees from /proc/<pid>/stat: the steadiest figure on a noisy
# machine), and the ratios the issue targets. With several rounds the
# order of the peers rotates and the median is reported.
# Not run by tests or CI. Traffic only on 127.0.92.0/24.
# Needs: iperf3, wrk, haproxy, nginx (+ its stream module), dnsperf, nsd
# (installed with apt-get when missing) and a release build of nodeway
# (NODEWAY=path, default target/release/nodeway). BENCH_TSV=FILE appends the
# medians to FILE (part, case, peer, metric, value) for bench/run.
set -euo pipefail

DUR=${1:-10}
ROUNDS=${2:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WRK_CONNS=${WRK_CONNS:-32}
DNS_CLIENTS=${DNS_CLIENTS:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODEWAY=${NODEWAY:-$ROOT/target/release/nodeway}

install_missing() { # pairs "command:package"
  local missing=()
  for cp in "$@"; do command -v "${cp%%:*}" >/dev/null || missing+=("${cp#*:}"); done
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    local s=""; [ "$(id -u)" = 0 ] || s=sudo
    $s apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $s apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
install_missing iperf3:iperf3 wrk:wrk haproxy:haproxy nginx:nginx dnsperf:dnsperf \
  nsd:nsd dig:dnsutils python3:python3 curl:curl taskset:util-linux
[ -x "$NODEWAY" ] || { echo "build first: cargo build --release --bin nodeway" >&2; exit 1; }

# Addresses: backends .1, haproxy .2, haproxy+splice .3, nginx .4, nodeway .5
BE=127.0.92.1 HA=127.0.92.2 HS=127.0.92.3 NG=127.0.92.4 NW=127.0.92.5
IPERF_PORT=5201 HTTP_PORT=8081 DNS_PORT=5353
WORK=$(mktemp -d /tmp/nodeway-l4bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Arrays, not functions: `func &` would fork a subshell, and $! (used to
# kill and to read CPU time) would name the subshell, not the server.
PIN=(taskset -c "$SERVER_CPU")
LOAD=(taskset -c "$LOAD_CPU")

# --- backends ---------------------------------------------------------------
"${PIN[@]}" iperf3 -s -B $BE -p $IPERF_PORT >/dev/null 2>&1 & PIDS+=($!); IPERF_PID=$!
"${PIN[@]}" "$NODEWAY" echo --listen $BE:$HTTP_PORT --name be >/dev/null 2>&1 & PIDS+=($!); ECHO_PID=$!

# NSD with 1000 A records (as bench/dns/run.sh); dnsperf asks for them.
Z=bench.test
{
  echo "\$ORIGIN $Z."
  echo "\$TTL 30"
  echo "@ IN SOA ns.$Z. hostmaster.$Z. 1 7200 1800 86400 30"
  echo "@ IN NS ns.$Z."
  echo "ns IN A $BE"
  for i in $(seq 0 999); do echo "svc-$i IN A 10.200.$((i / 250)).$((i % 250 + 1))"; done
} >"$WORK/$Z.zone"
for i in $(seq 0 999); do echo "svc-$i.$Z A"; done | shuf >"$WORK/queries.txt"
cat >"$WORK/nsd.conf" <<CONF
server:
  ip-address: $BE@$DNS_PORT
  server-count: 1
  do-ip6: no
  username: ""
  database: ""
  zonelistfile: "$WORK/zone.list"
  pidfile: "$WORK/nsd.pid"
  xfrdfile: "$WORK/xfrd.state"
  logfile: "$WORK/nsd.log"
  zonesdir: "$WORK"
remote-control:
  control-enable: no
zone:
  name: $Z
  zonefile: $Z.zone
CONF
"${PIN[@]}" nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.stdout" 2>&1 & PIDS+=($!); NSD_PID=$!

# --- proxies ----------------------------------------------------------------
haproxy_cfg() { # $1 addr, $2 extra option
  cat <<CFG
global
  nbthread 1
  maxconn 4000
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
"${PIN[@]}" haproxy -f "$WORK/ha.cfg" -db >"$WORK/ha.log" 2>&1 & PIDS+=($!); HA_PID=$!
"${PIN[@]}" haproxy -f "$WORK/hs.cfg" -db >"$WORK/hs.log" 2>&1 & PIDS+=($!); HS_PID=$!

# nginx stream: TCP as HAProxy's, UDP with nginx's defaults for sessions
# (one per client address, kept while traffic flows: its fastest mode).
cat >"$WORK/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8000; }
stream {
  proxy_connect_timeout 1s;
  server { listen $NG:$IPERF_PORT; proxy_pass $BE:$IPERF_PORT; }
  server { listen $NG:$HTTP_PORT; proxy_pass $BE:$HTTP_PORT; }
  server { listen $NG:$DNS_PORT udp; proxy_pass $BE:$DNS_PORT; proxy_timeout 30s; }
}
CFG
"${PIN[@]}" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" >"$WORK/nginx.log" 2>&1 & PIDS+=($!); NG_PID=$!

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
  - {name: dns, port: $DNS_PORT, targetPort: $DNS_PORT, protocol: UDP}
---
apiVersion: v1
kind: Endpoints
metadata: {name: bench, namespace: default}
subsets:
- addresses: [{ip: $BE}]
  ports:
  - {name: iperf, port: $IPERF_PORT}
  - {name: http, port: $HTTP_PORT}
  - {name: dns, port: $DNS_PORT, protocol: UDP}
YAML
NODEWAY_LOG=warn "${PIN[@]}" "$NODEWAY" run --config "$WORK/cfg" --threads 1 \
  --dns-listen $NW:1053 --http-listen $NW:18080 --https-listen $NW:18443 \
  --admin-listen $NW:19090 >"$WORK/nodeway.log" 2>&1 & PIDS+=($!); NW_PID=$!

up() {
  curl -fs http://$NW:19090/readyz >/dev/null 2>&1 || return 1
  local a; for a in $BE $HA $HS $NG $NW; do (echo >/dev/tcp/$a/$HTTP_PORT) 2>/dev/null || return 1; done
  for a in $HA $HS $NG; do (echo >/dev/tcp/$a/$IPERF_PORT) 2>/dev/null || return 1; done
  dig +short +time=1 +tries=1 -p $DNS_PORT @$BE svc-1.$Z A >/dev/null 2>&1 || return 1
}
for i in $(seq 100); do
  up && break
  sleep 0.2
  if [ "$i" = 100 ]; then
    echo "servers did not come up" >&2
    tail -n 5 "$WORK"/*.log "$WORK/nsd.stdout" >&2
    exit 1
  fi
done

# --- measurement ------------------------------------------------------------
# CPU ticks (user+sys) of processes and their descendants (nginx and nsd
# fork workers); fields counted after `(comm)`, which may contain spaces.
tree() { local p; for p in "$@"; do echo "$p"; tree $(pgrep -P "$p" || true); done; }
cpu_ticks() {
  local t=0 p
  for p in $(tree "$@"); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo $t
}
HZ=$(getconf CLK_TCK)

gbps() { # $1 addr, $2.. server pids; prints "Gbit/s server_cpu_ms_per_GB"
  local addr=$1; shift
  local before after
  before=$(cpu_ticks "$@")
  "${LOAD[@]}" iperf3 -c "$addr" -p $IPERF_PORT -t "$DUR" -J >"$WORK/iperf.json"
  after=$(cpu_ticks "$@")
  python3 - "$WORK/iperf.json" $((after - before)) "$HZ" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["end"]["sum_received"]
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
print("%.2f %.1f" % (r["bits_per_second"] / 1e9, ticks / hz * 1e3 / (r["bytes"] / 1e9)))
PY
}
rate() { # $1 addr, $2.. server pids; prints "conn/s us_per_conn"
  local addr=$1; shift
  local before after out reqs rps
  before=$(cpu_ticks "$@")
  out=$("${LOAD[@]}" wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" -H "Connection: close" "http://$addr:$HTTP_PORT/hostname")
  after=$(cpu_ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "$out" | grep "Non-2xx\|Socket errors" >&2; fi
  python3 -c "print('%.0f %.1f' % ($rps, ($after-$before)/$HZ*1e6/max($reqs,1)))"
}
qps() { # $1 addr, $2.. server pids; prints "qps us_per_query"
  local addr=$1; shift
  local before after out q
  "${LOAD[@]}" dnsperf -s "$addr" -p $DNS_PORT -d "$WORK/queries.txt" -l 2 -c "$DNS_CLIENTS" -T 1 >/dev/null
  before=$(cpu_ticks "$@")
  out=$("${LOAD[@]}" dnsperf -s "$addr" -p $DNS_PORT -d "$WORK/queries.txt" -l "$DUR" -c "$DNS_CLIENTS" -T 1)
  after=$(cpu_ticks "$@")
  q=$(echo "$out" | awk '/Queries completed:/ {print $3}')
  local lost; lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
  [ "${lost:-0}" = 0 ] || echo "  ($addr: $lost queries lost)" >&2
  python3 -c "print('%.0f %.2f' % ($(echo "$out" | awk '/Queries per second:/ {print $4}'), ($after-$before)/$HZ*1e6/max($q,1)))"
}

TCP_PEERS=(direct haproxy haproxy-splice nginx nodeway)
UDP_PEERS=(direct nginx nodeway)
PARTS=${PARTS:-"tcp udp"}
[[ " $PARTS " == *" tcp "* ]] || TCP_PEERS=()
[[ " $PARTS " == *" udp "* ]] || UDP_PEERS=()
addr_of() { case $1 in direct) echo $BE ;; haproxy) echo $HA ;; haproxy-splice) echo $HS ;; nginx) echo $NG ;; nodeway) echo $NW ;; esac; }
pids_of() { # the server side: backend + proxy
  local be=$2
  case $1 in direct) echo "$be" ;; haproxy) echo "$be $HA_PID" ;; haproxy-splice) echo "$be $HS_PID" ;;
    nginx) echo "$be $NG_PID" ;; nodeway) echo "$be $NW_PID" ;; esac
}
rotate() { # $1 round, rest: list; prints the list rotated by the round
  local r=$1; shift; local a=("$@") n=$# i
  for ((i = 0; i < n; i++)); do echo "${a[(i + r) % n]}"; done
}

echo "uptime before: $(uptime)" >&2
for r in $(seq 0 $((ROUNDS - 1))); do
  for n in $(rotate "$r" "${TCP_PEERS[@]}"); do
    a=$(addr_of "$n")
    read -r g gc < <(gbps "$a" $(pids_of "$n" $IPERF_PID))
    read -r cr cc < <(rate "$a" $(pids_of "$n" $ECHO_PID))
    echo "$g $cr $cc $gc" >>"$WORK/tcp.$n"
    echo "round $((r + 1)) $n: $g Gbit/s ($gc ms server CPU/GB), $cr conn/s, $cc us server CPU/conn" >&2
  done
  for n in $(rotate "$r" "${UDP_PEERS[@]}"); do
    read -r q qc < <(qps "$(addr_of "$n")" $(pids_of "$n" $NSD_PID))
    echo "$q $qc" >>"$WORK/udp.$n"
    echo "round $((r + 1)) $n: $q DNS qps, $qc us server CPU/query" >&2
  done
done
echo "uptime after: $(uptime)" >&2

median() { # file column
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
declare -A G GC R C Q QC
for n in "${TCP_PEERS[@]}"; do
  G[$n]=$(median "$WORK/tcp.$n" 1) R[$n]=$(median "$WORK/tcp.$n" 2) C[$n]=$(median "$WORK/tcp.$n" 3)
  GC[$n]=$(median "$WORK/tcp.$n" 4)
done
for n in "${UDP_PEERS[@]}"; do Q[$n]=$(median "$WORK/udp.$n" 1) QC[$n]=$(median "$WORK/udp.$n" 2); done
if [ -n "${BENCH_TSV:-}" ]; then  # lines for bench/run: part, case, peer, metric, value
  for n in "${TCP_PEERS[@]}"; do
    printf 'l4\tbulk, one iperf3 stream\t%s\t%s\t%s\n' "$n" gbit_s "${G[$n]}" "$n" cpu_ms_per_gb "${GC[$n]}" >>"$BENCH_TSV"
    printf 'l4\tshort connections\t%s\t%s\t%s\n' "$n" conn_s "${R[$n]}" "$n" cpu_us_per_conn "${C[$n]}" >>"$BENCH_TSV"
  done
  for n in "${UDP_PEERS[@]}"; do
    printf 'l4\tUDP DNS to NSD\t%s\t%s\t%s\n' "$n" q_s "${Q[$n]}" "$n" cpu_us_per_query "${QC[$n]}" >>"$BENCH_TSV"
  done
fi

echo
echo "L4 benchmark, $(date -u +%F), ${DUR}s per measurement, $ROUNDS round(s) (median), server CPU $SERVER_CPU, load CPU $LOAD_CPU, wrk -t1 -c$WRK_CONNS, dnsperf -c $DNS_CLIENTS -T 1"
echo
echo "| TCP path | Gbit/s | server CPU ms/GB | conn/s | server CPU µs/conn |"
echo "|---|---|---|---|---|"
for n in "${TCP_PEERS[@]}"; do echo "| $n | ${G[$n]} | ${GC[$n]} | ${R[$n]} | ${C[$n]} |"; done
echo
echo "| DNS over UDP to NSD | qps | server CPU µs/query |"
echo "|---|---|---|"
for n in "${UDP_PEERS[@]}"; do echo "| $n | ${Q[$n]} | ${QC[$n]} |"; done
python3 - "${G[nodeway]:-nan}" "${G[haproxy-splice]:-nan}" "${R[nodeway]:-nan}" "${R[haproxy]:-nan}" \
  "${C[nodeway]:-nan}" "${C[haproxy]:-nan}" "${C[direct]:-nan}" "${Q[nodeway]:-nan}" "${Q[nginx]:-nan}" \
  "${QC[nodeway]:-nan}" "${QC[nginx]:-nan}" "${QC[direct]:-nan}" \
  "${GC[nodeway]:-nan}" "${GC[haproxy-splice]:-nan}" "${GC[direct]:-nan}" <<'PY'
import math, sys
g, gs, r, rh, c, ch, cd, q, qn, qc, qcn, qcd, gc, gcs, gcd = map(float, sys.argv[1:])
def verdict(x, t): return "met" if x >= t else "NOT met"
print()
if not math.isnan(g):  # the TCP part ran
    print(f"bulk: nodeway / haproxy-splice = {g/gs:.2f}x (target >= 1.3x: {verdict(g/gs, 1.3)})")
    print(f"conn rate: nodeway / haproxy = {r/rh:.2f}x (target >= 1.1x: {verdict(r/rh, 1.1)})")
    print(f"added server CPU per GB: nodeway {gc-gcd:+.0f} ms, haproxy-splice {gcs-gcd:+.0f} ms")
    print(f"added server CPU per connection: nodeway {c-cd:+.1f} us, haproxy {ch-cd:+.1f} us")
if not math.isnan(q):  # the UDP part ran
    print(f"UDP DNS: nodeway / nginx = {q/qn:.2f}x (target >= 1.2x: {verdict(q/qn, 1.2)})")
    print(f"added server CPU per DNS query: nodeway {qc-qcd:+.2f} us, nginx {qcn-qcd:+.2f} us")
PY
