#!/usr/bin/env bash
# Streaming a 1 GiB object: throughput through one pinned Yatagarasu shard vs the backend directly
# (one curl per run, alternating, ratio of the median MB/s), and the proxy's memory while it
# streams: VmRSS sampled every 50 ms from /proc/PID/status during one fast stream and during
# STREAMS concurrent rate-limited streams (slow clients, so backpressure is what bounds memory);
# reported as growth over the idle RSS per active stream. Issue 6's targets: >= 0.95x direct
# throughput; RSS growth < 256 KiB per active stream.
# The proxy runs with the default cache settings (memory cache on, max_item_size_mb 10), so the
# 1 GiB object is bypassed by the cache, as in production.
#
# usage:    bash perf/stream-1g.sh [--rgw] [RUNS] [SECONDS] [STREAMS]
#           defaults: 3 5 4. SECONDS bounds every curl (--max-time; a stream cut short still
#           reports its rate). Backend: Garage (tests/support/start-garage.sh); --rgw: Ceph RGW.
# env:      perf/lib.sh's, and YATA_PERF_STREAM_MB (1024: the object size in MiB),
#           YATA_PERF_STREAM_RATE (50M: curl --limit-rate per stream in the concurrent phase).
# installs: nothing beyond curl (apt when missing); Garage is built by
#           tests/support/install-garage.sh, not here. Builds the release binary unless
#           YATA_PERF_NO_BUILD=1. Writes a temporary random object of that size under perf/out
#           (removed after upload) and stores it in the backend.
# out:      a table on stdout, appended to perf/results/<date>-stream-1g.md.
#
# Traffic goes to 127.0.0.1 only; every transfer is bounded by curl --max-time; everything started
# here (the backend, the proxy, curls, samplers) is stopped by PID when the script exits.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
ARGS=("$@")
BACKEND=garage
if [[ ${1:-} == --rgw ]]; then BACKEND=rgw; shift; fi
RUNS=${1:-3}; SECS=${2:-5}; STREAMS=${3:-4}
MB=${YATA_PERF_STREAM_MB:-1024}; RATE=${YATA_PERF_STREAM_RATE:-50M}
KEY=perf-stream-${MB}m.bin
perf_init stream-1g "${ARGS[@]}"

perf_need curl
perf_build
perf_start_backend "$BACKEND"
SIZE=$((MB * 1048576))

# The object: random bytes (nothing on the way can compress them), uploaded with a presigned PUT.
T0=$(date +%s%N)
head -c "$SIZE" /dev/urandom >"$WORK/$KEY"
perf_on_exit "rm -f '$WORK/$KEY'"
curl -fsS --max-time 120 -o /dev/null -T "$WORK/$KEY" "$(perf_presign PUT "$ENDPOINT/$BUCKET/$KEY" "$AK" "$SK")" \
  || { echo "upload of $KEY failed"; exit 1; }
rm -f "$WORK/$KEY"
echo "uploaded $KEY ($MB MiB) in $((($(date +%s%N) - T0) / 1000000)) ms"

CONF=$WORK/yatagarasu.yaml
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "buckets:"
  perf_bucket_conf perf /perf "$BUCKET" "$ENDPOINT" "$AK" "$SK"
} >"$CONF"
perf_start_proxy "$CONF"
RSS_START=$(perf_rss_kb "$PROXY_PID")

PROXY_URL="http://$PROXY_ADDR/perf/$KEY"
DIRECT_URL=$(perf_presign GET "$ENDPOINT/$BUCKET/$KEY" "$AK" "$SK")
# Both sides know the full length (HEAD; the direct one needs its own presigned HEAD URL).
for u in "$PROXY_URL" "$(perf_presign HEAD "$ENDPOINT/$BUCKET/$KEY" "$AK" "$SK")"; do
  len=$(curl -fsS --max-time 10 -I "$u" | tr -d '\r' | awk -F': *' 'tolower($1)=="content-length" {print $2}')
  [[ $len == "$SIZE" ]] || { echo "HEAD $u: Content-Length '$len', want $SIZE"; exit 1; }
