#!/usr/bin/env bash
# L7 benchmark: direct vs nginx (1 worker, upstream keepalive) vs HAProxy
# (1 thread, http-reuse always) vs nodeway (1 worker thread), in one run,
# through 50 host+path rules, HTTP/1.1 keep-alive at 64 and 256 connections.
#
#   bench/l7/run.sh [seconds] [rounds]   # default 10 s per measurement, 1 round
#
# With several rounds the order of the peers rotates from round to round
# and the median of each figure is reported (single runs on a shared
# machine vary by 30 %).
#
# Server side (proxy + backend) is pinned to CPU $SERVER_CPU, wrk to
# $LOAD_CPU. Prints req/s, p50/p99 latency and server CPU microseconds per
# request (from /proc/<pid>/stat: the steadiest figure on a noisy machine),
# then the ratios the per-request issue targets (req/s against the better
# of nginx and HAProxy, p99 against the best). Not run by tests or CI.
# Needs: wrk, nginx, haproxy (installed with apt-get when missing) and a
# release build of nodeway (NODEWAY=path, default target/release/nodeway).
# KEEPALIVE sets nginx's upstream keepalive pool (default 320, ingress-nginx's
# upstream-keepalive-connections default). RULES sets the number of host+path
# rules (default 50; the request goes to the last). ACCESS_LOG=1 turns the access
# logs on: nodeway at its default level, nginx with `access_log ...
# buffer=64k flush=1s`; HAProxy, which logs only to syslog, sits that pass
# out. BREAKDOWN=1 adds, after the rounds, one run per proxy at the first
# connection count that splits the cost per request: the proxy's user and
# system CPU, its system calls (perf, when installed) and its voluntary and
# involuntary context switches, and the backend's CPU. BENCH_TSV=FILE appends
# every median to FILE (part, case, peer, metric, value) for bench/run.
set -euo pipefail

DUR=${1:-10}
ROUNDS=${2:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEEPALIVE=${KEEPALIVE:-320}
CONNS=${CONNS:-"64 256"}
RULES=${RULES:-50}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/l7/common.sh"
NODEWAY=${NODEWAY:-$ROOT/target/release/nodeway}

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
need wrk nginx haproxy python3 curl
[ -x "$NODEWAY" ] || (cd "$ROOT" && cargo build --release --bin nodeway)

# Addresses: backend .1, nginx .2, haproxy .3, nodeway .4; all on port 8081.
BE=127.0.91.1 NG=127.0.91.2 HA=127.0.91.3 NW=127.0.91.4 PORT=8081
HOST="h$((RULES - 1)).bench.test"   # the last rule
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
access_log_settings

ulimit -n 65536 2>/dev/null || true
# Arrays, not functions: `func &` would fork a subshell, and $! (used to
# kill and to read CPU time) would name the subshell, not the server.
PIN=(taskset -c "$SERVER_CPU")
load() { taskset -c "$LOAD_CPU" "$@"; }

"${PIN[@]}" "$NODEWAY" echo --listen $BE:$PORT --name be >/dev/null 2>&1 & PIDS+=($!); ECHO_PID=$!

# nginx: what ingress-nginx renders for these rules, minus Lua: one server
# per host, the proxy headers ingress-nginx sets, the access log as
# access_log_settings says.
{
  nginx_head
  for i in $(seq 0 $((RULES - 1))); do
    echo "  server { listen $NG:$PORT; server_name h$i.bench.test; location /hostname { proxy_pass http://be; } location /p$i { proxy_pass http://be; } }"
  done
  echo "}"
} >"$WORK/nginx.conf"
"${PIN[@]}" nginx -c "$WORK/nginx.conf" -g "daemon off;" >/dev/null 2>&1 & PIDS+=($!); NG_PID=$!

{
  cat <<CFG
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  option forwardfor
  http-reuse always
frontend fe
  bind $HA:$PORT
CFG
  for i in $(seq 0 $((RULES - 1))); do
    echo "  use_backend be if { hdr(host) -i h$i.bench.test } { path_beg /hostname /p$i }"
  done
  cat <<CFG
backend be
  server be $BE:$PORT
CFG
} >"$WORK/haproxy.cfg"
"${PIN[@]}" haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HA_PID=$!

mkdir -p "$WORK/cfg"
{
  backend_yaml
  for i in $(seq 0 $((RULES - 1))); do
    cat <<YAML
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: r$i, namespace: default, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: h$i.bench.test
    http:
      paths:
      - {path: /hostname, pathType: Prefix, backend: {service: {name: be, port: {number: 80}}}}
      - {path: /p$i, pathType: Prefix, backend: {service: {name: be, port: {number: 80}}}}
YAML
  done
} >"$WORK/cfg/bench.yaml"
NODEWAY_LOG=$NODEWAY_LOG_LEVEL "${PIN[@]}" "$NODEWAY" run --config "$WORK/cfg" --threads 1 \
  --dns-listen $NW:1053 --http-listen $NW:$PORT --https-listen $NW:18443 \
  --admin-listen $NW:19090 >"$WORK/nodeway.log" 2>&1 & PIDS+=($!); NW_PID=$!

for i in $(seq 100); do
  ok=1
  for a in $BE $NG $HA $NW; do
    curl -fs -o /dev/null -H "Host: $HOST" "http://$a:$PORT/hostname" || ok=0
  done
  [ $ok = 1 ] && break
  sleep 0.1
  [ "$i" = 100 ] && { echo "servers did not come up"; cat "$WORK/nodeway.log" "$WORK/nginx-error.log"; exit 1; }
done

cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t
}
HZ=$(getconf CLK_TCK)

