#!/bin/bash
# install-deps.sh: install the Debian 12 packages the integration tests, the benchmarks and the demo
# need (Ceph RGW, nginx, redis, wrk, curl, botocore, openssl, Chromium for the browser CORS test),
# and the Rust toolchain rust-toolchain.toml pins (rustup) when cargo or that version is missing.
#
# Idempotent: when every package is already installed it runs no apt command and prints nothing.
# Runs apt-get update only when something is missing. Needs root (or sudo) only in that case.
# Cost: ~0 s when everything is present; ~45-90 s on a fresh machine (Ceph is the bulk).
#
# usage: bash tests/support/install-deps.sh
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common nginx-light redis-server wrk curl
          python3-botocore openssl ca-certificates chromium)

die() { echo "install-deps.sh: ERROR: $*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
  # "install ok installed" is dpkg's status for a fully configured package.
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $st == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root; run as root"
    SUDO=(sudo)
  fi
  echo "install-deps.sh: installing: ${missing[*]}"
  log=$(mktemp /tmp/install-deps.XXXXXX.log)
  export DEBIAN_FRONTEND=noninteractive
  if ! "${SUDO[@]}" apt-get update -q >"$log" 2>&1; then
    cat "$log" >&2; die "apt-get update failed (log: $log)"
  fi
  # Policy-rc.d-less containers may try to start nginx/redis services; that is harmless and our
  # scripts never use the system services (they run their own instances with their own configs).
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${missing[@]}" >>"$log" 2>&1; then
    tail -n 60 "$log" >&2; die "apt-get install failed (full log: $log)"
  fi
  rm -f "$log"
fi

# Tools the scripts call directly; a package can be "installed" yet broken.
for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph nginx openssl curl wrk redis-server \
            chromium; do
  command -v "$tool" >/dev/null || die "'$tool' not on PATH after install"
done
/usr/bin/python3 -c 'import botocore' 2>/dev/null \
  || die "/usr/bin/python3 cannot import botocore (package python3-botocore)"

# The Rust toolchain: the version rust-toolchain.toml pins (with rustfmt and clippy, which the
# suite lints with), through rustup, into ~/.cargo. Callers put ~/.cargo/bin on their PATH after
# this script (a child cannot change theirs).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PINNED=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")
[[ -n $PINNED ]] || die "no channel in $ROOT/rust-toolchain.toml"
export PATH="$HOME/.cargo/bin:$PATH"
rustup_log() { # run rustup's installer step "$@", quiet unless it fails
  local log
  log=$(mktemp /tmp/install-rustup.XXXXXX.log)
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; die "rust toolchain install failed: $* (full log: $log)"
  fi
  rm -f "$log"
}
if ! command -v cargo >/dev/null; then
  echo "install-deps.sh: installing the Rust toolchain (rustup, $PINNED, rustfmt, clippy)"
  # rustup-init itself (what https://sh.rustup.rs downloads for this platform), into a file
  # first so a failed download fails here instead of feeding an empty script to sh.
  init=$(mktemp /tmp/rustup-init.XXXXXX)
  rustup_log curl --proto '=https' --tlsv1.2 -sSf -o "$init" \
    "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"
  chmod +x "$init"
  rustup_log "$init" -y --profile minimal --default-toolchain "$PINNED" -c rustfmt -c clippy
  rm -f "$init"
fi
command -v cargo >/dev/null || die "cargo not on PATH after installing rustup"
if command -v rustup >/dev/null; then
  # Inside the repository the rustup proxies pick the pinned toolchain; install it (or its
  # components) when they are missing. RUSTUP_AUTO_INSTALL=0: probe without installing.
  if ! (cd "$ROOT" && RUSTUP_AUTO_INSTALL=0 rustup run "$PINNED" rustc --version) >/dev/null 2>&1; then
    echo "install-deps.sh: installing the pinned Rust toolchain $PINNED (rustfmt, clippy)"
    rustup_log rustup toolchain install "$PINNED" --profile minimal -c rustfmt -c clippy
  fi
  if ! (cd "$ROOT" && cargo fmt --version && cargo clippy --version) >/dev/null 2>&1; then
    rustup_log rustup component add --toolchain "$PINNED" rustfmt clippy
  fi
fi
(cd "$ROOT" && cargo fmt --version && cargo clippy --version) >/dev/null 2>&1 \
  || die "cargo fmt / cargo clippy unavailable for $PINNED (rustup component add --toolchain $PINNED rustfmt clippy)"
