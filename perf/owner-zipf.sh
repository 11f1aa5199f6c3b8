#!/usr/bin/env bash
# S3 requests for one fixed, seeded Zipf(1.0) workload through 1, 2 and 4 shards (issue 13: with
# key-owned cache shards an object is fetched from S3 at most once per node while it stays cached,
# so the count must be the same at every shard count; with per-core caches it grows with it).
# OBJECTS small objects (1-4 KiB, deterministic names and bytes, perf/zipf-load.py) are uploaded to
# RGW once; then for each shard count a fresh proxy (`cpu_affinity: none`, a memory cache that
# holds everything) gets the same REQUESTS-long Zipf sequence over many fresh keep-alive
# connections (batches of 50 requests per connection, CONNECTIONS at a time), so SO_REUSEPORT
# spreads the keys over every shard. Per shard count it reports: S3 GETs (RGW's ops log, the ground
# truth; cross-checked with the proxy's yatagarasu_upstream_requests_total), the hit ratio (X-Cache
# as the client saw it, and cache_hits / (hits + misses) from /metrics), the L1 share of the hits
# (yatagarasu_cache_l1_hits_total / cache_hits, "n/a" when the build has no such metric) and how
# the connections spread over the shards. The floor is the number of distinct objects requested.
#
# usage:    bash perf/owner-zipf.sh [SHARD_COUNTS] [REQUESTS] [OBJECTS] [CONNECTIONS]
#           defaults: "1 2 4" 20000 2000 64
# env:      perf/lib.sh's (the proxy floats over all CPUs here: YATA_PERF_PROXY_CPU is not used;
#           YATA_PERF_LOAD_CPU 1: the driver; YATA_PERF_RGW_ENV, YATA_PERF_NO_BUILD=1 ...), and
#           YATA_PERF_ZIPF_SEED (1), YATA_PERF_ZIPF_S (1.0, the Zipf exponent; 0 = uniform),
#           YATA_PERF_ZIPF_PER_CONN (50, requests per connection),
#           YATA_PERF_MEMORY_EXTRA: more keys for the `cache.memory` flow map (e.g. "l1_percent: 0"
#           on a build that has it).
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, nginx, wrk) when missing
#           and RGW is started here; builds the release binary unless YATA_PERF_NO_BUILD=1. The
#           driver is stdlib Python (its upload step uses Debian's python3-botocore).
# out:      a table on stdout, appended to perf/results/<date>-owner-zipf.md with machine, kernel,
#           commit and proxy driver. Work files (configs, proxy logs, driver JSON, metrics before
#           and after) in perf/out/owner-zipf/.
#
# Traffic goes to 127.0.0.1 only: the upload and the proxies' fills to RGW, the workload to the
# proxy; the driver's sockets time out after 10 s and the workload is a fixed number of requests.
# Everything started here (RGW, each proxy) is stopped by PID on exit, never by name; each proxy is
# stopped before the next shard count starts. With YATA_PERF_RGW_ENV the reused RGW only gets the
# objects under perf-zipf/ in yata-public (kept if already there with the right sizes), and only
# ops-log lines for that prefix written after each run started are counted.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
read -r -a SHARD_COUNTS <<<"${1:-1 2 4}"
REQUESTS=${2:-20000}; OBJECTS=${3:-2000}; CONNS=${4:-64}
SEED=${YATA_PERF_ZIPF_SEED:-1}; ZIPF_S=${YATA_PERF_ZIPF_S:-1.0}; PER_CONN=${YATA_PERF_ZIPF_PER_CONN:-50}
PREFIX=perf-zipf/
perf_init owner-zipf "$@"
for n in "${SHARD_COUNTS[@]}" "$REQUESTS" "$OBJECTS" "$CONNS" "$PER_CONN"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "counts must be positive integers (got '$n')"; exit 2; }
done
PERF_PROXY_CPUS=0-$(($(nproc) - 1))

