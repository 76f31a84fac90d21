#!/usr/bin/env bash
# Crash loop of the disk store: N times, start the facade on one data dir, check that it becomes ready
# and answers a delivery 204 (else HANG), send deliveries for 3-4 s (wrk, 64 connections), kill -9.
#   bash benches/webhook/crash_loop.sh BIN N          CPUS=0: facade and wrk on one CPU (taskset -c 0)
# Prints per run the time to ready and the journals the crash left (what the next start replays).
# LOG=info: the facade's log level (default warn); KEEP=path: the data dir and the log copied there at the end.
set -uo pipefail
BIN=$1 N=$2
. "$(dirname "$0")/lib.sh"
pre=(); [ -n "${CPUS:-}" ] && pre=(taskset -c "$CPUS")
probe='{"transaction_id":"probe-%s","autocall_id":"probe","direction":"outbound","destination_number":"0912000001",'
probe+='"disposition":"ANSWERED","hangup_cause":"NORMAL_CLEARING","bill_sec":"12","duration":30,"last_updated_date":1764590100000,"recording_file":""}'
hangs=0
for i in $(seq "$N"); do
  grpc=$(free_port) admin=$(free_port) hook=$(free_port)
  t0=$(date +%s%N)
  RUST_LOG=${LOG:-warn} CALLBOT_CALLER_AUTH=mesh "${pre[@]}" "$BIN" --listen "127.0.0.1:$grpc" --admin-listen "127.0.0.1:$admin" \
    --upstream-url "http://127.0.0.1:$sim_port" --api-key bench-key --webhook-listen "127.0.0.1:$hook" --webhook-secret "$secret" \
    --events-store disk --data-dir "$work/data" >>"$work/log" 2>&1 & p=$!
  ok=0
  for _ in $(seq 2000); do curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null && { ok=1; break; }; sleep 0.01; done
  ready=$(( ($(date +%s%N) - t0) / 1000000 ))
  # shellcheck disable=SC2059
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$(printf "$probe" "$i-$RANDOM")" \
    "http://127.0.0.1:$hook/webhooks/callbot/$token")
  journals=$(find "$work/data/store/journals" -type f | wc -l)
  if [ $ok = 0 ] || [ "$code" != 204 ]; then
    echo "run $i: HANG (ready: $ok after $ready ms; a delivery answered '$code'; journals: $journals)"
    hangs=$((hangs + 1))
    kill -KILL $p; wait $p 2>/dev/null; rm -rf "$work/data"; continue
  fi
  RUN="c$i-$RANDOM" "${pre[@]}" wrk -t1 -c64 -d4s -s "$LUA" "http://127.0.0.1:$hook/webhooks/callbot/$token" >/dev/null 2>&1 & w=$!
  sleep "3.$((RANDOM % 10))"; kill -KILL $p; wait $p 2>/dev/null; wait $w 2>/dev/null
  echo "run $i: ready in $ready ms, a delivery 204; the crash left $(find "$work/data/store/journals" -type f | wc -l) journals"
done
echo "hangs: $hangs of $N"
if [ -n "${KEEP:-}" ]; then cp -r "$work/data" "$KEEP"; cp "$work/log" "$KEEP.log"; fi
