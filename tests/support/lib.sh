# shellcheck shell=bash
# lib.sh: shell helpers shared by start-backends.sh, stop-backends.sh and demo.sh (sourced, not run).
#
# Not on any hot path: runs once per test session. Everything here is pure bash plus /usr/bin/python3
# (Debian's interpreter; the one on PATH may be a pyenv build without botocore).

# Repository root, from this file's location (tests/support/lib.sh).
YATA_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
YATA_SUPPORT_DIR="$YATA_REPO_ROOT/tests/support"
# Debian's Python: has python3-botocore. Overridable for unusual machines.
YATA_PY=${YATA_PY:-/usr/bin/python3}

# yata_state_dir [DIR]: print the absolute state directory (default tests/support/.state) and create it.
yata_state_dir() {
  local d=${1:-$YATA_SUPPORT_DIR/.state}
  mkdir -p "$d"
  (cd "$d" && pwd)
}

# yata_pid_alive PID EXE_SUBSTRING: true if PID runs and its /proc/PID/exe or cmdline names EXE_SUBSTRING.
# The name check guards against killing an unrelated process that reused a recorded PID.
yata_pid_alive() {
  local pid=$1 want=$2 exe cmd
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -d /proc/$pid ]] || return 1
  # A zombie still has /proc/PID but is gone for our purposes.
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  [[ $exe == *"$want"* || $cmd == *"$want"* ]]
}

# yata_port_free PORT: true if 127.0.0.1:PORT can be bound right now.
yata_port_free() {
  "$YATA_PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# Servers (nginx, asio, the Ceph messenger) set SO_REUSEADDR, so TIME_WAIT leftovers do not block
# them; only a live listener does. Check the same way.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# yata_pick_port NAME WANTED: print WANTED if free, else a kernel-chosen free port (noted on stderr).
yata_pick_port() {
  local name=$1 want=$2 got
  if yata_port_free "$want"; then echo "$want"; return; fi
  got=$("$YATA_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "note: $name port $want is busy; using $got instead" >&2
  echo "$got"
}

# yata_wait_gone PID SECONDS: wait until PID has exited; false on timeout.
yata_wait_gone() {
  local pid=$1 t=$(( $2 * 10 )) i
  for ((i = 0; i < t; i++)); do
    [[ -d /proc/$pid ]] || return 0
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
    sleep 0.1
  done
  return 1
}

# yata_quote VALUE: print VALUE single-quoted for a sourceable shell file.
yata_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
