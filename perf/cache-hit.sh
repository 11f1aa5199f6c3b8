#!/usr/bin/env bash
# Cache hits of one object (1 KiB by default, or SIZE) through one pinned Yatagarasu shard, against
#   (a) the ceiling: nginx, one worker, serving the same bytes as a file (page cache +
#       open_file_cache);
#   (b) the peer:    nginx proxy_cache, one worker, in front of the same Ceph RGW, serving hits;
# in alternating wrk runs within one invocation (the order rotates each round), and the ratios of
# the medians. Issue 6's targets at 1 KiB and 64 connections: proxy >= 0.9x the ceiling and
# >= 1.2x the peer, p99 no worse than the peer's.
#
# usage:    bash perf/cache-hit.sh [RUNS] [SECONDS] [CONNECTIONS] [SIZE]
#           defaults: 5 5 16 1k. SIZE: 1k (the seeded 1k.bin) or a byte count with an optional
#           k/m suffix (KiB/MiB), e.g. 100k: a deterministic object of that size is uploaded to RGW
#           as perf-<SIZE>.bin first. perf/cache-hit-100k.sh is the 100 KiB wrapper.
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0: the proxy shard and the nginx worker, one at a
#           time under load; YATA_PERF_LOAD_CPU 1: wrk; RGW floats (YATA_PERF_BACKEND_CPU), idle once both caches are warm;
#           YATA_PERF_NO_BUILD=1 ...), and YATA_PERF_ALLOW_MISS=1: run even if the proxy never
#           answers `X-Cache: HIT` (the result then says it measured the miss path).
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, nginx, wrk) when missing;
#           builds the release binary unless YATA_PERF_NO_BUILD=1.
# out:      a table on stdout, appended to perf/results/<date>-cache-hit[-SIZE].md with machine,
#           kernel, commit, proxy driver and nginx version. Work files in perf/out/cache-hit*/.
#
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by -d and every wait by a timeout;
# everything started here (RGW, nginx, the proxy) is stopped by PID on exit, never by name.
# All three serve byte-identical bodies (checked with cmp before measuring). The nginx peer fetches
# the object once with a replayed SigV4-signed GET (valid ~15 min, long enough for its single
# fill); afterwards both caches answer from memory / page cache and RGW is idle.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
RUNS=${1:-5}; SECS=${2:-5}; CONNS=${3:-16}; SIZE_ARG=${4:-1k}
case ${SIZE_ARG,,} in
  *k) SIZE=$((${SIZE_ARG%[kK]} * 1024)) ;;
  *m) SIZE=$((${SIZE_ARG%[mM]} * 1048576)) ;;
  *) SIZE=$SIZE_ARG ;;
esac
[[ $SIZE =~ ^[0-9]+$ && $SIZE -gt 0 ]] || { echo "SIZE must be a positive byte count (1k, 100k, 4096)"; exit 2; }
if ((SIZE == 1024)); then SCEN=cache-hit; KEY=1k.bin; else SCEN=cache-hit-${SIZE_ARG,,}; KEY=perf-${SIZE_ARG,,}.bin; fi
perf_init "$SCEN" "$@"
NGX=$WORK/nginx
rm -rf "$NGX"
mkdir -p "$NGX/www" "$NGX/proxy_cache"

