#!/usr/bin/env bash
# Redis-tier cache hits through one pinned Yatagarasu shard (memory tier off:
# `cache.memory.max_cache_size_mb: 0`, disk tier off, so every hit is one Redis GET through the
# core's auto-pipelined RESP connection plus the value's XXH3 check), against redis-benchmark
# GETs of the same value from the same redis-server, and the cost of a dead Redis on memory hits.
# All in one invocation:
#
#   1. redis-server (its own, no persistence, on a free loopback port) pinned to one CPU. For the
#      1 KiB (seeded 1k.bin) and 100 KiB (seeded 100k.bin, or an uploaded perf-100k.bin) object:
#      wrk against the proxy, with the proxy and Redis in two layouts:
#        split   proxy alone on YATA_PERF_PROXY_CPU, redis-server with wrk on YATA_PERF_LOAD_CPU;
#        shared  proxy and redis-server on YATA_PERF_PROXY_CPU, wrk alone on the other CPU
#      (redis-server is moved between them with `taskset -a -p`); and redis-benchmark GETs of the
#      proxy's own stored value (COPY'd to redis-benchmark's key `key:__rand_int__`), with the same
#      connections, pinned to the CPU redis-server is not on, for about as long (-n calibrated by
#      short probes), at -P 1 and, for reference, -P 16. Printed: proxy req/s / redis-benchmark
#      GET/s per size, layout and pipeline depth, with the CPU each process used (schedstat: % of
#      one CPU and us per request) and the proxy's run-queue wait (time other processes held its
#      CPU: the noise of a shared machine).
#   2. Dead-Redis cost: memory tier on (64 MiB), the 1 KiB object warmed into memory; wrk memory
#      hits of (a) a proxy with `cache.redis.enabled: false` and (b) one with the Redis tier on,
#      pointed at a loopback port where nothing listens. Runs a b a b (both proxies up, pinned
#      to the proxy CPU, one loaded at a time); printed: req/s b/a per pair (issue target
#      >= 0.97) and the proxy's CPU per hit b/a (less sensitive to other processes' load).
#
# usage:    bash perf/redis-hit.sh [SECONDS] [CONNECTIONS]
#           defaults: 10 16 (12 measured runs of ~SECONDS each: the whole script ~3 minutes)
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0, YATA_PERF_LOAD_CPU 1, YATA_PERF_RGW_ENV,
#           YATA_PERF_NO_BUILD=1, YATA_PERF_NOTE, ...). YATA_PERF_RGW_ENV defaults to
#           tests/support/.state/env when that RGW answers (it is only read from, plus the upload
#           of perf-100k.bin when 100k.bin is not seeded); otherwise RGW is started here.
#           YATA_PERF_REDIS_LAYOUTS ("split shared"): the layouts of part 1 (the first also runs
#           the redis-benchmark references). YATA_PERF_REDIS_SIZES ("1k 100k").
#           YATA_PERF_REDIS_DEAD_PAIRS (2): a-b pairs of part 2 (more on a noisy machine).
# installs: wrk, redis-server and redis-tools (Debian) when missing; builds the release binary
#           unless YATA_PERF_NO_BUILD=1.
# out:      tables on stdout, appended to perf/results/<date>-redis-hit.md with machine, kernel,
#           commit, pinning. Work files (configs, logs, wrk and redis-benchmark output, metrics
#           dumps, bodies) in perf/out/redis-hit/.
#
# Checks (the script fails with what it saw otherwise): each object's bytes through the proxy
# (3 GETs before and 3 after the load) have the sha256 of the object as RGW serves it (signed GET,
# and the seed manifest when there is one) and `Cache-Status: yatagarasu; hit; detail=redis`; the
# proxy's metrics grow by one `layer="redis"` hit per wrk request with no miss and no S3 request
# during the runs, and redis-server's keyspace_hits by one per request; redis-benchmark's GETs all
# hit (keyspace_hits grows by -n, plus at most one pipeline per connection; no keyspace miss). In
# part 2 every answer checked says detail=memory, every wrk request is one memory-layer hit, and
# proxy (b) has no Redis connection up at the end (nothing answered on its port).
#
# Profile: `bash perf/flamegraph.sh redis-hit [SECONDS]` records the proxy under wrk load of Redis
# hits of YATA_PERF_REDIS_PROFILE_SIZE (1k or 100k; default the last of YATA_PERF_REDIS_SIZES) in
# the first layout, and exits without the runs.
#
# Traffic goes to 127.0.0.1 only. Every wrk run is bounded by -d, redis-benchmark by -n (from
# probes of ~1.5 s at most), every wait by a timeout; everything started here (redis-server, the
# proxies, RGW when started) is stopped by PID on exit, never by name.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
SECS=${1:-10}; CONNS=${2:-16}
for n in "$SECS" "$CONNS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "SECONDS and CONNECTIONS must be positive integers (got '$n')"; exit 2; }
done
read -r -a LAYOUTS <<<"${YATA_PERF_REDIS_LAYOUTS:-split shared}"
read -r -a SIZE_NAMES <<<"${YATA_PERF_REDIS_SIZES:-1k 100k}"
PAIRS=${YATA_PERF_REDIS_DEAD_PAIRS:-2}
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || { echo "YATA_PERF_REDIS_DEAD_PAIRS must be a positive integer"; exit 2; }
for l in "${LAYOUTS[@]}"; do [[ $l == split || $l == shared ]] || { echo "unknown layout '$l' (split, shared)"; exit 2; }; done
perf_init redis-hit "$@"
[[ $PROXY_CPU != "$LOAD_CPU" ]] || { echo "YATA_PERF_PROXY_CPU and YATA_PERF_LOAD_CPU must differ"; exit 2; }
rm -rf "$WORK"/redis "$WORK"/ref "$WORK"/body "$WORK"/wrk-* "$WORK"/rb-* "$WORK"/metrics-*
mkdir -p "$WORK/redis" "$WORK/ref" "$WORK/body" "$WORK/bin"
# size_bytes NAME: 1k -> 1024, 100k -> 102400.
size_bytes() {
  case ${1,,} in
    *k) echo $((${1%[kK]} * 1024)) ;;
    *m) echo $((${1%[mM]} * 1048576)) ;;
    *) echo "$1" ;;
  esac
}
# free_port: a loopback port nothing listens on right now (kernel-chosen).
free_port() { "$YATA_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

perf_need wrk
perf_need redis-server redis-server
perf_need redis-benchmark redis-tools
perf_need redis-cli redis-tools
perf_build
# A private copy: the binary under CARGO_TARGET_DIR may be rebuilt while this runs.
cp "$YATA_BIN" "$WORK/bin/yatagarasu"
YATA_BIN=$WORK/bin/yatagarasu
if [[ -z ${YATA_PERF_RGW_ENV:-} && -r $PERF_ROOT/tests/support/.state/env ]] \
  && (. "$PERF_ROOT/tests/support/.state/env" && curl -fsS --max-time 2 -o /dev/null "$YATA_TEST_S3_ENDPOINT/"); then
  YATA_PERF_RGW_ENV=$PERF_ROOT/tests/support/.state/env
fi
perf_start_rgw --full

# ---- the objects: reference bytes as RGW serves them ------------------------------------------
# ref_fetch KEY OUT: signed GET of yata-public/KEY into OUT; prints the HTTP status.
ref_fetch() {
  local url="$YATA_TEST_S3_ENDPOINT/yata-public/$1" h args=()
  mapfile -t _signed < <("$YATA_TEST_PYTHON" tests/support/sigv4.py "$url" "$YATA_TEST_AK1" "$YATA_TEST_SK1" --format raw)
  for h in "${_signed[@]}"; do args+=(-H "$h"); done
  curl -sS --max-time 10 -o "$2" -w '%{http_code}' "${args[@]}" "$url"
}
declare -A KEY_OF=() SHA_OF=() BYTES_OF=()
for sn in "${SIZE_NAMES[@]}"; do
  size=$(size_bytes "$sn")
  key=$sn.bin
  code=$(ref_fetch "$key" "$WORK/ref/$key")
  if [[ $code != 200 || $(stat -c %s "$WORK/ref/$key") != "$size" ]]; then
    # Not seeded (demo-only seed) or another size: a deterministic object of our own.
    key=perf-$sn.bin
    "$YATA_TEST_PYTHON" -c 'import random,sys; n=int(sys.argv[1]); sys.stdout.buffer.write(random.Random("yata-public/"+sys.argv[2]).randbytes(n))' \
      "$size" "$key" >"$WORK/ref/$key.upload"
    "$YATA_TEST_PYTHON" tests/support/put-object.py yata-public "$key" <"$WORK/ref/$key.upload" >/dev/null
    code=$(ref_fetch "$key" "$WORK/ref/$key")
    [[ $code == 200 ]] && cmp -s "$WORK/ref/$key" "$WORK/ref/$key.upload" \
      || { echo "cannot read back yata-public/$key from RGW (HTTP $code)"; exit 1; }
  fi
  KEY_OF[$sn]=$key; BYTES_OF[$sn]=$size
  SHA_OF[$sn]=$(sha256sum "$WORK/ref/$key" | cut -d' ' -f1)
  if [[ -n ${YATA_TEST_MANIFEST:-} && -r $YATA_TEST_MANIFEST ]]; then
    want=$("$YATA_TEST_PYTHON" -c 'import json,sys
for o in json.load(open(sys.argv[1])):
    if o["bucket"] == "yata-public" and o["key"] == sys.argv[2]: print(o["sha256"])' "$YATA_TEST_MANIFEST" "$key")
    [[ -z $want || $want == "${SHA_OF[$sn]}" ]] \
      || { echo "RGW serves yata-public/$key with sha256 ${SHA_OF[$sn]}, the seed manifest says $want"; exit 1; }
  fi
done

# ---- redis-server: our own, no persistence, pinned ---------------------------------------------
RPORT=$(free_port)
taskset -c "$LOAD_CPU" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" --daemonize no &
REDIS_PID=$!
perf_on_exit "perf_stop_pid $REDIS_PID redis-server"
RCLI=(redis-cli -h 127.0.0.1 -p "$RPORT")
for ((i = 0; i < 50; i++)); do
  [[ $("${RCLI[@]}" PING 2>/dev/null) == PONG ]] && break
  yata_pid_alive "$REDIS_PID" redis-server || break
  sleep 0.1
done
[[ $("${RCLI[@]}" PING 2>/dev/null) == PONG ]] || { echo "redis-server did not start:"; cat "$WORK/redis/redis.log"; exit 1; }
REDIS_VERSION=$(redis-server --version | awk '{print $3}' | sed 's/^v=//')
REDIS_CPU=$LOAD_CPU
# redis_on CPU: move redis-server (every thread) to CPU.
redis_on() {
  taskset -a -p -c "$1" "$REDIS_PID" >/dev/null
  REDIS_CPU=$1
}
rstat() { "${RCLI[@]}" INFO stats | tr -d '\r' | awk -F: -v k="$1" '$1 == k {print $2}'; }

# ---- helpers: metrics, CPU, fetches ---------------------------------------------------------------
# metric NAME LABEL_FILTER FILE: the sum of the series of NAME whose labels contain LABEL_FILTER
# (e.g. layer="redis") in a /metrics dump; "n/a" when there is none.
metric() {
  awk -v m="$1" -v f="$2" '$1 ~ ("^" m "([{]|$)") && (f == "" || index($1, f)) {s += $NF; n = 1}
    END {if (n) printf "%.0f\n", s; else print "n/a"}' "$3"
}
# scrape ADMIN NAME: /metrics of the proxy whose admin listener is ADMIN into WORK/metrics-NAME.txt.
scrape() { curl -fsS --max-time 5 -o "$WORK/metrics-$2.txt" "http://$1/metrics"; }
# mdelta A B NAME [FILTER]: how much metric NAME grew from dump A to dump B.
mdelta() {
  local a b
  a=$(metric "$3" "${4:-}" "$WORK/metrics-$1.txt"); b=$(metric "$3" "${4:-}" "$WORK/metrics-$2.txt")
  if [[ $a == n/a || $b == n/a ]]; then echo n/a; else echo $((b - a)); fi
}
admin_of() { grep -o '"admin":"[^"]*"' "$1" | head -1 | cut -d'"' -f4; }
# cpu_ms PID: CPU time of PID's threads so far (schedstat: ns on a CPU), ms.
cpu_ms() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.3f", s / 1e6}'; }
# rq_wait_ms PID: time PID's threads spent runnable but waiting for a CPU (schedstat), ms: how
# much other processes on its CPU took from it (the machine is shared).
rq_wait_ms() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f", s / 1e6}'; }
# cpu_pct MS0 MS1 SECONDS: percent of one CPU.
cpu_pct() { awk -v a="$1" -v b="$2" -v s="$3" 'BEGIN {printf "%.0f", (b - a) / s / 10}'; }
# us_per MS0 MS1 COUNT: CPU microseconds per request.
us_per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {if (n > 0) printf "%.2f", (b - a) * 1000 / n; else print "nan"}'; }
# check_get URL NAME SN WANT_DETAIL: GET URL; the body's sha256 must be SN's and the Cache-Status
# `yatagarasu; hit; detail=WANT_DETAIL`.
check_get() {
  local url=$1 name=$2 sn=$3 detail=$4 got status
  curl -fsS --max-time 10 -D "$WORK/body/$name.head" -o "$WORK/body/$name.body" "$url" \
    || { echo "$name: GET $url failed"; exit 1; }
  got=$(sha256sum "$WORK/body/$name.body" | cut -d' ' -f1)
  [[ $got == "${SHA_OF[$sn]}" ]] \
    || { echo "$name: $url served bytes with sha256 $got, the object's is ${SHA_OF[$sn]}; headers:"; cat "$WORK/body/$name.head"; exit 1; }
  status=$(tr -d '\r' <"$WORK/body/$name.head" | awk -F': *' 'tolower($1) == "cache-status" {print $2}')
  [[ $status == "yatagarasu; hit; detail=$detail" ]] \
    || { echo "$name: $url answered Cache-Status '$status', not detail=$detail; headers:"; cat "$WORK/body/$name.head"; exit 1; }
}
wrk_requests() { awk '/requests in/ {print $1; exit}' "$1"; }

# ---- part 1: Redis hits ----------------------------------------------------------------------------
CONF=$WORK/yatagarasu-redis.yaml
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 0, default_ttl_seconds: 3600}"
  echo "  redis: {enabled: true, url: \"redis://127.0.0.1:$RPORT/0\", key_prefix: \"bench:\", ttl_seconds: 3600, timeout_ms: 50, max_item_size_mb: 4}"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
} >"$CONF"
perf_start_proxy "$CONF" yatagarasu-redis
R_PID=$PROXY_PID; R_ADDR=$PROXY_ADDR
R_ADMIN=$(admin_of "$PROXY_LOG")
[[ -n $R_ADMIN ]] || { echo "no admin listener in the proxy's log:"; cat "$PROXY_LOG"; exit 1; }
perf_wait_http "http://$R_ADDR/perf/${KEY_OF[${SIZE_NAMES[0]}]}"
declare -A RKEY_OF=() VLEN_OF=()
for sn in "${SIZE_NAMES[@]}"; do
  key=${KEY_OF[$sn]}
  rk="bench:obj:perf:$key"
  # A miss first (or a hit left by an earlier run: the key is deleted below), filled behind it.
  "${RCLI[@]}" DEL "$rk" >/dev/null
  curl -fsS --max-time 10 -o "$WORK/body/fill-$sn.body" "http://$R_ADDR/perf/$key" \
    || { echo "fill GET of $key failed"; tail -n 20 "$PROXY_LOG"; exit 1; }
  for ((i = 0; i < 50; i++)); do
    [[ $("${RCLI[@]}" EXISTS "$rk") == 1 ]] && break
    sleep 0.1
  done
  [[ $("${RCLI[@]}" EXISTS "$rk") == 1 ]] \
    || { echo "the proxy did not store $rk in Redis within 5 s; keys: $("${RCLI[@]}" --scan | head -5 | paste -sd ' ')"; tail -n 20 "$PROXY_LOG"; exit 1; }
  RKEY_OF[$sn]=$rk
  VLEN_OF[$sn]=$("${RCLI[@]}" STRLEN "$rk")
  for i in 1 2 3; do check_get "http://$R_ADDR/perf/$key" "before-redis-$sn-$i" "$sn" redis; done