perf_build
perf_start_rgw
OPS_LOG=${YATA_TEST_OPS_LOG:-}
[[ -n $OPS_LOG && -f $OPS_LOG ]] || echo "warning: no RGW ops log; S3 GETs come from the proxy's metric only" >&2
ZIPF=("$YATA_TEST_PYTHON" "$PERF_ROOT/perf/zipf-load.py" --objects "$OBJECTS" --min-size 1024
      --max-size 4096 --prefix "$PREFIX" --requests "$REQUESTS" --seed "$SEED" --s "$ZIPF_S")
"${ZIPF[@]}" upload --bucket yata-public >"$WORK/upload.json"
"${ZIPF[@]}" stats >"$WORK/stats.json"
# json FILE KEY...: the value at KEY... in a JSON file (0 when missing).
json() {
  "$YATA_TEST_PYTHON" -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v.get(k, 0)
print(v)' "$@"
}
DISTINCT=$(json "$WORK/stats.json" distinct)

# ops_gets OFFSET: GETs of our prefix RGW logged after byte OFFSET of the ops log.
ops_gets() {
  [[ -n $OPS_LOG && -f $OPS_LOG ]] || { echo n/a; return; }
  # grep -o, not -c: RGW sometimes writes several entries on one line.
  { tail -c +"$(($1 + 1))" "$OPS_LOG" | grep -o "\"uri\":\"GET /yata-public/${PREFIX}[^\"]*\"" || true; } | wc -l
}
# ops_settled OFFSET: ops_gets once it stopped changing (RGW writes the log asynchronously).
ops_settled() {
  local prev=-1 cur i
  for ((i = 0; i < 30; i++)); do
    sleep 0.5
    cur=$(ops_gets "$1")
    [[ $cur == "$prev" ]] && break
    prev=$cur
  done
  echo "$cur"
}
# metric NAME FILE: the sum of every series of NAME in a /metrics dump, "n/a" when absent.
metric() {
  awk -v m="$1" '$1 ~ ("^" m "([{]|$)") {s += $NF; f = 1} END {if (f) printf "%.0f\n", s; else print "n/a"}' "$2"
}
# delta BEFORE AFTER / pct PART WHOLE: n/a-aware arithmetic.
delta() { if [[ $1 == n/a || $2 == n/a ]]; then echo n/a; else echo $(($2 - $1)); fi; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.1f%%", 100 * a / b}'; }

# mdelta N NAME: how much metric NAME grew during the run at N shards.
mdelta() { delta "$(metric "$2" "$WORK/metrics-$1-before.txt")" "$(metric "$2" "$WORK/metrics-$1-after.txt")"; }

declare -A ROW=() GETS_OF=() UP_OF=()
for n in "${SHARD_COUNTS[@]}"; do
  CONF=$WORK/yatagarasu-$n.yaml
  {
    perf_proxy_conf_head "$n" none
    echo "cache:"
    echo "  memory: {max_cache_size_mb: 256, max_item_size_mb: 1, default_ttl_seconds: 3600${YATA_PERF_MEMORY_EXTRA:+, $YATA_PERF_MEMORY_EXTRA}}"
    echo "buckets:"
    perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
  } >"$CONF"
  perf_start_proxy "$CONF" "yatagarasu-$n"
  ADMIN=$(grep -o '"admin":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4)
  curl -fsS --max-time 5 -o "$WORK/metrics-$n-before.txt" "http://$ADMIN/metrics"
  OFF=0
  [[ -n $OPS_LOG && -f $OPS_LOG ]] && OFF=$(stat -c %s "$OPS_LOG")
  echo "shards $n: $REQUESTS requests over $CONNS connections at a time..." >&2
  taskset -c "$LOAD_CPU" "${ZIPF[@]}" run --url "http://$PROXY_ADDR/perf/$PREFIX" --conns "$CONNS" \
      --per-conn "$PER_CONN" >"$WORK/run-$n.json" \
    || { echo "the workload at shards $n had failures:"; cat "$WORK/run-$n.json"; exit 1; }
  GETS=$(ops_settled "$OFF")
  curl -fsS --max-time 5 -o "$WORK/metrics-$n-after.txt" "http://$ADMIN/metrics"
  perf_stop_pid "$PROXY_PID" yatagarasu
  UP=$(mdelta "$n" yatagarasu_upstream_requests_total)
  HITS=$(mdelta "$n" yatagarasu_cache_hits_total); MISSES=$(mdelta "$n" yatagarasu_cache_misses_total)
  L1=$(mdelta "$n" yatagarasu_cache_l1_hits_total)
  LOOKUPS=n/a; [[ $HITS != n/a && $MISSES != n/a ]] && LOOKUPS=$((HITS + MISSES))
  XHIT=$(json "$WORK/run-$n.json" x_cache HIT)
  SPREAD=$(awk '$1 ~ /^yatagarasu_connections_accepted_total[{]/ {s = s (s ? "/" : "") $NF} END {print (s ? s : "n/a")}' \
    "$WORK/metrics-$n-after.txt")
  COUNTED=$GETS; [[ $COUNTED == n/a ]] && COUNTED=$UP
  ROW[$n]="| $n | $GETS | $UP | $(awk -v g="$COUNTED" -v d="$DISTINCT" 'BEGIN {if (g == "n/a") print g; else printf "%.2f", g / d}') | $(pct "$XHIT" "$REQUESTS") | $(pct "$HITS" "$LOOKUPS") | $(pct "$L1" "$HITS") | $SPREAD | $(json "$WORK/run-$n.json" seconds) |"
  GETS_OF[$n]=$COUNTED; UP_OF[$n]=$UP
  echo "shards $n: S3 GETs $GETS (ops log), $UP (metric); X-Cache HIT $XHIT of $REQUESTS" >&2
done

SAME=yes; FIRST=${GETS_OF[${SHARD_COUNTS[0]}]}; AGREE=yes
for n in "${SHARD_COUNTS[@]}"; do
  [[ ${GETS_OF[$n]} == "$FIRST" ]] || SAME=no
  [[ ${UP_OF[$n]} == "${GETS_OF[$n]}" ]] || AGREE=no
done
{
  echo "# S3 GETs for a fixed Zipf($ZIPF_S) workload at ${SHARD_COUNTS[*]} shards"
  echo
  perf_meta
  echo "- workload: $REQUESTS GETs, seed $SEED, Zipf($ZIPF_S) over $OBJECTS objects of 1-4 KiB ($PREFIX in yata-public); $DISTINCT distinct objects requested (the floor for S3 GETs; hit-ratio ceiling $(pct $((REQUESTS - DISTINCT)) "$REQUESTS")); top 1% of objects: $(json "$WORK/stats.json" top1pct_share) of the requests"
  echo "- client: perf/zipf-load.py, $CONNS connections at a time, $PER_CONN requests per fresh keep-alive connection ($(((REQUESTS + PER_CONN - 1) / PER_CONN)) connections), every body checked"
  echo "- proxy: a fresh process per shard count, \`cpu_affinity: none\`, floating over CPUs $PERF_PROXY_CPUS; memory cache 256 MiB, items <= 1 MiB, TTL 1 h${YATA_PERF_MEMORY_EXTRA:+, $YATA_PERF_MEMORY_EXTRA}"
  echo
  echo "| shards | S3 GETs (RGW ops log) | upstream_requests_total | GETs / distinct | X-Cache HIT | hit ratio (metrics) | L1 share of hits | connections per shard | driver s |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for n in "${SHARD_COUNTS[@]}"; do echo "${ROW[$n]}"; done
  echo
  echo "**S3 GETs the same at every shard count: $SAME** (key-owned shards: must be yes, and equal to the $DISTINCT distinct objects; per-core caches: they grow with the shard count); ops log and upstream_requests_total agree: $AGREE"
  echo
} | perf_result
