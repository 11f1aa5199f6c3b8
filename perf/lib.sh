# shellcheck shell=bash
# perf/lib.sh: the pieces every load script in perf/ shares (sourced, not run).
#
#   perf_init SCENARIO          work dir perf/out/SCENARIO, CPU pinning, result file name, EXIT trap
#   perf_need CMD [PACKAGE]     apt-get install PACKAGE when CMD is missing (wrk, nginx, perf, ...)
#   perf_build                  release binary (cargo build --release) unless YATA_PERF_NO_BUILD=1
#   perf_start_rgw [--full]     Ceph RGW + seeded objects (tests/support/start-backends.sh) in the
#                               scenario's own state dir, or a running one reused read-only
#   perf_start_garage           single-node Garage (tests/support/start-garage.sh), own state dir
#   perf_start_proxy CONF       Yatagarasu pinned to YATA_PERF_PROXY_CPU; sets PROXY_PID/ADDR/DRIVER
#   perf_nginx_conf / perf_start_nginx CONF   nginx (one worker, pinned like the proxy)
#   perf_wrk URL OUT [ARGS]     one bounded wrk run pinned to YATA_PERF_LOAD_CPU -> "req/s p99"
#   perf_alternate RUNS NAME FN [NAME FN]...  alternating runs, order rotated every round
#   perf_median / perf_ratio / perf_verdict   numbers
#   perf_p99_median NAME RUNS   median of the stored wrk p99s of NAME, in ms
#   perf_drop_caches            sync and drop the page cache, dentries and inodes (root or sudo)
#   perf_meta                   machine, kernel, commit (+dirty), driver lines for a result file
#   perf_result                 stdin -> stdout and appended to perf/results/<date>-<scenario>.md
#   perf_maybe_profile FN       under perf/flamegraph.sh: profile the proxy while FN loads it, exit
#   perf_on_exit CMD            run CMD (eval'd) at exit, last registered first
#   perf_rss_kb PID             VmRSS of PID in KiB
#
# Not on any hot path: it only starts and measures things. Traffic goes to 127.0.0.1 only. Every
# process started through these helpers is registered with perf_on_exit and stopped by PID (never by
# name) when the script exits, also on error and Ctrl-C.
#
# env (all optional):
#   YATA_PERF_PROXY_CPU (0)   CPU for the proxy shard and for each nginx reference worker
#   YATA_PERF_LOAD_CPU (1)    CPU for wrk / curl / the load clients
#   YATA_PERF_BACKEND_CPU ("")  CPUs for Garage / RGW (a taskset list); empty: float over all
#                             CPUs. Floating is the default: pinned with the load generator on a
#                             2-core machine, the backend lost more to the cross-CPU wakeups of the
#                             proxied arm than it gained (misses: 0.688 pinned vs 0.816 floating).
#   YATA_PERF_NO_BUILD=1      use the existing release binary
#   CARGO_TARGET_DIR          where the release binary is built and looked for (default target/)
#   YATA_PERF_DATE            date in the result file name (default: today, UTC)
#   YATA_PERF_NOTE            a line added to the result (e.g. "smoke run, machine shared")
#   YATA_PERF_COMMIT          what to record as the commit when the binary (YATA_PERF_NO_BUILD=1)
#                             was not built from this checkout
#   YATA_PERF_RGW_ENV         a running RGW's STATE/env to reuse read-only instead of starting one
#   YATA_GARAGE_BIN           the garage binary (default: tests/support/install-garage.sh's)

PERF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
. "$PERF_ROOT/tests/support/lib.sh"

PROXY_CPU=${YATA_PERF_PROXY_CPU:-0}
LOAD_CPU=${YATA_PERF_LOAD_CPU:-1}
BACKEND_CPU=${YATA_PERF_BACKEND_CPU:-}

# perf_backend_pinned CMD...: run CMD (a backend's start script) on BACKEND_CPU; the daemons it
# starts inherit the affinity.
perf_backend_pinned() {
  if [[ -n $BACKEND_CPU ]]; then taskset -c "$BACKEND_CPU" "$@"; else "$@"; fi
}
PROXY_PID=""; PROXY_ADDR=""; PROXY_DRIVER=""; PROXY_LOG=""
PERF_EXIT_CMDS=()
declare -gA PERF_VAL=() PERF_EXTRA=()