done
SAMPLE_HEAD=$(tr -d '\r' <"$WORK/body/before-redis-${SIZE_NAMES[0]}-1.head" \
  | grep -iE '^(cache-status|x-cache|content-length):' | paste -sd '|' | sed 's/|/ | /g')

# Under perf/flamegraph.sh: profile the proxy serving Redis hits of YATA_PERF_REDIS_PROFILE_SIZE
# (default the last size) in the first layout, instead of the runs.
PROFILE_SN=${YATA_PERF_REDIS_PROFILE_SIZE:-${SIZE_NAMES[-1]}}
[[ -n ${KEY_OF[$PROFILE_SN]:-} ]] || { echo "YATA_PERF_REDIS_PROFILE_SIZE '$PROFILE_SN' is not one of: ${SIZE_NAMES[*]}"; exit 2; }
if [[ ${LAYOUTS[0]} == split ]]; then redis_on "$LOAD_CPU"; else redis_on "$PROXY_CPU"; fi
profile_load() { perf_wrk "http://$R_ADDR/perf/${KEY_OF[$PROFILE_SN]}" "$WORK/wrk-profile.txt"; }
perf_maybe_profile profile_load

declare -A RPS=() P99=() NOTE=() CPU_P=() CPU_R=() US_P=() US_R=()
# proxy_run SN LAYOUT: one wrk run of SN's object against the Redis-tier proxy; checks that every
# request was a Redis hit.
proxy_run() {
  local sn=$1 layout=$2 tag="proxy-$1-$2" out r p t0p t0r t1p t1r w0 w1 h0 h1 reqs hits misses s3
  scrape "$R_ADMIN" "$tag-before"
  h0=$(rstat keyspace_hits)
  t0p=$(cpu_ms "$R_PID"); t0r=$(cpu_ms "$REDIS_PID"); w0=$(rq_wait_ms "$R_PID")
  out=$(perf_wrk "http://$R_ADDR/perf/${KEY_OF[$sn]}" "$WORK/wrk-$tag.txt")
  t1p=$(cpu_ms "$R_PID"); t1r=$(cpu_ms "$REDIS_PID"); w1=$(rq_wait_ms "$R_PID")
  h1=$(rstat keyspace_hits)
  scrape "$R_ADMIN" "$tag-after"
  read -r r p <<<"$out"
  [[ $r != ERR ]] || { echo "wrk failed against the proxy ($tag):"; cat "$WORK/wrk-$tag.txt"; exit 1; }
  reqs=$(wrk_requests "$WORK/wrk-$tag.txt")
  hits=$(mdelta "$tag-before" "$tag-after" yatagarasu_cache_hits_total 'layer="redis"')
  misses=$(mdelta "$tag-before" "$tag-after" yatagarasu_cache_misses_total)
  s3=$(mdelta "$tag-before" "$tag-after" yatagarasu_upstream_requests_total)
  # wrk counts answered requests; its last in-flight ones (up to CONNS) were served but not counted.
  ((hits >= reqs && hits <= reqs + CONNS)) && [[ $misses == 0 && $s3 == 0 ]] \
    || { echo "$tag: wrk $reqs requests, but redis-layer hits +$hits, misses +$misses, S3 requests +$s3"; exit 1; }
  RPS[$tag]=$r; P99[$tag]=$p
  CPU_P[$tag]=$(cpu_pct "$t0p" "$t1p" "$SECS"); CPU_R[$tag]=$(cpu_pct "$t0r" "$t1r" "$SECS")
  US_P[$tag]=$(us_per "$t0p" "$t1p" "$hits"); US_R[$tag]=$(us_per "$t0r" "$t1r" "$hits")
  NOTE[$tag]="wrk $reqs requests, redis-layer hits +$hits, misses +$misses, S3 requests +$s3, Redis keyspace_hits +$((h1 - h0)); proxy run-queue wait $((w1 - w0)) ms"
  echo "perf: $tag $r req/s (p99 $p), proxy CPU ${CPU_P[$tag]}%, redis CPU ${CPU_R[$tag]}%" >&2
}
# rb_run SN PIPE: redis-benchmark GETs of SN's stored value at -P PIPE, pinned to the CPU
# redis-server is not on, -n calibrated to last about SECS.
rb_run() {
  local sn=$1 pipe=$2 tag="rb-$1-P$2" cpu n0 n rps p99 h0 h1 m0 m1 line t0r t1r secs start
  cpu=$PROXY_CPU; [[ $REDIS_CPU == "$PROXY_CPU" ]] && cpu=$LOAD_CPU
  "${RCLI[@]}" COPY "${RKEY_OF[$sn]}" "key:__rand_int__" REPLACE >/dev/null
  [[ $("${RCLI[@]}" STRLEN "key:__rand_int__") == "${VLEN_OF[$sn]}" ]] || { echo "COPY to key:__rand_int__ failed"; exit 1; }
  local rb=(taskset -c "$cpu" redis-benchmark -h 127.0.0.1 -p "$RPORT" -t get -d "${BYTES_OF[$sn]}" -P "$pipe" -c "$CONNS" --csv)
  local probe k
  # Probes of 4x more GETs each until one lasts >= 0.4 s (at most 4: ~1.5 s in all), then -n
  # for SECS at the last probe's rate.
  n0=$((1000 * pipe))
  for ((k = 0; k < 4; k++)); do
    probe=$("${rb[@]}" -n "$n0" 2>"$WORK/$tag-probe.err" | awk -F'","' '/^"GET/ {print $2}')
    [[ -n $probe ]] || { echo "redis-benchmark probe failed ($tag):"; cat "$WORK/$tag-probe.err"; exit 1; }
    awk -v n="$n0" -v r="$probe" 'BEGIN {exit !(n / r >= 0.4)}' && break
    n0=$((n0 * 4))
  done
  n=$(awk -v r="$probe" -v s="$SECS" -v m="$n0" 'BEGIN {n = int(r * s); print (n > m ? n : m)}')
  h0=$(rstat keyspace_hits); m0=$(rstat keyspace_misses)
  t0r=$(cpu_ms "$REDIS_PID"); start=$(date +%s.%N)
  "${rb[@]}" -n "$n" >"$WORK/$tag.csv" 2>"$WORK/$tag.err"
  t1r=$(cpu_ms "$REDIS_PID"); secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
  h1=$(rstat keyspace_hits); m1=$(rstat keyspace_misses)
  line=$(grep '^"GET' "$WORK/$tag.csv" || true)
  rps=$(awk -F'","' '{print $2}' <<<"$line"); p99=$(awk -F'","' '{print $7}' <<<"$line")
  [[ -n $rps ]] || { echo "redis-benchmark failed ($tag):"; cat "$WORK/$tag.csv" "$WORK/$tag.err"; exit 1; }
  # redis-benchmark sends whole pipelines: up to CONNS x PIPE GETs past -n.
  ((h1 - h0 >= n && h1 - h0 <= n + CONNS * pipe && m1 == m0)) \
    || { echo "$tag: redis-benchmark sent $n GETs but keyspace_hits +$((h1 - h0)), keyspace_misses +$((m1 - m0))"; exit 1; }
  RPS[$tag]=$rps; P99[$tag]=${p99}ms
  CPU_R[$tag]=$(cpu_pct "$t0r" "$t1r" "$secs"); US_R[$tag]=$(us_per "$t0r" "$t1r" "$((h1 - h0))")
  NOTE[$tag]="-n $n (probe: $n0 at $(printf '%.0f' "$probe") GET/s), $(printf '%.1f' "$secs") s, redis-benchmark on CPU $cpu, keyspace_hits +$((h1 - h0)), misses +$((m1 - m0))"
  echo "perf: $tag $rps GET/s (p99 ${p99} ms), redis CPU ${CPU_R[$tag]}%" >&2
}

