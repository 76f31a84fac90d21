#!/usr/bin/env bash
# The disk store under several settings, in one run (BENCHMARKS.md, "Durable event store": "One flusher, one
# compactor"): the webhook floor once, then for each setting (environment variables given to the facade, "" for
# none) the facade with the disk store under wrk (64 connections, 2 s warm-up, DUR measured, a distinct
# end-of-call record per request), then on its data dir as left: peak RSS, retained events, bytes per retained
# event, and a restart (SIGTERM, start, spawn to /readyz 200) with its peak RSS.
#
#   benches/webhook/settings.sh target/release/callbot-facade "" "MIMALLOC_PURGE_DELAY=0"
#   STORE=memory benches/webhook/settings.sh target/release/callbot-facade ""     # the memory store instead
#   FLOOR=target/release/examples/webhook_floor (the default path below); DUR=10s
set -euo pipefail
BIN=$1; shift
FLOOR=${FLOOR:-target/release/examples/webhook_floor}
DUR=${DUR:-10s} CONN=64
. "$(dirname "$0")/lib.sh"
measure() {
  local pid=$1 url="http://127.0.0.1:$2/webhooks/callbot/$token"
  RUN="w-$RANDOM$RANDOM" wrk -t2 -c"$CONN" -d2s -s "$LUA" "$url" >/dev/null
  local c0 c1 out; c0=$(cpu "$pid")
  out=$(RUN="m-$RANDOM$RANDOM" wrk -t2 -c"$CONN" -d"$DUR" --latency -s "$LUA" "$url")
  c1=$(cpu "$pid")
  total=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out"); bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  us=$(echo "($c1 - $c0) * 1000000 / $tick / $total" | bc -l)
}
fport=$(free_port)
"$FLOOR" --webhook-listen "127.0.0.1:$fport" 2>/dev/null & floor=$!; pids+=("$floor")
wait_port "$fport"; measure "$floor" "$fport"; kill "$floor"
floor_rps=$rps
printf '| config | k/s | ratio | µs/delivery | p99 | peak RSS MiB | retained | B/event apparent (alloc) | restart ms, RSS | load |\n|---|---|---|---|---|---|---|---|---|---|\n'
printf '| floor | %.1f | | %.1f | %s | | | | | %s |\n' "$(echo "$rps/1000" | bc -l)" "$us" "$p99" "$(cut -d' ' -f1 /proc/loadavg)"
for cfg in "$@"; do
  rm -rf "$work/data"
  grpc=$(free_port); admin=$(free_port); hook=$(free_port)
  start_f() { env $cfg RUST_LOG=warn CALLBOT_CALLER_AUTH=mesh "$BIN" --listen "127.0.0.1:$grpc" --admin-listen "127.0.0.1:$admin" \
    --upstream-url "http://127.0.0.1:$sim_port" --api-key bench-key --webhook-listen "127.0.0.1:$hook" --webhook-secret "$secret" \
    --events-store "${STORE:-disk}" --data-dir "$work/data" >"$work/f.log" 2>&1 & fpid=$!; pids+=("$fpid"); wait_port "$hook"; }
  start_f
  measure "$fpid" "$hook"
  sleep 2
  retained=$(metric "$admin" callbot_event_store_events); peak=$(hwm "$fpid")
  mkdir -p "$work/data"; bytes=$(du -sb "$work/data" | cut -f1); alloc=$(( $(du -sk "$work/data" | cut -f1) * 1024 ))
  kill -TERM "$fpid"; while kill -0 "$fpid" 2>/dev/null; do sleep 0.05; done
  t0=$(date +%s%N); start_f
  until curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null; do sleep 0.01; done
  ready=$(( ($(date +%s%N) - t0) / 1000000 )); sleep 1; rpeak=$(hwm "$fpid")
  kill -TERM "$fpid"; while kill -0 "$fpid" 2>/dev/null; do sleep 0.05; done
  printf '| %s | %.1f | %.2f× | %.1f | %s | %s | %s | %s (%s) | %s, %s | %s |\n' "${cfg:-default}" "$(echo "$rps/1000" | bc -l)" "$(echo "$rps/$floor_rps" | bc -l)" "$us" "$p99" "$peak" "$retained" "$(( bytes / retained ))" "$(( alloc / retained ))" "$ready" "$rpeak" "$(cut -d' ' -f1 /proc/loadavg)"
done