# ---- lifecycle ------------------------------------------------------------------------------------

# perf_on_exit CMD: remember CMD (a string, eval'd) to run when the script exits.
perf_on_exit() { PERF_EXIT_CMDS+=("$1"); }

_perf_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#PERF_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
    eval "${PERF_EXIT_CMDS[$i]}" >/dev/null 2>&1 || true
  done
  exit "$rc"
}

# perf_stop_pid PID MATCH [SECONDS]: SIGTERM PID if /proc still names MATCH, SIGKILL after SECONDS.
perf_stop_pid() {
  local pid=$1 match=$2 secs=${3:-10}
  yata_pid_alive "$pid" "$match" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  yata_wait_gone "$pid" "$secs" || kill -KILL "$pid" 2>/dev/null || true
  yata_wait_gone "$pid" 5 || true
}

# perf_init SCENARIO [ARGS...]: (ARGS: the script's own, for the result's command line) set WORK (perf/out/SCENARIO, emptied), RESULT (perf/results/<date>-SCENARIO.md),
# cd to the repository root and install the exit trap.
perf_init() {
  PERF_SCENARIO=$1
  cd "$PERF_ROOT"
  WORK=$PERF_ROOT/perf/out/$PERF_SCENARIO
  mkdir -p "$WORK" "$PERF_ROOT/perf/results"
  RESULT=$PERF_ROOT/perf/results/${YATA_PERF_DATE:-$(date -u +%F)}-$PERF_SCENARIO.md
  shift
  PERF_CMDLINE="bash perf/$(basename "$0") $*"
  trap _perf_cleanup EXIT
  trap 'exit 130' INT TERM
}

# ---- tools ----------------------------------------------------------------------------------------

# perf_need CMD [PACKAGE]: install the Debian PACKAGE (default CMD) with apt-get when CMD is missing.
perf_need() {
  local cmd=$1 pkg=${2:-$1} sudo=()
  command -v "$cmd" >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "perf: installing $pkg (for $cmd)" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" \
      >"$WORK/apt.log" 2>&1 \
    || { "${sudo[@]}" apt-get update -q >>"$WORK/apt.log" 2>&1 \
         && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
              --no-install-recommends "$pkg" >>"$WORK/apt.log" 2>&1; } \
    || { tail -n 30 "$WORK/apt.log" >&2; echo "perf: cannot install $pkg" >&2; return 1; }
  command -v "$cmd" >/dev/null
}

# perf_build: build the release binary (unless YATA_PERF_NO_BUILD=1) and set YATA_BIN.
perf_build() {
  YATA_BIN=${CARGO_TARGET_DIR:-$PERF_ROOT/target}/release/yatagarasu
  if [[ ${YATA_PERF_NO_BUILD:-0} != 1 ]]; then
    (cd "$PERF_ROOT" && cargo build --release --quiet)
  fi
  [[ -x $YATA_BIN ]] || { echo "perf: $YATA_BIN is missing (build it or unset YATA_PERF_NO_BUILD)" >&2; return 1; }
}

# ---- backends -------------------------------------------------------------------------------------