for sn in "${SIZE_NAMES[@]}"; do
  for layout in "${LAYOUTS[@]}"; do
    if [[ $layout == split ]]; then redis_on "$LOAD_CPU"; else redis_on "$PROXY_CPU"; fi
    proxy_run "$sn" "$layout"
    if [[ $layout == "${LAYOUTS[0]}" ]]; then
      rb_run "$sn" 1
      rb_run "$sn" 16
    fi
  done
done
"${RCLI[@]}" DEL "key:__rand_int__" >/dev/null
for sn in "${SIZE_NAMES[@]}"; do
  for i in 1 2 3; do check_get "http://$R_ADDR/perf/${KEY_OF[$sn]}" "after-redis-$sn-$i" "$sn" redis; done
done
scrape "$R_ADMIN" redis-end
REDIS_ERRS="timeouts $(metric yatagarasu_cache_redis_timeouts_total '' "$WORK/metrics-redis-end.txt"), errors $(metric yatagarasu_cache_redis_errors_total '' "$WORK/metrics-redis-end.txt"), reconnects $(metric yatagarasu_cache_redis_reconnects_total '' "$WORK/metrics-redis-end.txt"), corrupt $(metric yatagarasu_cache_redis_corrupt_total '' "$WORK/metrics-redis-end.txt"), queue drops $(metric yatagarasu_cache_redis_queue_drops_total '' "$WORK/metrics-redis-end.txt")"
perf_stop_pid "$R_PID" yatagarasu
perf_stop_pid "$REDIS_PID" redis-server

