#!/usr/bin/env bash
# Idle CPU of a facade whose calling policy names a do-not-call file of N numbers (the reloader
# polls it every second): CPU seconds over S seconds, after a 3 s start.
#   bash benches/reload/idle.sh BIN [N=1000000] [S=20]
set -euo pipefail
bin=$1 n=${2:-1000000} secs=${3:-20}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 - "$dir/dnc.txt" "$n" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write("09%08d\n" % i)
PY
cat >"$dir/policy.yaml" <<YAML
policies:
  - tenant: default
    time_zone: Asia/Ho_Chi_Minh
    do_not_call_files: [$dir/dnc.txt]
    service:
      hours: ["00:00-24:00"]
YAML
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RUST_LOG=warn CALLBOT_EVENTS_STORE=memory "$bin" --listen 127.0.0.1:$(free_port) --admin-listen 127.0.0.1:$(free_port) \
  --calling-policy "$dir/policy.yaml" >/dev/null 2>&1 &
pid=$!
sleep 3
kill -0 $pid
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu); sleep "$secs"; c1=$(cpu)
echo "$(basename "$bin"): $(du -h "$dir/dnc.txt" | cut -f1) do-not-call file, CPU over ${secs} s idle: $(awk -v c=$((c1 - c0)) -v t="$tck" -v s="$secs" 'BEGIN { printf "%.3f s (%.2f %% of a core)", c / t, c / t / s * 100 }')"
