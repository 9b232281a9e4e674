# Sourced by the A/B benchmarks (bench/l4/ab.sh, bench/l7/ab.sh): server
# CPU of process trees, and the medians of the rounds.

HZ=$(getconf CLK_TCK)

# A scratch folder, and the processes to stop, both cleaned up on exit.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# User+system CPU ticks of the given processes so far.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

# Runs wrk and prints "NAME RATE CPU-us-per-request" for it: the server
# CPU (of PIDS) between before and after, per request wrk made.
#   measure NAME "PIDS" wrk-args...
measure() {
  local n=$1 pids=$2; shift 2
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "$@" >/dev/null
  local b e out req rps
  # shellcheck disable=SC2086
  b=$(ticks $pids)
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" "$@")
  # shellcheck disable=SC2086
  e=$(ticks $pids)
  req=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  echo "$n $rps $(python3 -c "print('%.1f' % (($e - $b) / $HZ * 1e6 / $req))")"
}

# Medians per name of the "NAME RATE CPU" lines in FILE; UNIT names the
# rate (req/s, conn/s).
medians() {
  python3 - "$1" "$2" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rate, us = line.split()
    runs.setdefault(name, []).append((float(rate), float(us)))
unit = sys.argv[2]
print()
for name, v in runs.items():
    print(f"{name:6} median {statistics.median(x[0] for x in v):8.0f} {unit}  {statistics.median(x[1] for x in v):6.1f} us server CPU/{unit.split('/')[0]}")
PY
}