# ---- part 2: memory hits, Redis off vs Redis dead ---------------------------------------------------
DEAD_PORT=$(free_port)
mem_conf() {
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 64, max_item_size_mb: 1, default_ttl_seconds: 3600}"
  echo "  redis: $1"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
}
mem_conf "{enabled: false}" >"$WORK/yatagarasu-mem-off.yaml"
mem_conf "{enabled: true, url: \"redis://127.0.0.1:$DEAD_PORT/0\", key_prefix: \"bench:\", timeout_ms: 50, max_item_size_mb: 4}" \
  >"$WORK/yatagarasu-mem-dead.yaml"
perf_start_proxy "$WORK/yatagarasu-mem-off.yaml" yatagarasu-mem-off
A_PID=$PROXY_PID; A_ADDR=$PROXY_ADDR; A_ADMIN=$(admin_of "$PROXY_LOG")
perf_start_proxy "$WORK/yatagarasu-mem-dead.yaml" yatagarasu-mem-dead
B_PID=$PROXY_PID; B_ADDR=$PROXY_ADDR; B_ADMIN=$(admin_of "$PROXY_LOG")
SN1=${SIZE_NAMES[0]}
for side in a b; do
  if [[ $side == a ]]; then addr=$A_ADDR; else addr=$B_ADDR; fi
  perf_wait_http "http://$addr/perf/${KEY_OF[$SN1]}"
  curl -fsS --max-time 10 -o /dev/null "http://$addr/perf/${KEY_OF[$SN1]}"
  for i in 1 2; do check_get "http://$addr/perf/${KEY_OF[$SN1]}" "before-mem-$side-$i" "$SN1" memory; done
