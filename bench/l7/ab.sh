#!/usr/bin/env bash
# A/B of two nodeway builds against nginx, in one run: all three serve the
# same route side by side (one Ingress, one endpoint: `nodeway echo`), and
# rounds alternate between them so machine noise hits each alike.
#
#   bench/l7/ab.sh OLD_BINARY NEW_BINARY [rounds, default 5] [seconds, default 3]
#
# Proxies and backend pinned to CPU $SERVER_CPU, wrk (1 thread, $CONNS
# keep-alive connections, default 64) to $LOAD_CPU. Prints per round and
# the medians of req/s and server CPU µs per request (proxy + backend).
# ACCESS_LOG=1: with access logs, nodeway at its default log level and
# nginx with `access_log ... buffer=64k flush=1s`, both to files in $WORK.
# Not run by tests or CI. Traffic only on 127.0.94.0/24.
set -euo pipefail
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/../ab_common.sh"

A=${1:?old nodeway binary}
B=${2:?new nodeway binary}
ROUNDS=${3:-5}
DUR=${4:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNS=${CONNS:-64}
BE=127.0.94.1 NG=127.0.94.2 NA=127.0.94.3 NB=127.0.94.4 PORT=8081 HOST=ab.bench.test
for c in wrk nginx python3 curl; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }; done

PIN=(taskset -c "$SERVER_CPU")
access_log_settings

"${PIN[@]}" "$B" echo --listen $BE:$PORT --name be >/dev/null 2>&1 & PIDS+=($!); BE_PID=$!
{
  nginx_head
  echo "  server { listen $NG:$PORT; server_name $HOST; location / { proxy_pass http://be; } }"
  echo "}"
} >"$WORK/nginx.conf"
"${PIN[@]}" nginx -c "$WORK/nginx.conf" -g "daemon off;" >/dev/null 2>&1 & PIDS+=($!); NG_PID=$!
mkdir -p "$WORK/cfg"
{
  backend_yaml
  cat <<YAML
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ab, namespace: default, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: $HOST
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: be, port: {number: 80}}}}
YAML
} >"$WORK/cfg/ab.yaml"
start_nodeway() { # binary addr
  NODEWAY_LOG=$NODEWAY_LOG_LEVEL "${PIN[@]}" "$1" run --config "$WORK/cfg" --threads 1 --l4-disable \
    --dns-listen "$2:1053" --http-listen "$2:$PORT" --https-listen "$2:18443" \
    --admin-listen "$2:19090" >>"$WORK/nodeway.log" 2>&1 &
}
start_nodeway "$A" $NA; PIDS+=($!); A_PID=$!
start_nodeway "$B" $NB; PIDS+=($!); B_PID=$!
for i in $(seq 100); do
  ok=1
  for a in $NG $NA $NB; do curl -fs -o /dev/null -H "Host: $HOST" "http://$a:$PORT/hostname" || ok=0; done
  [ $ok = 1 ] && break
  [ "$i" = 100 ] && { echo "servers did not come up" >&2; cat "$WORK/nodeway.log" >&2; exit 1; }
  sleep 0.1
done
NGW=$(pgrep -P $NG_PID | tr '\n' ' ')

run() { # name addr pids...
  local n=$1 a=$2; shift 2
  measure "$n" "$*" -H "Host: $HOST" "http://$a:$PORT/hostname"
}
for r in $(seq "$ROUNDS"); do
  run nginx $NG $BE_PID $NG_PID $NGW
  run old $NA $BE_PID $A_PID
  run new $NB $BE_PID $B_PID
done | tee "$WORK/rounds"
medians "$WORK/rounds" req/s
