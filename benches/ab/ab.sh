#!/usr/bin/env bash
# A/B runs of the load generator against several facade binaries, interleaved (A B C A B C ...)
# so that drift in the machine's load falls on every binary alike. Prints one table row per run.
#
#   bash benches/ab/ab.sh ROUNDS LOADGEN SIMBIN name=path [name=path ...] -- [loadgen scenario flags]
#
# LOADGEN is a release build of examples/loadgen; SIMBIN the callbot-facade binary whose
# `simulate` serves as the upstream for every run (the same simulator for every binary); each
# name=path binary runs in the facade's place (`--facade-bin`).
set -euo pipefail
rounds=$1 loadgen=$2 simbin=$3; shift 3
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
for r in $(seq 1 "$rounds"); do
  for nb in "${bins[@]}"; do
    name=${nb%%=*} bin=${nb#*=}
    out=$("$loadgen" --bin "$simbin" --facade-bin "$bin" "$@" 2>&1) || { echo "$name: loadgen failed"; echo "$out" | tail -5; exit 1; }
    echo "$out" | grep -E '^\| (facade|direct) ' | sed "s/^/$name r$r /"
  done
done