done
# mem_run SIDE I: one wrk run of the 1 KiB memory hit against proxy SIDE (a: Redis off, b: dead).
mem_run() {
  local side=$1 i=$2 tag="mem-$1-$2" addr admin pid out r p t0 t1 w0 w1 reqs hits
  if [[ $side == a ]]; then addr=$A_ADDR; admin=$A_ADMIN; pid=$A_PID; else addr=$B_ADDR; admin=$B_ADMIN; pid=$B_PID; fi
  scrape "$admin" "$tag-before"
  t0=$(cpu_ms "$pid"); w0=$(rq_wait_ms "$pid")
  out=$(perf_wrk "http://$addr/perf/${KEY_OF[$SN1]}" "$WORK/wrk-$tag.txt")
  t1=$(cpu_ms "$pid"); w1=$(rq_wait_ms "$pid")
  scrape "$admin" "$tag-after"
  read -r r p <<<"$out"
  [[ $r != ERR ]] || { echo "wrk failed ($tag):"; cat "$WORK/wrk-$tag.txt"; exit 1; }
  reqs=$(wrk_requests "$WORK/wrk-$tag.txt")
  hits=$(mdelta "$tag-before" "$tag-after" yatagarasu_cache_hits_total 'layer="memory"')
  ((hits >= reqs && hits <= reqs + CONNS)) \
    || { echo "$tag: wrk $reqs requests, but memory-layer hits +$hits"; exit 1; }
  RPS[$tag]=$r; P99[$tag]=$p; CPU_P[$tag]=$(cpu_pct "$t0" "$t1" "$SECS"); US_P[$tag]=$(us_per "$t0" "$t1" "$hits")
  NOTE[$tag]="memory hits +$hits"
  [[ $side == a ]] || NOTE[$tag]+=", redis lookups skipped +$(mdelta "$tag-before" "$tag-after" yatagarasu_cache_redis_skipped_total), redis errors (failed connects) +$(mdelta "$tag-before" "$tag-after" yatagarasu_cache_redis_errors_total)"
  NOTE[$tag]+="; proxy run-queue wait $((w1 - w0)) ms"
  echo "perf: $tag $r req/s (p99 $p), proxy CPU ${CPU_P[$tag]}%" >&2
}
scrape "$B_ADMIN" dead-start
for ((i = 1; i <= PAIRS; i++)); do mem_run a "$i"; mem_run b "$i"; done
scrape "$B_ADMIN" dead-end
for side in a b; do
  if [[ $side == a ]]; then addr=$A_ADDR; else addr=$B_ADDR; fi
  for i in 1 2; do check_get "http://$addr/perf/${KEY_OF[$SN1]}" "after-mem-$side-$i" "$SN1" memory; done
