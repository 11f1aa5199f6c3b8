#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what is missing,
# builds once, starts a real Ceph RGW (+ nginx TLS in front of it) with seeded objects, runs
# every test, and stops every backend it started (by PID) whatever happens.
#
# Every integration test file runs under io_uring and under the epoll fallback
# (MONOIO_FORCE_LEGACY_DRIVER=1) with 2 shards; the proxy's tests also run with 1 shard under both. Criterion benches run once each as tests
# (`cargo bench -- --test`) so they never rot. Ends with "N passed, M failed".
# An io_uring run fails if any shard fell back to epoll; on a machine that cannot do io_uring,
# run with YATA_TEST_ALLOW_EPOLL=1 (see tests/support/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${YATA_STATE_DIR:-$ROOT/tests/support/.state}
LOG=$(mktemp -d)/test-output
: > "$LOG"

bash tests/support/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH" # where install-deps.sh puts rustup's cargo when it was missing

echo "== lint: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== build (once)"
cargo build --workspace --tests --benches --quiet

echo "== backends"
bash tests/support/start-backends.sh "$STATE"
trap 'bash "$ROOT/tests/support/stop-backends.sh" "$STATE" || true' EXIT
# shellcheck disable=SC1091
source "$STATE/env"

status=0
run() { # label, then the command; output is kept for the summary, failures counted at the end
  echo "== $1"; shift
  "$@" 2>&1 | tee -a "$LOG" || status=1
}
run "unit, runtime, cli and proxy tests (io_uring, 2 shards)" \
  env YATA_TEST_SHARDS=2 cargo test --workspace --quiet --no-fail-fast
run "proxy tests (io_uring, 1 shard)" env YATA_TEST_SHARDS=1 cargo test --quiet --test proxy
run "every integration test file (epoll fallback, 2 shards)" \
  env MONOIO_FORCE_LEGACY_DRIVER=1 YATA_TEST_SHARDS=2 cargo test --workspace --quiet --tests --no-fail-fast
run "proxy tests (epoll fallback, 1 shard)" \
  env MONOIO_FORCE_LEGACY_DRIVER=1 YATA_TEST_SHARDS=1 cargo test --quiet --test proxy
run "benches compile and run once" cargo bench --workspace --quiet -- --test

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$LOG" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LOG" | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