# perf_start_rgw [--full]: Ceph RGW with the test users and objects (--demo-only seeding unless
# --full), in WORK/rgw-state; sources its env (YATA_TEST_*). With YATA_PERF_RGW_ENV set, sources that
# env file instead and starts nothing (the caller must then only read from it).
perf_start_rgw() {
  if [[ -n ${YATA_PERF_RGW_ENV:-} ]]; then
    # shellcheck disable=SC1090
    . "$YATA_PERF_RGW_ENV"
    PERF_BACKEND_NOTE="Ceph RGW (beast, memstore), reused from $YATA_PERF_RGW_ENV"
    return 0
  fi
  bash tests/support/install-deps.sh
  local seed=(--demo-only)
  [[ ${1:-} == --full ]] && seed=()
  perf_on_exit "bash '$PERF_ROOT/tests/support/stop-backends.sh' '$WORK/rgw-state'"
  perf_backend_pinned bash tests/support/start-backends.sh "${seed[@]}" "$WORK/rgw-state" >"$WORK/rgw-start.log" 2>&1 \
    || { cat "$WORK/rgw-start.log" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$WORK/rgw-state/env"
  PERF_BACKEND_NOTE="Ceph RGW (beast), single node, memstore"
}

# perf_start_garage: Garage in WORK/garage (tests/support/start-garage.sh); sources its env
# (YATA_GARAGE_ENDPOINT, _AK, _SK, _REGION, _BUCKET, _PID). Fails when garage is not installed.
perf_start_garage() {
  local bin=${YATA_GARAGE_BIN:-/opt/yatagarasu/garage/bin/garage}
  [[ -x $bin ]] || { echo "perf: garage not found at $bin (run tests/support/install-garage.sh)" >&2; return 1; }
  # Stop it, then drop its data (stream-1g stores 1 GiB there); config and log stay.
  perf_on_exit "bash '$PERF_ROOT/tests/support/start-garage.sh' --stop '$WORK/garage'; rm -rf '$WORK/garage/data' '$WORK/garage/meta'"
  YATA_GARAGE_BIN=$bin perf_backend_pinned bash tests/support/start-garage.sh "$WORK/garage" >"$WORK/garage-start.log" 2>&1 \
    || { cat "$WORK/garage-start.log" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$WORK/garage/env"
  PERF_BACKEND_NOTE="Garage $("$bin" --version 2>/dev/null | awk '{sub(/^cargo:/, "", $2); print $2}'), single node, sqlite metadata, no fsync"
}

# perf_start_backend garage|rgw: start that backend and set ENDPOINT, AK, SK, BUCKET for the
# scenario (the bucket holds the seeded 1k.bin either way).
perf_start_backend() {
  if [[ $1 == garage ]]; then
    perf_start_garage
    ENDPOINT=$YATA_GARAGE_ENDPOINT; AK=$YATA_GARAGE_AK; SK=$YATA_GARAGE_SK; BUCKET=$YATA_GARAGE_BUCKET
  else
    perf_start_rgw
    ENDPOINT=$YATA_TEST_S3_ENDPOINT; AK=$YATA_TEST_AK1; SK=$YATA_TEST_SK1; BUCKET=yata-public
  fi
}

# perf_presign METHOD URL AK SK [REGION] [EXPIRES]: a query-string SigV4 URL (stdlib Python).
perf_presign() {
  "$YATA_PY" "$PERF_ROOT/perf/presign.py" "$@"
}

# ---- the proxy ------------------------------------------------------------------------------------

# perf_start_proxy CONF [NAME]: check CONF, start the proxy pinned to PROXY_CPU (taskset; the config
# should say shards: 1, cpu_affinity: [PROXY_CPU]), wait for "yatagarasu listening" and set PROXY_PID,
# PROXY_ADDR (host:port), PROXY_DRIVER (the `drivers` field) and PROXY_LOG.
perf_start_proxy() {
  local conf=$1 name=${2:-yatagarasu} i
  "$YATA_BIN" --config "$conf" --check >"$WORK/$name-check.log" 2>&1 \
    || { echo "perf: config check failed:" >&2; cat "$WORK/$name-check.log" >&2; return 1; }
  PROXY_LOG=$WORK/$name.log
  local cpus=$PROXY_CPU
  [[ -n ${PERF_PROXY_CPUS:-} ]] && cpus=$PERF_PROXY_CPUS
  # Emptied here, not only by the background redirect: the loop below may look before that runs
  # and would read the previous run's address (or find no file).
  : >"$PROXY_LOG"
  RUST_LOG=info taskset -c "$cpus" "$YATA_BIN" --config "$conf" >"$PROXY_LOG" 2>&1 &
  PROXY_PID=$!
  perf_on_exit "perf_stop_pid $PROXY_PID yatagarasu"
  PROXY_ADDR=""
  for ((i = 0; i < 150; i++)); do
    PROXY_ADDR=$(grep -o '"listen":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4 || true)
    [[ -n $PROXY_ADDR ]] && break
    yata_pid_alive "$PROXY_PID" yatagarasu || break
    sleep 0.1
  done
  [[ -n $PROXY_ADDR ]] || { echo "perf: proxy did not start:" >&2; cat "$PROXY_LOG" >&2; return 1; }
  PROXY_DRIVER=$(grep -o '"drivers":"[^"]*"' "$PROXY_LOG" | head -1 | cut -d'"' -f4 || true)
}

# perf_proxy_conf_head SHARDS CPUS [EXTRA_SERVER_LINES]: the server/admin/logging part of a proxy
# config: listener on 127.0.0.1:0, SHARDS shards pinned to CPUS ("0" or "0, 1"; "none" or "auto":
# that cpu_affinity mode instead of a list), the admin listener
# on a kernel-chosen port (so perf runs never collide with a proxy on 9090), warn-level JSON logs
# without an access log. The caller appends `cache:` and `buckets:`.
perf_proxy_conf_head() {
  cat <<EOF
# Generated by perf/lib.sh ($PERF_SCENARIO).
server:
  listen: "127.0.0.1:0"
  shards: $1
  cpu_affinity: $(case $2 in none | auto) echo "$2" ;; *) echo "[$2]" ;; esac)
${3:-}
admin: {listen: "127.0.0.1:0"}
logging: {level: warn, format: json, access_log: false}
EOF
}

# perf_bucket_conf NAME PREFIX BUCKET ENDPOINT AK SK [CACHE_YAML]: one `buckets:` list entry
# (path-style addressing, us-east-1), with `cache: CACHE_YAML` when given.
perf_bucket_conf() {
  cat <<EOF
  - name: $1
    path_prefix: $2
    s3:
      bucket: $3
      region: us-east-1
      endpoint: "$4"
      addressing: path
      access_key: "$5"
      secret_key: "$6"
EOF
  [[ -z ${7:-} ]] || echo "    cache: $7"
}

# perf_rss_kb PID: VmRSS of PID in KiB (0 when gone).
perf_rss_kb() { awk '/^VmRSS:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# perf_rss_sampler_start PID FILE: append PID's VmRSS (KiB) to FILE every 50 ms in the background
# until perf_rss_sampler_stop; sets PERF_SAMPLER_PID.
perf_rss_sampler_start() {
  local pid=$1 file=$2
  : >"$file"
  ( while [[ -r /proc/$pid/status ]]; do
      awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null >>"$file" || true
      sleep 0.05
    done ) &
  PERF_SAMPLER_PID=$!
  perf_on_exit "kill $PERF_SAMPLER_PID"
}

# perf_rss_sampler_stop FILE: stop the sampler and print the peak VmRSS in KiB seen in FILE.
perf_rss_sampler_stop() {
  kill "$PERF_SAMPLER_PID" 2>/dev/null || true
  wait "$PERF_SAMPLER_PID" 2>/dev/null || true
  sort -n "$1" | tail -1
}

# ---- nginx ----------------------------------------------------------------------------------------

# perf_nginx_conf DIR SERVERS: print an nginx.conf (one worker, foreground, temp paths in DIR, access
# log off, long keep-alive) whose http block holds SERVERS (text). Creates DIR/tmp.
perf_nginx_conf() {
  local dir=$1 servers=$2 user=""
  mkdir -p "$dir/tmp"
  if [[ $(id -u) -eq 0 ]]; then
    user="user nobody nogroup;"
    chown -R nobody:nogroup "$dir/tmp"
  fi
  cat <<EOF
# Generated by perf/lib.sh ($PERF_SCENARIO).
$user
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    default_type application/octet-stream;
$servers
}
EOF
}

# perf_start_nginx DIR: test and start DIR/nginx.conf with its worker pinned to PROXY_CPU; sets
# NGINX_PID (the master) and NGINX_VERSION.
perf_start_nginx() {
  local dir=$1
  perf_need nginx nginx-light
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -t >"$dir/test.log" 2>&1 \
    || { echo "perf: nginx config test failed:" >&2; cat "$dir/test.log" >&2; return 1; }
  taskset -c "$PROXY_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  NGINX_PID=$!
  # SIGTERM to the master: fast shutdown; the master stops its worker.
  perf_on_exit "perf_stop_pid $NGINX_PID nginx"
  NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
}

# perf_drop_caches: write back dirty pages (sync, at most 60 s) and drop the page cache, dentries
# and inodes (echo 3 > /proc/sys/vm/drop_caches; root, else sudo). Machine-wide: other processes'
# files are read from disk again too.
perf_drop_caches() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  timeout 60 sync || echo "perf: sync took over 60 s; dropping anyway" >&2
  echo 3 | "${sudo[@]}" tee /proc/sys/vm/drop_caches >/dev/null \
    || { echo "perf: cannot drop the page cache (needs root or sudo)" >&2; return 1; }
}

