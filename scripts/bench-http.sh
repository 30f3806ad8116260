#!/usr/bin/env bash
# The ceiling comparison: in one run, load the real service and a static
# fasthttp handler that answers an /api/info-sized body, with the same load
# generator settings, and print the ratios. Run under scripts/with-server.sh.
#   DURATION (default 10s), CONNS (default 64), USERS (default 1000)
set -euo pipefail
d="${DURATION:-10s}"; c="${CONNS:-64}"; users="${USERS:-1000}"
static_addr=127.0.0.1:8091
bin/loadgen -serve-static "$static_addr" >/dev/null 2>&1 &
static_pid=$!
trap 'kill -TERM $static_pid 2>/dev/null; wait $static_pid 2>/dev/null || true' EXIT
out=.data/bench-http; mkdir -p "$out"
run() { # name, args...
  local name=$1; shift
  bin/loadgen -quiet -json -c "$c" -d "$d" "$@" >"$out/$name.json"
}
run static -addr "$static_addr" -no-setup -mix info=100
run info -addr "$SERVER_ADDR" -users "$users" -prefix info -mix info=100
run mixed -addr "$SERVER_ADDR" -users "$users" -prefix mixed -mix info=50,buy=25,send=25
run login -addr "$SERVER_ADDR" -users "$users" -prefix login -mix auth=100
python3 - "$out" "$c" "$d" <<'PY'
import json, sys, os
out, conns, dur = sys.argv[1:]
res = {n: json.load(open(os.path.join(out, n + ".json"))) for n in ("static", "info", "mixed", "login")}
ceiling = res["static"]["total"]["rps"]
print(f"machine: {os.cpu_count()} cores, load generator on the same machine; {conns} connections, {dur} per scenario")
print(f"{'scenario':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}")
for name, label in (("static", "static fasthttp ceiling"), ("info", "GET /api/info"),
                    ("mixed", "info50/buy25/send25"), ("login", "login (existing users)")):
    t = res[name]["total"]
    lat = t["latency_us"]
    print(f"{label:<28}{t['rps']:>10.0f}{lat['p50']/1000:>9.2f}{lat['p99']/1000:>9.2f}{t['errors']:>8}{t['rps']/ceiling:>8.2f}")
PY