# $1 addr, $2 connections, $3.. server pids; prints "req/s p50_ms p99_ms us_per_req"
measure() {
  local addr=$1 conns=$2; shift 2
  load wrk -t1 -c"$conns" -d2s -H "Host: $HOST" "http://$addr:$PORT/hostname" >/dev/null  # warm pools
  local before; before=$(cpu_ticks "$@")
  local out; out=$(load wrk -t1 -c"$conns" -d"${DUR}s" --latency -H "Host: $HOST" "http://$addr:$PORT/hostname")
  local after; after=$(cpu_ticks "$@")
  echo "$out" | python3 -c '
import sys, re
out = sys.stdin.read()
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errs: print("WARNING: %s non-2xx responses" % errs.group(1), file=sys.stderr)
ticks = int(sys.argv[1]); hz = int(sys.argv[2])
print("%.0f %.3f %.3f %.1f" % (rps, p50, p99, ticks / hz * 1e6 / max(reqs, 1)))
' "$((after - before))" "$HZ"
}

if [ "${ACCESS_LOG:-0}" = 1 ]; then PEERS=(direct nginx nodeway); else PEERS=(direct nginx haproxy nodeway); fi
NGINX_PIDS="$NG_PID $(pgrep -P $NG_PID | tr '\n' ' ')"  # master + worker
addr_of() { case $1 in direct) echo $BE ;; nginx) echo $NG ;; haproxy) echo $HA ;; nodeway) echo $NW ;; esac; }
proxy_pids() { case $1 in direct) ;; nginx) echo "$NGINX_PIDS" ;; haproxy) echo $HA_PID ;; nodeway) echo $NW_PID ;; esac; }
for r in $(seq 0 $((ROUNDS - 1))); do
  for conns in $CONNS; do
    for k in "${!PEERS[@]}"; do
      n=${PEERS[(k + r) % ${#PEERS[@]}]}
      # shellcheck disable=SC2046
      read -r rps p50 p99 cpu < <(measure "$(addr_of "$n")" "$conns" $ECHO_PID $(proxy_pids "$n"))
      echo "$rps $p50 $p99 $cpu" >>"$WORK/res.$n.$conns"
      echo "round $((r + 1)) $n c=$conns: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu us server CPU/req" >&2
    done
  done
done
median() { # file column
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
declare -A R P50 P99 C
for conns in $CONNS; do
  for n in "${PEERS[@]}"; do
    f=$WORK/res.$n.$conns
    R[$n$conns]=$(median "$f" 1) P50[$n$conns]=$(median "$f" 2) P99[$n$conns]=$(median "$f" 3) C[$n$conns]=$(median "$f" 4)
  done
done

# Lines for bench/run: part, case, peer, metric, value.
PART=l7; [ "${ACCESS_LOG:-0}" = 1 ] && PART=l7-logs
RULE_WORDS="$RULES rules"; [ "$RULES" = 1 ] && RULE_WORDS="1 route"
tsv() { [ -z "${BENCH_TSV:-}" ] || printf '%s\t%s\t%s\t%s\t%s\n' "$PART" "$@" >>"$BENCH_TSV"; }

echo
echo "L7 benchmark, $(date -u +%F), ${DUR}s per run, $ROUNDS round(s) (medians), $RULES host+path rules, access logs $([ "${ACCESS_LOG:-0}" = 1 ] && echo on || echo off), server CPU $SERVER_CPU, load CPU $LOAD_CPU, nginx keepalive $KEEPALIVE"
printf '| %-8s | %5s | %9s | %8s | %8s | %15s | %13s |\n' proxy conns "req/s" "p50 ms" "p99 ms" "server us/req" "added us/req"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------- ------- ----------- ---------- ---------- ----------------- ---------------
for conns in $CONNS; do
  for n in "${PEERS[@]}"; do
    added=$(python3 -c "print('%+.1f' % (${C[$n$conns]} - ${C[direct$conns]}))")
    printf '| %-8s | %5s | %9s | %8s | %8s | %15s | %13s |\n' "$n" "$conns" "${R[$n$conns]}" "${P50[$n$conns]}" "${P99[$n$conns]}" "${C[$n$conns]}" "$added"
    c="$RULE_WORDS, $conns conns"
    tsv "$c" "$n" req_s "${R[$n$conns]}"; tsv "$c" "$n" p50_ms "${P50[$n$conns]}"; tsv "$c" "$n" p99_ms "${P99[$n$conns]}"
    tsv "$c" "$n" server_us "${C[$n$conns]}"; tsv "$c" "$n" added_us "$added"
  done
done
for conns in $CONNS; do
  python3 - "$conns" "${R[nodeway$conns]}" "${R[nginx$conns]}" "${R[haproxy$conns]:-nan}" \
    "${P99[nodeway$conns]}" "${P99[nginx$conns]}" "${P99[haproxy$conns]:-nan}" <<'PY'
import math, sys
conns = sys.argv[1]
nw, ng, ha, p_nw, p_ng, p_ha = map(float, sys.argv[2:])
best = max(x for x in (ng, ha) if not math.isnan(x))
best_p99 = min(x for x in (p_ng, p_ha) if not math.isnan(x))
print(f"at {conns} connections: nodeway / the better peer req/s = {nw / best:.2f}x (target >= 1.1x); "
      f"p99 {p_nw} ms against the best peer's {best_p99} ms (target: no worse)")
PY
done

# Per request of one run: the proxy's user and system CPU, its system calls
# and context switches, and the backend's CPU.
BREAKDOWN_METRICS=(proxy_user_us proxy_sys_us backend_us syscalls voluntary_cs involuntary_cs)
user_sys_ticks() { local p u=0 s=0; for p in "$@"; do read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + pu)) s=$((s + ps)); done; echo "$u $s"; }
switches() { # voluntary and involuntary context switches of all threads of the given processes
  cat $(for p in "$@"; do echo /proc/"$p"/task/*/status; done) 2>/dev/null |
    awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v + 0, n + 0}'
}
breakdown_one() { # peer conns
  local n=$1 conns=$2 pp; pp=$(proxy_pids "$n")
  load wrk -t1 -c"$conns" -d2s -H "Host: $HOST" "http://$(addr_of "$n"):$PORT/hostname" >/dev/null
  local perf_pid="" perf_out=$WORK/perf.$n
  if command -v perf >/dev/null; then
    perf stat -x, -e raw_syscalls:sys_enter -p "$(echo $pp | tr ' ' ,)" -o "$perf_out" & perf_pid=$!
  fi
  # shellcheck disable=SC2086
  local t0 s0 b0; t0=$(user_sys_ticks $pp) s0=$(switches $pp) b0=$(cpu_ticks $ECHO_PID)
  local out; out=$(load wrk -t1 -c"$conns" -d"${DUR}s" -H "Host: $HOST" "http://$(addr_of "$n"):$PORT/hostname")
  # shellcheck disable=SC2086
  local t1 s1 b1; t1=$(user_sys_ticks $pp) s1=$(switches $pp) b1=$(cpu_ticks $ECHO_PID)
  local calls=nan
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; calls=$(awk -F, '/raw_syscalls/ {print $1}' "$perf_out"); fi
  python3 - "$out" "$t0 $s0 $b0" "$t1 $s1 $b1" "$calls" "$HZ" <<'PY'
import re, sys
out, before, after, calls, hz = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
d = [int(a) - int(b) for a, b in zip(after.split(), before.split())]
us = lambda ticks: ticks / int(hz) * 1e6 / reqs
try:
    calls = float(calls) / reqs
except ValueError:  # no perf, or the count was not supported
    calls = float("nan")
print("%.0f %.1f %.1f %.1f %.2f %.3f %.3f" % (rps, us(d[0]), us(d[1]), us(d[4]), calls, d[2] / reqs, d[3] / reqs))
PY
}
if [ "${BREAKDOWN:-0}" = 1 ]; then
  conns=${CONNS%% *} PART=$PART-breakdown
  PROXIES=("${PEERS[@]:1}")  # all but direct
  for r in $(seq 0 $((ROUNDS - 1))); do
    for k in "${!PROXIES[@]}"; do  # the order rotating, as above
      n=${PROXIES[(k + r) % ${#PROXIES[@]}]}
      breakdown_one "$n" "$conns" >>"$WORK/breakdown.$n"
    done
  done
  echo
  echo "Per request at $conns connections, medians of $ROUNDS ${DUR}s runs each:"
  echo "| proxy | req/s | proxy user µs | proxy system µs | backend µs | syscalls | voluntary switches | involuntary switches |"
  echo "|---|---|---|---|---|---|---|---|"
  for n in "${PROXIES[@]}"; do
    v=(); for col in 1 2 3 4 5 6 7; do v+=("$(median "$WORK/breakdown.$n" $col)"); done
    printf '| %s ' "$n" "${v[@]}"; echo '|'
    tsv "$RULE_WORDS, $conns conns" "$n" req_s "${v[0]}"
    for k in "${!BREAKDOWN_METRICS[@]}"; do tsv "$RULE_WORDS, $conns conns" "$n" "${BREAKDOWN_METRICS[k]}" "${v[k + 1]}"; done
  done
fi
