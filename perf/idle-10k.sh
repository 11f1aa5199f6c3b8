#!/usr/bin/env bash
# 10 000 idle keep-alive connections plus load: wrk's 1 KiB cache-hit load against one pinned
# Yatagarasu shard while N other connections (perf/idle-conns.py: each did one GET, then stays open
# and silent) sit on the same shard, vs the same load without them, in alternating runs within one
# invocation; prints the ratio of the median req/s, and the proxy's VmRSS with and without the idle
# connections (and so the memory one idle connection costs).
#
# usage:    bash perf/idle-10k.sh [RUNS] [SECONDS] [CONNECTIONS] [IDLE]
#           defaults: 3 5 16 10000 (CONNECTIONS is wrk's; IDLE the idle connections)
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0; YATA_PERF_LOAD_CPU 1: wrk and the idle client).
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, wrk) when missing;
#           builds the release binary unless YATA_PERF_NO_BUILD=1. Raises the shell's open-files
#           soft limit to the hard limit (the proxy inherits it; IDLE + CONNECTIONS must fit).
# out:      a table on stdout, appended to perf/results/<date>-idle-10k.md.
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d, the idle client exits by itself
# after SECONDS + 60 s at the latest; everything started here (RGW, the proxy, the idle clients)
# is stopped by PID when the script exits. The object is filled once from RGW, which then idles.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
RUNS=${1:-3}; SECS=${2:-5}; CONNS=${3:-16}; IDLE=${4:-10000}
KEY=1k.bin
perf_init idle-10k "$@"
ulimit -n "$(ulimit -Hn)"
(( IDLE + CONNS + 100 < $(ulimit -n) )) || { echo "open-files limit $(ulimit -n) is too low for $IDLE idle connections"; exit 1; }

perf_need wrk
perf_need ss iproute2
perf_build
perf_start_rgw

CONF=$WORK/yatagarasu.yaml
{
  # Idle connections must outlive a run: keep-alive timeout well above SECONDS + setup.
  perf_proxy_conf_head 1 "$PROXY_CPU" "  keepalive_timeout_ms: 300000"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 64, max_item_size_mb: 1, default_ttl_seconds: 3600}"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
} >"$CONF"
perf_start_proxy "$CONF"
PORT=${PROXY_ADDR##*:}
PROXY_URL="http://$PROXY_ADDR/perf/$KEY"
curl -fsS --max-time 10 -o /dev/null "$PROXY_URL" || { echo "GET through the proxy failed"; exit 1; }
XCACHE=$(curl -sS --max-time 10 -D - -o /dev/null "$PROXY_URL" | tr -d '\r' | awk -F': *' 'tolower($1)=="x-cache" {print $2}')
RSS_START=$(perf_rss_kb "$PROXY_PID")

# established SIDE: server-side established connections on the proxy's port.
established() { ss -Htn state established "( sport = :$PORT )" | wc -l; }

# load_with_idle I: open IDLE idle connections, record RSS and counts, run wrk, close them.
load_with_idle() {
  local i=$1 cpid line ok=0 t
  taskset -c "$LOAD_CPU" "$YATA_PY" perf/idle-conns.py 127.0.0.1 "$PORT" "/perf/$KEY" "$IDLE" $((SECS + 60)) \
    >"$WORK/idle-$i.out" 2>"$WORK/idle-$i.err" &
  cpid=$!
  for ((t = 0; t < 600; t++)); do
    line=$(head -1 "$WORK/idle-$i.out")
    [[ $line == ready* ]] && { ok=1; break; }
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.1
  done
  if ((!ok)); then kill "$cpid" 2>/dev/null; echo "ERR"; return 0; fi
  sleep 0.5
  echo "$line $(perf_rss_kb "$PROXY_PID") $(established)" >"$WORK/idle-$i.state"
  perf_wrk "$PROXY_URL" "$WORK/wrk-idle-$i.txt"
  echo "$(established)" >>"$WORK/idle-$i.state"
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
}
# load_plain I: the same wrk load with no idle connections; records the proxy's RSS.
load_plain() {
  perf_rss_kb "$PROXY_PID" >"$WORK/plain-$1.rss"
  perf_wrk "$PROXY_URL" "$WORK/wrk-plain-$1.txt"
}
# Profile: record only once the idle connections are open (opening 10 000 takes a few seconds).
perf_maybe_profile load_with_idle 8
perf_alternate "$RUNS" plain load_plain "with-idle" load_with_idle
MPL=$(perf_median_of plain "$RUNS"); MID=$(perf_median_of with-idle "$RUNS")
R=$(perf_ratio "$MID" "$MPL")

# Per run: "ready OPEN FAILED RSS_KB ESTABLISHED" then ESTABLISHED after wrk.
STATES=$(for ((i = 1; i <= RUNS; i++)); do
  tr '\n' ' ' <"$WORK/idle-$i.state"; echo; done)
RSS_IDLE=$(awk '{print $4}' <<<"$STATES" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
RSS_PLAIN=$(cat "$WORK"/plain-*.rss | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
PER_CONN=$(awk -v a="$RSS_IDLE" -v b="$RSS_PLAIN" -v n="$IDLE" 'BEGIN {printf "%.0f", (a-b)*1024/n}')

{
  echo "# $IDLE idle keep-alive connections plus 1 KiB cache-hit load"
  echo
  perf_meta
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run; idle client (Python asyncio) on CPU $LOAD_CPU; proxy X-Cache: '${XCACHE:-absent}'"
  echo
  perf_table "$RUNS" "req/s (p99)" plain with-idle
  echo
  echo "idle client per run (ready OPEN FAILED, proxy RSS KiB, established before wrk, after wrk):"
  echo
  while read -r l; do [[ -n $l ]] && echo "    $l"; done <<<"$STATES"
  echo
  echo "median plain $MPL req/s, median with $IDLE idle $MID req/s, **ratio with/without = $R**"
  echo
  echo "proxy VmRSS: $RSS_START KiB after the first request; $RSS_PLAIN KiB under load without idle connections (median);"
  echo "**$RSS_IDLE KiB with $IDLE idle connections** (median): ~$PER_CONN bytes per idle connection"
  echo
} | perf_result
