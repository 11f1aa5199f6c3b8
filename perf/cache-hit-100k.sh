#!/usr/bin/env bash
# 100 KiB cache hits: perf/cache-hit.sh with SIZE=100k (a deterministic 100 KiB object uploaded to
# RGW as perf-100k.bin), proxy vs nginx static (ceiling) vs nginx proxy_cache (peer), alternating
# runs, ratio of medians. Same arguments, installs, env and cleanup as perf/cache-hit.sh; traffic
# goes to 127.0.0.1 only and everything it starts is stopped by PID on exit.
#
# usage: bash perf/cache-hit-100k.sh [RUNS] [SECONDS] [CONNECTIONS]     defaults: 5 5 16
# out:   perf/results/<date>-cache-hit-100k.md
set -euo pipefail
exec bash "$(dirname "$0")/cache-hit.sh" "${1:-5}" "${2:-5}" "${3:-16}" 100k