perf_need wrk
perf_build
perf_start_rgw
RGW_HOSTPORT=${YATA_TEST_S3_ENDPOINT#http://}
DIRECT_URL="$YATA_TEST_S3_ENDPOINT/yata-public/$KEY"
if [[ $KEY != 1k.bin ]]; then
  # Deterministic bytes (like seed.py): the same object on every run.
  "$YATA_TEST_PYTHON" -c 'import random,sys; n=int(sys.argv[1]); sys.stdout.buffer.write(random.Random("yata-public/"+sys.argv[2]).randbytes(n))' \
    "$SIZE" "$KEY" >"$WORK/$KEY"
  "$YATA_TEST_PYTHON" tests/support/put-object.py yata-public "$KEY" <"$WORK/$KEY" >/dev/null
fi

# The reference bytes: the object as RGW serves it. The ceiling serves exactly this file.
mapfile -t SIGNED < <("$YATA_TEST_PYTHON" tests/support/sigv4.py "$DIRECT_URL" "$YATA_TEST_AK1" "$YATA_TEST_SK1" --format raw)
CURL_SIGNED=()
for h in "${SIGNED[@]}"; do CURL_SIGNED+=(-H "$h"); done
curl -fsS --max-time 10 -o "$NGX/www/$KEY" "${CURL_SIGNED[@]}" "$DIRECT_URL" \
  || { echo "signed GET of $DIRECT_URL failed"; exit 1; }
[[ $(stat -c %s "$NGX/www/$KEY") == "$SIZE" ]] || { echo "$KEY is not $SIZE bytes"; exit 1; }
chmod -R a+rX "$NGX/www"

# ---- nginx: ceiling and peer, one worker pinned to the proxy's CPU ------------------------------
CEIL_PORT=$(yata_pick_port nginx-ceiling 7581)
PEER_PORT=$(yata_pick_port nginx-peer 7582)
[[ $CEIL_PORT != "$PEER_PORT" ]] || PEER_PORT=$(yata_pick_port nginx-peer 0)
[[ $(id -u) -ne 0 ]] || chown -R nobody:nogroup "$NGX/proxy_cache"
# nginx wants header values without CR/LF; the signed values are single-line by construction.
SIGNED_NGX=""
for h in "${SIGNED[@]}"; do
  SIGNED_NGX+="            proxy_set_header ${h%%:*} \"${h#*: }\";"$'\n'
done
perf_nginx_conf "$NGX" "
    # The ceiling: the file, descriptor and metadata cached, bytes from the page cache.
    open_file_cache max=64 inactive=300s;
    open_file_cache_valid 300s;
    server {
        listen 127.0.0.1:$CEIL_PORT;
        location /perf/ {
            alias $NGX/www/;
        }
    }
    # The peer: nginx's own HTTP cache in front of the same RGW, keys in shared memory, bodies in
    # files (page cache), as nginx deployments run it.
    proxy_cache_path $NGX/proxy_cache levels=1:2 keys_zone=peer:10m max_size=256m inactive=60m
                     use_temp_path=off;
    upstream rgw {
        server $RGW_HOSTPORT;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:$PEER_PORT;
        location = /perf/$KEY {
            proxy_pass http://rgw/yata-public/$KEY;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            # The signed request: Host and the SigV4 headers, replayed for the single fill.
            proxy_set_header Host \"$RGW_HOSTPORT\";
$SIGNED_NGX
            proxy_cache peer;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }
    }" >"$NGX/nginx.conf"
perf_start_nginx "$NGX"

# ---- Yatagarasu: one shard, pinned, memory cache on ----------------------------------------------
CONF=$WORK/yatagarasu.yaml
ITEM_MB=$((SIZE / 1048576 + 1))
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: $((ITEM_MB * 8 > 64 ? ITEM_MB * 8 : 64)), max_item_size_mb: $ITEM_MB, default_ttl_seconds: 3600}"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
} >"$CONF"
perf_start_proxy "$CONF"

PROXY_URL="http://$PROXY_ADDR/perf/$KEY"
CEIL_URL="http://127.0.0.1:$CEIL_PORT/perf/$KEY"
PEER_URL="http://127.0.0.1:$PEER_PORT/perf/$KEY"
perf_wait_http "$CEIL_URL"

# ---- warm both caches, check the bytes and that hits are hits ------------------------------------
# fetch URL NAME: GET into $WORK/NAME.body, headers into $WORK/NAME.head; fails on non-2xx.
fetch() { curl -fsS --max-time 10 -D "$WORK/$2.head" -o "$WORK/$2.body" "$1"; }
x_cache() { tr -d '\r' <"$WORK/$1.head" | awk -F': *' 'tolower($1)=="x-cache" {print $2}'; }
for name in ceiling peer proxy; do
  case $name in ceiling) url=$CEIL_URL ;; peer) url=$PEER_URL ;; proxy) url=$PROXY_URL ;; esac
  fetch "$url" "$name" || { echo "GET $url ($name) failed"; [[ $name == peer ]] && cat "$NGX/error.log"; exit 1; }
  fetch "$url" "$name" || { echo "second GET $url ($name) failed"; exit 1; }
  cmp -s "$WORK/$name.body" "$NGX/www/$KEY" || { echo "$name served different bytes"; exit 1; }
