#!/bin/bash
# demo.sh: the README's first command. From a fresh Debian 12 machine (as root) to a running
# Yatagarasu proxy in front of a real S3 (Ceph RGW), then two requests through it.
#
#   1. install-deps.sh             Debian packages (Ceph RGW, nginx, ...); rustup when cargo is missing
#   2. cargo build --release       target/release/yatagarasu (skip with YATA_DEMO_SKIP_BUILD=1)
#   3. start-backends.sh           RGW on 127.0.0.1:7480 with demo objects (--demo-only seed)
#   4. STATE/demo-config.yaml      one bucket: /demo -> RGW bucket yata-public
#   5. proxy in the background     pid in STATE/proxy.pid, log in STATE/proxy.log
#   6. curl a whole object and a Range through the proxy
#
# Cost: the release build dominates on first run (minutes); the backends start in ~5 s.
# Stop everything with: bash tests/support/stop-backends.sh
#
# usage: bash tests/support/demo.sh
# env:   YATA_DEMO_PORT (8080), YATA_DEMO_ADMIN_PORT (9090), YATA_DEMO_SKIP_BUILD=1,
#        YATA_DEMO_BIN (default target/release/yatagarasu),
#        plus start-backends.sh's YATA_RGW_PORT / YATA_MON_PORT / YATA_TLS_PORT
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$YATA_REPO_ROOT"
STATE=$(yata_state_dir "")
BIN=${YATA_DEMO_BIN:-$YATA_REPO_ROOT/target/release/yatagarasu}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing Debian packages (quiet when already present)"
bash tests/support/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH" # where install-deps.sh puts rustup's cargo when it was missing

if [[ ${YATA_DEMO_SKIP_BUILD:-0} != 1 ]]; then
  say "Building the proxy: cargo build --release"
  cargo build --release
fi
[[ -x $BIN ]] || { echo "demo.sh: $BIN not found; run 'cargo build --release'" >&2; exit 1; }

say "Starting Ceph RGW (S3) and seeding demo objects"
# Also stops a proxy left over from a previous demo run (STATE/proxy.pid).
bash tests/support/start-backends.sh --demo-only "$STATE"
# shellcheck disable=SC1091
. "$STATE/env"

PORT=$(yata_pick_port proxy "${YATA_DEMO_PORT:-8080}")
ADMIN_PORT=$(yata_pick_port admin "${YATA_DEMO_ADMIN_PORT:-9090}")
CONFIG=$STATE/demo-config.yaml
cat >"$CONFIG" <<EOF
# Demo config written by tests/support/demo.sh. See config.yaml for every key and its default.
server:
  listen: "127.0.0.1:$PORT"
  shards: auto                     # one shard (thread, event loop) per CPU we may run on
admin:
  listen: "127.0.0.1:$ADMIN_PORT"  # /health /ready /metrics
logging: {level: info, format: json, access_log: true}
buckets:
  - name: demo
    path_prefix: /demo             # http://127.0.0.1:$PORT/demo/KEY -> s3://yata-public/KEY
    s3:
      bucket: yata-public
      region: $YATA_TEST_REGION
      endpoint: "$YATA_TEST_S3_ENDPOINT"
      addressing: path
      access_key: \${AWS_ACCESS_KEY_ID}       # substituted from the environment at load time
      secret_key: \${AWS_SECRET_ACCESS_KEY}
EOF

say "Starting the proxy: $BIN --config $CONFIG"
# Credentials go only into the proxy's environment. stdin from /dev/null: it is a daemon.
AWS_ACCESS_KEY_ID=$YATA_TEST_AK1 AWS_SECRET_ACCESS_KEY=$YATA_TEST_SK1 \
  "$BIN" --config "$CONFIG" </dev/null >"$STATE/proxy.log" 2>&1 &
echo $! >"$STATE/proxy.pid"
PROXY_PID=$!

URL=http://127.0.0.1:$PORT/demo/hello.txt
up=0
for ((i = 0; i < 300; i++)); do   # max 30 s
  if curl -s -o /dev/null --max-time 1 "$URL"; then up=1; break; fi
  if ! yata_pid_alive "$PROXY_PID" yatagarasu; then
    echo "demo.sh: the proxy exited during start-up. Last lines of $STATE/proxy.log:" >&2
    tail -n 30 "$STATE/proxy.log" >&2
    rm -f "$STATE/proxy.pid"
    exit 1
  fi
  sleep 0.1
done
if ((!up)); then
  echo "demo.sh: the proxy did not answer on 127.0.0.1:$PORT within 30 s; see $STATE/proxy.log" >&2
  exit 1
fi

say "curl -sS -i $URL"
curl -sS -i "$URL"
say "curl -sS -i -H 'Range: bytes=0-4' $URL"
curl -sS -i -H 'Range: bytes=0-4' "$URL"
echo

cat <<EOF

The proxy (pid $PROXY_PID) serves s3://yata-public from Ceph RGW at http://127.0.0.1:$PORT/demo/.
  more objects:  curl -sS -i 'http://127.0.0.1:$PORT/demo/meta.txt'
                 curl -sS -i 'http://127.0.0.1:$PORT/demo/a%2Bb.txt'     (the key is "a+b.txt")
  proxy log:     $STATE/proxy.log
  config:        $CONFIG
Stop the proxy, RGW and nginx:
  bash tests/support/stop-backends.sh
EOF
