#!/usr/bin/env bash
# Idle memory: VmRSS of Yatagarasu with 2 shards (one per CPU) and empty caches (memory cache
# configured at its default 1024 MiB, which must not be allocated up front), SETTLE seconds after
# "yatagarasu listening", against the reference: nginx with 2 workers, idle (RSS of master +
# workers). Alternating fresh starts within one invocation, medians and their ratio. Issue 6's
# target: proxy idle RSS < 20 MiB.
#
# usage:    bash perf/idle-rss.sh [RUNS] [SETTLE_SECONDS]      defaults: 3 1
# env:      perf/lib.sh's (YATA_PERF_NO_BUILD, CARGO_TARGET_DIR, ...). No pinning: both shards /
#           workers get one CPU each (cpu_affinity [0, 1]).
# installs: nginx (apt, nginx-light) when missing; builds the release binary unless
#           YATA_PERF_NO_BUILD=1. Needs no backend: the bucket points at 127.0.0.1:9, which is
#           never contacted because no request is sent.
# out:      a table on stdout, appended to perf/results/<date>-idle-rss.md.
#
# Sends no traffic at all (listeners on 127.0.0.1 only); every process it starts is stopped by PID
# before the next run and on exit.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
RUNS=${1:-3}; SETTLE=${2:-1}
perf_init idle-rss "$@"
perf_build
PERF_PROXY_CPUS="0,1"

CONF=$WORK/yatagarasu.yaml
{
  perf_proxy_conf_head 2 "0, 1"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 1024, max_item_size_mb: 10, default_ttl_seconds: 3600}"
  echo "buckets:"
  perf_bucket_conf perf /perf idle-bucket "http://127.0.0.1:9" AKIDLEEXAMPLE SKIDLEEXAMPLE "{enabled: true}"
} >"$CONF"
NGX=$WORK/nginx
rm -rf "$NGX"; mkdir -p "$NGX"
PORT=$(yata_pick_port nginx-idle 7583)
perf_nginx_conf "$NGX" "    server { listen 127.0.0.1:$PORT; location / { return 204; } }" \
  | sed "s/^worker_processes 1;/worker_processes 2;/" >"$NGX/nginx.conf"

# proxy_rss I: start the proxy, wait SETTLE, print "VmRSS RssAnon RssFile" (KiB), stop it.
proxy_rss() {
  perf_start_proxy "$CONF" "yatagarasu-$1" >&2
  sleep "$SETTLE"
  awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print r, "anon " a " file " f}' \
    "/proc/$PROXY_PID/status"
  perf_stop_pid "$PROXY_PID" yatagarasu
}
# nginx_rss I: start nginx, wait SETTLE, print the summed VmRSS of master and workers, stop it.
nginx_rss() {
  perf_start_nginx "$NGX" >&2
  sleep "$SETTLE"
  local kids total
  kids=$(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')
  total=0
  for p in $NGINX_PID $kids; do total=$((total + $(perf_rss_kb "$p"))); done
  echo "$total $(wc -w <<<"$kids")-workers"
  perf_stop_pid "$NGINX_PID" nginx
}
perf_alternate "$RUNS" proxy proxy_rss nginx nginx_rss
# The last proxy run set PROXY_DRIVER only in a subshell; read it from a log.
PROXY_DRIVER=$(grep -ho '"drivers":"[^"]*"' "$WORK"/yatagarasu-*.log | head -1 | cut -d'"' -f4 || true)
MP=$(perf_median_of proxy "$RUNS"); MN=$(perf_median_of nginx "$RUNS")
MIB=$(awk -v k="$MP" 'BEGIN {printf "%.1f", k/1024}')

{
  echo "# Idle RSS: proxy with 2 shards and empty caches vs nginx with 2 workers"
  echo
  perf_meta
  echo "- measured ${SETTLE}s after start, no request sent; proxy memory cache configured at 1024 MiB (empty)"
  echo
  perf_table "$RUNS" "VmRSS KiB" proxy nginx
  echo
  echo "median proxy $MP KiB (**$MIB MiB**, target < 20 MiB: $(perf_verdict "$MIB" 20 le)), median nginx $MN KiB, proxy/nginx = $(perf_ratio "$MP" "$MN")"
  echo
} | perf_result