done

# stream URL [CURL_ARGS]: one GET to /dev/null pinned to LOAD_CPU, bounded by SECS; prints
# "MB/s bytes" (curl exit 28 = cut short by --max-time is fine: the rate is still the rate).
stream() {
  local url=$1 out rc=0; shift
  out=$(taskset -c "$LOAD_CPU" curl -sS -o /dev/null --max-time "$SECS" "$@" \
          -w '%{http_code} %{speed_download} %{size_download}' "$url" 2>/dev/null) || rc=$?
  [[ $rc == 0 || $rc == 28 ]] || { echo "ERR"; return 0; }
  read -r code speed bytes <<<"$out"
  [[ $code == 200 && $bytes -gt 0 ]] || { echo "ERR"; return 0; }
  awk -v s="$speed" -v b="$bytes" 'BEGIN {printf "%.1f %s\n", s/1e6, b}'
}
load_direct() { stream "$DIRECT_URL"; }
load_proxy() { stream "$PROXY_URL"; }
# Profiling load: STREAMS unthrottled streams through the proxy, each bounded by SECS.
load_proxy_profile() {
  local i pids=()
  for ((i = 0; i < STREAMS; i++)); do stream "$PROXY_URL" & pids+=($!); done
  wait "${pids[@]}"
}
perf_maybe_profile load_proxy_profile

perf_rss_sampler_start "$PROXY_PID" "$WORK/rss-runs.txt"
perf_alternate "$RUNS" direct load_direct proxy load_proxy
RSS_PEAK_RUNS=$(perf_rss_sampler_stop "$WORK/rss-runs.txt")
MD=$(perf_median_of direct "$RUNS"); MP=$(perf_median_of proxy "$RUNS")
R=$(perf_ratio "$MP" "$MD")

# Concurrent, rate-limited streams: every one is active for the whole window.
sleep 0.5
RSS_IDLE=$(perf_rss_kb "$PROXY_PID")
perf_rss_sampler_start "$PROXY_PID" "$WORK/rss-streams.txt"
PIDS=()
for ((i = 0; i < STREAMS; i++)); do
  stream "$PROXY_URL" --limit-rate "$RATE" >"$WORK/stream-$i.txt" &
  PIDS+=($!)
  perf_on_exit "kill ${PIDS[-1]}"
done
wait "${PIDS[@]}" || true
RSS_PEAK=$(perf_rss_sampler_stop "$WORK/rss-streams.txt")
CONC=$(cat "$WORK"/stream-*.txt | awk '$1 != "ERR" {n++; s+=$1} END {printf "%d streams ok, %.1f MB/s total", n, s}')
GROWTH=$(((RSS_PEAK - RSS_IDLE) / STREAMS))
# The stricter view: everything above the RSS right after start (allocator retention from the
# single-stream runs included), per concurrent stream.
GROWTH_START=$(((RSS_PEAK - RSS_START) / STREAMS))

{
  echo "# ${MB} MiB object streamed: proxy vs $BACKEND directly"
  echo
  perf_meta
  echo "- curl: one stream per run, pinned to CPU $LOAD_CPU, --max-time ${SECS}s; object $KEY, $SIZE bytes; MB = 10^6 bytes"
  echo
  perf_table "$RUNS" "MB/s (bytes)" direct proxy
  echo
  echo "median direct $MD MB/s, median proxy $MP MB/s, **ratio proxy/direct = $R** (target >= 0.95: $(perf_verdict "$R" 0.95))"
  echo
  echo "proxy VmRSS: $RSS_START KiB after start; peak $RSS_PEAK_RUNS KiB during the single-stream runs;"
  echo "$RSS_IDLE KiB idle before, peak $RSS_PEAK KiB during $STREAMS concurrent streams at --limit-rate $RATE ($CONC);"
  echo "**growth per active stream = $GROWTH KiB** (target < 256: $(perf_verdict "$GROWTH" 256 le)); over the RSS right after start: $GROWTH_START KiB per stream"
  echo
} | perf_result
