#!/usr/bin/env bash
# Side-by-side throughput: an object fetched through Yatagarasu (one shard, pinned) vs the same
# object fetched from Ceph RGW directly, in alternating runs within one invocation, and the ratio
# of the medians. The proxy config has no `cache:` section, so the memory cache is on with its
# defaults and a repeated small object is served from it (the result records the proxy's X-Cache);
# perf/miss-garage.sh is the miss-path comparison.
#
# usage:    bash perf/compare-direct.sh [KEY] [RUNS] [SECONDS] [CONNECTIONS]
#           defaults: 1k.bin 5 5 16   (any key seeded by start-backends.sh --demo-only)
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0, YATA_PERF_LOAD_CPU 1, YATA_PERF_NO_BUILD, ...)
# installs: the Debian test packages (tests/support/install-deps.sh) when missing; builds the
#           release binary unless YATA_PERF_NO_BUILD=1.
# out:      a table on stdout, appended to perf/results/<date>-compare-direct.md with machine,
#           kernel, commit and driver. Work files in perf/out/compare-direct/.
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d; everything started here (RGW,
# the proxy) is stopped by PID when the script exits, also on error or Ctrl-C.
# The direct run replays one SigV4-signed GET (valid ~15 min), as a load generator must; the proxy
# signs every request itself. With a single RGW on a 2-core machine the backend is the bottleneck.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
KEY=${1:-1k.bin}; RUNS=${2:-5}; SECS=${3:-5}; CONNS=${4:-16}
perf_init compare-direct "$@"

perf_need wrk
perf_build
perf_start_rgw

CONF=$WORK/yatagarasu.yaml
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1"
} >"$CONF"
perf_start_proxy "$CONF"

PROXY_URL="http://$PROXY_ADDR/perf/$KEY"
DIRECT_URL="$YATA_TEST_S3_ENDPOINT/yata-public/$KEY"
# Signed headers for the direct runs, one -H per header.
mapfile -t SIGNED < <("$YATA_TEST_PYTHON" tests/support/sigv4.py "$DIRECT_URL" "$YATA_TEST_AK1" "$YATA_TEST_SK1" --format raw)
HDRS=()
for h in "${SIGNED[@]}"; do HDRS+=(-H "$h"); done
curl -fsS --max-time 10 -o /dev/null "${HDRS[@]}" "$DIRECT_URL" || { echo "signed direct GET failed"; exit 1; }
curl -fsS --max-time 10 -o /dev/null "$PROXY_URL" || { echo "GET through the proxy failed"; exit 1; }
XCACHE=$(curl -sS --max-time 10 -D - -o /dev/null "$PROXY_URL" | tr -d '\r' | awk -F': *' 'tolower($1)=="x-cache" {print $2}')

load_direct() { perf_wrk "$DIRECT_URL" "$WORK/wrk-direct-$1.txt" "${HDRS[@]}"; }
load_proxy() { perf_wrk "$PROXY_URL" "$WORK/wrk-proxy-$1.txt"; }
perf_maybe_profile load_proxy
perf_alternate "$RUNS" direct load_direct proxy load_proxy
MD=$(perf_median_of direct "$RUNS"); MP=$(perf_median_of proxy "$RUNS")

{
  echo "# $KEY through the proxy vs the backend directly"
  echo
  perf_meta
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run; proxy X-Cache on a repeated GET: '${XCACHE:-absent}'"
  echo
  perf_table "$RUNS" "req/s (p99)" direct proxy
  echo
  echo "median direct $MD req/s, median proxy $MP req/s, **ratio proxy/direct = $(perf_ratio "$MP" "$MD")**"
  echo
} | perf_result
