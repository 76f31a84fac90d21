#!/usr/bin/env bash
# Webhook deliveries, in one run (BENCHMARKS.md, "Durable event store"): the floor (examples/webhook_floor:
# axum, 204 after parsing the JSON body), the facade with the memory store, the facade with the disk store
# (fsync before 204), each under wrk from outside (64 connections, a distinct end-of-call record per request,
# benches/webhook/cdr.lua); then, on the disk store left full (--events-max retained): bytes on disk per
# retained event, the process's peak RSS, and a restart: SIGTERM, start, time to /readyz, its peak RSS.
#
#   cargo build --release --bin callbot-facade --example webhook_floor
#   benches/webhook/run.sh            # DUR=10s CONN=64 ROUNDS=1; BIN, FLOOR: the binaries
set -euo pipefail
BIN=${BIN:-target/release/callbot-facade}
FLOOR=${FLOOR:-target/release/examples/webhook_floor}
DUR=${DUR:-10s} CONN=${CONN:-64} ROUNDS=${ROUNDS:-1}
. "$(dirname "$0")/lib.sh"

# facade STORE DATA_DIR -> sets fpid, fhook, fadmin
facade() {
  local grpc; grpc=$(free_port); fadmin=$(free_port); fhook=$(free_port)
  RUST_LOG=warn,callbot_facade::app::events=info CALLBOT_CALLER_AUTH=mesh "$BIN" --listen "127.0.0.1:$grpc" --admin-listen "127.0.0.1:$fadmin" \
    --upstream-url "http://127.0.0.1:$sim_port" --api-key bench-key \
    --webhook-listen "127.0.0.1:$fhook" --webhook-secret "$secret" --events-store "$1" --data-dir "$2" \
    >"$work/facade-$1.log" 2>&1 &
  fpid=$!; pids+=("$fpid")
  wait_port "$fhook"
}

# measure NAME PID PORT: a 2 s warm-up, then DUR measured; prints a table row.
measure() {
  local name=$1 pid=$2 port=$3 url="http://127.0.0.1:$3/webhooks/callbot/$token"
  RUN="$name-warm-$RANDOM$RANDOM" wrk -t2 -c"$CONN" -d2s -s "$LUA" "$url" >/dev/null
  local c0 c1 out
  c0=$(cpu "$pid")
  out=$(RUN="$name-$RANDOM$RANDOM" wrk -t2 -c"$CONN" -d"$DUR" --latency -s "$LUA" "$url")
  c1=$(cpu "$pid")
  local rps total bad p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); bad=${bad:-0}
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '| %s | %s | %s | %s | %s / %s | %.1f | %s |\n' "$name" "$rps" "$total" "$bad" "$p50" "$p99" \
    "$(echo "($c1 - $c0) * 1000000 / $tick / $total" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "| target | deliveries/s | deliveries | non-204 | latency p50 / p99 | CPU µs/delivery | load 1m |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  fport=$(free_port)
  "$FLOOR" --webhook-listen "127.0.0.1:$fport" 2>/dev/null & floor=$!; pids+=("$floor")
  wait_port "$fport"
  measure "floor (webhook_floor)" "$floor" "$fport"
  kill "$floor"
  facade memory "$work/unused"
  measure "facade, --events-store memory" "$fpid" "$fhook"
  kill "$fpid"
  rm -rf "$work/data"
  facade disk "$work/data"
  measure "facade, --events-store disk" "$fpid" "$fhook"
  disk_pid=$fpid disk_admin=$fadmin
done

sleep 2  # the store's gauges are read every second
retained=$(metric "$disk_admin" callbot_event_store_events)
fsyncs=$(metric "$disk_admin" callbot_event_store_fsyncs_total)
stored=$(metric "$disk_admin" callbot_events_stored_total)
echo
echo "disk store after the run: $retained events retained, $stored stored in all, $fsyncs fsyncs ($(echo "$stored / $fsyncs" | bc -l | xargs printf '%.1f') deliveries per fsync)"
echo "peak RSS of the process that stored them (VmHWM): $(hwm "$disk_pid") MiB"
bytes=$(du -sb "$work/data" | cut -f1); alloc=$(( $(du -sk "$work/data" | cut -f1) * 1024 ))
echo "data dir as left: $bytes bytes apparent, $alloc allocated = $(( alloc / retained )) bytes per retained event (apparent $(( bytes / retained )))"
kill -TERM "$disk_pid"; while kill -0 "$disk_pid" 2>/dev/null; do sleep 0.05; done
start=$(date +%s%N)
facade disk "$work/data"
until curl -fsS -o /dev/null "http://127.0.0.1:$fadmin/readyz" 2>/dev/null; do sleep 0.01; done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 2
echo "restart: ready in $ready ms (spawn to /readyz 200) with $(metric "$fadmin" callbot_event_store_events) events; peak RSS $(hwm "$fpid") MiB"
grep -o '"elapsed_ms":[0-9]*' "$work/facade-disk.log" | head -1 | sed 's/^/  log: event store opened, /' || true
alloc=$(( $(du -sk "$work/data" | cut -f1) * 1024 ))
echo "data dir after the restart: $alloc allocated = $(( alloc / retained )) bytes per retained event"
