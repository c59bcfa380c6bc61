#!/bin/bash
# Per-thread CPU per connection of our forward, engine-only (default) against every connection
# reported to JS (MPTCP_PROXY_ENGINE_ONLY=off), beside the C relay: short echo connections from
# the testbed's client, rounds alternated. Reads utime+stime of each thread from /proc before
# and after each run (1 tick per 10 000 connections = 1 µs per connection).
#   bash bench/tools/conn-cpu-per-thread.sh [ROUNDS] [CONNECTIONS]      (root; after npm run build)
# Brings up its own testbed (prefix cpt-) and takes it down; ends only the processes it started.
set -eu
ROUNDS=${1:-3}
N=${2:-4000}
P=cpt-
cd "$(dirname "$0")/../.."
node dist/testbed/cli.js up --prefix $P >/dev/null
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; sleep 0.5; node dist/testbed/cli.js down --prefix $P >/dev/null; }
trap cleanup EXIT
for ns in ${P}cli ${P}prx ${P}srv; do ip netns exec $ns sysctl -qw net.ipv4.ip_local_port_range="20000 65000" net.ipv4.tcp_tw_reuse=1; done
for port in 7010 7011 7012; do ip netns exec ${P}srv node dist/bench/peers/echo-server.js --host 10.71.3.2 --port $port >/dev/null 2>&1 & pids+=($!); done
CRELAY=$(mktemp -d)/c-relay
cc -O2 -o "$CRELAY" bench/peers/c-relay.c
ip netns exec ${P}prx node dist/src/cli/main.js forward --listen 0.0.0.0:9100 --to 10.71.3.2:7010 --log-format json >/dev/null 2>&1 & ON=$!
ip netns exec ${P}prx env MPTCP_PROXY_ENGINE_ONLY=off node dist/src/cli/main.js forward --listen 0.0.0.0:9102 --to 10.71.3.2:7011 --log-format json >/dev/null 2>&1 & OFF=$!
ip netns exec ${P}prx "$CRELAY" 9101 10.71.3.2 7012 >/dev/null 2>&1 & CR=$!
pids+=($ON $OFF $CR)
sleep 2
ticks() { # "thread:ticks ..." (main = the process's first thread)
  for t in /proc/$1/task/*; do
    local tid; tid=$(basename "$t")
    local name=main; [ "$tid" = "$1" ] || name=$(tr -d ' ' <"$t/comm")-$tid
    awk -v n="$name" '{printf "%s:%d ", n, $14+$15}' "$t/stat"
  done
}
load() { ip netns exec ${P}cli node dist/bench/load/conn-load.js --mode echo --host 10.71.1.1 --port "$1" --echo-bytes 100 --concurrency 16 --duration-ms 30000 --max-requests "$2" --mptcp; }
run() { # label pid port
  local before after out
  before=$(ticks "$2"); out=$(load "$3" "$N"); after=$(ticks "$2")
  python3 - "$1" "$before" "$after" "$N" "$out" <<'PY'
import json, sys
label, b, a, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
def parse(s):
    d = {}
    for x in s.split():
        k, v = x.rsplit(':', 1); d[k] = d.get(k, 0) + int(v)
    return d
b, a = parse(b), parse(a)
per = {k: (a[k] - b.get(k, 0)) * 10000 // n for k in a}
print(f"{label:8} rate {round(out['rate'])}/s ok {out['ok']} errors {out['errors']}  µs/conn whole {sum(per.values())}  " + ", ".join(f"{k} {v}" for k, v in per.items() if v > 0))
PY
}
for port in 9100 9102 9101; do load $port 2000 >/dev/null; done # warm-up
for r in $(seq "$ROUNDS"); do
  run engine-only $ON 9100; run js-way $OFF 9102; run c-relay $CR 9101
done
