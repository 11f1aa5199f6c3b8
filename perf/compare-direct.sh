#!/usr/bin/env bash
# Side-by-side throughput: an object fetched through Yatagarasu (one shard, pinned) vs the same
# object fetched from the S3 backend directly, in alternating runs within one invocation, and the
# ratio of the medians. Loopback only; every run is bounded by wrk's -d; everything started here
# is stopped by PID on exit.
#
# usage: bash perf/compare-direct.sh [KEY] [RUNS] [SECONDS] [CONNECTIONS]
#        defaults: 1k.bin 5 5 16
# env:   YATA_PERF_PROXY_CPU (0), YATA_PERF_LOAD_CPU (1): the proxy shard and wrk are pinned to
#        different CPUs; the backend (RGW, multi-threaded) floats.
# out:   a table on stdout and the same in perf/results/<date>-compare-direct.md, with machine,
#        kernel, commit and driver.
#
# The direct run replays one SigV4-signed GET (valid ~15 min), as a load generator must; the
# proxy signs every request itself. With a single RGW on a 2-core machine the backend is the
# bottleneck, so the ratio measures what the proxy adds, not its ceiling (see issue 6's scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KEY=${1:-1k.bin}; RUNS=${2:-5}; SECS=${3:-5}; CONNS=${4:-16}
PROXY_CPU=${YATA_PERF_PROXY_CPU:-0}; LOAD_CPU=${YATA_PERF_LOAD_CPU:-1}
STATE=$ROOT/perf/out/state
mkdir -p perf/out perf/results

bash tests/support/install-deps.sh
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet

bash tests/support/start-backends.sh --demo-only "$STATE" >/dev/null
PROXY_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  bash tests/support/stop-backends.sh "$STATE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# shellcheck disable=SC1091
. "$STATE/env"

CONF=perf/out/compare-direct.yaml
cat > "$CONF" <<EOF
server:
  listen: "127.0.0.1:0"
  shards: 1
  cpu_affinity: [$PROXY_CPU]
logging: {level: warn, format: json, access_log: false}
buckets:
  - name: perf
    path_prefix: /perf
    s3:
      bucket: yata-public
      region: us-east-1
      endpoint: "$YATA_TEST_S3_ENDPOINT"
      addressing: path
      access_key: "$YATA_TEST_AK1"
      secret_key: "$YATA_TEST_SK1"
EOF
LOG=perf/out/compare-direct.log
RUST_LOG=info target/release/yatagarasu --config "$CONF" > "$LOG" 2>&1 &
PROXY_PID=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR=$(grep -o '"listen":"[^"]*"' "$LOG" | head -1 | cut -d'"' -f4 || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "proxy did not start:"; cat "$LOG"; exit 1; }
DRIVER=$(grep -o '"drivers":"[^"]*"' "$LOG" | head -1 | cut -d'"' -f4)

PROXY_URL="http://$ADDR/perf/$KEY"
DIRECT_URL="$YATA_TEST_S3_ENDPOINT/yata-public/$KEY"
# Signed headers for the direct runs, one -H per header.
mapfile -t SIGNED < <("$YATA_TEST_PYTHON" tests/support/sigv4.py "$DIRECT_URL" "$YATA_TEST_AK1" "$YATA_TEST_SK1" --format raw)
HDRS=()
for h in "${SIGNED[@]}"; do HDRS+=(-H "$h"); done
curl -fsS -o /dev/null "${HDRS[@]}" "$DIRECT_URL" || { echo "signed direct GET failed"; exit 1; }
curl -fsS -o /dev/null "$PROXY_URL" || { echo "GET through the proxy failed"; exit 1; }

rps() { # wrk output -> requests/sec
  awk '/^Requests\/sec:/ {print $2}'
}
run_wrk() { # label url [headers...]
  local url=$2; shift 2
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" "$url" 2>&1
}

declare -a P D
for i in $(seq 1 "$RUNS"); do
  D+=("$(run_wrk direct "$DIRECT_URL" "${HDRS[@]}" | rps)")
  P+=("$(run_wrk proxy "$PROXY_URL" | rps)")
  echo "run $i: direct ${D[-1]} req/s, proxy ${P[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
MD=$(median "${D[@]}"); MP=$(median "${P[@]}")
RATIO=$(awk -v p="$MP" -v d="$MD" 'BEGIN {printf "%.3f", p/d}')

OUT=perf/results/$(date -u +%Y-%m-%d)-compare-direct.md
{
  echo "# $KEY through the proxy vs the backend directly"
  echo
  echo "- command: \`bash perf/compare-direct.sh $KEY $RUNS $SECS $CONNS\`"
  echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- kernel: $(uname -r); commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); proxy driver: $DRIVER, 1 shard on CPU $PROXY_CPU, wrk on CPU $LOAD_CPU"
  echo "- backend: Ceph RGW (beast), single node, memstore"
  echo
  echo "| run | direct req/s | proxy req/s |"
  echo "|---|---|---|"
  for i in $(seq 1 "$RUNS"); do echo "| $i | ${D[$((i-1))]} | ${P[$((i-1))]} |"; done
  echo
  echo "median direct $MD req/s, median proxy $MP req/s, **ratio proxy/direct = $RATIO**"
} | tee "$OUT"
