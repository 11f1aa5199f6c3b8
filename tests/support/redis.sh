#!/bin/bash
# redis.sh: throwaway real Redis for the demo, perf scripts and manual runs of the Redis tier
# (the Rust tests start their own per test through tests/common/redis.rs).
#
#   start-standalone DIR [PORT]   one redis-server on 127.0.0.1:PORT (default 6379, or a free port
#                                 if busy), no persistence; DIR/redis.env gets
#                                 YATA_REDIS_URL=redis://127.0.0.1:PORT/0
#   start-cluster DIR [BASE]      a Redis Cluster of 3 masters + 3 replicas on 127.0.0.1:BASE..BASE+5
#                                 (default 7000; any busy port, or busy cluster bus port +10000, is
#                                 replaced by a free one), cluster-node-timeout 1000 ms; waits until
#                                 every node says cluster_state:ok; DIR/redis.env gets
#                                 YATA_REDIS_CLUSTER_NODES=host:port,... (the masters) and
#                                 YATA_REDIS_CLUSTER_ALL (every node)
#   stop DIR                      stops the recorded PIDs (SIGTERM, 10 s, then SIGKILL); keeps logs
#
# Everything lives under DIR: redis/<port>/ (data dir, redis.log, nodes.conf), redis.pids (lines
# "NAME PID MATCH", like start-backends.sh's pids file) and redis.env (sourceable `export` lines).
# A PID is only signalled if /proc/PID still names redis-server (protects against PID reuse).
# Never kills by name. Starting into a DIR whose recorded servers still run fails: stop it first.
# Cost: standalone ~0.1 s; cluster ~3 s (redis-cli --cluster create waits for the join).
#
# usage: bash tests/support/redis.sh start-standalone|start-cluster|stop DIR [PORT|BASE]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "redis.sh: ERROR: $*" >&2; exit 1; }
usage() { die "usage: bash tests/support/redis.sh start-standalone|start-cluster|stop DIR [PORT|BASE]"; }

CMD=${1:-}; [[ -n $CMD ]] || usage
[[ -n ${2:-} ]] || usage
DIR=$(yata_state_dir "$2")
PIDS=$DIR/redis.pids
ENV=$DIR/redis.env

need_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    || die "redis-server / redis-cli not found: apt-get install redis-server (or bash tests/support/install-deps.sh)"
}

# stop_all: SIGTERM every recorded live PID (reverse order), wait, SIGKILL stragglers.
stop_all() {
  [[ -f $PIDS ]] || return 0
  local name pid match rc=0
  while read -r name pid match; do
    yata_pid_alive "$pid" "$match" || continue
    kill -TERM "$pid" 2>/dev/null || true
    if ! yata_wait_gone "$pid" 10; then
      echo "redis.sh: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      yata_wait_gone "$pid" 5 || { echo "redis.sh: $name (pid $pid) did not exit" >&2; rc=1; }
    fi
    echo "redis.sh: stopped $name (pid $pid)"
  done < <(tac "$PIDS")
  [[ $rc -eq 0 ]] && rm -f "$PIDS" "$ENV"
  return $rc
}

refuse_if_running() {
  [[ -f $PIDS ]] || return 0
  local name pid match
  while read -r name pid match; do
    if yata_pid_alive "$pid" "$match"; then
      die "$name (pid $pid) from $PIDS still runs: bash tests/support/redis.sh stop $DIR"
    fi
  done <"$PIDS"
  rm -f "$PIDS" "$ENV"
}

# free_pair WANTED: print WANTED if it and WANTED+10000 are free (and WANTED < 55535), else a
# kernel-chosen port with the same property.
free_pair() {
  local want=$1
  if ((want < 55535)) && yata_port_free "$want" && yata_port_free $((want + 10000)); then
    echo "$want"; return
  fi
  "$YATA_PY" - <<'EOF'
import socket
def free(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(1000):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p < 55535 and free(p + 10000):
        print(p); break
else:
    raise SystemExit("no free port pair")
EOF
}

# start_one PORT [extra redis-server options...]: daemonized redis-server, PID recorded, PING waited.
start_one() {
  local port=$1; shift
  local d=$DIR/redis/$port pid i
  rm -rf "$d"; mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$d" --logfile "$d/redis.log" --daemonize yes --pidfile "$d/redis.pid" "$@" \
    || die "redis-server on port $port failed to start (log: $d/redis.log)"
  for ((i = 0; i < 100; i++)); do
    if [[ -s $d/redis.pid ]] && redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG; then
      pid=$(cat "$d/redis.pid")
      echo "redis-$port $pid redis-server" >>"$PIDS"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$d/redis.log" >&2 || true
  die "redis-server on port $port did not answer PING within 10 s"
}

cluster_ok() { # every one of "$@" (ports) says cluster_state:ok
  local p
  for p in "$@"; do
    redis-cli -h 127.0.0.1 -p "$p" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

case $CMD in
  start-standalone)
    need_redis
    refuse_if_running
    port=$(yata_pick_port redis "${3:-6379}")
    start_one "$port"
    {
      echo "export YATA_REDIS_URL=$(yata_quote "redis://127.0.0.1:$port/0")"
      echo "export YATA_REDIS_PIDS=$(yata_quote "$(awk '{print $2}' "$PIDS" | paste -sd' ')")"
    } >"$ENV"
    echo "redis up: redis://127.0.0.1:$port/0 (pid $(awk '{print $2}' "$PIDS")); env: $ENV"
    ;;
  start-cluster)
    need_redis
    refuse_if_running
    base=${3:-7000}
    ports=()
    for ((n = 0; n < 6; n++)); do
      p=$(free_pair $((base + n)))
      # Never the same port twice (a kernel-chosen one could repeat a wanted one).
      while [[ " ${ports[*]} " == *" $p "* ]]; do p=$(free_pair 0); done
      ports+=("$p")
    done
    done_ok=0
    trap '[[ $done_ok == 1 ]] || { echo "redis.sh: start-cluster failed; stopping what it started" >&2; stop_all || true; }' EXIT
    for p in "${ports[@]}"; do
      start_one "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 \
        --repl-diskless-sync-delay 0
    done
    addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
      >"$DIR/redis/cluster-create.log" 2>&1 \
      || { cat "$DIR/redis/cluster-create.log" >&2; false; }
    for ((i = 0; i < 200; i++)); do cluster_ok "${ports[@]}" && break; sleep 0.1; done
    cluster_ok "${ports[@]}" || { echo "redis.sh: cluster not ok within 20 s" >&2; false; }
    masters=$(redis-cli -h 127.0.0.1 -p "${ports[0]}" CLUSTER NODES \
      | awk '$3 ~ /master/ {split($2, a, "@"); print a[1]}' | sort | paste -sd,)
    {
      echo "export YATA_REDIS_CLUSTER_NODES=$(yata_quote "$masters")"
      echo "export YATA_REDIS_CLUSTER_ALL=$(yata_quote "$(IFS=,; echo "${addrs[*]}")")"
      echo "export YATA_REDIS_PIDS=$(yata_quote "$(awk '{print $2}' "$PIDS" | paste -sd' ')")"
    } >"$ENV"
    done_ok=1
    echo "redis cluster up: masters $masters (all ${addrs[*]}); env: $ENV"
    ;;
  stop)
    stop_all
    ;;
  *)
    usage
    ;;
esac