done
DEAD_UP=$(metric yatagarasu_cache_redis_connections_up '' "$WORK/metrics-dead-end.txt")
[[ $DEAD_UP == 0 ]] || { echo "proxy (b) has $DEAD_UP Redis connection(s) up: something listens on 127.0.0.1:$DEAD_PORT"; exit 1; }
DEAD_FACTS="connections up $DEAD_UP, redis errors (failed connects) +$(mdelta dead-start dead-end yatagarasu_cache_redis_errors_total), skipped lookups +$(mdelta dead-start dead-end yatagarasu_cache_redis_skipped_total), redis misses +$(mdelta dead-start dead-end yatagarasu_cache_misses_total 'layer="redis"') over the runs"

# ---- report ----------------------------------------------------------------------------------------
p99_ms() { awk '/us$/ {print ($1+0)/1000; next} /ms$/ {print $1+0; next} /s$/ {print ($1+0)*1000}' <<<"$1"; }
{
  echo "# Redis-tier hits (memory tier off) vs redis-benchmark GETs; memory hits with Redis dead"
  echo
  perf_meta
  echo "- redis-server $REDIS_VERSION on 127.0.0.1:$RPORT (\`--save \"\" --appendonly no\`), single-threaded; layouts: split = redis-server on CPU $LOAD_CPU with wrk, proxy alone on CPU $PROXY_CPU; shared = redis-server on CPU $PROXY_CPU with the proxy, wrk alone on CPU $LOAD_CPU; redis-benchmark (1 thread) on the CPU redis-server is not on"
  echo "- proxy binary: ${CARGO_TARGET_DIR:-target}/release/yatagarasu (copied to $WORK/bin at start), sha256 $(sha256sum "$YATA_BIN" | cut -c1-12)"
  echo "- proxy (part 1): shards 1, \`cache.memory.max_cache_size_mb: 0\`, disk off, \`cache.redis: {key_prefix: \"bench:\", timeout_ms: 50, max_item_size_mb: 4}\`; wrk: 1 thread, $CONNS connections, ${SECS}s per run; redis-benchmark: \`-t get -c $CONNS -P 1|16 -n <~${SECS}s worth>\` of the proxy's own stored value (COPY'd to \`key:__rand_int__\`)"
  echo "- values in Redis: $(for sn in "${SIZE_NAMES[@]}"; do printf '%s %s bytes (body %s)\n' "${KEY_OF[$sn]}" "${VLEN_OF[$sn]}" "${BYTES_OF[$sn]}"; done | paste -sd ';' | sed 's/;/; /g')"
  echo "- checks: 3 GETs per object before and after the runs sha256-equal to the object from RGW, each \`Cache-Status: yatagarasu; hit; detail=redis\` (sample headers: $SAMPLE_HEAD); every wrk request one redis-layer hit, no miss, no S3 request; every redis-benchmark GET a keyspace hit; proxy Redis counters at the end: $REDIS_ERRS"
  echo "- CPU columns: schedstat time on a CPU of all the process's threads during the run (% of one CPU, and per request); run-queue wait: time the proxy's threads were runnable but another process had its CPU (in the shared layout mostly redis-server, by design; elsewhere other load on the machine: the larger, the noisier the run)"
  echo
  echo "## Redis hits"
  echo
  echo "| object | run | req/s or GET/s | p99 | proxy CPU %, us/req | redis CPU %, us/GET | notes |"
  echo "|---|---|---|---|---|---|---|"
  for sn in "${SIZE_NAMES[@]}"; do
    for layout in "${LAYOUTS[@]}"; do
      t="proxy-$sn-$layout"
      echo "| $sn | proxy, $layout | ${RPS[$t]} | ${P99[$t]} | ${CPU_P[$t]}, ${US_P[$t]} | ${CPU_R[$t]}, ${US_R[$t]} | ${NOTE[$t]} |"
    done
    for pipe in 1 16; do
      t="rb-$sn-P$pipe"
      echo "| $sn | redis-benchmark -P $pipe | ${RPS[$t]} | ${P99[$t]} | - | ${CPU_R[$t]}, ${US_R[$t]} | ${NOTE[$t]} |"
    done
  done
  echo
  for sn in "${SIZE_NAMES[@]}"; do
    line="**$sn:**"
    for layout in "${LAYOUTS[@]}"; do
      line+=" proxy($layout)/redis-benchmark -P1 = **$(perf_ratio "${RPS[proxy-$sn-$layout]}" "${RPS[rb-$sn-P1]}")**, /-P16 = $(perf_ratio "${RPS[proxy-$sn-$layout]}" "${RPS[rb-$sn-P16]}");"
    done
    echo "${line%;}"
    echo
  done
  echo "## Memory hits ($SN1): Redis tier off (a) vs on with Redis dead (b)"
  echo
  echo "- both proxies: shards 1 on CPU $PROXY_CPU, \`cache.memory: {max_cache_size_mb: 64}\`; (a) \`cache.redis.enabled: false\`; (b) \`cache.redis.enabled: true\`, url redis://127.0.0.1:$DEAD_PORT/0 (nothing listens); both up during every run, one loaded at a time, order a b repeated $PAIRS times"
  echo "- checks: 2 GETs per proxy before and after sha256-equal, \`detail=memory\`; every wrk request a memory-layer hit; proxy (b): $DEAD_FACTS"
  echo
  echo "| run | req/s (p99) | proxy CPU %, us/req | notes |"
  echo "|---|---|---|---|"
  for ((i = 1; i <= PAIRS; i++)); do
    for side in a b; do
      t="mem-$side-$i"
      echo "| $side$i | ${RPS[$t]} (${P99[$t]}) | ${CPU_P[$t]}, ${US_P[$t]} | ${NOTE[$t]} |"
    done
  done
  echo
  line="**dead Redis b/a (req/s):"; cost="CPU per hit b/a:"; verdicts=""; va=(); vb=(); sep=""
  for ((i = 1; i <= PAIRS; i++)); do
    r=$(perf_ratio "${RPS[mem-b-$i]}" "${RPS[mem-a-$i]}")
    line+="${sep:- }pair $i = $r"; verdicts+="${sep:- }$(perf_verdict "$r" 0.97)"
    cost+="${sep:- }pair $i = $(perf_ratio "${US_P[mem-b-$i]}" "${US_P[mem-a-$i]}")"
    sep=", "
    va+=("${RPS[mem-a-$i]}"); vb+=("${RPS[mem-b-$i]}")
  done
  echo "$line** (target >= 0.97:$verdicts); b/a of the medians = $(perf_ratio "$(perf_median "${vb[@]}")" "$(perf_median "${va[@]}")"); $cost (lower is cheaper; 1.0 = the same work per hit)"
  echo
} | perf_result
