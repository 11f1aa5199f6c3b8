#!/usr/bin/env bash
# What configured limits cost on the hit path: cache hits of one 1 KiB object through two
# Yatagarasu processes from the same release binary, one shard each, pinned to the same CPU,
#   A (none):   no limits at all (the default: the limit phase touches nothing);
#   B (limits): every limit set, none ever reached: server.ip_block with 16 networks the client
#               (127.0.0.1) is not in (10.0.0.0/16 ... 10.15.0.0/16, all tested per request),
#               server.rate_limit {global_rps, per_ip_rps} and the bucket's rate_limit.rps at
#               1e9/s (three rate-table checks per request), max_concurrent_requests 1e6 (the
#               node's in-flight count, one fetch_add and one fetch_sub per request);
# in alternating wrk runs within one invocation (A,B,B,A,...: the order rotates each round), and
# the ratio of the medians. Target: limits/none >= 0.98. The parts are in benches/limits.rs.
#
# usage:    bash perf/limits-overhead.sh [RUNS] [SECONDS] [CONNECTIONS]
#           defaults: 6 5 16.
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0: both proxy shards, one loaded at a time, the
#           other idle; YATA_PERF_LOAD_CPU 1: wrk and curl; RGW floats (YATA_PERF_BACKEND_CPU) and
#           is idle once both caches are warm; YATA_PERF_RGW_ENV to reuse a running RGW;
#           YATA_PERF_NO_BUILD=1 ...).
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, wrk) when missing;
#           builds the release binary unless YATA_PERF_NO_BUILD=1.
# out:      a table on stdout, appended to perf/results/<date>-limits-overhead.md with machine,
#           kernel, commit and proxy driver. Work files (configs, logs, wrk output, /metrics
#           dumps) in perf/out/limits-overhead/.
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d and every wait by a timeout;
# everything started here (RGW unless reused, both proxies) is stopped by PID on exit, never by
# name. Both proxies serve bytes identical to RGW's (cmp) and answer `X-Cache: HIT` before and after
# the runs. "Configured but not exceeded" is checked, not assumed: B's config passes --check with
# the limits in it, wrk fails the run on any non-2xx answer (a 403, 429 or 503 from a limit), and
# after the runs B's /metrics must show yatagarasu_requests_limited_total at 0 for every reason
# (ip_blocked, shed, rate_global, rate_bucket, rate_ip, rate_user) while its request counter grew
# by what wrk sent.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
RUNS=${1:-6}; SECS=${2:-5}; CONNS=${3:-16}
KEY=1k.bin
HUGE=1000000000
perf_init limits-overhead "$@"

perf_need wrk
perf_build
perf_start_rgw
DIRECT_URL="$YATA_TEST_S3_ENDPOINT/yata-public/$KEY"

# The reference bytes: the object as RGW serves it (a signed GET).
mapfile -t SIGNED < <("$YATA_TEST_PYTHON" tests/support/sigv4.py "$DIRECT_URL" "$YATA_TEST_AK1" "$YATA_TEST_SK1" --format raw)
CURL_SIGNED=()
for h in "${SIGNED[@]}"; do CURL_SIGNED+=(-H "$h"); done
curl -fsS --max-time 10 -o "$WORK/$KEY" "${CURL_SIGNED[@]}" "$DIRECT_URL" \
  || { echo "signed GET of $DIRECT_URL failed"; exit 1; }
[[ $(stat -c %s "$WORK/$KEY") == 1024 ]] || { echo "$KEY is not 1024 bytes"; exit 1; }

