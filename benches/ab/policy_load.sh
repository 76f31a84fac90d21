#!/usr/bin/env bash
# Start a release facade (built-in simulator) with and without the 1M-number policy; report the do-not-call
# load log line, time to ready, RSS once ready, and idle CPU over 20 s (the reloader's polls of the files).
# Expects /tmp/policybench/dnc.txt (BENCHMARKS.md, "The calling policy", says how it is made); writes the
# policy file naming it.
set -euo pipefail
bin=$1
cat > /tmp/policybench/policy.yaml <<'YAML'
policies:
  - tenant: default
    time_zone: Asia/Ho_Chi_Minh
    do_not_call_files: [/tmp/policybench/dnc.txt]
    advertising:
      preset: vn-decree-91
    service:
      hours: ["00:00-24:00"]
YAML
tck=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for mode in none policy; do
  port=$(free_port) admin=$(free_port)
  extra=()
  [ $mode = policy ] && extra=(--calling-policy /tmp/policybench/policy.yaml)
  t0=$(date +%s%N)
  RUST_LOG=info "$bin" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin "${extra[@]}" 2>/tmp/policybench/$mode.log >/dev/null &
  pid=$!
  until curl -sf http://127.0.0.1:$admin/readyz >/dev/null; do sleep 0.01; done
  t1=$(date +%s%N)
  rss=$(curl -s http://127.0.0.1:$admin/metrics | awk '/^process_resident_memory_bytes/{print $2}')
  c0=$(awk '{print $14 + $15}' /proc/$pid/stat); sleep 20; c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  echo "$mode: ready after $(( (t1 - t0) / 1000000 )) ms; RSS $(python3 -c "print(round($rss/1048576,1))") MiB; idle CPU over 20 s: $(python3 -c "print(round(($c1-$c0)/$tck*1000))") ms"
  grep -o 'do-not-call files loaded.*' /tmp/policybench/$mode.log || true
done
