#!/usr/bin/env bash
# 1 KiB cache hits, build A vs build B, in alternating wrk runs within one invocation (the order
# rotates each round), and the ratio B/A of the medians. Two modes (issue 13's perf checks):
#   cross  `shards: 2` (pinned to CPUs 0 and 1) and 256 distinct 1 KiB objects, wrk picking a key
#          uniformly per request (a seeded Lua script): with key-owned shards about half of the
#          hits are owned by the other core (the cross-core path, minus what the per-core L1
#          keeps local); with per-core caches every hit is local.
#   one    `shards: 1` pinned to YATA_PERF_PROXY_CPU and one 1 KiB object on a fixed URL, as
#          perf/cache-hit.sh measures it: "1 KiB hits on one shard, this commit vs before,
#          ratio >= 0.97".
# Both proxies run side by side (same config, each with its own cache, warmed and byte-checked
# before measuring); only the one under load is busy.
#
# usage:    bash perf/cross-core-hits.sh [MODE] [RUNS] [SECONDS] [CONNECTIONS]
#           defaults: cross 5 5 64 (one: 5 5 16, cache-hit.sh's connections)
# env:      YATA_PERF_BIN_A, YATA_PERF_BIN_B: the two proxy binaries (paths); or
#           YATA_PERF_REV_A, YATA_PERF_REV_B: commits, each built with `cargo build --release` in a
#           temporary git worktree (removed on exit) sharing CARGO_TARGET_DIR (default target/,
#           so dependencies compile once; the checkout's own binary is rebuilt afterwards).
#           A side given neither is this checkout's release build (perf_build; YATA_PERF_NO_BUILD=1
#           uses the existing one), so with no variables at all A = B: a noise check (~1.0).
#           YATA_PERF_XCORE_AFFINITY ("0, 1"): cpu_affinity of the cross mode ("none" floats).
#           YATA_PERF_MEMORY_EXTRA_A, YATA_PERF_MEMORY_EXTRA_B: extra `cache.memory` keys for one
#           side (e.g. "l1_percent: 0": every hit of the other core's keys crosses cores).
#           YATA_PERF_PROFILE=1: after the runs, record B under the same load for
#           YATA_PERF_PROFILE_SECS (5) with perf/flamegraph.sh's recipe (perf_maybe_profile: perf
#           record -F 999 -g, inferno) and append the top 20 self-time symbols to the result; the
#           SVG is perf/out/<scenario>-<stamp>.svg (cross-core-hits[-one]). `bash perf/flamegraph.sh
#           cross-core-hits -- MODE` profiles B alone instead (no alternating runs).
#           And perf/lib.sh's (YATA_PERF_LOAD_CPU 1: wrk; YATA_PERF_RGW_ENV ...).
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, nginx, wrk) when missing
#           and RGW is started here; with YATA_PERF_PROFILE=1 perf (apt linux-perf) and inferno
#           0.12.8 (cargo install, as perf/flamegraph.sh does) when missing.
# out:      a table on stdout, appended to perf/results/<date>-cross-core-hits[-one].md with
#           machine, kernel, commit, A and B (path, sha256, rev) and proxy driver. Work files
#           (configs, logs, wrk output, metrics) in perf/out/cross-core-hits[-one]/.
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d and every wait by a timeout; the
# objects (perf-xcore/ in yata-public, 1 KiB, deterministic bytes from perf/zipf-load.py) are
# uploaded once and kept. Everything started here (RGW, both proxies, the profiled load) is stopped
# by PID on exit, never by name; the temporary worktrees are removed (git worktree remove --force).
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
MODE=${1:-cross}
case $MODE in
  cross) SCEN=cross-core-hits; NSHARDS=2; KEYS=256; DEF_CONNS=64 ;;
  one) SCEN=cross-core-hits-one; NSHARDS=1; KEYS=1; DEF_CONNS=16 ;;
  *) echo "MODE must be cross or one (got '$MODE')"; exit 2 ;;
esac
RUNS=${2:-5}; SECS=${3:-5}; CONNS=${4:-$DEF_CONNS}
perf_init "$SCEN" "$@"
PREFIX=perf-xcore/
mkdir -p "$WORK/bin"

perf_need wrk

