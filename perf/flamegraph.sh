#!/usr/bin/env bash
# Profile of the proxy under one scenario's load: runs perf/SCENARIO.sh up to the point where its
# proxy is started and warm, then, instead of the alternating runs, loads the proxy alone (the
# scenario's own proxy load, run 2 s longer than the recording), records
# `perf record -F 999 -g -p PROXY_PID` for SECONDS, renders an SVG flame graph with inferno and
# prints the top 20 self-time symbols (`perf report --no-children`).
#
# usage:    bash perf/flamegraph.sh SCENARIO [SECONDS] [-- SCENARIO_ARGS...]
#           SCENARIO: cache-hit | cache-hit-100k | miss-garage | stream-1g | idle-10k |
#           cross-core-hits (profiles build B; `-- one` for its one-shard mode)
#           (any perf/SCENARIO.sh that calls perf_maybe_profile). SECONDS: 5.
#           SCENARIO_ARGS go to the scenario (e.g. `-- 1 5 64` for 64 connections, `-- --rgw`).
# env:      YATA_PERF_PROFILE_FREQ (999), YATA_PERF_CALLGRAPH ("-g": frame pointers; the release
#           build has none, so stacks are short; "--call-graph dwarf" gives full stacks at a much
#           higher cost), and the scenario's variables.
# installs: perf (apt linux-perf) when missing; inferno 0.12.8 (`cargo install inferno --locked`,
#           nice 19, into ~/.cargo/bin, built in $CARGO_TARGET_DIR/inferno-build) when
#           inferno-flamegraph is not on PATH; whatever the scenario installs.
# out:      perf/out/<scenario>-<date>.svg, perf/out/<scenario>-<date>.top.txt (the top 20); the
#           raw perf.data and folded stacks stay in perf/out/<scenario>/. perf/out/ is not tracked.
#
# Traffic goes to 127.0.0.1 only; recording and load are bounded by SECONDS; the scenario's traps
# stop everything it started (backends, nginx, proxy, load) by PID when it exits.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCEN=${1:?usage: perf/flamegraph.sh SCENARIO [SECONDS] [-- SCENARIO_ARGS...]}; shift
SECS=5
if [[ ${1:-} =~ ^[0-9]+$ ]]; then SECS=$1; shift; fi
[[ ${1:-} == -- ]] && shift
SCRIPT=$ROOT/perf/$SCEN.sh
[[ -f $SCRIPT ]] || { echo "no scenario $SCRIPT"; exit 2; }
grep -q perf_maybe_profile "$SCRIPT" || [[ $SCEN == cache-hit-100k ]] \
  || { echo "$SCEN has no profiling hook (perf_maybe_profile)"; exit 2; }

if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  echo "flamegraph.sh: installing inferno 0.12.8 (cargo install, nice 19; a few minutes once)" >&2
  nice -n 19 cargo install inferno --locked --version 0.12.8 -j1 \
    --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/inferno-build" >&2
  export PATH=$HOME/.cargo/bin:$PATH
fi

mkdir -p "$ROOT/perf/out"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
export YATA_PERF_PROFILE_SVG=$ROOT/perf/out/$SCEN-$STAMP.svg
export YATA_PERF_PROFILE_SECS=$SECS
bash "$SCRIPT" "$@" | tee "$ROOT/perf/out/$SCEN-$STAMP.top.txt"
[[ -s $YATA_PERF_PROFILE_SVG ]] || { echo "flamegraph.sh: no SVG was written"; exit 1; }
