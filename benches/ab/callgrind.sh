#!/bin/sh
# For the load generator's --facade-bin: runs the facade binary named by $CALLGRIND_FACADE under
# callgrind, so a build is judged by the instructions it executes per call, which do not move
# with whatever else the machine's cores are doing (CPU seconds on a shared VM do). The load
# generator ends the facade with SIGTERM, so callgrind writes its totals to $CALLGRIND_OUT.
#
#   CALLGRIND_FACADE=/tmp/a-facade CALLGRIND_OUT=/tmp/cg-a target/release/examples/loadgen \
#     --facade-bin benches/ab/callgrind.sh --rpc create-session --concurrency 64 --duration 10s \
#     --warmup 0s --path facade
#   grep '^summary' /tmp/cg-a/out.*      # instructions; divide by the requests of the row
exec valgrind --tool=callgrind --callgrind-out-file="${CALLGRIND_OUT:-/tmp/cg}/out.%p" "$CALLGRIND_FACADE" "$@"
