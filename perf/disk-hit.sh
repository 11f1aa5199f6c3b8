#!/usr/bin/env bash
# Disk-tier cache hits through one pinned Yatagarasu shard (memory tier off:
# `cache.memory.max_cache_size_mb: 0`, so every hit is one O_DIRECT read of the record through the
# core's io_uring ring), against nginx proxy_cache hits (one worker, pinned to the same CPU, in
# front of the same Ceph RGW), over a working set of OBJECTS objects per size at 4 KiB and
# 100 KiB, wrk picking a uniformly random object per request (a seeded Lua script). nginx in two
# regimes:
#   cold  the page cache (and dentries/inodes) dropped before each run: its hits start from disk
#         (a working set smaller than RAM is back in the page cache after its first pass, early in
#         the run: the MB read per run show how much came from the disk);
#   warm  every proxy_cache file read once before each run: its hits come from the page cache.
# The page cache is dropped before each of our runs too (O_DIRECT bypasses it anyway). Both caches
# live on the same real disk (perf/out/disk-hit/, checked not to be tmpfs). Runs alternate
# (perf_alternate, order rotated every round); the result is the ratios ours/nginx of the median
# req/s per size and regime, with median p99s, the MB read from the disk during each run and the
# CPU the server (proxy or nginx worker) used during it.
# Issue target: disk hits >= 1.0x nginx proxy_cache hits with the page cache dropped; the warm
# regime is reported only.
#
# usage:    bash perf/disk-hit.sh [RUNS] [SECONDS] [CONNECTIONS] [OBJECTS]
#           defaults: 3 5 16 2000 (per size: RUNS x 3 arms x SECONDS of load, plus a drop or a
#           warm-up before each run)
# env:      perf/lib.sh's (YATA_PERF_PROXY_CPU 0: the proxy shard and the nginx worker, one at a
#           time under load; YATA_PERF_LOAD_CPU 1: wrk; YATA_PERF_RGW_ENV: a running RGW to reuse;
#           YATA_PERF_NO_BUILD=1 with CARGO_TARGET_DIR: an existing binary; YATA_PERF_COMMIT ...),
#           YATA_PERF_DISK_SIZES ("4096 102400"): the object sizes in bytes, and
#           YATA_PERF_NGINX_MEMORY_MB (unset): put nginx in a cgroup-v1 memory cgroup of that many
#           MiB, which its page cache is charged to, so a working set larger than the cap cannot
#           stay in the page cache (the "cold" regime then stays cold for the whole run, as a
#           working set larger than RAM would; "warm" is capped too). Needs
#           /sys/fs/cgroup/memory (cgroup v1); the cgroup is removed on exit.
#           Must run as root (or with passwordless sudo): drop_caches.
# installs: the Debian test packages (tests/support/install-deps.sh: Ceph, nginx, wrk) when missing
#           and RGW is started here; builds the release binary unless YATA_PERF_NO_BUILD=1. The
#           object helper perf/disk-objects.py uses Debian's python3-botocore.
# out:      a table per size on stdout, appended to perf/results/<date>-disk-hit.md with machine,
#           kernel, commit, proxy driver, nginx version and the disk. Work files (configs, logs,
#           wrk output, sweeps, metrics, sample bodies and headers) in perf/out/disk-hit/.
#
# Traffic goes to 127.0.0.1 only: the upload and both caches' fills to RGW, the load to the proxy
# and nginx. Every wrk run is bounded by -d, every wait by a timeout; everything started here (RGW,
# nginx, the proxy) is stopped by PID on exit, never by name. The objects (perf-disk/<size>/ in
# yata-public, deterministic bytes from perf/disk-objects.py) are uploaded once and kept; the
# proxy's disk cache and nginx's proxy_cache are emptied at start. Before measuring, every object
# is fetched through both and compared with the expected bytes, a sample is also fetched with curl
# and cmp'd, the proxy must answer every object `Cache-Status: ...; detail=disk` and nginx
# `X-Cache: HIT`; otherwise the script fails with what it saw. The nginx fills replay SigV4
# headers signed per object at start (valid ~15 min, long enough for the single fill of each).
# nginx runs with perf_nginx_conf's settings except `tcp_nopush off` in its server (sendfile stays
# on): with TCP_CORK its 100 KiB proxy_cache hits stall ~40 ms each on loopback here.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
RUNS=${1:-3}; SECS=${2:-5}; CONNS=${3:-16}; OBJECTS=${4:-2000}
read -r -a SIZES <<<"${YATA_PERF_DISK_SIZES:-4096 102400}"
for n in "$RUNS" "$SECS" "$CONNS" "$OBJECTS" "${SIZES[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "counts and sizes must be positive integers (got '$n')"; exit 2; }
done
perf_init disk-hit "$@"
[[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null \
  || { echo "disk-hit.sh drops the page cache: run it as root (or with passwordless sudo)"; exit 2; }
NGX=$WORK/nginx
DISK_DIR=$WORK/disk-cache
rm -rf "$NGX" "$DISK_DIR" "$WORK"/sample "$WORK"/wrk-* "$WORK"/diskread-* "$WORK"/cpu-* "$WORK"/metrics-* "$WORK"/sweep-*
mkdir -p "$NGX/proxy_cache" "$DISK_DIR" "$WORK/sample" "$WORK/bin"
FSTYPE=$(findmnt -n -o FSTYPE -T "$DISK_DIR")
DEV=$(findmnt -n -o SOURCE -T "$DISK_DIR")
case $FSTYPE in
  tmpfs | ramfs | overlay | squashfs) echo "$DISK_DIR is on $FSTYPE, not a real disk"; exit 1 ;;
esac
# The block device's read counter (sectors), for the MB read during each run (machine-wide).
DEV_STAT=/sys/class/block/$(basename "$DEV")/stat
[[ -r $DEV_STAT ]] || DEV_STAT=""
# size_name BYTES: 4k, 100k, 1m or the byte count.
size_name() {
  if (($1 % 1048576 == 0)); then echo "$(($1 / 1048576))m"
  elif (($1 % 1024 == 0)); then echo "$(($1 / 1024))k"
  else echo "$1"; fi
}

perf_need wrk
perf_build
# A private copy: the binary under CARGO_TARGET_DIR may be rebuilt while this runs.
cp "$YATA_BIN" "$WORK/bin/yatagarasu"
YATA_BIN=$WORK/bin/yatagarasu
perf_start_rgw
RGW_HOSTPORT=${YATA_TEST_S3_ENDPOINT#http://}
OBJ=("$YATA_TEST_PYTHON" "$PERF_ROOT/perf/disk-objects.py")
for size in "${SIZES[@]}"; do
  "${OBJ[@]}" upload --prefix "perf-disk/$(size_name "$size")/" --objects "$OBJECTS" --size "$size" \
    >"$WORK/upload-$(size_name "$size").json"
done

# ---- nginx: proxy_cache in front of RGW, one worker pinned to the proxy's CPU ---------------------
PEER_PORT=$(yata_pick_port nginx-peer 7583)
[[ $(id -u) -ne 0 ]] || chown -R nobody:nogroup "$NGX/proxy_cache"
SIGMAP=""
for size in "${SIZES[@]}"; do
  SIGMAP+=$("${OBJ[@]}" nginx-map --prefix "perf-disk/$(size_name "$size")/" --objects "$OBJECTS" \
    --size "$size" --endpoint "$YATA_TEST_S3_ENDPOINT" --uri-prefix /perf/ --var "sig$size")$'\n'
done
# One location per size, each with its size's signature maps.
LOCATIONS=""
for size in "${SIZES[@]}"; do
  LOCATIONS+="
        location /perf/perf-disk/$(size_name "$size")/ {
            proxy_pass http://rgw/yata-public/perf-disk/$(size_name "$size")/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \"$RGW_HOSTPORT\";
            proxy_set_header Authorization \$sig${size}_auth;
            proxy_set_header X-Amz-Date \$sig${size}_date;
            proxy_set_header X-Amz-Content-SHA256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855;
            proxy_cache peer;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }"
done
perf_nginx_conf "$NGX" "
    map_hash_bucket_size 128;
    map_hash_max_size 65536;
$SIGMAP
    # nginx's own HTTP cache, keys in shared memory, bodies in files on the same disk as the
    # proxy's cache (read through the page cache, sent with sendfile), as nginx deployments run it.
    proxy_cache_path $NGX/proxy_cache levels=1:2 keys_zone=peer:16m max_size=4g inactive=24h
                     use_temp_path=off;
    upstream rgw {
        server $RGW_HOSTPORT;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:$PEER_PORT;
        # Not perf_nginx_conf's tcp_nopush on: with sendfile, TCP_CORK stalls proxy_cache hits of
        # 100 KiB for ~40 ms each here (p99 ~50 ms, ~500 req/s vs ~8.7k req/s with it off; static
        # files are not affected), which would measure the stall instead of the cache.
        tcp_nopush off;$LOCATIONS
    }" >"$NGX/nginx.conf"
perf_start_nginx "$NGX"
NGINX_CAP_NOTE="none"
if [[ -n ${YATA_PERF_NGINX_MEMORY_MB:-} ]]; then
  CG=/sys/fs/cgroup/memory/yata-perf-nginx-$$
  [[ -d /sys/fs/cgroup/memory ]] || { echo "YATA_PERF_NGINX_MEMORY_MB needs the cgroup-v1 memory controller"; exit 1; }
  mkdir -p "$CG"
  echo $((YATA_PERF_NGINX_MEMORY_MB * 1048576)) >"$CG/memory.limit_in_bytes"
  sleep 0.5
  # The master and its worker(s).
  for pid in $NGINX_PID $(pgrep -P "$NGINX_PID"); do echo "$pid" >"$CG/cgroup.procs"; done
  # Exit commands run last registered first: move nginx back to the root cgroup, then remove it.
  perf_on_exit "while read -r p; do echo \$p >/sys/fs/cgroup/memory/cgroup.procs; done <$CG/cgroup.procs; rmdir $CG"
  NGINX_CAP_NOTE="${YATA_PERF_NGINX_MEMORY_MB} MiB memory cgroup (page cache included)"
fi

# ---- Yatagarasu: one shard, pinned, memory tier off, disk tier on --------------------------------
CONF=$WORK/yatagarasu.yaml
TOTAL_MB=0
for size in "${SIZES[@]}"; do TOTAL_MB=$((TOTAL_MB + (size + 8192) * OBJECTS / 1048576)); done
# Room for the working set several times over (the region FIFO never reuses a region here).
DISK_MB=$((TOTAL_MB * 4 > 1024 ? TOTAL_MB * 4 : 1024))
{
  perf_proxy_conf_head 1 "$PROXY_CPU"
  echo "cache:"
  echo "  memory: {max_cache_size_mb: 0, default_ttl_seconds: 3600}"
  echo "  disk: {enabled: true, cache_dir: \"$DISK_DIR\", max_disk_cache_size_mb: $DISK_MB}"
  echo "buckets:"
  perf_bucket_conf perf /perf yata-public "$YATA_TEST_S3_ENDPOINT" "$YATA_TEST_AK1" "$YATA_TEST_SK1" "{enabled: true}"
} >"$CONF"
perf_start_proxy "$CONF"
ADMIN=$(grep -o '"admin":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4 || true)
[[ -n $ADMIN ]] || { echo "no admin listener in the proxy's log:"; cat "$PROXY_LOG"; exit 1; }
PEER_BASE="http://127.0.0.1:$PEER_PORT/perf/perf-disk"
PROXY_BASE="http://$PROXY_ADDR/perf/perf-disk"
perf_wait_http "http://127.0.0.1:$PEER_PORT/"

# metric NAME [LABEL_FILTER] FILE: the sum of the series of NAME whose labels contain LABEL_FILTER
# (e.g. layer="disk") in a /metrics dump; "n/a" when there is none.
metric() {
  awk -v m="$1" -v f="$2" '$1 ~ ("^" m "([{]|$)") && (f == "" || index($1, f)) {s += $NF; n = 1}
    END {if (n) printf "%.0f\n", s; else print "n/a"}' "$3"
}
scrape() { curl -fsS --max-time 5 -o "$WORK/metrics-$1.txt" "http://$ADMIN/metrics"; }
# sweep NAME BASE SIZE: every object of SIZE from BASE once, bytes checked -> WORK/sweep-NAME.json.
sweep() {
  "${OBJ[@]}" sweep --prefix "perf-disk/$(size_name "$3")/" --objects "$OBJECTS" --size "$3" \
    --url "$2/$(size_name "$3")/" --threads 4 --header Cache-Status --header X-Cache \
    >"$WORK/sweep-$1.json"
}

# ---- fill both caches, wait for the proxy's disk writes, check bytes and hit kinds --------------
# The proxy writes fills to disk behind the response (a bounded queue: a full queue skips the
# write), so sweep until every object is on disk (at most 5 sweeps, each followed by a wait for
# the disk item count to settle).
for size in "${SIZES[@]}"; do
  sn=$(size_name "$size")
  sweep "peer-fill-$sn" "$PEER_BASE" "$size" \
    || { echo "nginx served wrong answers on its fill of $sn:"; cat "$WORK/sweep-peer-fill-$sn.json"; tail -n 20 "$NGX/error.log"; exit 1; }
done
WANT=$((OBJECTS * ${#SIZES[@]}))
ITEMS=0
for ((pass = 1; pass <= 5; pass++)); do
  for size in "${SIZES[@]}"; do
    sn=$(size_name "$size")
    sweep "proxy-fill-$sn-$pass" "$PROXY_BASE" "$size" \
      || { echo "the proxy served wrong answers on fill sweep $pass of $sn:"; cat "$WORK/sweep-proxy-fill-$sn-$pass.json"; tail -n 20 "$PROXY_LOG"; exit 1; }
  done
  # Wait (at most 60 s) until all are there or the count has not moved for 2 s.
  prev=-1; same=0
  for ((i = 0; i < 300; i++)); do
    scrape fill
    ITEMS=$(metric yatagarasu_cache_items 'layer="disk"' "$WORK/metrics-fill.txt")
    [[ $ITEMS != n/a ]] || { echo "the proxy has no yatagarasu_cache_items{layer=\"disk\"} series:"; grep cache_items "$WORK/metrics-fill.txt"; exit 1; }
    ((ITEMS >= WANT)) && break
    if [[ $ITEMS == "$prev" ]]; then same=$((same + 1)); else same=0; fi
    ((same >= 10)) && break
    prev=$ITEMS
    sleep 0.2
  done
  ((ITEMS >= WANT)) && break
  echo "perf: $ITEMS of $WANT objects on disk after fill sweep $pass; sweeping again" >&2
done
((ITEMS >= WANT)) || { echo "only $ITEMS of $WANT objects reached the disk tier after 5 sweeps"; grep -E 'disk|cache_items' "$WORK/metrics-fill.txt"; tail -n 20 "$PROXY_LOG"; exit 1; }
FILL_DROPS=$(metric yatagarasu_cache_disk_queue_drops_total '' "$WORK/metrics-fill.txt")
FILL_PASSES=$pass

# hits_of FILE HEADER VALUE: how many answers in a sweep carried HEADER: VALUE.
hits_of() {
  "$YATA_TEST_PYTHON" -c 'import json, sys
print(json.load(open(sys.argv[1]))["headers"][sys.argv[2]].get(sys.argv[3], 0))' "$@"
}
DISK_STATUS="yatagarasu; hit; detail=disk"
perf_drop_caches
for size in "${SIZES[@]}"; do
  sn=$(size_name "$size")
  sweep "peer-check-$sn" "$PEER_BASE" "$size" \
    || { echo "nginx served wrong answers ($sn):"; cat "$WORK/sweep-peer-check-$sn.json"; exit 1; }
  [[ $(hits_of "$WORK/sweep-peer-check-$sn.json" X-Cache HIT) == "$OBJECTS" ]] \
    || { echo "nginx did not answer every $sn object from its cache:"; cat "$WORK/sweep-peer-check-$sn.json"; exit 1; }
  sweep "proxy-check-$sn" "$PROXY_BASE" "$size" \
    || { echo "the proxy served wrong answers from its disk tier ($sn):"; cat "$WORK/sweep-proxy-check-$sn.json"; tail -n 20 "$PROXY_LOG"; exit 1; }
  [[ $(hits_of "$WORK/sweep-proxy-check-$sn.json" Cache-Status "$DISK_STATUS") == "$OBJECTS" ]] \
    || { echo "the proxy did not answer every $sn object with 'Cache-Status: $DISK_STATUS':"; cat "$WORK/sweep-proxy-check-$sn.json"; tail -n 20 "$PROXY_LOG"; exit 1; }
done
# sample_check TAG: curl a sample of objects of every size through both, cmp with the expected
# bytes; the proxy's headers must say detail=disk.
sample_check() {
  local size sn i k side base
  for size in "${SIZES[@]}"; do
    sn=$(size_name "$size")
    for i in 0 1 $((OBJECTS / 3)) $((OBJECTS / 2)) $((OBJECTS - 1)); do
      k=$(printf 'o%05d.bin' "$i")
      [[ -f $WORK/sample/$sn-$k ]] \
        || "${OBJ[@]}" write --prefix "perf-disk/$sn/" --objects "$OBJECTS" --size "$size" --index "$i" --out "$WORK/sample/$sn-$k"
      for side in peer proxy; do
        if [[ $side == peer ]]; then base=$PEER_BASE; else base=$PROXY_BASE; fi
        curl -fsS --max-time 10 -D "$WORK/sample/$1-$side-$sn-$k.head" -o "$WORK/sample/$1-$side-$sn-$k.body" "$base/$sn/$k" \
          || { echo "$1: GET $base/$sn/$k ($side) failed"; exit 1; }
        cmp "$WORK/sample/$1-$side-$sn-$k.body" "$WORK/sample/$sn-$k" \
          || { echo "$1: $side served different bytes for perf-disk/$sn/$k; headers:"; cat "$WORK/sample/$1-$side-$sn-$k.head"; exit 1; }
      done
      tr -d '\r' <"$WORK/sample/$1-proxy-$sn-$k.head" | grep -qix "cache-status: $DISK_STATUS" \
        || { echo "$1: the proxy did not answer perf-disk/$sn/$k from disk; headers:"; cat "$WORK/sample/$1-proxy-$sn-$k.head"; tail -n 20 "$PROXY_LOG"; exit 1; }
    done
  done
}
sample_check before
PROXY_SAMPLE_HEAD=$(tr -d '\r' <"$WORK/sample/before-proxy-$(size_name "${SIZES[0]}")-o00000.bin.head" \
  | grep -iE '^(cache-status|x-cache|content-length):' | paste -sd '|' | sed 's/|/ | /g')

# ---- alternating runs, one size at a time ----------------------------------------------------------
# The wrk request: a uniformly chosen one of the OBJECTS objects of one size (precomputed
# requests, seeded LuaJIT PRNG; formatted in init(), after wrk has set the Host header).
for size in "${SIZES[@]}"; do
  sn=$(size_name "$size")
  cat >"$WORK/uniform-$sn.lua" <<EOF
-- Generated by perf/disk-hit.sh: a uniformly chosen one of $OBJECTS objects of $size bytes.
local reqs = {}
init = function(args)
  for i = 0, $((OBJECTS - 1)) do
    reqs[i + 1] = wrk.format("GET", string.format("/perf/perf-disk/$sn/o%05d.bin", i))
  end
end
math.randomseed(17)
request = function() return reqs[math.random($OBJECTS)] end
EOF
done
sectors_read() { if [[ -n $DEV_STAT ]]; then awk '{print $3}' "$DEV_STAT"; else echo 0; fi; }
# cpu_ticks PID: utime + stime of PID (clock ticks).
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
# The nginx worker (the master's only child): the process that serves the requests.
NGX_WORKER=$(tr ' ' '\n' <"/proc/$NGINX_PID/task/$NGINX_PID/children" | awk 'NF {print; exit}')
[[ -n $NGX_WORKER ]] || { echo "no nginx worker under master $NGINX_PID"; exit 1; }
# measured NAME RUN URL PID: one wrk run of the current size's script; the MB read from DEV and
# the CPU PID used (percent of one CPU) during it go to WORK/diskread-NAME-RUN, WORK/cpu-NAME-RUN.
measured() {
  local s0 c0 out
  s0=$(sectors_read); c0=$(cpu_ticks "$4")
  out=$(perf_wrk "$3" "$WORK/wrk-$1-$2.txt" -s "$WORK/uniform-$SN.lua")
  awk -v a="$s0" -v b="$(sectors_read)" 'BEGIN {printf "%.1f\n", (b - a) * 512 / 1048576}' >"$WORK/diskread-$1-$2"
  awk -v a="$c0" -v b="$(cpu_ticks "$4")" -v t="$TICKS" -v s="$SECS" 'BEGIN {printf "%.0f\n", (b - a) * 100 / t / s}' >"$WORK/cpu-$1-$2"
  echo "$out"
}
# warm_peer: read every proxy_cache file once (page cache, dentries, inodes).
warm_peer() { find "$NGX/proxy_cache" -type f -print0 | xargs -0 cat >/dev/null; }
load_proxy() { perf_drop_caches; measured "proxy-$SN" "$1" "http://$PROXY_ADDR/" "$PROXY_PID"; }
load_cold() { perf_drop_caches; measured "nginx_cold-$SN" "$1" "http://127.0.0.1:$PEER_PORT/" "$NGX_WORKER"; }
load_warm() { warm_peer; measured "nginx_warm-$SN" "$1" "http://127.0.0.1:$PEER_PORT/" "$NGX_WORKER"; }

for size in "${SIZES[@]}"; do
  SN=$(size_name "$size")
  echo "perf: $SN objects" >&2
  scrape "before-$SN"
  perf_alternate "$RUNS" "proxy-$SN" load_proxy "nginx_cold-$SN" load_cold "nginx_warm-$SN" load_warm
  scrape "after-$SN"
done
# Still disk hits with the right bytes after the load.
sample_check after

# ---- report --------------------------------------------------------------------------------------
# mdelta SN NAME [LABEL_FILTER]: how much the metric grew during size SN's runs.
mdelta() {
  local a b
  a=$(metric "$2" "${3:-}" "$WORK/metrics-before-$1.txt"); b=$(metric "$2" "${3:-}" "$WORK/metrics-after-$1.txt")
  if [[ $a == n/a || $b == n/a ]]; then echo n/a; else echo $((b - a)); fi
}
# file_median KIND NAME: the median of WORK/KIND-NAME-1..RUNS.
file_median() {
  local i v=()
  for ((i = 1; i <= RUNS; i++)); do v+=("$(cat "$WORK/$1-$2-$i")"); done
  perf_median "${v[@]}"
}
# proxy_facts SN: what the proxy's metrics say about size SN's measured runs.
proxy_facts() {
  local f reqs=0 hits bytes
  for f in "$WORK"/wrk-proxy-"$1"-*.txt; do
    reqs=$((reqs + $(awk '/requests in/ {print $1; exit}' "$f")))
  done
  hits=$(mdelta "$1" yatagarasu_cache_hits_total 'layer="disk"')
  bytes=$(mdelta "$1" yatagarasu_cache_disk_read_bytes_total)
  echo "wrk requests $reqs; disk-layer hits $hits, misses (all layers) $(mdelta "$1" yatagarasu_cache_misses_total), S3 requests $(mdelta "$1" yatagarasu_upstream_requests_total), disk read errors $(mdelta "$1" yatagarasu_cache_disk_read_errors_total), checksum failures $(mdelta "$1" yatagarasu_cache_disk_checksum_failures_total), disk bytes read per hit $(awk -v b="$bytes" -v h="$hits" 'BEGIN {if (h > 0 && b != "n/a") printf "%.0f", b / h; else print "n/a"}')"
}
{
  echo "# Disk-tier hits (memory tier off) vs nginx proxy_cache hits, page cache dropped / warm"
  echo
  perf_meta
  echo "- proxy binary: ${CARGO_TARGET_DIR:-target}/release/yatagarasu (copied to $WORK/bin at start), sha256 $(sha256sum "$YATA_BIN" | cut -c1-12)"
  echo "- proxy: shards 1, \`cache.memory.max_cache_size_mb: 0\`, \`cache.disk: {max_disk_cache_size_mb: $DISK_MB}\` in $DISK_DIR ($FSTYPE on $DEV); nginx proxy_cache in $NGX/proxy_cache (same filesystem), sendfile on, tcp_nopush off (see the script), no open_file_cache, no aio"
  echo "- working set: $OBJECTS objects per size (perf-disk/<size>/ in yata-public, deterministic bytes), wrk: 1 thread, $CONNS connections, ${SECS}s per run, $RUNS rounds, Lua: uniform over the $OBJECTS objects of one size"
  echo "- regimes: proxy and nginx_cold: \`sync; echo 3 > /proc/sys/vm/drop_caches\` before each run; nginx_warm: every proxy_cache file read once before each run"
  echo "- checks: every object through both byte-compared before the runs; proxy answered all with \`Cache-Status: $DISK_STATUS\`, nginx with X-Cache: HIT; a sample of $((5 * ${#SIZES[@]})) objects cmp'd and detail=disk before and after the runs (sample proxy headers: $PROXY_SAMPLE_HEAD)"
  echo "- fill: $FILL_PASSES proxy sweep(s) until $ITEMS/$WANT objects were on disk; disk queue drops during the fill: $FILL_DROPS"
  echo
  for size in "${SIZES[@]}"; do
    sn=$(size_name "$size")
    MY=$(perf_median_of "proxy-$sn" "$RUNS"); MC=$(perf_median_of "nginx_cold-$sn" "$RUNS"); MW=$(perf_median_of "nginx_warm-$sn" "$RUNS")
    R_COLD=$(perf_ratio "$MY" "$MC"); R_WARM=$(perf_ratio "$MY" "$MW")
    P_MY=$(perf_p99_median "proxy-$sn" "$RUNS"); P_C=$(perf_p99_median "nginx_cold-$sn" "$RUNS"); P_W=$(perf_p99_median "nginx_warm-$sn" "$RUNS")
    echo "## $sn objects ($size bytes)"
    echo
    perf_table "$RUNS" "req/s (p99)" "proxy-$sn" "nginx_cold-$sn" "nginx_warm-$sn"
    echo
    echo "medians: proxy $MY, nginx_cold $MC, nginx_warm $MW req/s; median p99: proxy ${P_MY} ms, nginx_cold ${P_C} ms, nginx_warm ${P_W} ms"
    echo
    echo "- proxy during these runs: $(proxy_facts "$sn")"
    echo "- median MB read from $DEV during a run (machine-wide: other processes' reads count too): proxy $(file_median diskread "proxy-$sn"), nginx_cold $(file_median diskread "nginx_cold-$sn"), nginx_warm $(file_median diskread "nginx_warm-$sn")"
    echo "- median CPU of the server process during a run (% of one CPU): proxy $(file_median cpu "proxy-$sn"), nginx_cold $(file_median cpu "nginx_cold-$sn"), nginx_warm $(file_median cpu "nginx_warm-$sn")"
    echo
    echo "**$sn: proxy/nginx_cold = $R_COLD** (target >= 1.0: $(perf_verdict "$R_COLD" 1.0)), p99 proxy <= nginx_cold: $(perf_verdict "$P_MY" "$P_C" le); proxy/nginx_warm = $R_WARM (reported only), p99 proxy <= nginx_warm: $(perf_verdict "$P_MY" "$P_W" le)"
    echo
  done
} | perf_result