# ---- the two binaries ----------------------------------------------------------------------------
BUILT_REV=0
# build_rev REV SIDE: build REV in a temporary worktree, copy its binary to WORK/bin; sets BIN_PATH.
build_rev() {
  local sha dir target
  sha=$(git -C "$PERF_ROOT" rev-parse --verify "$1^{commit}")
  dir=$(mktemp -d /tmp/yata-xcore.XXXXXX)
  perf_on_exit "git -C '$PERF_ROOT' worktree remove --force '$dir/src'; git -C '$PERF_ROOT' worktree prune; rm -rf '$dir'"
  git -C "$PERF_ROOT" worktree add --detach "$dir/src" "$sha" >/dev/null 2>&1
  target=${CARGO_TARGET_DIR:-$PERF_ROOT/target}
  mkdir -p "$target"
  target=$(cd "$target" && pwd)
  echo "perf: building $1 ($(git -C "$PERF_ROOT" rev-parse --short "$sha")) for $2" >&2
  (cd "$dir/src" && CARGO_TARGET_DIR=$target cargo build --release --quiet) >"$WORK/build-$2.log" 2>&1 \
    || { tail -n 30 "$WORK/build-$2.log" >&2; echo "perf: building $1 failed" >&2; return 1; }
  BIN_PATH=$WORK/bin/yatagarasu-$2-${sha:0:12}
  cp "$target/release/yatagarasu" "$BIN_PATH"
  BUILT_REV=1
}
declare -A BIN=() DESC=()
for side in A B; do
  path_var=YATA_PERF_BIN_$side; rev_var=YATA_PERF_REV_$side
  if [[ -n ${!path_var:-} ]]; then
    [[ -x ${!path_var} ]] || { echo "$path_var=${!path_var} is not an executable"; exit 2; }
    BIN[$side]=$(realpath "${!path_var}"); DESC[$side]="binary ${!path_var}"
  elif [[ -n ${!rev_var:-} ]]; then
    build_rev "${!rev_var}" "$side"
    BIN[$side]=$BIN_PATH; DESC[$side]="${!rev_var} ($(git rev-parse --short "${!rev_var}^{commit}")), built in a worktree"
  fi
done
if [[ -z ${BIN[A]:-} || -z ${BIN[B]:-} || $BUILT_REV == 1 ]]; then
  perf_build   # this checkout (also puts target/release/yatagarasu back after a rev's build)
  here="this checkout's release build ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty))"
  for side in A B; do
    if [[ -z ${BIN[$side]:-} ]]; then
      BIN[$side]=$WORK/bin/yatagarasu-$side-here; cp "$YATA_BIN" "${BIN[$side]}"; DESC[$side]=$here
    fi
  done
fi

# ---- RGW and the objects -------------------------------------------------------------------------
perf_start_rgw
ZIPF=("$YATA_TEST_PYTHON" "$PERF_ROOT/perf/zipf-load.py" --objects "$KEYS" --min-size 1024
      --max-size 1024 --prefix "$PREFIX" --s 0 --seed 1)
"${ZIPF[@]}" upload --bucket yata-public >"$WORK/upload.json"

# ---- the two proxies -----------------------------------------------------------------------------
if [[ $MODE == cross ]]; then
  AFFINITY=${YATA_PERF_XCORE_AFFINITY:-0, 1}
  # shellcheck disable=SC2034 # read by perf_start_proxy (perf/lib.sh)
  PERF_PROXY_CPUS=0-$(($(nproc) - 1))
else
  AFFINITY=$PROXY_CPU