# ---- the two proxies: one shard each, both pinned to PROXY_CPU, memory cache on ------------------
# conf SIDE: A without limits, B with every limit set and none reachable (header comment).
conf() {
  local server="" nets i
  if [[ $1 == B ]]; then
    nets=10.0.0.0/16
    for ((i = 1; i < 16; i++)); do nets+=", 10.$i.0.0/16"; done
    server="  max_concurrent_requests: 1000000
  ip_block: [$nets]
  rate_limit: {global_rps: $HUGE, per_ip_rps: $HUGE}"
  fi
  perf_proxy_conf_head 1 "$PROXY_CPU" "$server"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 64, max_item_size_mb: 1, default_ttl_seconds: 3600}"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
  [[ $1 == B ]] && echo "    rate_limit: {rps: $HUGE}"
  return 0
}
declare -A PID=() ADDR=() ADMIN=() URL=() LIMITED_BEFORE=() LIMITED_AFTER=() XC_AFTER=()
for side in A B; do
  conf "$side" >"$WORK/yatagarasu-$side.yaml"
  perf_start_proxy "$WORK/yatagarasu-$side.yaml" "yatagarasu-$side"
  PID[$side]=$PROXY_PID; ADDR[$side]=$PROXY_ADDR
  ADMIN[$side]=$(grep -o '"admin":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4 || true)
  [[ -n ${ADMIN[$side]} ]] || { echo "no admin listener in $PROXY_LOG:"; cat "$PROXY_LOG"; exit 1; }
  URL[$side]="http://${ADDR[$side]}/perf/$KEY"
done
# ---- metrics helpers -----------------------------------------------------------------------------
# scrape SIDE NAME: SIDE's /metrics into WORK/metrics-SIDE-NAME.txt.
scrape() { curl -fsS --max-time 5 -o "$WORK/metrics-$1-$2.txt" "http://${ADMIN[$1]}/metrics"; }
# metric NAME LABEL_FILTER FILE: the sum of the series of NAME whose labels contain LABEL_FILTER
# in a /metrics dump; "n/a" when there is none.
metric() {
  awk -v m="$1" -v f="$2" '$1 ~ ("^" m "([{]|$)") && (f == "" || index($1, f)) {s += $NF; n = 1}
    END {if (n) printf "%.0f\n", s; else print "n/a"}' "$3"
}
REASONS=(ip_blocked shed rate_global rate_bucket rate_ip rate_user)
# limited SIDE NAME: "reason=N ..." for every refusal reason in dump NAME of SIDE; fails when a
# reason's series is missing.
limited() {
  local r v out=""
  for r in "${REASONS[@]}"; do
    v=$(metric yatagarasu_requests_limited_total "reason=\"$r\"" "$WORK/metrics-$1-$2.txt")
    [[ $v != n/a ]] || { echo "proxy $1: no yatagarasu_requests_limited_total{reason=\"$r\"} in /metrics" >&2; return 1; }
    out+="$r=$v "
  done
  echo "${out% }"
}
all_zero() { [[ ! $1 =~ =[1-9] ]]; }

# ---- warm both caches, check the bytes and that hits are hits ------------------------------------
fetch() { curl -fsS --max-time 10 -D "$WORK/$2.head" -o "$WORK/$2.body" "$1"; }
x_cache() { tr -d '\r' <"$WORK/$1.head" | awk -F': *' 'tolower($1)=="x-cache" {print $2}'; }
for side in A B; do
  perf_wait_http "${URL[$side]}"
  fetch "${URL[$side]}" "$side" || { echo "GET ${URL[$side]} ($side) failed"; exit 1; }
  fetch "${URL[$side]}" "$side" || { echo "second GET ${URL[$side]} ($side) failed"; exit 1; }
  cmp -s "$WORK/$side.body" "$WORK/$KEY" || { echo "proxy $side served different bytes"; exit 1; }
  [[ $(x_cache "$side") == HIT ]] || { echo "proxy $side: second GET not a cache hit (X-Cache: '$(x_cache "$side")')"; exit 1; }
  scrape "$side" before
  LIMITED_BEFORE[$side]=$(limited "$side" before)
  all_zero "${LIMITED_BEFORE[$side]}" || { echo "proxy $side limited a warm-up request: ${LIMITED_BEFORE[$side]}"; exit 1; }
done
REQS_BEFORE=$(metric yatagarasu_requests_total 'bucket="perf"' "$WORK/metrics-B-before.txt")

# ---- alternating runs ----------------------------------------------------------------------------
load_none() { perf_wrk "${URL[A]}" "$WORK/wrk-none-$1.txt"; }
load_limits() { perf_wrk "${URL[B]}" "$WORK/wrk-limits-$1.txt"; }
perf_alternate "$RUNS" none load_none limits load_limits

# ---- after: still hits, and B refused nothing -----------------------------------------------------
for side in A B; do
  fetch "${URL[$side]}" "$side-after" || true
  XC_AFTER[$side]=$(x_cache "$side-after" 2>/dev/null || true)
  scrape "$side" after
  LIMITED_AFTER[$side]=$(limited "$side" after)
done
REQS_AFTER=$(metric yatagarasu_requests_total 'bucket="perf"' "$WORK/metrics-B-after.txt")
WRK_REQS_B=$(cat "$WORK"/wrk-limits-*.txt | awk '/requests in/ {s += $1} END {print s + 0}')
REQS_B=$((REQS_AFTER - REQS_BEFORE))
all_zero "${LIMITED_AFTER[B]}" || { echo "B limited requests during the runs: ${LIMITED_AFTER[B]} (the limits were exceeded; the run measured refusals)"; exit 1; }
# wrk counts completed responses only; B's counter also has the ones cut off at the end of a run.
((REQS_B >= WRK_REQS_B)) || { echo "B counted $REQS_B requests, wrk completed $WRK_REQS_B"; exit 1; }

MN=$(perf_median_of none "$RUNS"); ML=$(perf_median_of limits "$RUNS")
R=$(perf_ratio "$ML" "$MN")
P99N=$(perf_p99_median none "$RUNS"); P99L=$(perf_p99_median limits "$RUNS")

{
  echo "# 1k cache hits: limits configured but not exceeded vs none"
  echo
  perf_meta
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run; object: $KEY (1024 bytes); two proxies from one binary, 1 shard each, both on CPU $PROXY_CPU, one loaded at a time"
  echo "- none (A): no limits; limits (B): server.ip_block 10.0.0.0/16 ... 10.15.0.0/16 (16 networks, client 127.0.0.1 in none), server.rate_limit {global_rps: $HUGE, per_ip_rps: $HUGE}, bucket rate_limit {rps: $HUGE}, server.max_concurrent_requests: 1000000"
  echo "- X-Cache before the runs: HIT on both; after: none '${XC_AFTER[A]:-absent}', limits '${XC_AFTER[B]:-absent}'"
  echo "- limits (B) after the runs, yatagarasu_requests_limited_total: ${LIMITED_AFTER[B]}; requests it counted during the runs: $REQS_B (wrk completed $WRK_REQS_B, all 2xx)"
  echo
  perf_table "$RUNS" "req/s (p99)" none limits
  echo
  echo "medians: none $MN, limits $ML req/s; median p99: none ${P99N} ms, limits ${P99L} ms"
  echo
  echo "**limits/none = $R** (target >= 0.98: $(perf_verdict "$R" 0.98))"
  echo
} | perf_result
