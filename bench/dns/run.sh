#!/usr/bin/env bash
# DNS benchmark: dnsperf against nodeway and NSD serving the same 1000
# Services (A + SRV names), one after the other in one run, each server
# pinned to CPU 0 and dnsperf to CPU 1. Prints qps, latency and server CPU
# microseconds per query (the steadiest figure on a noisy machine), and the
# nodeway/NSD ratio. Not run by tests or CI.
#
#   bench/dns/run.sh [seconds per run, default 20] [rounds, default 3]
#
# Both servers stay up for the whole run; each round measures both, the
# order alternating between rounds, so load from other processes on a
# shared machine hits both alike. The summary is the median of the rounds.
#
# Needs a release build (cargo build --release) and installs dnsperf and
# nsd with apt-get when missing. BENCH_TSV=FILE appends the medians to FILE
# (part, case, peer, metric, value) for bench/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
ROUNDS=${2:-3}
BIN=${NODEWAY_BIN:-target/release/nodeway}
N=1000
NW_PORT=15353
NSD_PORT=15354
ADMIN=127.0.0.1:19191
WORK=$(mktemp -d /tmp/nodeway-dnsbench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null || { sudo -n true 2>/dev/null && S=sudo || S=; $S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $S apt-get install -y -qq "$2" >/dev/null; }; }
need dnsperf dnsperf
need nsd nsd
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

# --- the same data for both servers -------------------------------------
mkdir -p "$WORK/manifests"
{
  for i in $(seq 0 $((N-1))); do
    ip="10.200.$((i/250)).$((i%250+1))"
    printf -- "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: bench}\nspec: {clusterIP: %s, ports: [{name: http, port: 80}]}\n" "$i" "$ip"
  done
} > "$WORK/manifests/services.yaml"

Z=cluster.local
{
  echo "\$ORIGIN $Z."
  echo "\$TTL 5"
  echo "@ 5 IN SOA ns.dns.$Z. hostmaster.$Z. 1 7200 1800 86400 5"
  echo "@ 5 IN NS ns.dns.$Z."
  echo "dns-version 28800 IN TXT \"1.1.0\""
  for i in $(seq 0 $((N-1))); do
    ip="10.200.$((i/250)).$((i%250+1))"
    echo "svc-$i.bench.svc 5 IN A $ip"
    echo "_http._tcp.svc-$i.bench.svc 5 IN SRV 0 100 80 svc-$i.bench.svc.$Z."
  done
} > "$WORK/$Z.zone"

# Query mix: A and SRV for every Service, in random order.
{
  for i in $(seq 0 $((N-1))); do
    echo "svc-$i.bench.svc.$Z A"
    echo "_http._tcp.svc-$i.bench.svc.$Z SRV"
  done
} | shuf > "$WORK/queries.txt"

cat > "$WORK/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  server-count: 1
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

# CPU ticks (user+sys) of a process and all its descendants (nsd forks);
# fields counted after the `(comm)`, which may contain spaces ("nsd: server 1").
tree() { echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}' || echo 0))); done; echo $t; }
HZ=$(getconf CLK_TCK)

# run NAME PORT PID: prints one result line, keeps numbers in R_*
run() {
  local name=$1 port=$2 pid=$3
  # warm up (and check it answers)
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l 2 -c 8 -T 1 >/dev/null
  local t0; t0=$(cpu_ticks "$pid")
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$SECS" -c 8 -T 1 > "$WORK/$name.out"
  local t1; t1=$(cpu_ticks "$pid")
  local q qps lat lost
  q=$(awk '/Queries completed:/ {print $3}' "$WORK/$name.out")
  lost=$(awk '/Queries lost:/ {print $3}' "$WORK/$name.out")
  qps=$(awk '/Queries per second:/ {print $4}' "$WORK/$name.out")
  lat=$(awk '/Average Latency/ {print $4}' "$WORK/$name.out")
  local us; us=$(awk -v d=$((t1-t0)) -v hz="$HZ" -v q="$q" 'BEGIN {printf "%.2f", d/hz*1e6/q}')
  printf "%-8s %10s qps  avg %8s s  lost %6s  server CPU %6s us/query\n" "$name" "$qps" "$lat" "$lost" "$us"
  echo "$qps $us" >> "$WORK/$name.rounds"
}

# median of column $2 of file $1
median() { awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "dnsperf -l $SECS -c 8 -T 1, $((2*N)) names (A + SRV for $N Services); server on CPU 0, dnsperf on CPU 1; $ROUNDS rounds"

NODEWAY_LOG=warn taskset -c 0 "$BIN" run --config "$WORK/manifests" --threads 1 --l4-disable \
  --dns-listen 127.0.0.1:$NW_PORT --dns-upstream 127.0.0.1:9 --admin-listen $ADMIN \
  > "$WORK/nodeway.log" 2>&1 &
NW=$!
for _ in $(seq 100); do curl -sf "http://$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
taskset -c 0 nsd -d -c "$WORK/nsd.conf" > "$WORK/nsd.stdout" 2>&1 &
NSD=$!
sleep 1

for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    run nodeway $NW_PORT $NW; run nsd $NSD_PORT $NSD
  else
    run nsd $NSD_PORT $NSD; run nodeway $NW_PORT $NW
  fi
done
kill $NW $NSD; wait $NW $NSD 2>/dev/null || true

A=$(median "$WORK/nodeway.rounds" 1); B=$(median "$WORK/nsd.rounds" 1)
C=$(median "$WORK/nodeway.rounds" 2); D=$(median "$WORK/nsd.rounds" 2)
printf "median   nodeway %.0f qps %s us/query, nsd %.0f qps %s us/query\n" "$A" "$C" "$B" "$D"
if [ -n "${BENCH_TSV:-}" ]; then  # lines for bench/run: part, case, peer, metric, value
  printf "dns\tauthoritative, $((2 * N)) names\t%s\t%s\t%s\n" nodeway q_s "$A" nodeway cpu_us_per_query "$C" \
    nsd q_s "$B" nsd cpu_us_per_query "$D" >>"$BENCH_TSV"
fi
awk -v a="$A" -v b="$B" -v c="$C" -v d="$D" \
  'BEGIN {printf "ratio nodeway/NSD: qps %.2f, CPU per query %.2f\n", a/b, c/d}'
