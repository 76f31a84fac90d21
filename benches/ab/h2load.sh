#!/usr/bin/env bash
# CreateSession CPU per call from outside (h2load), interleaved A B C A B C ... against ONE simulator.
#   bash benches/ab/h2load.sh ROUNDS REQUESTS SIMBIN name=path[,extra facade args comma-separated] ...
# Each binary is started with the facade's flags (--listen, --admin-listen, --upstream-url, --api-key;
# RUST_LOG=info, logs to /dev/null), warmed with 5,000 calls, then h2load sends REQUESTS calls at
# 64 in flight on one connection (-c 1 -m 64); CPU = utime+stime (/proc/<pid>/stat) over those calls.
# PURPOSE=1|2 adds CreateSessionRequest.purpose to the request (the calling policy's figures).
set -euo pipefail
rounds=$1 requests=$2 sim=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
tck=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
simport=$(free_port)
RUST_LOG=warn "$sim" simulate --listen 127.0.0.1:$simport >/dev/null 2>&1 &
simpid=$!
trap 'kill $simpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$simport) 2>/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$simport
token=$(curl -s "$url/api/auth?apiKey=loadgen-key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"]["access_token"])')
script=$(curl -s -H 'x-api-key: loadgen-key' -H "authorization: Bearer $token" "$url/api/call_bot/script/list" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"][-1]["id"])')
req=$(mktemp /tmp/create-session.XXXX)
trap 'kill $simpid 2>/dev/null || true; rm -f "$req"' EXIT
# PURPOSE=2 sends purpose SERVICE (the calling policy's figures); unset = no purpose, as before.
python3 "$here/create_session_frame.py" "$script" 15 "$req" "${PURPOSE:-}" >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
printf '| run | binary | calls | ok | req/s | mean latency | facade CPU µs/call | sim CPU µs/call | load 1m |\n|---|---|---|---|---|---|---|---|---|\n'
for r in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*} rest=${spec#*=}
    bin=${rest%%,*} extra=()
    [ "$rest" != "$bin" ] && IFS=, read -r -a extra <<<"${rest#*,}"
    port=$(free_port) admin=$(free_port)
    RUST_LOG=info CALLBOT_CALLER_AUTH=mesh CALLBOT_EVENTS_STORE=memory "$bin" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin --upstream-url "$url" \
      --api-key loadgen-key "${extra[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
    kill -0 $pid 2>/dev/null || { echo "$name did not start (port $port)" >&2; exit 1; }
    h2() { h2load -n "$1" -c 1 -m 64 -d "$req" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession"; }
    h2 5000 >/dev/null
    f0=$(cpu $pid) s0=$(cpu $simpid) load=$(cut -d' ' -f1 /proc/loadavg)
    out=$(h2 "$requests")
    f1=$(cpu $pid) s1=$(cpu $simpid)
    kill -TERM $pid; wait $pid 2>/dev/null || true
    ok=$(echo "$out" | awk '/^requests:/{print $8}')
    rps=$(echo "$out" | awk '/^finished in/{print $4}' | tr -d ,)
    mean=$(echo "$out" | awk '/^time for request:/{print $6}')
    # `ok` is h2load's count of HTTP 2xx; a gRPC error would travel in trailers with HTTP 200, so the
    # gRPC codes are checked in the access lines of h2load_callgrind.sh's run (RUST_LOG=info there).
    awk -v n="$name" -v r="$r" -v c="$requests" -v ok="$ok" -v rps="$rps" -v m="$mean" -v f="$((f1 - f0))" \
      -v s="$((s1 - s0))" -v t="$tck" -v l="$load" \
      'BEGIN { printf "| %s | %s | %d | %s | %s | %s | %.1f | %.1f | %s |\n", r, n, c, ok, rps, m, f / t / c * 1e6, s / t / c * 1e6, l }'
  done
done