fi
declare -A PID=() ADDR=() ADMIN=() MEMORY_EXTRA=(
  [A]=${YATA_PERF_MEMORY_EXTRA_A:-}
  [B]=${YATA_PERF_MEMORY_EXTRA_B:-}
)
for side in A B; do
  CONF=$WORK/yatagarasu-$side.yaml
  {
    perf_proxy_conf_head "$NSHARDS" "$AFFINITY"
    echo "cache:"
    echo "  memory: {max_cache_size_mb: 64, max_item_size_mb: 1, default_ttl_seconds: 3600${MEMORY_EXTRA[$side]:+, ${MEMORY_EXTRA[$side]}}}"
    echo "buckets:"
    perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
  } >"$CONF"
  YATA_BIN=${BIN[$side]} perf_start_proxy "$CONF" "yatagarasu-$side"
  PID[$side]=$PROXY_PID; ADDR[$side]=$PROXY_ADDR
  ADMIN[$side]=$(grep -o '"admin":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4)
done

# The wrk request: cross picks one of the KEYS objects per request (precomputed requests, seeded
# LuaJIT PRNG); one asks for the single object on a fixed URL (no script, like cache-hit.sh).
WRK_ARGS=()
if [[ $MODE == cross ]]; then
  cat >"$WORK/uniform.lua" <<EOF
-- Generated by perf/cross-core-hits.sh: a uniformly chosen one of $KEYS objects per request.
-- The requests are formatted in init(): wrk sets the Host header in wrk.init, after loading this.
local reqs = {}
init = function(args)
  for i = 0, $((KEYS - 1)) do
    reqs[i + 1] = wrk.format("GET", string.format("/perf/${PREFIX}o%05d.bin", i))
  end
end
math.randomseed(13)
request = function() return reqs[math.random($KEYS)] end
EOF
  WRK_ARGS=(-s "$WORK/uniform.lua")
fi
url_of() { if [[ $MODE == cross ]]; then echo "http://${ADDR[$1]}/"; else echo "http://${ADDR[$1]}/perf/${PREFIX}o00000.bin"; fi; }
load_a() { perf_wrk "$(url_of A)" "$WORK/wrk-A-$1.txt" "${WRK_ARGS[@]}"; }
load_b() { perf_wrk "$(url_of B)" "$WORK/wrk-B-$1.txt" "${WRK_ARGS[@]}"; }

# metric NAME FILE: the sum of every series of NAME in a /metrics dump, "n/a" when absent.
metric() {
  awk -v m="$1" '$1 ~ ("^" m "([{]|$)") {s += $NF; f = 1} END {if (f) printf "%.0f\n", s; else print "n/a"}' "$2"
}
scrape() { curl -fsS --max-time 5 -o "$WORK/metrics-$1-$2.txt" "http://${ADMIN[$1]}/metrics"; }
mdelta() {
  local a b
  a=$(metric "$2" "$WORK/metrics-$1-before.txt"); b=$(metric "$2" "$WORK/metrics-$1-after.txt")
  if [[ $a == n/a || $b == n/a ]]; then echo n/a; else echo $((b - a)); fi
}

# ---- warm both caches, check the bytes and that hits are hits ------------------------------------
# Every object over fresh connections (bytes compared), then a short wrk run so that every core
# that serves hits has them (per-core caches fill each core separately).
for side in A B; do
  "${ZIPF[@]}" run --url "http://${ADDR[$side]}/perf/$PREFIX" --requests $((KEYS * 8)) --conns 16 \
      --per-conn 8 >"$WORK/check-$side.json" \
    || { echo "$side served wrong answers:"; cat "$WORK/check-$side.json"; exit 1; }
  [[ $(SECS=2 perf_wrk "$(url_of "$side")" "$WORK/wrk-$side-warm.txt" "${WRK_ARGS[@]}") != ERR* ]] \
    || { echo "$side: the warm-up wrk run failed (see $WORK/wrk-$side-warm.txt)"; exit 1; }
  "${ZIPF[@]}" run --url "http://${ADDR[$side]}/perf/$PREFIX" --requests $((KEYS * 4)) --conns 16 \
      --per-conn 8 >"$WORK/check-$side-hit.json" \
    || { echo "$side served wrong answers after warming:"; cat "$WORK/check-$side-hit.json"; exit 1; }
  grep -q '"x_cache": {"HIT": [0-9]*}' "$WORK/check-$side-hit.json" \
    || { echo "$side did not answer every request with X-Cache: HIT after warming:"; cat "$WORK/check-$side-hit.json"; exit 1; }
  scrape "$side" before
done

# ---- alternating runs ----------------------------------------------------------------------------
PROXY_PID=${PID[B]} perf_maybe_profile load_b
perf_alternate "$RUNS" A load_a B load_b
for side in A B; do scrape "$side" after; done

MA=$(perf_median_of A "$RUNS"); MB=$(perf_median_of B "$RUNS")
RATIO=$(perf_ratio "$MB" "$MA")
# p99 medians in ms (wrk prints us/ms/s).
p99_ms() { local i; for ((i = 1; i <= RUNS; i++)); do echo "${PERF_EXTRA[$1,$i]}"; done \
  | awk '/us$/ {v=$1+0; print v/1000; next} /ms$/ {print $1+0; next} /s$/ {print ($1+0)*1000}'; }
mapfile -t _p < <(p99_ms A); P99_A=$(perf_median "${_p[@]}")
mapfile -t _p < <(p99_ms B); P99_B=$(perf_median "${_p[@]}")
# side_facts SIDE: what the cache did during the measured runs, and how connections spread.
side_facts() {
  local spread
  spread=$(awk '$1 ~ /^yatagarasu_connections_accepted_total[{]/ {s = s (s ? "/" : "") $NF} END {print (s ? s : "n/a")}' \
    "$WORK/metrics-$1-after.txt")
  echo "hits $(mdelta "$1" yatagarasu_cache_hits_total), misses $(mdelta "$1" yatagarasu_cache_misses_total), L1 hits $(mdelta "$1" yatagarasu_cache_l1_hits_total), S3 requests $(mdelta "$1" yatagarasu_upstream_requests_total); connections accepted per shard since start $spread"
}
sha_of() { sha256sum "$1" | cut -c1-12; }

{
  if [[ $MODE == cross ]]; then
    echo "# 1 KiB hits at 2 shards, $KEYS keys chosen uniformly: B vs A"
  else
    echo "# 1 KiB hits on one shard, one object: B vs A"
  fi
  echo
  perf_meta
  echo "- A: ${DESC[A]}; sha256 $(sha_of "${BIN[A]}")"
  echo "- B: ${DESC[B]}; sha256 $(sha_of "${BIN[B]}")$([[ ${BIN[A]} != "${BIN[B]}" ]] && cmp -s "${BIN[A]}" "${BIN[B]}" && echo ' (byte-identical to A)')"
  echo "- proxies: shards $NSHARDS, cpu_affinity ${AFFINITY}; memory cache 64 MiB; both running, one loaded at a time"
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run, $RUNS rounds$([[ $MODE == cross ]] && echo ", Lua: uniform over $KEYS objects of 1024 bytes" || echo ", one object of 1024 bytes")"
  echo "- during the measured runs: A: $(side_facts A); B: $(side_facts B)"
  echo
  perf_table "$RUNS" "req/s (p99)" A B
  echo
  echo "medians: A $MA, B $MB req/s; median p99: A ${P99_A} ms, B ${P99_B} ms"
  echo
  if [[ $MODE == one ]]; then
    echo "**B/A = $RATIO** (target >= 0.97: $(perf_verdict "$RATIO" 0.97)); p99 B <= A: $(perf_verdict "$P99_B" "$P99_A" le)"
  else
    echo "**B/A = $RATIO**; p99 B <= A: $(perf_verdict "$P99_B" "$P99_A" le)"
  fi
  echo
} | perf_result

# ---- optional: B's profile under the same load ---------------------------------------------------
if [[ ${YATA_PERF_PROFILE:-0} == 1 ]]; then
  if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
    export PATH=$HOME/.cargo/bin:$PATH
  fi
  if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
    # The same install as perf/flamegraph.sh.
    echo "cross-core-hits.sh: installing inferno 0.12.8 (cargo install, nice 19; a few minutes once)" >&2
    nice -n 19 cargo install inferno --locked --version 0.12.8 -j1 \
      --target-dir "${CARGO_TARGET_DIR:-$PERF_ROOT/target}/inferno-build" >&2
  fi
  YATA_PERF_PROFILE_SVG=$PERF_ROOT/perf/out/$SCEN-$(date -u +%Y-%m-%dT%H%M%SZ).svg
  export YATA_PERF_PROFILE_SVG
  {
    echo "profile of B (pid ${PID[B]}) under the same load, ${YATA_PERF_PROFILE_SECS:-5}s, perf record -F ${YATA_PERF_PROFILE_FREQ:-999} ${YATA_PERF_CALLGRAPH:--g}:"
    echo
    echo '```'
    (PROXY_PID=${PID[B]}; perf_maybe_profile load_b)
    echo '```'
    echo
  } | perf_result
fi
