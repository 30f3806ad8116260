# Helpers shared by the bench scripts (with-server.sh, bench-http.sh,
# bench-cluster.sh, profile.sh). Source it; it defines functions only.

# die MESSAGE: print to stderr and exit 1.
die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# free_port: a TCP port on 127.0.0.1 that nothing listened on a moment ago.
# Another process could take it before ours binds, which is why every
# server started here is also checked to own its port (own_listener).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# seconds DURATION [ceil]: a Go duration (30s, 1m30s, 1.5s, 500ms, 1h) in
# seconds; with "ceil", rounded up to a whole number of at least 1 (for
# tools that take whole seconds: Locust's -t, pprof's ?seconds=). Exits
# with a clear message when DURATION is not a Go duration.
seconds() {
  python3 - "$1" "${2:-}" <<'PY' || exit 1
import math, re, sys
s, mode = sys.argv[1], sys.argv[2]
units = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
part = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
if s == "0":
    total = 0.0
elif re.fullmatch(f"(?:{part})+", s):
    total = sum(float(n) * units[u] for n, u in re.findall(part, s))
else:
    sys.exit(f"DURATION={s!r} is not a Go duration (e.g. 30s, 1m30s, 500ms)")
print(max(1, math.ceil(total)) if mode == "ceil" else f"{total:g}")
PY
}

# listener_pids PORT: the PIDs holding a listening TCP socket on PORT
# (our own processes at least; ss shows others' only to root).
listener_pids() {
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
  elif command -v lsof >/dev/null; then
    lsof -nP -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | sort -u
  fi
}

# port_in_use PORT: true if something listens on PORT (any address).
port_in_use() {
  python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

# refuse_taken ADDR...: exit before starting anything if an address is
# already served (e.g. by `make run` on :8080): loading it would measure
# another server and its database.
refuse_taken() {
  local a pids
  for a in "$@"; do
    if port_in_use "${a##*:}"; then
      pids=$(listener_pids "${a##*:}" | paste -sd ' ')
      die "$a is already in use${pids:+ (pid $pids)}: refusing to run against a server this script did not start; unset the address to get a free port"
    fi
  done
}

# own_listener PID ADDR: true if process PID listens on ADDR's port. With
# neither ss nor lsof, true while PID is alive (a weaker check).
own_listener() {
  local pids
  kill -0 "$1" 2>/dev/null || return 1
  if ! command -v ss >/dev/null && ! command -v lsof >/dev/null; then
    return 0
  fi
  pids=$(listener_pids "${2##*:}")
  grep -qx "$1" <<<"$pids"
}

# wait_own_server PID LOG ADMIN_ADDR [ADDR...] [-- TIMEOUT]: wait until
# PID answers GET http://ADMIN_ADDR/readyz with 200 and owns every
# address; exit 1 with its log if it stops first or is not ready within
# TIMEOUT seconds (default START_WAIT, else 60). A /readyz from any other
# process does not count.
wait_own_server() {
  local pid=$1 log=$2 admin=$3 limit=${START_WAIT:-60} a ok foreign=""
  shift 3
  local addrs=("$admin" "$@")
  local deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      die "the server it started (pid $pid) exited before it was ready: not loading anything (log: $log)"
    fi
    if curl -fsS -o /dev/null --max-time 2 "http://$admin/readyz" 2>/dev/null; then
      ok=1
      for a in "${addrs[@]}"; do
        if ! own_listener "$pid" "$a"; then
          ok=0
          foreign="$a is served by pid $(listener_pids "${a##*:}" | paste -sd ' ' -), not by the server it started (pid $pid)"
        fi
      done
      ((ok)) && return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$log" >&2 || true
  die "${foreign:-the server it started (pid $pid) was not ready on $admin within ${limit}s}: refusing to load it (log: $log)"
}
