#!/usr/bin/env bash
# Context switches, page faults and task clock of the facade over N CreateSessions (perf stat), after 5,000
# warm-up calls, against one simulator (ec03bc0's at /tmp/bin/old-facade unless SIM says otherwise); the request
# is h2load.sh's (15 contacts, the simulator's last script).
#   bash benches/ab/perf_counts.sh BIN N [facade args]
#   EVENTS=a,b,c        perf stat's events (default: context-switches,page-faults,task-clock)
#   RECORD=out.data     perf record -F 1999 instead (then: perf report -i out.data --no-children --sort symbol)
#   PERF_ARGS="..."     more perf record options (e.g. --call-graph=dwarf,65528)
set -euo pipefail
bin=$1 n=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
sim=${SIM:-/tmp/bin/old-facade}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
simport=$(free_port) port=$(free_port) admin=$(free_port)
RUST_LOG=warn "$sim" simulate --listen 127.0.0.1:$simport >/dev/null 2>&1 & simpid=$!
req=$(mktemp /tmp/create-session.XXXX)
trap 'kill $simpid 2>/dev/null || true; rm -f "$req"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$simport) 2>/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$simport
token=$(curl -s "$url/api/auth?apiKey=loadgen-key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"]["access_token"])')
script=$(curl -s -H 'x-api-key: loadgen-key' -H "authorization: Bearer $token" "$url/api/call_bot/script/list" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"][-1]["id"])')
python3 "$here/create_session_frame.py" "$script" 15 "$req" >/dev/null
RUST_LOG=info CALLBOT_CALLER_AUTH=mesh CALLBOT_EVENTS_STORE=memory $bin --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin --upstream-url $url --api-key loadgen-key "$@" >/dev/null 2>&1 & pid=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
h2() { h2load -n "$1" -c 1 -m 64 -d "$req" -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession"; }
h2 5000 >/dev/null
if [ -n "${RECORD:-}" ]; then
  perf record ${PERF_ARGS:-} -F 1999 -p $pid -o "$RECORD" 2>/dev/null &
else
  perf stat -e "${EVENTS:-context-switches,page-faults,task-clock}" -p $pid -o /tmp/cs.out &
fi
pp=$!
sleep 0.2
h2 "$n" | grep -E '^finished'
grep -E "VmRSS|VmHWM" /proc/$pid/status
kill -INT $pp; wait $pp || true
kill $pid
[ -n "${RECORD:-}" ] || grep -vE "^#|^$" /tmp/cs.out
