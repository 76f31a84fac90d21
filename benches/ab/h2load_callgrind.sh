#!/usr/bin/env bash
# callgrind of one facade binary under h2load: CreateSession x N at 64 in flight, one connection.
#   bash benches/ab/h2load_callgrind.sh SIMBIN FACADEBIN OUTDIR N [facade args...]
# With WINDOW=W (e.g. WINDOW=500): W calls first, then the counters are zeroed and only the N calls
# are counted (out.PID.1: no start-up, no warm-up, no shutdown; what h2load's CPU figure covers).
set -euo pipefail
sim=$1 bin=$2 out=$3 n=$4; shift 4
mkdir -p "$out"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
simport=$(free_port) port=$(free_port) admin=$(free_port)
RUST_LOG=warn "$sim" simulate --listen 127.0.0.1:$simport >/dev/null 2>&1 &
simpid=$!
trap 'kill $simpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$simport) 2>/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$simport
token=$(curl -s "$url/api/auth?apiKey=loadgen-key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"]["access_token"])')
script=$(curl -s -H 'x-api-key: loadgen-key' -H "authorization: Bearer $token" "$url/api/call_bot/script/list" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"][-1]["id"])')
python3 "$(dirname "$0")/create_session_frame.py" "$script" 15 "$out/req.bin" >/dev/null
RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$out/out.%p" "$bin" --listen 127.0.0.1:$port \
  --admin-listen 127.0.0.1:$admin --upstream-url "$url" --api-key loadgen-key "$@" >/dev/null 2>"$out/stderr" &
pid=$!
for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
if [ -n "${WINDOW:-}" ]; then
  h2load -n "$WINDOW" -c 1 -m 64 -d "$out/req.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession" | grep -E '^status codes'
  callgrind_control -z $pid >/dev/null
fi
h2load -n "$n" -c 1 -m 64 -d "$out/req.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession" | grep -E '^(finished|requests|status codes)' | tee "$out/h2load.txt"
if [ -n "${WINDOW:-}" ]; then callgrind_control -d $pid >/dev/null; fi
kill -TERM $pid; wait $pid || true
if [ -n "${WINDOW:-}" ]; then grep -h '^summary\|^totals' "$out"/out.$pid.1 | head -2; else grep -h '^summary\|^totals' "$out"/out.* | head -2; fi
