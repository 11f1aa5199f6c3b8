#!/usr/bin/env bash
# install-garage.sh: build and install the Garage S3 server (the fast backend for perf work, see
# DESIGN.md section 4) with `cargo install`, pinned, into a fixed root, only when it is missing.
#
# Installs: $YATA_GARAGE_ROOT/bin/garage (default root /opt/yatagarasu/garage), garage
#           $YATA_GARAGE_VERSION (default 2.5.0), built from crates.io with --locked and only the
#           features the perf scripts need (sqlite metadata, bundled C libs): no lmdb, no metrics,
#           no k2v, which makes the compile noticeably shorter.
# Cost:     0 s when the pinned binary is present. Otherwise a long compile (~10 min on 2 idle
#           cores; 30+ min at -j1 and nice 19 on a busy machine). It runs under `nice -n 19` with
#           YATA_GARAGE_JOBS jobs (default 1) and keeps its build dir (YATA_GARAGE_TARGET_DIR,
#           default /work/scratch/target-garage if /work/scratch exists, else a cargo temp dir) so
#           an interrupted build resumes.
# Network:  crates.io only (through cargo). Starts no server.
#
# usage: bash tests/support/install-garage.sh          # prints the binary's path on stdout
# env:   YATA_GARAGE_ROOT, YATA_GARAGE_VERSION, YATA_GARAGE_JOBS, YATA_GARAGE_TARGET_DIR,
#        YATA_GARAGE_FEATURES (default "bundled-libs,sqlite")
set -euo pipefail

ROOT=${YATA_GARAGE_ROOT:-/opt/yatagarasu/garage}
VERSION=${YATA_GARAGE_VERSION:-2.5.0}
JOBS=${YATA_GARAGE_JOBS:-1}
FEATURES=${YATA_GARAGE_FEATURES:-bundled-libs,sqlite}
BIN=$ROOT/bin/garage

die() { echo "install-garage.sh: ERROR: $*" >&2; exit 1; }

# Present and the pinned version? `garage --version` prints e.g. "garage cargo:2.5.0 [features: ...]".
if [[ -x $BIN ]] && "$BIN" --version 2>/dev/null | grep -Eq "(v|:)$VERSION\b"; then
  echo "$BIN"
  exit 0
fi

command -v cargo >/dev/null || die "cargo not found on PATH (install Rust with rustup first)"
mkdir -p "$ROOT" || die "cannot create $ROOT (run as root or set YATA_GARAGE_ROOT)"

TARGET_ARGS=()
if [[ -n ${YATA_GARAGE_TARGET_DIR:-} ]]; then
  TARGET_ARGS=(--target-dir "$YATA_GARAGE_TARGET_DIR")
elif [[ -d /work/scratch ]]; then
  TARGET_ARGS=(--target-dir /work/scratch/target-garage)
fi

echo "install-garage.sh: building garage $VERSION (features $FEATURES, -j$JOBS, nice 19) into $ROOT;" \
  "this takes a while" >&2
T0=$(date +%s)
nice -n 19 cargo install garage --locked --version "=$VERSION" --root "$ROOT" \
  --no-default-features --features "$FEATURES" -j "$JOBS" "${TARGET_ARGS[@]}" >&2 \
  || die "cargo install garage $VERSION failed (see the cargo output above)"
[[ -x $BIN ]] || die "cargo install finished but $BIN is missing"
echo "install-garage.sh: garage $VERSION installed in $(( $(date +%s) - T0 )) s: $("$BIN" --version 2>&1 | head -1)" >&2
echo "$BIN"
