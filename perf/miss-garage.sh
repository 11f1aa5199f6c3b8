#!/usr/bin/env bash
# 1 KiB cache misses: every request through one pinned Yatagarasu shard goes to the backend (the
# bucket has `cache: {enabled: false}`, so the proxy signs with SigV4 and streams each GET from
# the origin), against the reference for the miss path: the backend directly (wrk replaying a
# presigned, query-string SigV4 URL made by perf/presign.py). Alternating runs in one invocation,
# ratio of the medians. Issue 6's target: proxy >= 0.9x direct when the backend is the bottleneck.
#
# usage:    bash perf/miss-garage.sh [--rgw] [RUNS] [SECONDS] [CONNECTIONS]
#           defaults: 5 5 16. The backend is Garage (tests/support/start-garage.sh; the 1 KiB object
#           1k.bin is seeded there). --rgw uses Ceph RGW instead (when Garage is not installed); the
#           result's title and backend line then say RGW.
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0, YATA_PERF_LOAD_CPU 1, YATA_PERF_NO_BUILD, ...);
#           the backend floats over both CPUs (YATA_PERF_BACKEND_CPU pins it).
# installs: wrk (apt) when missing; with --rgw the Debian test packages; Garage is NOT built here
#           (tests/support/install-garage.sh, a long compile). Builds the release binary unless
#           YATA_PERF_NO_BUILD=1.
# out:      a table on stdout, appended to perf/results/<date>-miss-garage.md (or -miss-rgw.md).
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d; everything started here (the
# backend, the proxy) is stopped by PID when the script exits, also on error or Ctrl-C.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
ARGS=("$@")
BACKEND=garage
if [[ ${1:-} == --rgw ]]; then BACKEND=rgw; shift; fi
RUNS=${1:-5}; SECS=${2:-5}; CONNS=${3:-16}
KEY=1k.bin
perf_init "miss-$BACKEND" "${ARGS[@]}"

perf_need wrk
perf_build
perf_start_backend "$BACKEND"

CONF=$WORK/yatagarasu.yaml
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "buckets:"
  perf_bucket_conf perf /perf "$BUCKET" "$ENDPOINT" "$AK" "$SK" "{enabled: false}"
} >"$CONF"
perf_start_proxy "$CONF"

PROXY_URL="http://$PROXY_ADDR/perf/$KEY"
DIRECT_URL=$(perf_presign GET "$ENDPOINT/$BUCKET/$KEY" "$AK" "$SK")
curl -fsS --max-time 10 -o "$WORK/direct.body" "$DIRECT_URL" || { echo "presigned direct GET failed"; exit 1; }
curl -fsS --max-time 10 -D "$WORK/proxy.head" -o "$WORK/proxy.body" "$PROXY_URL" \
  || { echo "GET through the proxy failed"; exit 1; }
cmp -s "$WORK/direct.body" "$WORK/proxy.body" || { echo "proxy and backend served different bytes"; exit 1; }
[[ $(stat -c %s "$WORK/proxy.body") == 1024 ]] || { echo "$KEY is not 1024 bytes"; exit 1; }
curl -fsS --max-time 10 -D "$WORK/proxy2.head" -o /dev/null "$PROXY_URL"
XCACHE=$(tr -d '\r' <"$WORK/proxy2.head" | awk -F': *' 'tolower($1)=="x-cache" {print $2}')
[[ $XCACHE != HIT ]] || { echo "the proxy answered X-Cache: HIT with the cache disabled"; exit 1; }

load_direct() { perf_wrk "$DIRECT_URL" "$WORK/wrk-direct-$1.txt"; }
load_proxy() { perf_wrk "$PROXY_URL" "$WORK/wrk-proxy-$1.txt"; }
perf_maybe_profile load_proxy
perf_alternate "$RUNS" direct load_direct proxy load_proxy
MD=$(perf_median_of direct "$RUNS"); MP=$(perf_median_of proxy "$RUNS")
R=$(perf_ratio "$MP" "$MD")

{
  echo "# 1 KiB misses through the proxy vs $BACKEND directly"
  echo
  perf_meta
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run; the proxy's bucket has cache disabled (X-Cache on a repeat: '${XCACHE:-absent}'); direct = presigned GET"
  echo
  perf_table "$RUNS" "req/s (p99)" direct proxy
  echo
  echo "median direct $MD req/s, median proxy $MP req/s, **ratio proxy/direct = $R** (target >= 0.9: $(perf_verdict "$R" 0.9))"
  echo
} | perf_result
