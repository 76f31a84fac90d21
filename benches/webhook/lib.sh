# Shared by run.sh and settings.sh (sourced, after BIN is set): the receiver's secret and token, a work dir and
# the processes to stop on exit, port and /proc helpers, and the built-in simulator as the upstream ($sim_port).
LUA=$(dirname "${BASH_SOURCE[0]}")/cdr.lua
secret=webhook-bench-secret-0123456789abcdef
token="default.$(printf 'callbot-webhook:default' | openssl dgst -sha256 -hmac "$secret" | awk '{print $NF}' | cut -c1-32)"
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1==s {print $2}'; }

sim_port=$(free_port)
"$BIN" simulate --listen "127.0.0.1:$sim_port" >/dev/null 2>&1 & pids+=($!)
wait_port "$sim_port"