# perf_wait_http URL [SECONDS]: wait until URL answers at all.
perf_wait_http() {
  local i
  for ((i = 0; i < ${2:-5} * 10; i++)); do
    curl -sS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "perf: $1 does not answer" >&2
  return 1
}

# ---- load -----------------------------------------------------------------------------------------

# perf_wrk URL OUT [WRK_ARGS...]: one wrk run (1 thread, $CONNS connections, $SECS seconds, 5 s
# timeout) pinned to LOAD_CPU, raw output in OUT. Prints "REQ_PER_S P99" ("ERR ERR" when wrk failed,
# saw socket errors other than none, or non-2xx answers).
perf_wrk() {
  local url=$1 out=$2; shift 2
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 5s --latency "$@" "$url" 2>&1 \
    | tee "$out" | awk '/^Requests\/sec:/ {r=$2} $1=="99%" {p=$2} /Non-2xx/ {bad=1}
           END {if (bad || r == "") {print "ERR ERR"} else {print r, p}}'
}

# perf_alternate RUNS NAME FN [NAME FN]...: for run i in 1..RUNS call each `FN i` (which prints
# "VALUE [EXTRA]") with the order rotated every round, so no side always runs first or warm.
# Stores PERF_VAL[NAME,i] and PERF_EXTRA[NAME,i]; prints one line per run; fails on "ERR".
perf_alternate() {
  local runs=$1; shift
  local names=() fns=() n i j k v e line
  while (($#)); do names+=("$1"); fns+=("$2"); shift 2; done
  n=${#names[@]}
  for ((i = 1; i <= runs; i++)); do
    line="run $i:"
    for ((j = 0; j < n; j++)); do
      k=$(((i - 1 + j) % n))
      read -r v e < <("${fns[$k]}" "$i")
      [[ -n $v && $v != ERR ]] || { echo "perf: run $i of ${names[$k]} failed (see $WORK)" >&2; return 1; }
      PERF_VAL[${names[$k]},$i]=$v
      PERF_EXTRA[${names[$k]},$i]=${e:--}
    done
    for ((j = 0; j < n; j++)); do line+=" ${names[$j]} ${PERF_VAL[${names[$j]},$i]}"; done
    echo "$line"
  done
}

# perf_values NAME RUNS: the stored values of NAME, one per line.
perf_values() { local i; for ((i = 1; i <= $2; i++)); do echo "${PERF_VAL[$1,$i]}"; done; }

# perf_median V...: median of the numbers (mean of the two middle ones for an even count).
perf_median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

# perf_median_of NAME RUNS: median of the stored values of NAME.
perf_median_of() { mapfile -t _v < <(perf_values "$1" "$2"); perf_median "${_v[@]}"; }

# perf_p99_median NAME RUNS: the median, in ms, of the p99s perf_wrk stored as NAME's extras
# (wrk prints us/ms/s).
perf_p99_median() {
  local i _p
  mapfile -t _p < <(for ((i = 1; i <= $2; i++)); do echo "${PERF_EXTRA[$1,$i]}"; done \
    | awk '/us$/ {print ($1+0)/1000; next} /ms$/ {print $1+0; next} /s$/ {print ($1+0)*1000}')
  perf_median "${_p[@]}"
}

# perf_ratio A B: A/B with 3 decimals.
perf_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "nan"; else printf "%.3f", a/b}'; }

# perf_verdict RATIO TARGET [le]: "meets" when RATIO >= TARGET (<= with "le"), else "misses".
perf_verdict() {
  awk -v r="$1" -v t="$2" -v le="${3:-}" 'BEGIN {ok = (le == "le") ? (r <= t) : (r >= t); print (ok ? "meets" : "misses")}'
}

# perf_table RUNS UNIT NAME...: a markdown table of the stored runs with columns "NAME UNIT",
# "value (extra)" per cell.
perf_table() {
  local runs=$1 unit=$2 i n; shift 2
  printf '| run |'; for n in "$@"; do printf ' %s %s |' "$n" "$unit"; done; echo
  printf '|---|'; for n in "$@"; do printf -- '---|'; done; echo
  for ((i = 1; i <= runs; i++)); do
    printf '| %s |' "$i"
    for n in "$@"; do
      if [[ ${PERF_EXTRA[$n,$i]:--} == - ]]; then printf ' %s |' "${PERF_VAL[$n,$i]}"
      else printf ' %s (%s) |' "${PERF_VAL[$n,$i]}" "${PERF_EXTRA[$n,$i]}"; fi
    done
    echo
  done
}

# ---- results --------------------------------------------------------------------------------------

# perf_meta: the standard header lines of a result (date, command, machine, kernel, commit, driver,
# pinning, backend, note).
perf_meta() {
  local commit dirty=""
  commit=$(git -C "$PERF_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$PERF_ROOT" diff --quiet HEAD 2>/dev/null || dirty="+dirty"
  if [[ -n ${YATA_PERF_COMMIT:-} ]]; then commit=$YATA_PERF_COMMIT; dirty=""; fi
  [[ -n ${YATA_PERF_NOTE:-} ]] && echo "- **note: $YATA_PERF_NOTE**"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); command: \`$PERF_CMDLINE\`"
  echo "- machine: $(lscpu | awk -F': *' '/^Model name/ {print $2; exit}'), nproc $(nproc), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- kernel: $(uname -r); commit: $commit$dirty; proxy driver: ${PROXY_DRIVER:-unknown}"
  echo "- pinning: proxy on CPU ${PERF_PROXY_CPUS:-$PROXY_CPU}, load generator on CPU $LOAD_CPU${NGINX_VERSION:+; $NGINX_VERSION: 1 worker on CPU $PROXY_CPU}"
  [[ -n ${PERF_BACKEND_NOTE:-} ]] && echo "- backend: $PERF_BACKEND_NOTE; on CPU ${BACKEND_CPU:-any (floating)}"
  return 0
}

# perf_result: copy stdin to stdout and append it to RESULT.
perf_result() { tee -a "$RESULT"; }

# ---- profiling (perf/flamegraph.sh) ----------------------------------------------------------------

# perf_maybe_profile FN [DELAY]: when YATA_PERF_PROFILE_SVG is set (perf/flamegraph.sh sets it),
# run `FN 0` in the background as the load (with SECS = recording + DELAY + 1), wait DELAY seconds
# (default 1; longer when FN first sets something up, like idle-10k's connections), record `perf record -F $FREQ -g -p PROXY_PID` for
# YATA_PERF_PROFILE_SECS seconds, render YATA_PERF_PROFILE_SVG with inferno, print the top 20
# self-time symbols, and exit the script. Otherwise return at once.
perf_maybe_profile() {
  [[ -n ${YATA_PERF_PROFILE_SVG:-} ]] || return 0
  local fn=$1 delay=${2:-1} secs=${YATA_PERF_PROFILE_SECS:-5} data load_pid
  data=$WORK/perf.data
  perf_need perf linux-perf
  # The load outlasts the recording so the whole recording sees steady load.
  SECS=$((secs + delay + 1)) "$fn" 0 >"$WORK/profile-load.txt" 2>&1 &
  load_pid=$!
  perf_on_exit "kill $load_pid"
  sleep "$delay"
  echo "perf: recording the proxy (pid $PROXY_PID) for ${secs}s" >&2
  perf record -F "${YATA_PERF_PROFILE_FREQ:-999}" ${YATA_PERF_CALLGRAPH:--g} -p "$PROXY_PID" \
    -o "$data" -- sleep "$secs" >"$WORK/perf-record.log" 2>&1 \
    || { cat "$WORK/perf-record.log" >&2; return 1; }
  wait "$load_pid" || true
  echo "load during the recording (the scenario's proxy load: req/s p99, or MB/s bytes per stream):"
  sed 's/^/    /' "$WORK/profile-load.txt"
  perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$WORK/perf.folded"
  inferno-flamegraph --title "yatagarasu: $PERF_SCENARIO ($(git -C "$PERF_ROOT" rev-parse --short HEAD))" \
    <"$WORK/perf.folded" >"$YATA_PERF_PROFILE_SVG.tmp"
  mv "$YATA_PERF_PROFILE_SVG.tmp" "$YATA_PERF_PROFILE_SVG"
  echo "flamegraph: $YATA_PERF_PROFILE_SVG"
  echo "top 20 self-time symbols (perf report --no-children):"
  # awk, not head: head's early exit would SIGPIPE the pipeline (pipefail) when the report is long.
  perf report -i "$data" --no-children --stdio --sort symbol 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | awk 'NR <= 20'
  exit 0
}