done
[[ $(x_cache peer) == HIT ]] || { echo "nginx proxy_cache did not hit (X-Cache: $(x_cache peer))"; exit 1; }
PROXY_XCACHE=$(x_cache proxy)
PATH_NOTE="cache hits (X-Cache: HIT)"
if [[ $PROXY_XCACHE != HIT ]]; then
  if [[ ${YATA_PERF_ALLOW_MISS:-0} == 1 ]]; then
    PATH_NOTE="NOT cache hits: the proxy answered X-Cache: '${PROXY_XCACHE:-absent}' (cache not wired); proxy numbers are the miss path through RGW"
    echo "warning: $PATH_NOTE" >&2
  else
    echo "the proxy's second GET was not a cache hit (X-Cache: '${PROXY_XCACHE:-absent}');"
    echo "set YATA_PERF_ALLOW_MISS=1 to measure anyway"
    exit 1
  fi
fi

# ---- alternating runs ----------------------------------------------------------------------------
load_ceiling() { perf_wrk "$CEIL_URL" "$WORK/wrk-ceiling-$1.txt"; }
load_peer() { perf_wrk "$PEER_URL" "$WORK/wrk-peer-$1.txt"; }
load_proxy() { perf_wrk "$PROXY_URL" "$WORK/wrk-proxy-$1.txt"; }
perf_maybe_profile load_proxy
perf_alternate "$RUNS" ceiling load_ceiling peer load_peer proxy load_proxy
# The proxy must still be hitting after the load (nothing evicted, nothing expired).
fetch "$PROXY_URL" proxy-after || true
PROXY_XCACHE_AFTER=$(x_cache proxy-after 2>/dev/null || true)

MC=$(perf_median_of ceiling "$RUNS"); MP=$(perf_median_of peer "$RUNS"); MY=$(perf_median_of proxy "$RUNS")
R_CEIL=$(perf_ratio "$MY" "$MC"); R_PEER=$(perf_ratio "$MY" "$MP")
# p99 medians in ms (wrk prints us/ms/s).
p99_ms() { local i; for ((i = 1; i <= RUNS; i++)); do echo "${PERF_EXTRA[$1,$i]}"; done \
  | awk '/us$/ {v=$1+0; print v/1000; next} /ms$/ {print $1+0; next} /s$/ {print ($1+0)*1000}'; }
mapfile -t _p < <(p99_ms peer); P99_PEER=$(perf_median "${_p[@]}")
mapfile -t _p < <(p99_ms proxy); P99_PROXY=$(perf_median "${_p[@]}")

{
  echo "# $SIZE_ARG cache hits: Yatagarasu vs nginx static (ceiling) vs nginx proxy_cache (peer)"
  echo
  perf_meta
  echo "- wrk: 1 thread, $CONNS connections, ${SECS}s per run; object: $KEY ($SIZE bytes)"
  echo "- what the proxy served: $PATH_NOTE; X-Cache after the runs: '${PROXY_XCACHE_AFTER:-absent}'"
  echo
  perf_table "$RUNS" "req/s (p99)" ceiling peer proxy
  echo
  echo "medians: ceiling $MC, peer $MP, proxy $MY req/s; median p99: peer ${P99_PEER} ms, proxy ${P99_PROXY} ms"
  echo
  echo "**proxy/ceiling = $R_CEIL** (target >= 0.9: $(perf_verdict "$R_CEIL" 0.9)); **proxy/peer = $R_PEER** (target >= 1.2: $(perf_verdict "$R_PEER" 1.2)); p99 proxy <= peer: $(perf_verdict "$P99_PROXY" "$P99_PEER" le)"
  echo
} | perf_result
