#!/usr/bin/env bash
# The disk store over a long storm: the facade on DATA (an empty or kept data dir) under wrk (64 connections,
# a distinct end-of-call record per request) for DUR, sampling every 15 s its RSS, high-water mark, the data
# dir's size (du -sm), the store's whole compactions and the events stored; then SIGTERM and two starts on
# the folder as left (spawn to /readyz 200, the "event store opened" line, the start's high-water mark).
#   bash benches/webhook/long_run.sh BIN DATA 180s        (BENCHMARKS.md, "Eighth session")
#   CRASH=1 bash benches/webhook/long_run.sh BIN DATA 8s  kill -9 at the end instead of SIGTERM
set -uo pipefail
BIN=$1 DATA=$2 DUR=$3
. "$(dirname "$0")/lib.sh"
start() {
  grpc=$(free_port) admin=$(free_port) hook=$(free_port)
  RUST_LOG=info CALLBOT_CALLER_AUTH=mesh "$BIN" --listen "127.0.0.1:$grpc" --admin-listen "127.0.0.1:$admin" \
    --upstream-url "http://127.0.0.1:$sim_port" --api-key bench-key --webhook-listen "127.0.0.1:$hook" --webhook-secret "$secret" \
    --events-store disk --data-dir "$DATA" >"$work/log" 2>&1 & fpid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null; do
    kill -0 $fpid 2>/dev/null || { echo "the facade exited: $(tail -1 "$work/log")" >&2; exit 1; }
    sleep 0.01
  done
}
t0=$(date +%s%N); start
RUN="long-$RANDOM" wrk -t2 -c64 -d"$DUR" -s "$LUA" "http://127.0.0.1:$hook/webhooks/callbot/$token" >"$work/wrk" & w=$!
while kill -0 $w 2>/dev/null; do
  sleep 15
  kill -0 $w 2>/dev/null || break
  echo "$(date +%T) RSS $(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$fpid/status) MiB, high-water $(hwm $fpid) MiB," \
    "data dir $(du -sm "$DATA" | cut -f1) MB, compactions $(metric $admin callbot_event_store_compactions_total)," \
    "stored $(metric $admin callbot_events_stored_total)"
done
grep Requests "$work/wrk"
# CRASH=1: kill -9 instead (the next start replays the journals).
if [ -n "${CRASH:-}" ]; then kill -KILL $fpid; else kill -TERM $fpid; fi
wait $fpid
for i in 1 2; do
  t0=$(date +%s%N); start
  echo "start $i: ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms, high-water $(hwm $fpid) MiB;" \
    "$(grep -o 'disk_bytes=[0-9]* events=[0-9]* sessions=[0-9]* elapsed_ms=[0-9]*' "$work/log" | head -1)"
  kill -TERM $fpid; wait $fpid
done
