#!/usr/bin/env bash
# A/B of two nodeway builds' L4 plane, in one run: each serves its own
# ClusterIP in front of the same `nodeway echo` endpoint, and rounds
# alternate between them so machine noise hits both alike. wrk sends one
# request per connection (`Connection: close`): the per-connection path
# (accept, route lookup, endpoint connect, copy, close).
#
#   bench/l4/ab.sh OLD_BINARY NEW_BINARY [rounds, default 5] [seconds, default 3]
#
# Proxies and backend pinned to CPU $SERVER_CPU, wrk (1 thread, $CONNS
# connections, default 32) to $LOAD_CPU. Prints per round and the medians
# of connections/s and server CPU µs per connection (proxy + backend). Run
# as root, a build with steering steers its ClusterIP (sk_lookup).
# Not run by tests or CI. Traffic only on 127.0.95.0/24.
set -euo pipefail
. "$(dirname "$0")/../ab_common.sh"

A=${1:?old nodeway binary}
B=${2:?new nodeway binary}
ROUNDS=${3:-5}
DUR=${4:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNS=${CONNS:-32}
BE=127.0.95.1 IPA=127.0.95.10 IPB=127.0.95.11 PORT=8081
for c in wrk python3 curl; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }; done

PIN=(taskset -c "$SERVER_CPU")

"${PIN[@]}" "$B" echo --listen $BE:$PORT --name be >/dev/null 2>&1 & PIDS+=($!); BE_PID=$!
service() { # name clusterIP
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec: {clusterIP: $2, ports: [{name: http, port: 80, targetPort: $PORT}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $PORT}]
endpoints:
- addresses: [$BE]
YAML
}
start_nodeway() { # binary name clusterIP admin-port
  mkdir -p "$WORK/$2"
  service "$2" "$3" >"$WORK/$2/svc.yaml"
  NODEWAY_LOG=warn "${PIN[@]}" "$1" run --config "$WORK/$2" --threads 1 \
    --dns-listen "$3:1053" --http-listen "$3:18080" --https-listen "$3:18443" \
    --admin-listen "$3:$4" >>"$WORK/nodeway.log" 2>&1 &
}
start_nodeway "$A" a $IPA 19091; PIDS+=($!); A_PID=$!
start_nodeway "$B" b $IPB 19092; PIDS+=($!); B_PID=$!
for i in $(seq 100); do
  ok=1
  for a in $IPA $IPB; do curl -fs -o /dev/null "http://$a/hostname" || ok=0; done
  [ $ok = 1 ] && break
  [ "$i" = 100 ] && { echo "servers did not come up" >&2; cat "$WORK/nodeway.log" >&2; exit 1; }
  sleep 0.1
done

run() { # name addr pids...
  local n=$1 a=$2; shift 2
  measure "$n" "$*" -H "Connection: close" "http://$a/hostname"
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    run old $IPA $BE_PID $A_PID; run new $IPB $BE_PID $B_PID
  else
    run new $IPB $BE_PID $B_PID; run old $IPA $BE_PID $A_PID
  fi
done | tee "$WORK/rounds"
medians "$WORK/rounds" conn/s
