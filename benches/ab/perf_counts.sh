#!/usr/bin/env bash
# Context switches, page faults and task clock of the facade over N CreateSessions (perf stat), after 5,000
# warm-up calls, against ec03bc0's simulator at /tmp/bin/old-facade; the request from h2load_callgrind.sh.
#   bash benches/ab/perf_counts.sh BIN N [facade args]
set -euo pipefail
bin=$1 n=$2; shift 2
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
simport=$(free_port) port=$(free_port) admin=$(free_port)
RUST_LOG=warn /tmp/bin/old-facade simulate --listen 127.0.0.1:$simport >/dev/null 2>&1 & simpid=$!
trap 'kill $simpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$simport) 2>/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$simport
RUST_LOG=info CALLBOT_CALLER_AUTH=mesh CALLBOT_EVENTS_STORE=memory $bin --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin --upstream-url $url --api-key loadgen-key "$@" >/dev/null 2>&1 & pid=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
req=${REQ:-/tmp/cg-b7w/req.bin}
h2load -n 5000 -c 1 -m 64 -d $req -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession >/dev/null
perf stat -e ${EVENTS:-context-switches,page-faults,task-clock} -p $pid -o /tmp/cs.out &
pp=$!
sleep 0.2
h2load -n $n -c 1 -m 64 -d $req -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:$port/callbot.v1.CallBotService/CreateSession | grep -E '^finished'
kill -INT $pp; wait $pp || true
kill $pid
grep -vE "^#|^$" /tmp/cs.out
