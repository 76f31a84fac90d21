#!/usr/bin/env bash
# Facade RSS idle, then with 100 open console streams (50 Sessions pages, 50 Session pages), then after a
# session's calls went to all of them (BENCHMARKS.md, "The console"). Needs grpcurl and curl.
#   bash benches/console/memory.sh target/release/callbot-facade
set -u
BIN=$1
"$BIN" --listen 127.0.0.1:50081 --admin-listen 127.0.0.1:9181 >/tmp/console-mem-facade.log 2>&1 & pid=$!
trap 'kill $pid 2>/dev/null; kill $(jobs -p) 2>/dev/null' EXIT
sleep 2
create() { grpcurl -plaintext -d '{"script_id": "64915bc76a690c0edad14723", "contacts": [{"phone": "0912345670"}, {"phone": "0912345677"}, {"phone": "0912345678"}]}' 127.0.0.1:50081 callbot.v1.CallBotService/CreateSession | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"]["id"])'; }
first=$(create); sleep 2
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
echo "idle (one session done): $(rss) KiB"
for i in $(seq 50); do curl -sN http://127.0.0.1:9181/console/live/sessions >/dev/null & done
for i in $(seq 50); do curl -sN "http://127.0.0.1:9181/console/live/sessions/$first" >/dev/null & done
sleep 3
echo "100 console streams open: $(rss) KiB; open admin connections: $(curl -s http://127.0.0.1:9181/metrics | grep '^callbot_http_connections{listener="admin"}')"
create >/dev/null; sleep 3
echo "after a session's calls reached the 50 Sessions streams: $(rss) KiB"
