#!/bin/bash
# stop-backends.sh: stop what start-backends.sh (and demo.sh) started, by the PIDs they recorded.
#
# Reads STATE_DIR/proxy.pid (the demo proxy, if any) and STATE_DIR/pids (lines "NAME PID MATCH",
# written by start-backends.sh in start order: mon, osd, rgw, nginx). Sends SIGTERM in reverse order,
# waits up to 10 s per process, then SIGKILL. A PID is only signalled if /proc/PID still names the
# expected program (protects against PID reuse). Never kills by name. Leaves logs and data in place.
# Cost: ~1-3 s.
#
# usage: bash tests/support/stop-backends.sh [STATE_DIR]     (default tests/support/.state)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE=$(yata_state_dir "${1:-}")

# stop_one NAME PID MATCH
stop_one() {
  local name=$1 pid=$2 match=$3
  if ! yata_pid_alive "$pid" "$match"; then return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! yata_wait_gone "$pid" 10; then
    echo "stop-backends.sh: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    yata_wait_gone "$pid" 5 || { echo "stop-backends.sh: $name (pid $pid) did not exit" >&2; return 1; }
  fi
  stopped+=("$name:$pid")
}

stopped=()
rc=0
if [[ -f $STATE/proxy.pid ]]; then
  stop_one proxy "$(cat "$STATE/proxy.pid")" yatagarasu || rc=1
  rm -f "$STATE/proxy.pid"
fi
if [[ -f $STATE/pids ]]; then
  # Reverse start order: nginx, rgw, osd, mon.
  mapfile -t lines < <(tac "$STATE/pids")
  for line in "${lines[@]}"; do
    read -r name pid match <<<"$line"
    stop_one "$name" "$pid" "$match" || rc=1
  done
  ((rc)) || rm -f "$STATE/pids"
fi
if ((${#stopped[@]})); then
  echo "stopped: ${stopped[*]} (logs kept in $STATE/log)"
fi
exit $rc
